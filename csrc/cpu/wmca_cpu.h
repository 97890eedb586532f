// Torch-free interface of the CPU W-MCSA kernels (compiled once per instruction set).
#pragma once
#include <cstdint>

namespace poster_fast::cpu {

struct Dims {
  int64_t batch, windows, heads, tokens, head_dim, wh, ww;
  double scale;
};

// All pointers are contiguous arrays in the compute type T (float or double):
// q (B,H,N,D); k, v, out, dout, dk, dv (B*nW,H,N,D); lse (B*nW,H,N); table, dtable (rows,H).
// `dq_win` (B*nW,H,N,D) receives each window's dq (it may alias dq when nW == 1);
// `part` ((B*nW)*H, rows) is scratch for the per-(window, head) table gradients.
#define POSTER_FAST_CPU_KERNELS(NS)                                                             \
  namespace NS {                                                                                \
  template <class T>                                                                            \
  void forward(const T* q, const T* k, const T* v, const T* table, T* out, T* lse,             \
               const Dims& d);                                                                  \
  template <class T>                                                                            \
  void backward(const T* dout, const T* q, const T* k, const T* v, const T* table,             \
                const T* out, const T* lse, T* dq, T* dq_win, T* dk, T* dv, T* dtable, T* part, \
                const Dims& d);                                                                 \
  }
POSTER_FAST_CPU_KERNELS(avx2)
POSTER_FAST_CPU_KERNELS(generic)
#undef POSTER_FAST_CPU_KERNELS

}  // namespace poster_fast::cpu
