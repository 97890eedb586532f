// The CPU kernels for AVX2 + FMA + F16C: 8-float vectors, 4-row register tiles.
#include <cstdint>
#include <cstdlib>

#include "wmca_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define POSTER_FAST_VEC_BYTES 32
#define POSTER_FAST_TILE_M 4
#define POSTER_FAST_F16C 1
namespace poster_fast::cpu::avx2 {
#include "wmca_cpu_impl.h"
}  // namespace poster_fast::cpu::avx2
#pragma GCC pop_options
#endif
