// Host side of the CUDA emulation: device memory, checker results and the kernel profile.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace emu {

// Opt-in dynamic shared memory per block of the emulated device (bytes; H100: 232448).
void set_device_smem_limit(size_t bytes);
size_t device_smem_limit();

// How tensor cores add products to the accumulator: guard_bits >= 0 aligns every addend to the
// largest, keeps guard_bits bits below its fp32 precision (truncating the rest) and rounds the
// sum toward zero (the behaviour Fasi et al. measured on V100/A100); -1 adds in fp32 with
// round-to-nearest. Default 0.
void set_tensor_core_model(int guard_bits);

// Device buffers live in one arena with unmapped-in-spirit gaps between them: an access that
// is not inside a live buffer is reported as out of bounds. New buffers hold NaN bytes and
// count as uninitialised until written (by a kernel or by upload()). read_only buffers report
// kernel writes.
void* device_alloc(size_t bytes, const char* name, bool read_only);
void upload(void* dst, const void* src, size_t bytes);
void device_free_all();

// Checker findings since start (each category counts every finding; the first few are printed).
struct Findings {
  long races = 0, out_of_bounds = 0, uninitialised = 0, read_only_writes = 0, sync_errors = 0,
       wmma_errors = 0, launch_errors = 0;
  long total() const {
    return races + out_of_bounds + uninitialised + read_only_writes + sync_errors + wmma_errors +
           launch_errors;
  }
};
Findings findings();

// Per-kernel counters (shared-memory wavefronts under the bank model, global sectors, tensor
// instructions, barriers). Off by default: it slows the emulation down.
void set_profiling(bool on);
struct KernelProfile {
  std::string name;
  long blocks = 0;
  size_t smem_bytes = 0;  // dynamic shared memory per block
  long barriers = 0;      // per block, summed
  long tc_fma_16bit = 0;  // tensor-core multiply-adds, fp16/bf16 operands
  long tc_fma_tf32 = 0;   // tensor-core multiply-adds, tf32 operands
  long smem_wavefronts = 0, smem_ideal_wavefronts = 0;
  long gmem_sectors = 0, gmem_bytes = 0;
  // Shared-memory instructions with bank conflicts: where (an offset into the executable for
  // scalar accesses, e.g. for addr2line; or the WMMA operation), requests, extra wavefronts.
  struct Site {
    std::string where;
    long requests = 0, extra_wavefronts = 0;
  };
  std::vector<Site> conflicts;
};
std::vector<KernelProfile> profiles();
void reset_profiles();

}  // namespace emu
