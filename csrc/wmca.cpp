// Op schemas of the fused W-MCSA kernels, shared checks, and the Python module stub.
// CPU kernels register in csrc/cpu, CUDA kernels in csrc/cuda (only when built WITH_CUDA).
#include "wmca.h"

#include <torch/extension.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include "cuda/wmca_cuda.h"
#endif

namespace poster_fast {

namespace {
void check_float(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, name, ": expected a floating dtype (float32, float16, bfloat16, float64), got ",
              t.scalar_type());
}
}  // namespace

Problem check_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& table, int64_t wh, int64_t ww) {
  TORCH_CHECK(q.dim() == 4, "q: expected 4 dims (B, H, N, D), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 4, "k: expected 4 dims (B*nW, H, N, D), got shape ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), "v: expected the shape of k ", k.sizes(), ", got ", v.sizes());
  TORCH_CHECK(table.dim() == 2, "table: expected 2 dims ((2Wh-1)*(2Ww-1), H), got shape ",
              table.sizes());
  for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&table, "table"}}) {
    check_float(*t, name);
    TORCH_CHECK(t->device() == q.device(), name, ": expected device ", q.device(), ", got ",
                t->device());
  }
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "k, v: expected the dtype of q (", q.scalar_type(), "), got ", k.scalar_type(),
              " and ", v.scalar_type());
  TORCH_CHECK(wh >= 1 && ww >= 1, "window: expected positive (Wh, Ww), got (", wh, ", ", ww, ")");
  Problem p{q.size(0), 0, q.size(1), q.size(2), q.size(3), wh, ww};
  TORCH_CHECK(p.tokens == wh * ww, "q: expected N = Wh*Ww = ", wh * ww, " tokens, got ", p.tokens);
  TORCH_CHECK(p.batch > 0 && p.head_dim > 0 && p.heads > 0, "q: expected non-empty, got ", q.sizes());
  TORCH_CHECK(k.size(1) == p.heads && k.size(2) == p.tokens && k.size(3) == p.head_dim,
              "k: expected (B*nW, ", p.heads, ", ", p.tokens, ", ", p.head_dim, "), got ", k.sizes());
  TORCH_CHECK(k.size(0) > 0 && k.size(0) % p.batch == 0,
              "k: expected dim 0 to be a positive multiple of B=", p.batch, ", got ", k.size(0));
  p.windows = k.size(0) / p.batch;
  TORCH_CHECK(table.size(0) == p.table_rows() && table.size(1) == p.heads, "table: expected (",
              p.table_rows(), ", ", p.heads, "), got ", table.sizes());
  return p;
}

Problem check_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const at::Tensor& table, const at::Tensor& out,
                       const at::Tensor& lse, int64_t wh, int64_t ww) {
  Problem p = check_forward(q, k, v, table, wh, ww);
  TORCH_CHECK(dout.sizes() == k.sizes() && out.sizes() == k.sizes(),
              "dout, out: expected the shape of k ", k.sizes(), ", got ", dout.sizes(), " and ",
              out.sizes());
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == k.size(0) && lse.size(1) == p.heads &&
                  lse.size(2) == p.tokens,
              "lse: expected (B*nW, H, N), got ", lse.sizes());
  for (auto [t, name] : {std::pair{&dout, "dout"}, {&out, "out"}, {&lse, "lse"}}) {
    check_float(*t, name);
    TORCH_CHECK(t->device() == q.device(), name, ": expected device ", q.device(), ", got ",
                t->device());
  }
  return p;
}

}  // namespace poster_fast

TORCH_LIBRARY(poster_fast, m) {
  m.def("wmca_fwd(Tensor q, Tensor k, Tensor v, Tensor table, int wh, int ww, float scale)"
        " -> (Tensor out, Tensor lse)");
  m.def("wmca_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor table, Tensor out, Tensor lse,"
        " int wh, int ww, float scale) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dtable)");
}

// A Python module so that `import poster_fast._C` loads the library (and its registrations),
// and the CUDA kernels' limits, so that Python selects backends by the launcher's own rules.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_max_head_dim") = poster_fast::cuda::kMaxHeadDim;
  m.def(
      "cuda_unsupported",
      [](const std::string& dtype, int64_t batch, int64_t windows, int64_t heads, int64_t tokens,
         int64_t head_dim, int64_t wh, int64_t ww, size_t max_smem) {
        using poster_fast::cuda::DType;
        TORCH_CHECK(dtype == "float32" || dtype == "float16" || dtype == "bfloat16",
                    "dtype: expected float32, float16 or bfloat16, got ", dtype);
        const DType dt = dtype == "float16"    ? DType::kFloat16
                         : dtype == "bfloat16" ? DType::kBFloat16
                                               : DType::kFloat32;
        return poster_fast::cuda::unsupported(dt, batch, windows, heads, tokens, head_dim, wh, ww,
                                              max_smem);
      },
      "Why the CUDA kernels cannot run a problem ('' when they can).");
#else
  m.attr("with_cuda") = false;
#endif
}
