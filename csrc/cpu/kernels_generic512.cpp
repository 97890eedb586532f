// The CPU kernels for the baseline instruction set with the tile shapes of the AVX-512 build
// (64-byte vectors, 8-row tiles), so that its padding and tiling run, and are tested, on any CPU.
// Never picked automatically: select it with set_cpu_isa("generic512") or POSTER_FAST_CPU_ISA.
#include <cstdint>
#include <cstdlib>

#include "wmca_cpu.h"

#define POSTER_FAST_VEC_BYTES 64
#define POSTER_FAST_TILE_M 8
#define POSTER_FAST_F16C 0
namespace poster_fast::cpu::generic512 {
#include "wmca_cpu_impl.h"
}  // namespace poster_fast::cpu::generic512
