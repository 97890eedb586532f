// The CPU kernels for AVX-512 (F, BW, DQ, VL) + FMA: 16-float vectors, 8-row register tiles
// (AVX-512 has 32 vector registers). Picked at run time when the CPU and OS support it.
#include <cstdint>
#include <cstdlib>

#include "wmca_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")
#define POSTER_FAST_VEC_BYTES 64
#define POSTER_FAST_TILE_M 8
#define POSTER_FAST_F16C 1
namespace poster_fast::cpu::avx512 {
#include "wmca_cpu_impl.h"
}  // namespace poster_fast::cpu::avx512
#pragma GCC pop_options
#endif
