// CUDA implementations of poster_fast::wmca_fwd / wmca_bwd: checks, allocation and the
// current stream around the torch-free launchers in wmca_kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>

#include "../wmca.h"
#include "wmca_cuda.h"

namespace poster_fast {
namespace {

cuda::DType kernel_dtype(const at::Tensor& q) {
  switch (q.scalar_type()) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "poster_fast CUDA kernels support float32, float16 and bfloat16, got ",
                         q.scalar_type());
  }
}

// The problem as kernel dims, after the limits of cuda::unsupported (the current device's
// opt-in shared memory included) have been checked.
cuda::Dims checked_dims(const Problem& p, const at::Tensor& q, cuda::DType dt, double scale) {
  TORCH_CHECK(q.is_cuda(), "poster_fast CUDA kernel called with tensors on ", q.device());
  int smem = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        q.device().index()));
  const std::string why = cuda::unsupported(dt, p.batch, p.windows, p.heads, p.tokens,
                                            p.head_dim, p.wh, p.ww, static_cast<size_t>(smem));
  TORCH_CHECK(why.empty(), "poster_fast CUDA kernels: ", why);
  return {static_cast<int>(p.batch), static_cast<int>(p.windows), static_cast<int>(p.heads),
          static_cast<int>(p.tokens), static_cast<int>(p.head_dim), static_cast<int>(p.wh),
          static_cast<int>(p.ww), static_cast<float>(scale)};
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "poster_fast ", what, " failed: ", cudaGetErrorString(err),
              " (large windows or head_dim may exceed the shared memory of this GPU)");
}

std::tuple<at::Tensor, at::Tensor> fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const at::Tensor& table,
                                            int64_t wh, int64_t ww, double scale) {
  const Problem p = check_forward(q, k, v, table, wh, ww);
  const cuda::DType dt = kernel_dtype(q);
  const c10::cuda::CUDAGuard guard(q.device());
  const cuda::Dims d = checked_dims(p, q, dt, scale);
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const at::Tensor tc = table.to(at::kFloat).contiguous();
  at::Tensor out = at::empty(k.sizes(), qc.options());
  at::Tensor lse = at::empty({k.size(0), p.heads, p.tokens}, qc.options().dtype(at::kFloat));
  check_launch(cuda::forward(dt, qc.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                             tc.data_ptr<float>(), out.data_ptr(), lse.data_ptr<float>(), d,
                             c10::cuda::getCurrentCUDAStream()),
               "wmca_fwd");
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd_cuda(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& table, const at::Tensor& out, const at::Tensor& lse, int64_t wh, int64_t ww,
    double scale) {
  const Problem p = check_backward(dout, q, k, v, table, out, lse, wh, ww);
  const cuda::DType dt = kernel_dtype(q);
  const c10::cuda::CUDAGuard guard(q.device());
  const cuda::Dims d = checked_dims(p, q, dt, scale);
  const auto as_q = [&](const at::Tensor& t) { return t.to(q.scalar_type()).contiguous(); };
  const at::Tensor gc = as_q(dout), qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(),
                   oc = as_q(out);
  const at::Tensor tc = table.to(at::kFloat).contiguous(), lc = lse.to(at::kFloat).contiguous();
  at::Tensor dq = at::empty(q.sizes(), qc.options());
  at::Tensor dk = at::empty(k.sizes(), qc.options()), dv = at::empty(k.sizes(), qc.options());
  at::Tensor dtable = at::empty(table.sizes(), tc.options());
  at::Tensor work = at::empty({static_cast<int64_t>(cuda::backward_workspace(d))}, tc.options());
  check_launch(cuda::backward(dt, gc.data_ptr(), qc.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                              oc.data_ptr(), tc.data_ptr<float>(), lc.data_ptr<float>(),
                              dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), dtable.data_ptr<float>(),
                              work.data_ptr<float>(), d, c10::cuda::getCurrentCUDAStream()),
               "wmca_bwd");
  return {dq, dk, dv, dtable.to(table.scalar_type())};
}

}  // namespace
}  // namespace poster_fast

TORCH_LIBRARY_IMPL(poster_fast, CUDA, m) {
  m.impl("wmca_fwd", &poster_fast::fwd_cuda);
  m.impl("wmca_bwd", &poster_fast::bwd_cuda);
}
