// The CPU kernels for the baseline instruction set (x86-64 SSE2, or any other target).
#include <cstdint>
#include <cstdlib>

#include "wmca_cpu.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vector values without AVX: internal only
namespace poster_fast::cpu::generic {
#include "wmca_cpu_impl.h"
}  // namespace poster_fast::cpu::generic
