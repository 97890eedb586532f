// The CPU kernels for the baseline instruction set (x86-64 SSE2, or any other target), with the
// tile shapes of the AVX2 build: 32-byte vectors (lowered to the widest the target has).
#include <cstdint>
#include <cstdlib>

#include "wmca_cpu.h"

#define POSTER_FAST_VEC_BYTES 32
#define POSTER_FAST_TILE_M 4
#define POSTER_FAST_F16C 0
namespace poster_fast::cpu::generic {
#include "wmca_cpu_impl.h"
}  // namespace poster_fast::cpu::generic
