// Torch-free launchers of the CUDA W-MCSA kernels (wmca_kernels.cu); glued to torch in
// wmca_cuda.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace poster_fast::cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

struct Dims {
  int batch, windows, heads, tokens, head_dim, wh, ww;
  float scale;
};

constexpr int kMaxHeadDim = 128;

// q (B,H,N,D); k, v, out, dout, dq/dk/dv (B*nW,H,N,D) and (B,H,N,D) for dq, all contiguous in
// `dtype`; table and dtable (rows,H) float32; lse (B*nW,H,N) float32.
cudaError_t forward(DType dtype, const void* q, const void* k, const void* v, const float* table,
                    void* out, float* lse, const Dims& d, cudaStream_t stream);

// Dynamic shared memory per block (bytes) of the forward / backward kernels.
size_t forward_smem(DType dtype, const Dims& d);
size_t backward_smem(DType dtype, const Dims& d);

// Floats of scratch memory `backward` needs.
size_t backward_workspace(const Dims& d);

cudaError_t backward(DType dtype, const void* dout, const void* q, const void* k, const void* v,
                     const void* out, const float* table, const float* lse, void* dq, void* dk,
                     void* dv, float* dtable, float* workspace, const Dims& d, cudaStream_t stream);

}  // namespace poster_fast::cuda
