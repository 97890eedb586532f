// Torch-free interface of the CPU W-MCSA kernels (compiled once per instruction set).
#pragma once
#include <cstdint>

namespace poster_fast::cpu {

struct Dims {
  int64_t batch, windows, heads, tokens, head_dim, wh, ww;
  double scale;
};

enum class DType : int32_t { kFloat32, kFloat64, kFloat16, kBFloat16 };

// A strided tensor read by the kernels: element strides of up to 4 dims (unused ones 0).
struct In {
  const void* data;
  DType dtype;
  int64_t stride[4];
};
// A contiguous tensor written by the kernels.
struct Out {
  void* data;
  DType dtype;
};

// The kernels read q (B,H,N,D), k, v, dout, out (B*nW,H,N,D), lse (B*nW,H,N) and table (rows,H)
// in any dtype and layout, compute in T (float for fp32/fp16/bf16 inputs, double for fp64) and
// write contiguous results in the dtype each Out names; forward's lse is contiguous T.
// Scratch, contiguous T: `dq_win` (B*nW,H,N,D) holds each window's dq when nW > 1 (unused, may
// be null, when nW == 1); `part` ((B*nW)*H, rows) holds the per-(window, head) table gradients.
#define POSTER_FAST_CPU_KERNELS(NS)                                                              \
  namespace NS {                                                                                 \
  template <class T>                                                                             \
  void forward(const In& q, const In& k, const In& v, const In& table, Out out, T* lse,          \
               const Dims& d);                                                                   \
  template <class T>                                                                             \
  void backward(const In& dout, const In& q, const In& k, const In& v, const In& table,          \
                const In& out, const In& lse, Out dq, Out dk, Out dv, Out dtable, T* dq_win,     \
                T* part, const Dims& d);                                                         \
  }
POSTER_FAST_CPU_KERNELS(avx512)
POSTER_FAST_CPU_KERNELS(avx2)
POSTER_FAST_CPU_KERNELS(generic)
POSTER_FAST_CPU_KERNELS(generic512)
#undef POSTER_FAST_CPU_KERNELS

}  // namespace poster_fast::cpu
