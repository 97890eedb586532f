// Runtime of the CUDA emulation (see emu_cuda.h): fibers and their scheduler, block barriers and
// warp rendezvous (shuffles, __syncwarp, WMMA), the memory checker fed by the instrumented kernel
// code, and the optional profile (bank-conflict model, global sectors, tensor instructions).
// This file itself is compiled without instrumentation.
#include <dlfcn.h>
#include <sys/mman.h>
#include <xmmintrin.h>

#include <algorithm>
#include <array>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "emu_cuda.h"
#include "emu_host.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

// Switches stacks: saves the callee-saved registers and the stack pointer of the running
// context in *save_sp, then resumes the context whose stack pointer is new_sp.
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
#if defined(__x86_64__)
asm(R"(
  .text
  .globl emu_ctx_switch
  .type emu_ctx_switch, @function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_ctx_switch, .-emu_ctx_switch
)");
#else
#error "the CUDA emulation's fiber switch is written for x86-64"
#endif

namespace emu {
namespace {

// ---- state of the running launch -----------------------------------------------------------
enum class St : uint8_t { kRunnable, kBarrier, kWarp, kDone };
struct Fiber {
  void* sp = nullptr;
  St st = St::kDone;
};

enum Op : int { kOpSyncwarp = 1, kOpShfl, kOpLoad, kOpStore, kOpMma };
struct LaneCall {
  int op = 0;
  unsigned mask = 0;
  uint32_t value = 0;
  int lane_arg = 0, width = 32;
  const FragInfo* f[4] = {};
  void* x[4] = {};
  const void* p = nullptr;
  unsigned ldm = 0;
  int layout = 0;
};

struct Rec {  // one scalar access, for the profile
  uintptr_t pc, addr;
  uint32_t seq;
  uint8_t lane, bytes;
  bool shared;
};
struct WarpState {
  int arrived = 0;
  uint32_t wep = 0;  // warp epoch: __syncwarp count
  std::array<LaneCall, 32> calls;
  std::vector<Rec> recs;
  std::unordered_map<uint64_t, uint32_t> seq;
};

constexpr size_t kStackBytes = 256 << 10;
constexpr size_t kDefaultSmem = 48 << 10;

std::vector<Fiber> g_fibers;
std::vector<WarpState> g_warps;
unsigned char* g_stacks = nullptr;
size_t g_stack_count = 0;
void* g_sched_sp = nullptr;
int g_cur = -1, g_alive = 0, g_bar_waiting = 0;
bool g_in_kernel = false, g_deadlock = false;
uint32_t g_serial = 0, g_launch_first = 1, g_bep = 0;
const KernelBody* g_body = nullptr;
std::string g_label;
size_t g_device_smem = 232448;
std::map<const void*, int> g_smem_attr;
cudaError_t g_last_error = cudaSuccess;

// ---- findings ------------------------------------------------------------------------------
Findings g_findings;
std::map<long*, int> g_printed;

void finding(long& counter, const char* fmt, ...) {
  ++counter;
  int& printed = g_printed[&counter];
  if (printed >= 6) return;
  ++printed;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (g_cur >= 0)
    std::fprintf(stderr, "[emu] %s block (%u,%u,%u) thread %d: %s\n", g_label.c_str(), blockIdx.x,
                 blockIdx.y, blockIdx.z, g_cur, msg);
  else
    std::fprintf(stderr, "[emu] %s: %s\n", g_label.c_str(), msg);
}

// ---- memory: arenas and shadow -------------------------------------------------------------
// Shadow state per 2-byte granule. serial numbers blocks in execution order; bep counts the
// block's barriers, wep its warp's __syncwarp calls. Two accesses of one block by different
// threads are ordered only by a barrier between them, or, within a warp, a __syncwarp.
constexpr uint16_t kMulti = 0xffff;
struct Shadow {
  uint32_t w_serial = 0, w_bep = 0, w_wep = 0;
  uint32_t r_serial = 0, r_bep = 0, r_wep = 0;
  uint32_t rl_serial = 0;  // a block that read this granule in the current launch
  uint16_t w_tid = 0, r_tid = 0, r_warp = 0;
  uint8_t written = 0, rl_multi = 0;
};

constexpr size_t kArenaBytes = size_t{1} << 30, kPage = size_t{1} << 16;
struct Alloc {
  uintptr_t begin, end;
  std::string name;
  bool read_only;
  std::vector<Shadow> shadow;
};
unsigned char* g_arena = nullptr;
size_t g_arena_used = 0;
std::vector<Alloc> g_allocs;
std::vector<int> g_page_owner;

constexpr size_t kSharedArena = size_t{2} << 20, kSharedOffset = size_t{1} << 20;
unsigned char* g_shared_arena = nullptr;
uintptr_t g_smem_base = 0;
size_t g_smem_bytes = 0;
std::vector<Shadow> g_sshadow;

unsigned char* map_region(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    std::perror("emu: mmap");
    std::abort();
  }
  return static_cast<unsigned char*>(p);
}

void init_memory() {
  if (g_arena) return;
  g_arena = map_region(kArenaBytes);
  g_page_owner.assign(kArenaBytes / kPage, -1);
  g_shared_arena = map_region(kSharedArena);
  g_smem_base = reinterpret_cast<uintptr_t>(g_shared_arena) + kSharedOffset;
}

// ---- profile -------------------------------------------------------------------------------
bool g_profiling = false;
std::map<std::string, KernelProfile> g_profiles;
KernelProfile* g_prof = nullptr;

struct Access {
  int lane;
  uintptr_t addr;
  int bytes;
};
// Shared-memory wavefronts of one warp request under the 32-bank, 4-byte-word model: accesses
// of up to 4 bytes are served for the whole warp at once, 8-byte ones per half warp, 16-byte
// ones per quarter warp; within a group, lanes reading the same word share it (broadcast) and
// distinct words in one bank take one wavefront each. Adds to *ideal the conflict-free count.
long wavefronts(const std::vector<Access>& req, long* ideal) {
  if (req.empty()) return 0;
  const int bytes = req[0].bytes, group = bytes <= 4 ? 32 : bytes == 8 ? 16 : 8;
  std::map<int, std::map<int, std::vector<uintptr_t>>> words;  // group -> bank -> words
  for (const Access& a : req)
    for (uintptr_t w = a.addr >> 2; w <= (a.addr + a.bytes - 1) >> 2; ++w) {
      auto& v = words[a.lane / group][static_cast<int>(w & 31)];
      if (std::find(v.begin(), v.end(), w) == v.end()) v.push_back(w);
    }
  long total = 0;
  for (auto& [g, banks] : words) {
    size_t worst = 0;
    for (auto& [b, v] : banks) worst = std::max(worst, v.size());
    total += static_cast<long>(worst);
  }
  *ideal += static_cast<long>(words.size());
  return total;
}

struct SiteCount {
  long requests = 0, extra = 0;
};
std::map<std::string, std::map<std::string, SiteCount>> g_sites;  // kernel -> site -> counts

std::string site_name(uintptr_t pc) {
  Dl_info info;
  char buf[64];
  if (pc < 16) {
    static const char* const names[] = {"", "wmma load (ldmatrix)", "wmma accumulator load/store",
                                        "wmma tf32 load"};
    return names[pc];
  }
  if (dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fbase)
    std::snprintf(buf, sizeof buf, "+%#zx", static_cast<size_t>(pc - reinterpret_cast<uintptr_t>(info.dli_fbase)));
  else
    std::snprintf(buf, sizeof buf, "%#zx", static_cast<size_t>(pc));
  return buf;
}

void count_shared(const std::vector<Access>& req, uintptr_t site) {
  if (!g_prof || req.empty()) return;
  long ideal = 0;
  const long waves = wavefronts(req, &ideal);
  g_prof->smem_wavefronts += waves;
  g_prof->smem_ideal_wavefronts += ideal;
  if (waves > ideal) {
    SiteCount& c = g_sites[g_prof->name][site_name(site)];
    ++c.requests;
    c.extra += waves - ideal;
  }
}

void count_global(const std::vector<Access>& req, uintptr_t) {
  if (!g_prof || req.empty()) return;
  std::vector<uintptr_t> sectors;
  for (const Access& a : req) {
    for (uintptr_t s = a.addr >> 5; s <= (a.addr + a.bytes - 1) >> 5; ++s) sectors.push_back(s);
    g_prof->gmem_bytes += a.bytes;
  }
  std::sort(sectors.begin(), sectors.end());
  g_prof->gmem_sectors += std::unique(sectors.begin(), sectors.end()) - sectors.begin();
}

// Groups a warp's scalar accesses since its last rendezvous into warp requests: the k-th
// execution of one instruction (call site) by each lane forms one request.
void flush_warp(WarpState& w) {
  if (w.recs.empty()) return;
  std::sort(w.recs.begin(), w.recs.end(), [](const Rec& a, const Rec& b) {
    return a.pc != b.pc ? a.pc < b.pc : a.seq != b.seq ? a.seq < b.seq : a.lane < b.lane;
  });
  std::vector<Access> req;
  for (size_t i = 0; i < w.recs.size();) {
    size_t j = i;
    req.clear();
    while (j < w.recs.size() && w.recs[j].pc == w.recs[i].pc && w.recs[j].seq == w.recs[i].seq) {
      req.push_back({w.recs[j].lane, w.recs[j].addr, w.recs[j].bytes});
      ++j;
    }
    (w.recs[i].shared ? count_shared : count_global)(req, w.recs[i].pc);
    i = j;
  }
  w.recs.clear();
  w.seq.clear();
}

void flush_all_warps() {
  if (g_profiling)
    for (WarpState& w : g_warps) flush_warp(w);
}

// ---- the checker ---------------------------------------------------------------------------
const char* describe(uintptr_t a, char* buf, size_t n) {
  if (a - g_smem_base < g_smem_bytes) {
    std::snprintf(buf, n, "shared byte %zu of %zu", static_cast<size_t>(a - g_smem_base), g_smem_bytes);
  } else if (a - reinterpret_cast<uintptr_t>(g_shared_arena) < kSharedArena) {
    std::snprintf(buf, n, "shared byte %lld (outside the %zu-byte dynamic allocation)",
                  static_cast<long long>(a) - static_cast<long long>(g_smem_base), g_smem_bytes);
  } else {
    const Alloc* best = nullptr;
    for (const Alloc& al : g_allocs)
      if (!best || (a >= al.begin ? a - al.begin : al.begin - a) <
                       (a >= best->begin ? a - best->begin : best->begin - a))
        best = &al;
    if (best)
      std::snprintf(buf, n, "global '%s' byte %lld (buffer size %zu)", best->name.c_str(),
                    static_cast<long long>(a) - static_cast<long long>(best->begin),
                    static_cast<size_t>(best->end - best->begin));
    else
      std::snprintf(buf, n, "address %#zx", static_cast<size_t>(a));
  }
  return buf;
}

bool unordered(uint16_t other_tid, uint32_t other_wep, int tid, int warp, uint32_t wep) {
  return other_tid != tid && ((other_tid >> 5) != warp || other_wep == wep);
}

void race(const char* what, uintptr_t a, int other) {
  char buf[160];
  finding(g_findings.races, "data race: %s (other thread %d) at %s", what, other,
          describe(a, buf, sizeof buf));
}

void update(Shadow& s, uintptr_t a, bool write, bool shared, int tid) {
  const int warp = tid >> 5;
  const uint32_t wep = g_warps[warp].wep, serial = g_serial, bep = g_bep;
  char buf[160];
  if (!write) {
    if (shared ? s.w_serial != serial : !s.written)
      finding(g_findings.uninitialised, "read of uninitialised %s", describe(a, buf, sizeof buf));
    if (s.w_serial == serial) {
      if (s.w_bep == bep && unordered(s.w_tid, s.w_wep, tid, warp, wep))
        race("read after a write in the same barrier interval", a, s.w_tid);
    } else if (!shared && s.w_serial >= g_launch_first) {
      race("read of data another block wrote in this launch", a, s.w_tid);
    }
    if (s.r_serial == serial && s.r_bep == bep) {
      if (s.r_warp == warp) {
        if (wep > s.r_wep) {
          s.r_wep = wep;
          s.r_tid = static_cast<uint16_t>(tid);
        } else if (wep == s.r_wep && s.r_tid != tid) {
          s.r_tid = kMulti;
        }
      } else {
        s.r_warp = kMulti;
      }
    } else {
      s.r_serial = serial;
      s.r_bep = bep;
      s.r_wep = wep;
      s.r_warp = static_cast<uint16_t>(warp);
      s.r_tid = static_cast<uint16_t>(tid);
    }
    if (!shared) {
      if (s.rl_serial < g_launch_first) {
        s.rl_serial = serial;
        s.rl_multi = 0;
      } else if (s.rl_serial != serial) {
        s.rl_multi = 1;
      }
    }
    return;
  }
  if (s.w_serial == serial) {
    if (s.w_bep == bep && unordered(s.w_tid, s.w_wep, tid, warp, wep))
      race("two writes in the same barrier interval", a, s.w_tid);
  } else if (!shared && s.w_serial >= g_launch_first) {
    race("write to data another block wrote in this launch", a, s.w_tid);
  }
  if (s.r_serial == serial && s.r_bep == bep &&
      (s.r_warp != warp || (s.r_wep == wep && s.r_tid != tid)))
    race("write after another thread's read in the same barrier interval", a,
         s.r_tid == kMulti ? -1 : s.r_tid);
  if (!shared && s.rl_serial >= g_launch_first && (s.rl_serial != serial || s.rl_multi))
    race("write to data another block read in this launch", a, -1);
  s.w_serial = serial;
  s.w_bep = bep;
  s.w_wep = wep;
  s.w_tid = static_cast<uint16_t>(tid);
  s.written = 1;
}

// Checks one access of thread tid; false when the address is outside the emulated memories
// (the host's own stack or heap: the kernel's locals and parameters) and not checked.
bool on_access(uintptr_t a, size_t n, bool write, uintptr_t pc, int tid) {
  Shadow* sh;
  bool shared;
  uintptr_t off;
  char buf[160];
  if (a - reinterpret_cast<uintptr_t>(g_shared_arena) < kSharedArena) {
    shared = true;
    if (a < g_smem_base || a + n > g_smem_base + g_smem_bytes) {
      finding(g_findings.out_of_bounds, "out-of-bounds %zu-byte %s at %s", n, write ? "write" : "read",
              describe(a, buf, sizeof buf));
      return true;
    }
    off = a - g_smem_base;
    sh = g_sshadow.data();
  } else if (a - reinterpret_cast<uintptr_t>(g_arena) < kArenaBytes) {
    shared = false;
    const int owner = g_page_owner[(a - reinterpret_cast<uintptr_t>(g_arena)) / kPage];
    Alloc* al = owner >= 0 ? &g_allocs[owner] : nullptr;
    if (!al || a < al->begin || a + n > al->end) {
      finding(g_findings.out_of_bounds, "out-of-bounds %zu-byte %s at %s", n, write ? "write" : "read",
              describe(a, buf, sizeof buf));
      return true;
    }
    if (write && al->read_only)
      finding(g_findings.read_only_writes, "write to input %s", describe(a, buf, sizeof buf));
    off = a - al->begin;
    sh = al->shadow.data();
  } else {
    return false;
  }
  for (uintptr_t g = off >> 1; g <= (off + n - 1) >> 1; ++g) update(sh[g], a, write, shared, tid);
  if (g_profiling && pc) {
    WarpState& w = g_warps[tid >> 5];
    const uint32_t seq = w.seq[(static_cast<uint64_t>(pc) << 6) | (write << 5) | (tid & 31)]++;
    w.recs.push_back({pc, a, seq, static_cast<uint8_t>(tid & 31),
                      static_cast<uint8_t>(n), shared});
  }
  return true;
}

// ---- fibers and scheduling -----------------------------------------------------------------
[[noreturn]] void fiber_main();

void yield() {
  g_in_kernel = false;
  emu_ctx_switch(&g_fibers[g_cur].sp, g_sched_sp);
  g_in_kernel = true;
}

void set_thread_index(int t) {
  threadIdx = {static_cast<unsigned>(t) % blockDim.x, static_cast<unsigned>(t) / blockDim.x % blockDim.y,
               static_cast<unsigned>(t) / (blockDim.x * blockDim.y)};
}

void release_barrier() {
  flush_all_warps();
  ++g_bep;
  g_bar_waiting = 0;
  if (g_prof) ++g_prof->barriers;
  for (Fiber& f : g_fibers)
    if (f.st == St::kBarrier) f.st = St::kRunnable;
}

[[noreturn]] void fiber_main() {
  g_in_kernel = true;
  g_body->run(g_body->self);
  g_fibers[g_cur].st = St::kDone;
  --g_alive;
  if (g_warps[g_cur >> 5].arrived > 0)
    finding(g_findings.sync_errors, "thread exited while its warp waits in a warp-wide operation");
  if (g_bar_waiting > 0) {
    finding(g_findings.sync_errors, "thread exited while %d threads wait at __syncthreads()",
            g_bar_waiting);
    if (g_bar_waiting == g_alive) release_barrier();
  }
  g_in_kernel = false;
  void* dead;
  emu_ctx_switch(&dead, g_sched_sp);
  __builtin_unreachable();
}

void prepare_fibers(int n) {
  if (static_cast<size_t>(n) > g_stack_count) {
    if (g_stacks) munmap(g_stacks, g_stack_count * kStackBytes);
    g_stacks = map_region(static_cast<size_t>(n) * kStackBytes);
    for (int t = 0; t < n; ++t) mprotect(g_stacks + t * kStackBytes, 4096, PROT_NONE);  // guard
    g_stack_count = static_cast<size_t>(n);
  }
  g_fibers.assign(n, Fiber{});
  for (int t = 0; t < n; ++t) {
    auto* top = reinterpret_cast<uintptr_t*>(g_stacks + (t + 1) * kStackBytes);
    top[-1] = 0;                                          // fake return address of fiber_main
    top[-2] = reinterpret_cast<uintptr_t>(&fiber_main);  // where emu_ctx_switch returns to
    for (int r = 3; r <= 8; ++r) top[-r] = 0;             // rbp rbx r12 r13 r14 r15
    g_fibers[t].sp = top - 8;
    g_fibers[t].st = St::kRunnable;
  }
}

void run_block(int nthreads) {
  ++g_serial;
  g_bep = 0;
  g_alive = nthreads;
  g_bar_waiting = 0;
  g_deadlock = false;
  prepare_fibers(nthreads);
  for (WarpState& w : g_warps) {
    w.arrived = 0;
    w.recs.clear();
    w.seq.clear();
  }
  std::memset(reinterpret_cast<void*>(g_smem_base), 0xff, g_smem_bytes);
  for (;;) {
    bool ran = false;
    for (int t = 0; t < nthreads; ++t) {
      if (g_fibers[t].st != St::kRunnable) continue;
      g_cur = t;
      set_thread_index(t);
      emu_ctx_switch(&g_sched_sp, g_fibers[t].sp);
      ran = true;
    }
    if (g_alive == 0) break;
    if (!ran) {
      int bar = 0, warp = 0;
      for (const Fiber& f : g_fibers) {
        bar += f.st == St::kBarrier;
        warp += f.st == St::kWarp;
      }
      g_cur = -1;
      finding(g_findings.sync_errors,
              "deadlock in block (%u,%u,%u): %d threads at __syncthreads(), %d in warp-wide "
              "operations, %d exited",
              blockIdx.x, blockIdx.y, blockIdx.z, bar, warp, nthreads - g_alive);
      g_deadlock = true;
      break;
    }
  }
  flush_all_warps();
  g_cur = -1;
}

// ---- warp rendezvous -----------------------------------------------------------------------
bool check_warp_call() {
  if (blockDim.x * blockDim.y * blockDim.z % 32 != 0) {
    finding(g_findings.sync_errors, "warp-wide operation in a block that is not a whole number of warps");
    return false;
  }
  return true;
}

void wmma_execute(WarpState& w, int warp);
void shfl_execute(WarpState& w);

// The calling lane's slot is filled; returns once all 32 lanes arrived and the last one ran op.
void rendezvous(WarpState& w, int warp) {
  if (++w.arrived < 32) {
    g_fibers[g_cur].st = St::kWarp;
    yield();
    return;
  }
  if (g_profiling) flush_warp(w);
  const LaneCall& c0 = w.calls[0];
  bool same = true;
  for (const LaneCall& c : w.calls) same = same && c.op == c0.op && c.mask == c0.mask;
  if (!same)
    finding(g_findings.sync_errors, "lanes of warp %d meet in different warp-wide operations", warp);
  else if (c0.mask != 0xffffffffu)
    finding(g_findings.sync_errors, "partial-warp mask %#x is not emulated", c0.mask);
  else if (c0.op == kOpSyncwarp) {
    ++w.wep;
  } else if (c0.op == kOpShfl) {
    shfl_execute(w);
  } else {
    wmma_execute(w, warp);
  }
  w.arrived = 0;
  for (int l = 0; l < 32; ++l)
    if (warp * 32 + l != g_cur && g_fibers[warp * 32 + l].st == St::kWarp)
      g_fibers[warp * 32 + l].st = St::kRunnable;
}

LaneCall& lane_call(int op, unsigned mask) {
  WarpState& w = g_warps[g_cur >> 5];
  LaneCall& c = w.calls[g_cur & 31];
  c = LaneCall{};
  c.op = op;
  c.mask = mask;
  return c;
}

void shfl_execute(WarpState& w) {
  const LaneCall& c0 = w.calls[0];
  std::array<uint32_t, 32> out;
  for (int l = 0; l < 32; ++l) {
    const LaneCall& c = w.calls[l];
    if (c.width != c0.width) finding(g_findings.sync_errors, "lanes shuffle with different widths");
    const int seg = l & ~(c.width - 1), src = l ^ c.lane_arg;
    out[l] = w.calls[src >= seg && src < seg + c.width ? src : l].value;
  }
  for (int l = 0; l < 32; ++l) w.calls[l].value = out[l];
}

// ---- WMMA ----------------------------------------------------------------------------------
int elem_bytes(const FragInfo& f) { return f.kind == kF16 || f.kind == kBF16 ? 2 : 4; }

float elem_value(const FragInfo& f, const void* x, int e) {
  const auto* b = static_cast<const unsigned char*>(x) + e * elem_bytes(f);
  uint16_t h;
  uint32_t u;
  switch (f.kind) {
    case kF16: std::memcpy(&h, b, 2); return half_bits_to_float(h);
    case kBF16: std::memcpy(&h, b, 2); return bf16_bits_to_float(h);
    case kTF32: std::memcpy(&u, b, 4); return bits_float(u & 0xffffe000u);  // the MMA reads 19 bits
    default: std::memcpy(&u, b, 4); return bits_float(u);
  }
}

// Slot e*32 + lane of a fragment holds operand element map[slot] (row * cols + col).
const std::vector<int>& slot_map(const FragInfo& f) {
  static std::map<int, std::vector<int>> maps;
  auto it = maps.find(f.id);
  if (it != maps.end()) return it->second;
  const int positions = f.rows * f.cols, slots = 32 * f.elements;
  std::vector<int> m(slots);
  for (int s = 0; s < slots; ++s) m[s] = s % positions;
  uint64_t state = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(f.id + 1);
  for (int s = slots - 1; s > 0; --s) {  // Fisher-Yates with a fixed xorshift stream
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::swap(m[s], m[static_cast<int>(state % static_cast<uint64_t>(s + 1))]);
  }
  return maps.emplace(f.id, std::move(m)).first->second;
}

// Bank model of one WMMA load/store, after the instructions nvcc emits for sm_80/sm_90 (the
// mma.sync fragment layouts): 16-bit A/B fragments by ldmatrix.x4 (four phases of eight 16-byte
// rows), fp32 accumulators by 64-bit accesses (row-major) or 32-bit ones (column-major), tf32
// A/B elements by 32-bit accesses.
void profile_fragment_access(const FragInfo& f, uintptr_t p, unsigned ldm, int layout) {
  if (!g_prof) return;
  const int es = elem_bytes(f);
  auto addr = [&](int r, int c) { return p + static_cast<uintptr_t>(layout ? c * ldm + r : r * ldm + c) * es; };
  std::vector<Access> req;
  if (f.use != 2 && es == 2) {
    for (int rb = 0; rb < 16; rb += 8)
      for (int hb = 0; hb < 16; hb += 8) {
        req.clear();
        for (int i = 0; i < 8; ++i) {  // memory line rb+i, 8 elements from hb
          const uintptr_t line = p + static_cast<uintptr_t>((rb + i) * ldm + hb) * es;
          req.push_back({i, line, 16});
        }
        count_shared(req, 1);
      }
    return;
  }
  const bool acc = f.use == 2;
  const int blocks = acc ? 2 : 1;  // n8 halves of a 16x16 accumulator
  for (int nb = 0; nb < blocks; ++nb)
    for (int part = 0; part < 4; ++part) {
      req.clear();
      for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t = l & 3;
        if (acc) {
          if (part >= 2) break;
          const int r = g + 8 * part, c = 8 * nb + 2 * t;
          if (layout == 0) {
            req.push_back({l, addr(r, c), 8});
          } else {
            req.push_back({l, addr(r, c), 4});
          }
        } else if (f.use == 0) {  // tf32 A (16 x 8): (g, t), (g+8, t), (g, t+4), (g+8, t+4)
          req.push_back({l, addr(g + 8 * (part & 1), t + 4 * (part >> 1)), 4});
        } else {  // tf32 B (8 x 16): (t, g), (t+4, g), (t, g+8), (t+4, g+8)
          req.push_back({l, addr(t + 4 * (part & 1), g + 8 * (part >> 1)), 4});
        }
      }
      count_shared(req, acc ? 2 : 3);
      if (acc && layout != 0 && part < 2) {  // the second element of each column-major pair
        for (Access& a : req) a.addr += static_cast<uintptr_t>(ldm) * es;
        count_shared(req, 2);
      }
    }
}

void wmma_memory(WarpState& w, int warp, bool store) {
  const LaneCall& c0 = w.calls[0];
  const FragInfo& f = *c0.f[0];
  for (const LaneCall& c : w.calls)
    if (c.f[0]->id != f.id || c.p != c0.p || c.ldm != c0.ldm || c.layout != c0.layout) {
      finding(g_findings.wmma_errors, "lanes of warp %d pass different WMMA %s arguments", warp,
              store ? "store" : "load");
      return;
    }
  const int es = elem_bytes(f);
  const auto p = reinterpret_cast<uintptr_t>(c0.p);
  if (p % 32 != 0)
    finding(g_findings.wmma_errors, "WMMA %s pointer %#zx is not 256-bit aligned", store ? "store" : "load",
            static_cast<size_t>(p));
  if (c0.ldm * es % 16 != 0)
    finding(g_findings.wmma_errors, "WMMA %s ldm %u is not a multiple of 16 bytes", store ? "store" : "load",
            c0.ldm);
  const unsigned line = c0.layout ? f.rows : f.cols;
  if (c0.ldm < line)
    finding(g_findings.wmma_errors, "WMMA %s ldm %u is shorter than a fragment line (%u)",
            store ? "store" : "load", c0.ldm, line);
  const std::vector<int>& map = slot_map(f);
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < f.elements; ++e) {
      const int pos = map[e * 32 + l], r = pos / f.cols, c = pos % f.cols;
      const uintptr_t a = p + static_cast<uintptr_t>(c0.layout ? c * c0.ldm + r : r * c0.ldm + c) * es;
      auto* x = static_cast<unsigned char*>(w.calls[l].x[0]) + e * es;
      on_access(a, es, store, 0, warp * 32 + l);
      if (store)
        std::memcpy(reinterpret_cast<void*>(a), x, es);
      else
        std::memcpy(x, reinterpret_cast<const void*>(a), es);
    }
  profile_fragment_access(f, p, c0.ldm, c0.layout);
}

// Tensor-core accumulation model (set_tensor_core_model): c + n exact products, either summed
// in fp32 with round-to-nearest, or as measured by Fasi et al. (2021) on V100/A100 tensor
// cores: the addends are aligned to the largest one keeping `guard` bits below its fp32
// precision (the rest is truncated), summed, and rounded toward zero.
int g_tc_guard = 0;  // < 0: round to nearest

int exponent_of(double x) {
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return static_cast<int>((u >> 52) & 0x7ff);  // biased; products of floats are never subnormal here
}

float fused_sum(float c, const float* a, int sa, const float* b, int sb, int n) {
  if (g_tc_guard < 0) {
    for (int k = 0; k < n; ++k) c += a[k * sa] * b[k * sb];
    return c;
  }
  double terms[17];
  terms[0] = c;
  int emax = c != 0.f ? exponent_of(c) : 0;
  for (int k = 0; k < n; ++k) {
    terms[k + 1] = static_cast<double>(a[k * sa]) * b[k * sb];  // exact
    if (terms[k + 1] != 0) emax = std::max(emax, exponent_of(terms[k + 1]));
  }
  if (emax == 0) return 0.f;
  // Units of 2^(e - 23 - guard), e the unbiased exponent of the largest addend.
  const int shift = 23 + g_tc_guard - (emax - 1023);
  auto pow2 = [](int e) {
    const uint64_t u = static_cast<uint64_t>(e + 1023) << 52;
    double x;
    std::memcpy(&x, &u, 8);
    return x;
  };
  const double up = pow2(shift);
  int64_t sum = 0;
  for (int k = 0; k <= n; ++k) sum += static_cast<int64_t>(terms[k] * up);  // truncates
  const double exact = static_cast<double>(sum) * pow2(-shift);
  float r = static_cast<float>(exact);
  if (std::fabs(static_cast<double>(r)) > std::fabs(exact)) r = std::nextafter(r, 0.f);
  return r;
}

// The operand of fragment slot x of every lane, as floats; replicated elements must agree.
void gather(const WarpState& w, int which, int warp, float* m) {
  const FragInfo& f = *w.calls[0].f[which];
  bool seen[256] = {};
  const std::vector<int>& map = slot_map(f);
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < f.elements; ++e) {
      const int pos = map[e * 32 + l];
      const float v = elem_value(f, w.calls[l].x[which], e);
      if (seen[pos] && float_bits(m[pos]) != float_bits(v))
        finding(g_findings.wmma_errors,
                "warp %d: lanes hold different values for one fragment element (lane-dependent "
                "element code?)", warp);
      m[pos] = v;
      seen[pos] = true;
    }
}

void wmma_execute(WarpState& w, int warp) {
  const LaneCall& c0 = w.calls[0];
  if (c0.op == kOpLoad || c0.op == kOpStore) {
    wmma_memory(w, warp, c0.op == kOpStore);
    return;
  }
  for (const LaneCall& c : w.calls)
    for (int i = 0; i < 4; ++i)
      if (c.f[i]->id != c0.f[i]->id) {
        finding(g_findings.wmma_errors, "lanes of warp %d pass different fragment types to mma_sync", warp);
        return;
      }
  const FragInfo &fd = *c0.f[0], &fa = *c0.f[1];
  const int M = fa.rows, K = fa.cols, N = fd.cols;
  float A[256], B[256], C[256];
  gather(w, 1, warp, A);
  gather(w, 2, warp, B);
  gather(w, 3, warp, C);
  float D[256];
  const int group = fa.kind == kTF32 ? 4 : 8;  // products per tensor-core step
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc = C[m * N + n];
      for (int k0 = 0; k0 < K; k0 += group) acc = fused_sum(acc, &A[m * K + k0], 1, &B[k0 * N + n], N, group);
      D[m * N + n] = acc;
    }
  const std::vector<int>& map = slot_map(fd);
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < fd.elements; ++e) static_cast<float*>(w.calls[l].x[0])[e] = D[map[e * 32 + l]];
  if (g_prof) (fa.kind == kTF32 ? g_prof->tc_fma_tf32 : g_prof->tc_fma_16bit) += static_cast<long>(M) * N * K;
}

void warp_op() {
  if (check_warp_call()) rendezvous(g_warps[g_cur >> 5], g_cur >> 5);
}

}  // namespace

// ---- device-side entry points (emu_cuda.h) -------------------------------------------------
void syncthreads() {
  g_fibers[g_cur].st = St::kBarrier;
  if (++g_bar_waiting == g_alive) {
    release_barrier();
    return;
  }
  yield();
}

void syncwarp(unsigned mask) {
  lane_call(kOpSyncwarp, mask);
  warp_op();
}

uint32_t shfl_xor(unsigned mask, uint32_t value, int lane_mask, int width) {
  LaneCall& c = lane_call(kOpShfl, mask);
  c.value = value;
  c.lane_arg = lane_mask;
  c.width = width;
  warp_op();
  return g_warps[g_cur >> 5].calls[g_cur & 31].value;
}

void wmma_load(const FragInfo& f, void* x, const void* p, unsigned ldm, int layout) {
  LaneCall& c = lane_call(kOpLoad, 0xffffffffu);
  c.f[0] = &f;
  c.x[0] = x;
  c.p = p;
  c.ldm = ldm;
  c.layout = layout;
  warp_op();
}

void wmma_store(const FragInfo& f, void* p, const void* x, unsigned ldm, int layout) {
  LaneCall& c = lane_call(kOpStore, 0xffffffffu);
  c.f[0] = &f;
  c.x[0] = const_cast<void*>(x);
  c.p = p;
  c.ldm = ldm;
  c.layout = layout;
  warp_op();
}

void wmma_mma(const FragInfo& fd, void* d, const FragInfo& fa, const void* a, const FragInfo& fb,
              const void* b, const FragInfo& fc, const void* c) {
  LaneCall& call = lane_call(kOpMma, 0xffffffffu);
  call.f[0] = &fd;
  call.f[1] = &fa;
  call.f[2] = &fb;
  call.f[3] = &fc;
  call.x[0] = d;
  call.x[1] = const_cast<void*>(a);
  call.x[2] = const_cast<void*>(b);
  call.x[3] = const_cast<void*>(c);
  warp_op();
}

unsigned char* dynamic_shared() { return reinterpret_cast<unsigned char*>(g_smem_base); }

cudaError_t set_max_dynamic_smem(const void* kernel, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > g_device_smem) return g_last_error = cudaErrorInvalidValue;
  g_smem_attr[kernel] = bytes;
  return cudaSuccess;
}

cudaError_t take_last_error() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}

const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "unspecified launch failure";
  }
}

void launch(const LaunchConfig& cfg, const void* kernel, const char* type_label, KernelBody body) {
  init_memory();
  g_label = std::string(cfg.name) + (type_label[0] ? std::string(" ") + type_label : "");
  g_cur = -1;
  const int threads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  const auto attr = g_smem_attr.find(kernel);
  const size_t smem_limit = attr == g_smem_attr.end() ? kDefaultSmem : static_cast<size_t>(attr->second);
  if (threads <= 0 || threads > 1024 || cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0 ||
      cfg.grid.y > 65535 || cfg.grid.z > 65535 || cfg.grid.x > 0x7fffffffu) {
    finding(g_findings.launch_errors, "invalid launch configuration");
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (cfg.smem > smem_limit) {
    finding(g_findings.launch_errors, "launch with %zu bytes of dynamic shared memory, %zu allowed",
            cfg.smem, smem_limit);
    g_last_error = cudaErrorInvalidValue;
    return;
  }
  if (g_profiling) {
    g_prof = &g_profiles[g_label];
    g_prof->name = g_label;
    g_prof->smem_bytes = cfg.smem;
    g_prof->blocks += static_cast<long>(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  }
  g_smem_bytes = cfg.smem;
  g_sshadow.assign((cfg.smem + 1) / 2, Shadow{});
  g_warps.assign((threads + 31) / 32, WarpState{});
  g_body = &body;
  gridDim = cfg.grid;
  blockDim = cfg.block;
  g_launch_first = g_serial + 1;
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040);  // flush-to-zero and denormals-are-zero, as -ftz=true
  bool failed = false;
  for (unsigned z = 0; z < cfg.grid.z && !failed; ++z)
    for (unsigned y = 0; y < cfg.grid.y && !failed; ++y)
      for (unsigned x = 0; x < cfg.grid.x && !failed; ++x) {
        blockIdx = {x, y, z};
        run_block(threads);
        failed = g_deadlock;
      }
  _mm_setcsr(csr);
  if (failed) g_last_error = cudaErrorLaunchFailure;
  g_prof = nullptr;
  g_body = nullptr;
}

// ---- host API (emu_host.h) -----------------------------------------------------------------
void set_device_smem_limit(size_t bytes) { g_device_smem = bytes; }
void set_tensor_core_model(int guard_bits) { g_tc_guard = guard_bits; }
size_t device_smem_limit() { return g_device_smem; }

void* device_alloc(size_t bytes, const char* name, bool read_only) {
  init_memory();
  const size_t begin = (g_arena_used + kPage + 255) / 256 * 256;  // a page-sized gap before
  if (begin + bytes + kPage > kArenaBytes) {
    std::fprintf(stderr, "emu: device arena exhausted\n");
    std::abort();
  }
  g_arena_used = begin + bytes;
  const auto b = reinterpret_cast<uintptr_t>(g_arena) + begin;
  g_allocs.push_back({b, b + bytes, name, read_only, std::vector<Shadow>((bytes + 1) / 2)});
  for (size_t pg = begin / kPage; pg <= (begin + (bytes ? bytes - 1 : 0)) / kPage; ++pg)
    g_page_owner[pg] = static_cast<int>(g_allocs.size() - 1);
  std::memset(g_arena + begin, 0xff, bytes);
  return g_arena + begin;
}

void upload(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
  const auto a = reinterpret_cast<uintptr_t>(dst);
  for (Alloc& al : g_allocs)
    if (a >= al.begin && a + bytes <= al.end)
      for (size_t g = (a - al.begin) / 2; g <= (a - al.begin + bytes - 1) / 2; ++g) al.shadow[g].written = 1;
}

void device_free_all() {
  for (const Alloc& al : g_allocs) {
    const size_t begin = al.begin - reinterpret_cast<uintptr_t>(g_arena);
    for (size_t pg = begin / kPage; pg <= (begin + al.end - al.begin) / kPage; ++pg) g_page_owner[pg] = -1;
  }
  g_allocs.clear();
  g_arena_used = 0;
  madvise(g_arena, kArenaBytes, MADV_DONTNEED);
}

Findings findings() { return g_findings; }
void set_profiling(bool on) { g_profiling = on; }
void reset_profiles() {
  g_profiles.clear();
  g_sites.clear();
}
std::vector<KernelProfile> profiles() {
  std::vector<KernelProfile> v;
  for (auto& [k, p] : g_profiles) {
    v.push_back(p);
    for (auto& [where, c] : g_sites[k]) v.back().conflicts.push_back({where, c.requests, c.extra});
  }
  return v;
}

}  // namespace emu

// ---- instrumentation callbacks (g++ -fsanitize=kernel-address, outline calls) --------------
#define EMU_CALLBACKS(n)                                                                          \
  extern "C" void __asan_load##n##_noabort(uintptr_t a) {                                         \
    if (emu::g_in_kernel)                                                                         \
      emu::on_access(a, n, false, reinterpret_cast<uintptr_t>(__builtin_return_address(0)),       \
                     emu::g_cur);                                                                 \
  }                                                                                               \
  extern "C" void __asan_store##n##_noabort(uintptr_t a) {                                        \
    if (emu::g_in_kernel)                                                                         \
      emu::on_access(a, n, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)),        \
                     emu::g_cur);                                                                 \
  }
EMU_CALLBACKS(1)
EMU_CALLBACKS(2)
EMU_CALLBACKS(4)
EMU_CALLBACKS(8)
EMU_CALLBACKS(16)
extern "C" void __asan_loadN_noabort(uintptr_t a, size_t n) {
  if (emu::g_in_kernel && n)
    emu::on_access(a, n, false, reinterpret_cast<uintptr_t>(__builtin_return_address(0)), emu::g_cur);
}
extern "C" void __asan_storeN_noabort(uintptr_t a, size_t n) {
  if (emu::g_in_kernel && n)
    emu::on_access(a, n, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)), emu::g_cur);
}
extern "C" void __asan_handle_no_return() {}
