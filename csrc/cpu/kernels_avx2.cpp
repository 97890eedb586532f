// The CPU kernels compiled for AVX2 + FMA (picked at run time when the CPU has both).
#include <cstdint>
#include <cstdlib>

#include "wmca_cpu.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace poster_fast::cpu::avx2 {
#include "wmca_cpu_impl.h"
}  // namespace poster_fast::cpu::avx2
#pragma GCC pop_options
#endif
