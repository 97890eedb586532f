// Torch-free launchers of the CUDA W-MCSA kernels (wmca_kernels.cu); glued to torch in
// wmca_cuda.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace poster_fast::cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

struct Dims {
  int batch, windows, heads, tokens, head_dim, wh, ww;
  float scale;
};

constexpr int kMaxHeadDim = 128;

// Why the kernels cannot run this problem ("" when they can): head_dim, grid and 32-bit index
// limits and the shared memory of the tiles against `max_smem` (the device's opt-in shared
// memory per block, bytes). The one source of these limits for the launcher and for Python.
std::string unsupported(DType dtype, int64_t batch, int64_t windows, int64_t heads,
                        int64_t tokens, int64_t head_dim, int64_t wh, int64_t ww, size_t max_smem);

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
