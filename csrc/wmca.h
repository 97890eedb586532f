// Shared torch-side declarations for the W-MCSA ops (argument checks, problem sizes).
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace poster_fast {

// Sizes of one call; q: (B, H, N, D), k/v: (B*nW, H, N, D), table: ((2Wh-1)*(2Ww-1), H).
struct Problem {
  int64_t batch, windows, heads, tokens, head_dim, wh, ww;
  int64_t table_rows() const { return (2 * wh - 1) * (2 * ww - 1); }
};

// Validates shapes, dtypes and devices of the forward inputs (clear TORCH_CHECK messages).
Problem check_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& table, int64_t wh, int64_t ww);
// Also checks the backward-only inputs (dout, out, lse) against the problem.
Problem check_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const at::Tensor& table, const at::Tensor& out,
                       const at::Tensor& lse, int64_t wh, int64_t ww);

}  // namespace poster_fast
