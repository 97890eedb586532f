// CPU emulation of the CUDA device constructs used by csrc/cuda/wmca_kernels.cu.
//
// The kernels' own source is compiled by g++ against this header (through the include/ shims
// cuda_runtime.h, cuda_fp16.h, cuda_bf16.h, mma.h). Every thread of a block is a fiber; block-wide
// and warp-wide synchronisation, warp shuffles and WMMA operations are real rendezvous between
// those fibers (emu_runtime.cpp), and every memory access of the kernel code is reported to the
// checker (race, bounds and initialisation checks) by g++'s address-sanitizer instrumentation.
// Two syntaxes that no C++ compiler parses are rewritten before compiling (see the Makefile
// target cuda-emulation): `kernel<<<grid, block, smem, stream>>>(args)` and
// `extern __shared__ ... name[];`.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers ----------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Only dynamic shared memory (`extern __shared__`, rewritten to emu::dynamic_shared()) exists here.
#define __shared__ static_shared_memory_is_not_emulated

// ---- built-in variables --------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
// Set by the scheduler before it resumes a fiber (only one fiber runs at a time).
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---- vector types --------------------------------------------------------------------------
// Each holds one g++ vector, so that a copy is one 8- or 16-byte access, as LDG/STS.64/.128.
struct uint2 {
  union {
    unsigned __attribute__((vector_size(8))) v;
    struct { unsigned x, y; };
  };
};
struct uint4 {
  union {
    unsigned __attribute__((vector_size(16))) v;
    struct { unsigned x, y, z, w; };
  };
};
struct float4 {
  union {
    float __attribute__((vector_size(16))) v;
    struct { float x, y, z, w; };
  };
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  uint4 r;
  r.v = decltype(r.v){x, y, z, w};
  return r;
}
inline float4 make_float4(float x, float y, float z, float w) {
  float4 r;
  r.v = decltype(r.v){x, y, z, w};
  return r;
}

// ---- runtime API subset --------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 719,
  cudaErrorInvalidConfiguration = 9,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace emu {
cudaError_t set_max_dynamic_smem(const void* kernel, int bytes);
cudaError_t take_last_error();
const char* error_string(cudaError_t e);
}  // namespace emu

template <class Kernel>
inline cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
}
inline cudaError_t cudaGetLastError() { return emu::take_last_error(); }
inline const char* cudaGetErrorString(cudaError_t e) { return emu::error_string(e); }

// ---- 16-bit floating types (round to nearest even, as __float2half_rn / __float2bfloat16_rn) --
struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };

namespace emu {
inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f), sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return static_cast<uint16_t>(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (a < 0x38800000u) {  // half subnormal: multiples of 2^-24, rounded to nearest even
    const float scaled = bits_float(a) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
  const uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7fc0u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}
inline float bf16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }
}  // namespace emu

inline __half __float2half_rn(float f) { return {emu::float_to_half_bits(f)}; }
inline float __half2float(__half h) { return emu::half_bits_to_float(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {emu::float_to_bf16_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return emu::bf16_bits_to_float(b.bits); }

// ---- math --------------------------------------------------------------------------------
// The kernels are built with --use_fast_math: __expf is ex2.approx(x * log2(e)); the fp32
// product is rounded as on the GPU, ex2 itself is computed exactly here. Denormals are flushed
// (FTZ/DAZ) while kernels run, as with -ftz=true.
inline float __expf(float x) { return std::exp2(x * 1.44269504088896341f); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// ---- synchronisation and warp shuffles -----------------------------------------------------
// Out of line (emu_runtime.cpp): each may switch to another fiber.
namespace emu {
void syncthreads();
void syncwarp(unsigned mask);
uint32_t shfl_xor(unsigned mask, uint32_t value, int lane_mask, int width);
}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::syncwarp(mask); }
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) == 4, "emulated shuffles move 32-bit values");
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = emu::shfl_xor(mask, u, lane_mask, width);
  std::memcpy(&v, &u, 4);
  return v;
}

// ---- WMMA ----------------------------------------------------------------------------------
// Fragments hold what nvcuda::wmma's hold per lane (num_elements as in CUDA's mma.h, fp16 A/B
// elements held by two lanes each), but the element-to-lane mapping is a fixed pseudo-random
// permutation per fragment type: code that depends on the undocumented mapping computes wrong
// results here. Loads/stores check the 256-bit pointer alignment and ldm (a multiple of 16 bytes)
// rules; all 32 lanes must take part with the same arguments.
namespace emu {
enum ElemKind : int { kF16, kBF16, kF32, kTF32 };
struct FragInfo {
  int use;         // 0 matrix_a, 1 matrix_b, 2 accumulator
  int rows, cols;  // the operand: A is M x K, B is K x N, C is M x N
  int elements;    // per lane
  ElemKind kind;
  int layout;      // 0 row_major, 1 col_major, -1 accumulator (layout given per load/store)
  int id;          // distinct per fragment type (selects the element-to-lane permutation)
};
void wmma_load(const FragInfo& f, void* x, const void* p, unsigned ldm, int layout);
void wmma_store(const FragInfo& f, void* p, const void* x, unsigned ldm, int layout);
void wmma_mma(const FragInfo& fd, void* d, const FragInfo& fa, const void* a, const FragInfo& fb,
              const void* b, const FragInfo& fc, const void* c);
}  // namespace emu

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class T> constexpr emu::ElemKind kind() {
  if constexpr (std::is_same_v<T, __half>) return emu::kF16;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return emu::kBF16;
  else if constexpr (std::is_same_v<T, precision::tf32>) return emu::kTF32;
  else { static_assert(std::is_same_v<T, float>, "fragment type not emulated"); return emu::kF32; }
}
template <class T> using storage_t = std::conditional_t<std::is_same_v<T, precision::tf32>, float, T>;
template <class Use, int M, int N, int K, class T> constexpr int elements() {
  static_assert((M == 16 && N == 16 && (K == 16 || K == 8)), "only m16n16k16 and m16n16k8 are emulated");
  if constexpr (std::is_same_v<Use, accumulator>) return 8;
  else if constexpr (std::is_same_v<T, precision::tf32>) return 4;  // m16n16k8
  else if constexpr (std::is_same_v<T, __half>) return 16;          // held by two lanes each
  else return 8;
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using element_type = detail::storage_t<T>;
  using storage_element_type = element_type;
  static constexpr int num_elements = detail::elements<Use, M, N, K, T>();
  element_type x[num_elements];
  static constexpr emu::FragInfo info{
      std::is_same_v<Use, matrix_a> ? 0 : std::is_same_v<Use, matrix_b> ? 1 : 2,
      std::is_same_v<Use, matrix_b> ? K : M,
      std::is_same_v<Use, matrix_a> ? K : N,
      num_elements,
      detail::kind<T>(),
      std::is_same_v<Layout, row_major> ? 0 : std::is_same_v<Layout, col_major> ? 1 : -1,
      (std::is_same_v<Use, matrix_a> ? 0 : std::is_same_v<Use, matrix_b> ? 1 : 2) * 64 +
          static_cast<int>(detail::kind<T>()) * 8 +
          (std::is_same_v<Layout, row_major> ? 0 : std::is_same_v<Layout, col_major> ? 1 : 2) * 2 +
          (K == 8 ? 1 : 0)};
};

template <class Use, int M, int N, int K, class T, class Layout, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& v) {
  for (auto& e : f.x) e = static_cast<typename fragment<Use, M, N, K, T, Layout>::element_type>(v);
}
template <class Use, int M, int N, int K, class T, class Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const detail::storage_t<T>* p,
                             unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout");
  emu::wmma_load(f.info, f.x, p, ldm, f.info.layout);
}
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm,
                             layout_t layout) {
  emu::wmma_load(f.info, f.x, p, ldm, layout == mem_col_major);
}
template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                              layout_t layout) {
  emu::wmma_store(f.info, p, f.x, ldm, layout == mem_col_major);
}
template <int M, int N, int K, class TA, class LA, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b,
                     const fragment<accumulator, M, N, K, TC>& c) {
  emu::wmma_mma(d.info, d.x, a.info, a.x, b.info, b.x, c.info, c.x);
}
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 explicit mantissa bits.
inline float __float_to_tf32(float in) {
  const uint32_t u = emu::float_bits(in);
  if ((u & 0x7f800000u) == 0x7f800000u) return in;
  return emu::bits_float((u + 0x1000u) & 0xffffe000u);
}
}  // namespace nvcuda::wmma

// ---- dynamic shared memory and launches ----------------------------------------------------
namespace emu {
unsigned char* dynamic_shared();

struct LaunchConfig {
  const char* name;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
inline LaunchConfig launch_config(const char* name, dim3 grid, dim3 block, size_t smem = 0,
                                  cudaStream_t stream = nullptr) {
  return {name, grid, block, smem, stream};
}

// Runs `body` for every thread of every block (the launch is synchronous here).
struct KernelBody {
  void (*run)(const void* self);
  const void* self;
};
void launch(const LaunchConfig& cfg, const void* kernel, const char* type_label, KernelBody body);

template <class T> constexpr const char* type_label() {
  using U = std::remove_cv_t<std::remove_pointer_t<T>>;
  if constexpr (std::is_same_v<U, __half>) return "half";
  else if constexpr (std::is_same_v<U, __nv_bfloat16>) return "bf16";
  else if constexpr (std::is_same_v<U, float>) return "fp32";
  else return "";
}

template <class... Params> struct Bound {
  void (*kernel)(Params...);
  LaunchConfig cfg;
};
template <class... Args> struct ArgPack { std::tuple<std::decay_t<Args>...> args; };
template <class... Args> ArgPack<Args...> launch_args(Args&&... a) {
  return {std::tuple<std::decay_t<Args>...>(std::forward<Args>(a)...)};
}
template <class... Params> Bound<Params...> operator|(void (*kernel)(Params...), LaunchConfig cfg) {
  return {kernel, cfg};
}
template <class... Params, class... Args>
void operator|(const Bound<Params...>& b, ArgPack<Args...>&& pack) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel launched with a wrong argument count");
  struct Call {
    void (*kernel)(Params...);
    std::tuple<Params...> params;
    static void run(const void* self) {
      const Call* c = static_cast<const Call*>(self);
      std::apply(c->kernel, c->params);  // copies the parameters onto this thread's stack
    }
  };
  const Call call{b.kernel, std::apply([](auto&&... a) { return std::tuple<Params...>(a...); }, pack.args)};
  using First = std::tuple_element_t<0, std::tuple<Params...>>;
  launch(b.cfg, reinterpret_cast<const void*>(b.kernel), type_label<First>(), {&Call::run, &call});
}
}  // namespace emu
