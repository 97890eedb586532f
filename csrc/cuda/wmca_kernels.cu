// CUDA W-MCSA kernels, torch-free. A block of 4 warps owns a 64-row tile (queries, or keys for
// dK/dV); each warp owns 16 of its rows and computes every product on tensor cores through WMMA:
// fp16/bf16 as m16n16k16 with fp32 accumulation, fp32 as 3xTF32 (each operand split into a tf32
// part and a tf32 residual, three products; within the fp32 error policy in the CPU emulation of
// tests/cuda_emulation). Operand tiles are staged in shared memory (zero padded to 64 rows and to
// DP = 16*NT columns).
//
// forward: block (query tile, head, window): S^T = K Q^T per key tile, online softmax per query
//   (a column of S^T, owned by 4 lanes), O^T += V^T P^T.
// backward: di = rowsum(dout * out); block (key tile, head, window) accumulates dK, dV over the
//   query tiles; block (query tile, head, image) accumulates dQ over windows and key tiles and a
//   partial table gradient: thread t walks diagonal t of each 64x64 dS tile, whose elements fall
//   into two table bins that no other diagonal reaches (no atomics); a parallel fixed-order
//   reduction then sums the partial tables. Every result is bitwise deterministic.
//
// Bank conflicts: leading dimensions are padded so that every warp access to a tile hits distinct
// banks (only the gather of bias-table entries depends on the data):
// 16-bit tiles have an odd number of 16-byte segments per row (ldmatrix reads eight rows of 16
// bytes); fp32 accumulator tiles have rows of 8 (mod 32) words (64-bit fragment stores); fp32
// tensor-core operands have rows of 4 (mod 32) words when the reduction runs along a row and
// 8 (mod 32) when it runs down a column (32-bit fragment loads of lanes (g, t), g = lane/4,
// t = lane%4); a tile read both ways is staged twice. No integer division runs per score: bias
// indices are table[qbase[query] - kofs[key]], both precomputed per tile.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "wmca_cuda.h"

namespace poster_fast::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 128;
constexpr int kTile = 64;                  // rows of a query or key tile; a warp owns 16
constexpr int kLdF = kTile + 8;            // 64-wide fp32 tiles (S, dP, O^T): 8 (mod 32) words
constexpr int kLdH = kTile + 8;            // 64-wide 16-bit tiles (P, dS): 9 segments of 16 bytes
constexpr int kLdDS = kTile + 4;           // dq's fp32 dS, a row-reduced operand: 4 (mod 32) words

template <class T> constexpr bool kF32 = std::is_same_v<T, float>;
// Leading dimensions of a DP-wide operand tile reduced along its rows (k contiguous) or down its
// columns (k strided); the same for 16-bit tiles, where ldmatrix serves both.
template <class T, int DP> constexpr int kLdRow = kF32<T> ? DP + 4 : DP + 8;
template <class T, int DP> constexpr int kLdCol = DP + 8;

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ inline int table_rows(const Dims& d) { return (2 * d.wh - 1) * (2 * d.ww - 1); }
// Column tiles of 16 that hold head_dim (2, 4 or 8: the kernels are compiled for these).
__host__ __device__ inline int nt_for(int head_dim) { return head_dim <= 32 ? 2 : head_dim <= 64 ? 4 : 8; }

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__half x) { return __half2float(x); }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ inline T from_float(float x);
template <> __device__ inline float from_float<float>(float x) { return x; }
template <> __device__ inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Swin relative position: table row of (query i, key j) = qbase(i) - kofs(j). Rows beyond the
// window get offsets that keep the index inside the table (their scores are masked).
__device__ inline int qbase(int i, const Dims& d) {
  const int span = 2 * d.ww - 1;
  if (i >= d.tokens) return (d.wh - 1) * span + d.ww - 1;
  return (i / d.ww + d.wh - 1) * span + i % d.ww + d.ww - 1;
}
__device__ inline int kofs(int j, const Dims& d) {
  return j < d.tokens ? j / d.ww * (2 * d.ww - 1) + j % d.ww : 0;
}

// ---- tensor-core operands ------------------------------------------------------------------
template <class T> struct Tc {  // fp16 / bf16
  static constexpr int kK = 16;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  template <class Use, bool Trans> struct Op {
    wmma::fragment<Use, 16, 16, 16, T, std::conditional_t<Trans, wmma::col_major, wmma::row_major>> f;
    __device__ void load(const T* p, int ld) { wmma::load_matrix_sync(f, p, ld); }
  };
  template <class A, class B> __device__ static void mma(Acc& c, const A& a, const B& b) {
    wmma::mma_sync(c, a.f, b.f, c);
  }
};
template <> struct Tc<float> {  // 3xTF32: x = hi + lo, x*y ~ lo*hi + hi*lo + hi*hi
  static constexpr int kK = 8;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
  template <class Use, bool Trans> struct Op {
    using Frag = wmma::fragment<Use, 16, 16, 8, wmma::precision::tf32,
                                std::conditional_t<Trans, wmma::col_major, wmma::row_major>>;
    Frag hi, lo;
    __device__ void load(const float* p, int ld) {
      wmma::load_matrix_sync(hi, p, ld);
      for (int i = 0; i < hi.num_elements; ++i) {
        const float x = hi.x[i];
        hi.x[i] = wmma::__float_to_tf32(x);
        lo.x[i] = wmma::__float_to_tf32(x - hi.x[i]);
      }
    }
  };
  // Each k-step's three products go into a fresh fragment and are added to c in fp32: the
  // tensor cores' own accumulation (truncating, rounded toward zero) then never carries c.
  template <class A, class B> __device__ static void mma(Acc& c, const A& a, const B& b) {
    Acc t;
    wmma::fill_fragment(t, 0.f);
    wmma::mma_sync(t, a.lo, b.hi, t);
    wmma::mma_sync(t, a.hi, b.lo, t);
    wmma::mma_sync(t, a.hi, b.hi, t);
    for (int i = 0; i < t.num_elements; ++i) c.x[i] += t.x[i];
  }
};
template <class T> using Acc = typename Tc<T>::Acc;

// c[i*NB + j] += op(A)[16i.., :] op(B)[:, 16j..] over K (a multiple of Tc<T>::kK), all operands in
// shared memory: op(A) is M x K, A[m*lda + k] or A[k*lda + m] if TA; op(B) is K x N, B[k*ldb + n]
// or B[n*ldb + k] if TB. One of MB, NB is 1: that operand is loaded once per k-step.
template <class T, bool TA, bool TB, int MB, int NB>
__device__ void warp_mm(Acc<T> (&c)[MB * NB], const T* A, int lda, const T* B, int ldb, int K) {
  static_assert(MB == 1 || NB == 1, "a warp computes a 16-row or a 16-column strip");
  typename Tc<T>::template Op<wmma::matrix_a, TA> a;
  typename Tc<T>::template Op<wmma::matrix_b, TB> b;
  for (int k0 = 0; k0 < K; k0 += Tc<T>::kK) {
    const T* a0 = TA ? A + k0 * lda : A + k0;
    const T* b0 = TB ? B + k0 : B + k0 * ldb;
    if constexpr (MB == 1) a.load(a0, lda);
    if constexpr (NB == 1) b.load(b0, ldb);
    for (int i = 0; i < MB; ++i) {
      if constexpr (MB > 1) a.load(TA ? a0 + 16 * i : a0 + 16 * i * lda, lda);
      for (int j = 0; j < NB; ++j) {
        if constexpr (NB > 1) b.load(TB ? b0 + 16 * j * ldb : b0 + 16 * j, ldb);
        Tc<T>::mma(c[i * NB + j], a, b);
      }
    }
  }
}

template <class Frag, int N> __device__ void zero(Frag (&c)[N]) {
  for (int i = 0; i < N; ++i) wmma::fill_fragment(c[i], 0.f);
}

// ---- global <-> shared tiles -----------------------------------------------------------------
// Calls f(r, c) for the cells of an R x C grid, kThreads cells apart, without division in the
// loop. C = 4 (16-bit rows of 32 elements in 16-byte chunks) pairs rows r and r + 4 in each group
// of eight lanes, so that 16-byte shared stores to rows of 5 segments hit distinct banks.
template <int C, class F> __device__ void for_each_cell(int R, F f) {
  if constexpr (C == 4) {
    for (int x = threadIdx.x; x < R * C; x += kThreads) {
      const int group = x >> 3, lane = x & 7;
      f((group >> 2) * 8 + (group & 3) + (lane >> 2) * 4, lane & 3);
    }
  } else {
    for (int x = threadIdx.x; x < R * C; x += kThreads) f(x / C, x % C);  // C: a power of two
  }
}

__device__ inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// dst (64 x DP, leading dimension ld) = rows [0, valid) of src (row-major, D columns), zero
// padded; also into dst2 (leading dimension ld2) when it is not null.
template <class T, int DP>
__device__ void load_tile(T* dst, int ld, T* dst2, int ld2, const T* src, int valid, int D) {
  constexpr int kVec = 16 / sizeof(T);
  if (D % kVec == 0 && aligned16(src)) {
    for_each_cell<DP / kVec>(kTile, [&](int r, int c) {
      uint4 x = make_uint4(0, 0, 0, 0);
      if (r < valid && c * kVec < D) x = *reinterpret_cast<const uint4*>(src + static_cast<size_t>(r) * D + c * kVec);
      *reinterpret_cast<uint4*>(dst + r * ld + c * kVec) = x;
      if (dst2) *reinterpret_cast<uint4*>(dst2 + r * ld2 + c * kVec) = x;
    });
  } else {
    for_each_cell<DP>(kTile, [&](int r, int c) {
      const T x = r < valid && c < D ? src[static_cast<size_t>(r) * D + c] : from_float<T>(0.f);
      dst[r * ld + c] = x;
      if (dst2) dst2[r * ld2 + c] = x;
    });
  }
}

// Rows [0, valid) of dst (row-major, D columns) = src (64 x DP floats, leading dimension ld; or
// transposed, src[c*ld + r], when Trans). Groups of four columns: shared-memory reads walk along
// src's rows (a 16-byte read per lane), or, transposed, lanes take consecutive rows r.
template <class T, int DP, bool Trans>
__device__ void store_tile(T* dst, const float* src, int ld, int valid, int D) {
  constexpr int C = DP / 4;
  if (D % 4 == 0 && (reinterpret_cast<uintptr_t>(dst) & (4 * sizeof(T) - 1)) == 0) {
    using Vec = std::conditional_t<kF32<T>, float4, uint2>;
    for (int x = threadIdx.x; x < kTile * C; x += kThreads) {
      const int r = Trans ? x % kTile : x / C, c = Trans ? x / kTile : x % C;
      if (r >= valid || 4 * c >= D) continue;
      float4 f;
      if constexpr (Trans)
        f = make_float4(src[4 * c * ld + r], src[(4 * c + 1) * ld + r], src[(4 * c + 2) * ld + r],
                        src[(4 * c + 3) * ld + r]);
      else
        f = *reinterpret_cast<const float4*>(src + r * ld + 4 * c);
      union { Vec v; T e[4]; } out;
      out.e[0] = from_float<T>(f.x);
      out.e[1] = from_float<T>(f.y);
      out.e[2] = from_float<T>(f.z);
      out.e[3] = from_float<T>(f.w);
      *reinterpret_cast<Vec*>(dst + static_cast<size_t>(r) * D + 4 * c) = out.v;
    }
  } else {
    for_each_cell<DP>(kTile, [&](int r, int c) {
      if (r < valid && c < D)
        dst[static_cast<size_t>(r) * D + c] = from_float<T>(Trans ? src[c * ld + r] : src[r * ld + c]);
    });
  }
}

__device__ void load_table_column(float* dst, const float* table, int h, const Dims& d) {
  for (int x = threadIdx.x; x < table_rows(d); x += kThreads) dst[x] = table[x * d.heads + h];
}

// Offsets of shared-memory arrays, 128-byte aligned; the same code sizes the launch on the host.
struct Carver {
  size_t bytes = 0;
  template <class U> __host__ __device__ size_t take(int n) {
    const size_t at = bytes;
    bytes += (static_cast<size_t>(n) * sizeof(U) + 127) / 128 * 128;
    return at;
  }
};
template <class U> __device__ U* at(unsigned char* smem, size_t offset) {
  return reinterpret_cast<U*>(smem + offset);
}

// ---- forward -------------------------------------------------------------------------------
template <class T, int NT> struct FwdSmem {
  static constexpr int DP = 16 * NT;
  size_t tab, kofs, inv_l, q, k, v, s, p, o, bytes;
  __host__ __device__ explicit FwdSmem(const Dims& d) {
    Carver c;
    tab = c.take<float>(table_rows(d));
    kofs = c.take<int>(kTile);
    inv_l = c.take<float>(kTile);
    q = c.take<T>(kTile * kLdRow<T, DP>);
    k = c.take<T>(kTile * kLdRow<T, DP>);
    v = c.take<T>(kTile * kLdCol<T, DP>);
    s = c.take<float>(kTile * kLdF);                               // S^T, then P^T (fp32)
    p = kF32<T> ? s : c.take<T>(kTile * kLdH);                     // P^T (16-bit)
    o = c.take<float>(DP * kLdF);                                  // O^T
    bytes = c.bytes;
  }
};

// Block (query tile, head, window). Warp w owns queries [16w, 16w+16): columns of S^T, P^T, O^T.
// Softmax lanes: query column 8*pass + lane/4 of the warp's strip, keys lane%4 + 4k.
template <class T, int NT>
__global__ void __launch_bounds__(kThreads)
    fwd_kernel(const T* q, const T* k, const T* v, const float* table, T* out, float* lse, Dims d) {
  constexpr int DP = 16 * NT, LQ = kLdRow<T, DP>, LK = kLdRow<T, DP>, LV = kLdCol<T, DP>;
  constexpr int LP = kF32<T> ? kLdF : kLdH;
  extern __shared__ __align__(128) unsigned char smem[];
  const FwdSmem<T, NT> L(d);
  float* sTab = at<float>(smem, L.tab);
  int* sKofs = at<int>(smem, L.kofs);
  float* sInvL = at<float>(smem, L.inv_l);
  T *sQ = at<T>(smem, L.q), *sK = at<T>(smem, L.k), *sV = at<T>(smem, L.v), *sP = at<T>(smem, L.p);
  float *sS = at<float>(smem, L.s), *sO = at<float>(smem, L.o);

  const int N = d.tokens, D = d.head_dim;
  const int i0 = blockIdx.x * kTile, h = blockIdx.y, bw = blockIdx.z, b = bw / d.windows;
  const size_t slice = static_cast<size_t>(bw * d.heads + h) * N;  // row of (bw, h, token 0)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad = lane % 4;
  const int col0 = 16 * warp + lane / 4;  // this lane's query columns: col0 and col0 + 8

  load_table_column(sTab, table, h, d);
  load_tile<T, DP>(sQ, LQ, nullptr, 0, q + (static_cast<size_t>(b * d.heads + h) * N + i0) * D, N - i0, D);
  for (int x = threadIdx.x; x < DP * kLdF; x += kThreads) sO[x] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int qb[2] = {qbase(i0 + col0, d), qbase(i0 + col0 + 8, d)};

  for (int j0 = 0; j0 < N; j0 += kTile) {
    __syncthreads();  // every warp is done with the previous K, V
    load_tile<T, DP>(sK, LK, nullptr, 0, k + (slice + j0) * D, N - j0, D);
    load_tile<T, DP>(sV, LV, nullptr, 0, v + (slice + j0) * D, N - j0, D);
    if (threadIdx.x < kTile) sKofs[threadIdx.x] = kofs(j0 + threadIdx.x, d);
    __syncthreads();
    {  // S^T[:, warp strip] = K Q_w^T
      Acc<T> c[4];
      zero(c);
      warp_mm<T, false, true, 4, 1>(c, sK, LK, sQ + 16 * warp * LQ, LQ, DP);
      for (int i = 0; i < 4; ++i)
        wmma::store_matrix_sync(sS + 16 * i * kLdF + 16 * warp, c[i], kLdF, wmma::mem_row_major);
    }
    __syncwarp();
    const int valid = N - j0;
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {  // online softmax of query column col0 + 8*pass
      const int col = col0 + 8 * pass;
      float x[kTile / 4], mx = -INFINITY;
#pragma unroll
      for (int u = 0; u < kTile / 4; ++u) {
        const int key = 4 * u + quad;
        const float score = sS[key * kLdF + col] * d.scale + sTab[qb[pass] - sKofs[key]];
        x[u] = key < valid ? score : -INFINITY;
        mx = fmaxf(mx, x[u]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[pass], mx);  // finite: key j0 is valid
      float sum = 0.f;
#pragma unroll
      for (int u = 0; u < kTile / 4; ++u) {
        const float p = __expf(x[u] - m_new);  // 0 for masked keys
        sP[(4 * u + quad) * LP + col] = from_float<T>(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float alpha = m[pass] == -INFINITY ? 0.f : __expf(m[pass] - m_new);
      for (int r = quad; r < DP; r += 4) sO[r * kLdF + col] *= alpha;
      l[pass] = l[pass] * alpha + sum;
      m[pass] = m_new;
    }
    __syncwarp();
    {  // O^T[:, warp strip] += V^T P^T[:, warp strip]
      Acc<T> c[NT];
      for (int i = 0; i < NT; ++i)
        wmma::load_matrix_sync(c[i], sO + 16 * i * kLdF + 16 * warp, kLdF, wmma::mem_row_major);
      warp_mm<T, true, false, NT, 1>(c, sV, LV, sP + 16 * warp, LP, kTile);
      for (int i = 0; i < NT; ++i)
        wmma::store_matrix_sync(sO + 16 * i * kLdF + 16 * warp, c[i], kLdF, wmma::mem_row_major);
    }
  }
  if (quad == 0)
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
      const int col = col0 + 8 * pass;
      sInvL[col] = 1.f / l[pass];
      if (i0 + col < N) lse[slice + i0 + col] = m[pass] + logf(l[pass]);
    }
  __syncthreads();
  for_each_cell<kTile>(DP, [&](int r, int c) { sO[r * kLdF + c] *= sInvL[c]; });
  __syncthreads();
  store_tile<T, DP, true>(out + (slice + i0) * D, sO, kLdF, N - i0, D);
}

// ---- backward ------------------------------------------------------------------------------
// di = rowsum(dout * out) per (window, head, query): a warp per row.
template <class T>
__global__ void rowdot_kernel(const T* dout, const T* out, float* di, int rows, int D) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps
  float acc = 0.f;
  for (int c = lane; c < D; c += 32)
    acc += to_float(dout[static_cast<size_t>(row) * D + c]) * to_float(out[static_cast<size_t>(row) * D + c]);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) di[row] = acc;
}

template <class T, int NT> struct DkdvSmem {
  static constexpr int DP = 16 * NT;
  size_t tab, kofs, qbase, lse, di, k, v, q, q2, go, go2, s, dp, p, ds, bytes;
  __host__ __device__ explicit DkdvSmem(const Dims& d) {
    Carver c;
    tab = c.take<float>(table_rows(d));
    kofs = c.take<int>(kTile);
    qbase = c.take<int>(kTile);
    lse = c.take<float>(kTile);
    di = c.take<float>(kTile);
    k = c.take<T>(kTile * kLdRow<T, DP>);
    v = c.take<T>(kTile * kLdRow<T, DP>);
    q = c.take<T>(kTile * kLdRow<T, DP>);
    q2 = kF32<T> ? c.take<T>(kTile * kLdCol<T, DP>) : q;  // fp32: q reduced down its columns
    go = c.take<T>(kTile * kLdRow<T, DP>);
    go2 = kF32<T> ? c.take<T>(kTile * kLdCol<T, DP>) : go;
    s = c.take<float>(2 * kTile * kLdF);  // S and dP; dK, dV staging at the end
    dp = s + kTile * kLdF * sizeof(float);
    p = kF32<T> ? s : c.take<T>(kTile * kLdH);
    ds = kF32<T> ? dp : c.take<T>(kTile * kLdH);
    bytes = c.bytes;
  }
};

// dK, dV of key tile blockIdx.x of window blockIdx.z: sums over the query tiles. Warp w owns keys
// [16w, 16w+16): columns of S, dP, P, dS (query x key) and rows of dK, dV (in registers).
template <class T, int NT>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const T* dout, const T* q, const T* k, const T* v, const float* table,
                const float* lse, const float* di, T* dk, T* dv, Dims d) {
  constexpr int DP = 16 * NT, LR = kLdRow<T, DP>, LC = kLdCol<T, DP>;
  constexpr int LP = kF32<T> ? kLdF : kLdH;
  extern __shared__ __align__(128) unsigned char smem[];
  const DkdvSmem<T, NT> L(d);
  float* sTab = at<float>(smem, L.tab);
  int *sKofs = at<int>(smem, L.kofs), *sQb = at<int>(smem, L.qbase);
  float *sLse = at<float>(smem, L.lse), *sDi = at<float>(smem, L.di);
  T *sK = at<T>(smem, L.k), *sV = at<T>(smem, L.v), *sQ = at<T>(smem, L.q), *sQ2 = at<T>(smem, L.q2);
  T *sGo = at<T>(smem, L.go), *sGo2 = at<T>(smem, L.go2), *sP = at<T>(smem, L.p), *sDs = at<T>(smem, L.ds);
  float *sS = at<float>(smem, L.s), *sDp = at<float>(smem, L.dp);

  const int N = d.tokens, D = d.head_dim;
  const int j0 = blockIdx.x * kTile, h = blockIdx.y, bw = blockIdx.z, b = bw / d.windows;
  const size_t slice = static_cast<size_t>(bw * d.heads + h) * N;
  const T* qb = q + static_cast<size_t>(b * d.heads + h) * N * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad = lane % 4;
  const int col0 = 16 * warp + lane / 4;  // this lane's key columns: col0 and col0 + 8

  load_table_column(sTab, table, h, d);
  load_tile<T, DP>(sK, LR, nullptr, 0, k + (slice + j0) * D, N - j0, D);
  load_tile<T, DP>(sV, LR, nullptr, 0, v + (slice + j0) * D, N - j0, D);
  if (threadIdx.x < kTile) sKofs[threadIdx.x] = kofs(j0 + threadIdx.x, d);
  Acc<T> gk[NT], gv[NT];
  zero(gk);
  zero(gv);
  for (int i0 = 0; i0 < N; i0 += kTile) {
    __syncthreads();  // every warp is done with the previous query tile
    load_tile<T, DP>(sQ, LR, kF32<T> ? sQ2 : nullptr, LC, qb + static_cast<size_t>(i0) * D, N - i0, D);
    load_tile<T, DP>(sGo, LR, kF32<T> ? sGo2 : nullptr, LC, dout + (slice + i0) * D, N - i0, D);
    if (threadIdx.x < kTile) {
      const int i = i0 + threadIdx.x;
      sQb[threadIdx.x] = qbase(i, d);
      sLse[threadIdx.x] = i < N ? lse[slice + i] : 0.f;
      sDi[threadIdx.x] = i < N ? di[slice + i] : 0.f;
    }
    __syncthreads();
    {  // S[:, warp strip] = Q K_w^T, dP[:, warp strip] = dout V_w^T
      Acc<T> c[4];
      zero(c);
      warp_mm<T, false, true, 4, 1>(c, sQ, LR, sK + 16 * warp * LR, LR, DP);
      for (int i = 0; i < 4; ++i)
        wmma::store_matrix_sync(sS + 16 * i * kLdF + 16 * warp, c[i], kLdF, wmma::mem_row_major);
      zero(c);
      warp_mm<T, false, true, 4, 1>(c, sGo, LR, sV + 16 * warp * LR, LR, DP);
      for (int i = 0; i < 4; ++i)
        wmma::store_matrix_sync(sDp + 16 * i * kLdF + 16 * warp, c[i], kLdF, wmma::mem_row_major);
    }
    __syncwarp();
    const int qvalid = N - i0;
    for (int pass = 0; pass < 2; ++pass) {  // P = exp(S + bias - lse), dS = P (dP - di)
      const int col = col0 + 8 * pass, kof = sKofs[col];
      const bool kvalid = j0 + col < N;
      for (int u = 0; u < kTile / 4; ++u) {  // padded rows and columns hold finite values
        const int r = 4 * u + quad;
        const bool valid = kvalid && r < qvalid;
        const float e = __expf(sS[r * kLdF + col] * d.scale + sTab[sQb[r] - kof] - sLse[r]);
        const float p = valid ? e : 0.f, ds = p * (sDp[r * kLdF + col] - sDi[r]);
        sP[r * LP + col] = from_float<T>(p);
        sDs[r * LP + col] = from_float<T>(ds);
      }
    }
    __syncwarp();
    // dV_w += P_w^T dout, dK_w += dS_w^T q (scaled at the end)
    warp_mm<T, true, false, 1, NT>(gv, sP + 16 * warp, LP, sGo2, kF32<T> ? LC : LR, kTile);
    warp_mm<T, true, false, 1, NT>(gk, sDs + 16 * warp, LP, sQ2, kF32<T> ? LC : LR, kTile);
  }
  for (int j = 0; j < NT; ++j)
    for (int e = 0; e < gk[j].num_elements; ++e) gk[j].x[e] *= d.scale;
  constexpr int LS = DP + 8;  // staging rows: 8 (mod 32) words
  __syncthreads();
  for (int j = 0; j < NT; ++j)
    wmma::store_matrix_sync(sS + 16 * warp * LS + 16 * j, gv[j], LS, wmma::mem_row_major);
  __syncthreads();
  store_tile<T, DP, false>(dv + (slice + j0) * D, sS, LS, N - j0, D);
  __syncthreads();
  for (int j = 0; j < NT; ++j)
    wmma::store_matrix_sync(sS + 16 * warp * LS + 16 * j, gk[j], LS, wmma::mem_row_major);
  __syncthreads();
  store_tile<T, DP, false>(dk + (slice + j0) * D, sS, LS, N - j0, D);
}

template <class T, int NT> struct DqSmem {
  static constexpr int DP = 16 * NT;
  size_t tab, ptab, kofs, qbase, qw, lse, di, q, go, k, k2, v, s, dp, ds, dsh, bytes;
  __host__ __device__ explicit DqSmem(const Dims& d) {
    Carver c;
    tab = c.take<float>(table_rows(d));
    ptab = c.take<float>(table_rows(d));
    kofs = c.take<int>(kTile);
    qbase = c.take<int>(kTile);
    qw = c.take<int>(kTile);
    lse = c.take<float>(kTile);
    di = c.take<float>(kTile);
    q = c.take<T>(kTile * kLdRow<T, DP>);
    go = c.take<T>(kTile * kLdRow<T, DP>);
    k = c.take<T>(kTile * kLdRow<T, DP>);
    k2 = kF32<T> ? c.take<T>(kTile * kLdCol<T, DP>) : k;  // fp32: k reduced down its columns
    v = c.take<T>(kTile * kLdRow<T, DP>);
    s = c.take<float>(2 * kTile * kLdF);  // S (then dS for the table walk, 16-bit) and dP
    dp = s + kTile * kLdF * sizeof(float);
    ds = kF32<T> ? c.take<float>(kTile * kLdDS) : s;  // fp32 dS: tensor-core operand and walk
    dsh = kF32<T> ? ds : c.take<T>(kTile * kLdH);     // dS as the tensor-core operand
    bytes = c.bytes;
  }
};

// dQ of query tile blockIdx.x of image blockIdx.z (summed over its windows and key tiles), and this
// block's partial table gradient part[(h * P + p) * rows + x], p = image * tiles + tile.
// Warp w owns queries [16w, 16w+16): rows of S, dP, dS and of dQ (in registers).
template <class T, int NT>
__global__ void __launch_bounds__(kThreads, 2)
    dq_kernel(const T* dout, const T* q, const T* k, const T* v, const float* table,
              const float* lse, const float* di, T* dq, float* part, Dims d) {
  constexpr int DP = 16 * NT, LR = kLdRow<T, DP>, LC = kLdCol<T, DP>;
  constexpr int LDS = kF32<T> ? kLdDS : kLdF, LH = kF32<T> ? kLdDS : kLdH;
  extern __shared__ __align__(128) unsigned char smem[];
  const DqSmem<T, NT> L(d);
  float *sTab = at<float>(smem, L.tab), *sPtab = at<float>(smem, L.ptab);
  int *sKofs = at<int>(smem, L.kofs), *sQb = at<int>(smem, L.qbase), *sQw = at<int>(smem, L.qw);
  float *sLse = at<float>(smem, L.lse), *sDi = at<float>(smem, L.di);
  T *sQ = at<T>(smem, L.q), *sGo = at<T>(smem, L.go), *sK = at<T>(smem, L.k), *sK2 = at<T>(smem, L.k2);
  T *sV = at<T>(smem, L.v), *sDsh = at<T>(smem, L.dsh);
  float *sS = at<float>(smem, L.s), *sDp = at<float>(smem, L.dp), *sDs = at<float>(smem, L.ds);

  const int N = d.tokens, D = d.head_dim, rows = table_rows(d), span = 2 * d.ww - 1;
  const int i0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const size_t qslice = static_cast<size_t>(b * d.heads + h) * N;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qvalid = N - i0;

  load_table_column(sTab, table, h, d);
  for (int x = threadIdx.x; x < rows; x += kThreads) sPtab[x] = 0.f;
  load_tile<T, DP>(sQ, LR, nullptr, 0, q + (qslice + i0) * D, qvalid, D);
  if (threadIdx.x < kTile) {
    const int i = i0 + threadIdx.x;
    sQb[threadIdx.x] = qbase(i, d);
    sQw[threadIdx.x] = i % d.ww;
  }
  // Diagonal t of a dS tile holds the pairs with i - j = delta = i0 - j0 + t - 63; with
  // delta = dh * ww + dw (0 <= dw < ww), pair (i, j) belongs to bin (dh, dw) if column(i) >= dw,
  // else to (dh + 1, dw - ww). delta starts at j0 = 0 and drops by 64 per key tile.
  const int diag = threadIdx.x, shift = kTile / d.ww, shift_w = kTile % d.ww;
  int dh0 = 0, dw0 = 0;
  if (diag < 2 * kTile - 1) {
    const int delta = i0 + diag - (kTile - 1);
    dh0 = delta >= 0 ? delta / d.ww : -((-delta + d.ww - 1) / d.ww);
    dw0 = delta - dh0 * d.ww;
  }
  Acc<T> gq[NT];
  zero(gq);
  for (int w = 0; w < d.windows; ++w) {
    const size_t slice = static_cast<size_t>((b * d.windows + w) * d.heads + h) * N;
    __syncthreads();  // every warp is done with the previous window's dout
    load_tile<T, DP>(sGo, LR, nullptr, 0, dout + (slice + i0) * D, qvalid, D);
    if (threadIdx.x < kTile) {
      const int i = i0 + threadIdx.x;
      sLse[threadIdx.x] = i < N ? lse[slice + i] : 0.f;
      sDi[threadIdx.x] = i < N ? di[slice + i] : 0.f;
    }
    int dh = dh0, dw = dw0;
    for (int j0 = 0; j0 < N; j0 += kTile) {
      __syncthreads();  // every warp is done with the previous K, V and dS
      load_tile<T, DP>(sK, LR, kF32<T> ? sK2 : nullptr, LC, k + (slice + j0) * D, N - j0, D);
      load_tile<T, DP>(sV, LR, nullptr, 0, v + (slice + j0) * D, N - j0, D);
      if (threadIdx.x < kTile) sKofs[threadIdx.x] = kofs(j0 + threadIdx.x, d);
      __syncthreads();
      {  // S_w = Q_w K^T, dP_w = dout_w V^T
        Acc<T> c[4];
        zero(c);
        warp_mm<T, false, true, 1, 4>(c, sQ + 16 * warp * LR, LR, sK, LR, DP);
        for (int j = 0; j < 4; ++j)
          wmma::store_matrix_sync(sS + 16 * warp * kLdF + 16 * j, c[j], kLdF, wmma::mem_row_major);
        zero(c);
        warp_mm<T, false, true, 1, 4>(c, sGo + 16 * warp * LR, LR, sV, LR, DP);
        for (int j = 0; j < 4; ++j)
          wmma::store_matrix_sync(sDp + 16 * warp * kLdF + 16 * j, c[j], kLdF, wmma::mem_row_major);
      }
      __syncwarp();
      // dS = P (dP - di). Lanes 0-15 and 16-31 take rows r and r + 8 of the warp's strip and
      // 16-column chunks u and u^1: conflict-free for any leading dimension that is a multiple of 4.
      const int kvalid = N - j0, half = lane / 16;
      for (int rr = 0; rr < 8; ++rr) {
        const int r = 16 * warp + rr + 8 * half, qb = sQb[r];
        for (int u = 0; u < 4; ++u) {
          const int c = 16 * (u ^ half) + lane % 16;  // padded rows and columns hold finite values
          const float e = __expf(sS[r * kLdF + c] * d.scale + sTab[qb - sKofs[c]] - sLse[r]);
          const float p = r < qvalid && c < kvalid ? e : 0.f, ds = p * (sDp[r * kLdF + c] - sDi[r]);
          sDs[r * LDS + c] = ds;
          if constexpr (!kF32<T>) sDsh[r * LH + c] = from_float<T>(ds);
        }
      }
      __syncthreads();  // the table walk reads every warp's dS
      warp_mm<T, false, false, 1, NT>(gq, sDsh + 16 * warp * LH, LH, sK2, kF32<T> ? LC : LR, kTile);
      if (diag < 2 * kTile - 1) {  // table gradient: walk diagonal `diag` of this dS tile
        // Rows of the warp's diagonals, one row per step for all lanes (contiguous columns).
        const int lo = max(0, 32 * warp - (kTile - 1)), hi = min(min(kTile - 1, 32 * warp + 31), qvalid - 1);
        float in_row = 0.f, next_row = 0.f;  // bins (dh, dw) and (dh + 1, dw - ww)
        for (int r = lo; r <= hi; ++r) {
          const int c = r - diag + kTile - 1;  // off the tile for some lanes: read, then dropped
          const float v = sDs[r * LDS + (c & (kTile - 1))], x = c >= 0 && c < kTile ? v : 0.f;
          const bool same_row = sQw[r] >= dw;
          in_row += same_row ? x : 0.f;
          next_row += same_row ? 0.f : x;
        }
        if (dh > -d.wh && dh < d.wh) sPtab[(dh + d.wh - 1) * span + dw + d.ww - 1] += in_row;
        if (dw > 0 && dh + 1 > -d.wh && dh + 1 < d.wh) sPtab[(dh + d.wh) * span + dw - 1] += next_row;
      }
      dh -= shift;  // delta -= 64
      dw -= shift_w;
      if (dw < 0) {
        dw += d.ww;
        --dh;
      }
    }
  }
  for (int j = 0; j < NT; ++j)
    for (int e = 0; e < gq[j].num_elements; ++e) gq[j].x[e] *= d.scale;
  constexpr int LS = DP + 8;
  __syncthreads();
  for (int j = 0; j < NT; ++j)
    wmma::store_matrix_sync(sS + 16 * warp * LS + 16 * j, gq[j], LS, wmma::mem_row_major);
  __syncthreads();
  store_tile<T, DP, false>(dq + (qslice + i0) * D, sS, LS, qvalid, D);
  const size_t p = static_cast<size_t>(b) * gridDim.x + blockIdx.x;
  float* mine = part + (static_cast<size_t>(h) * d.batch * gridDim.x + p) * rows;
  for (int x = threadIdx.x; x < rows; x += kThreads) mine[x] = sPtab[x];
}

// dtable[x, h] = sum over the P = batch * tiles partial tables of head h, in a fixed order. Block
// (32 bins, head), 256 threads: warp s sums partials s, s + 8, ...; then warp 0 adds the eight.
constexpr int kReduceSlices = 8;
__global__ void __launch_bounds__(32 * kReduceSlices)
    table_reduce_kernel(const float* part, float* dtable, int partials, Dims d) {
  extern __shared__ float reduce_sums[];  // [kReduceSlices][32]
  const int rows = table_rows(d), lane = threadIdx.x % 32, slice = threadIdx.x / 32;
  const int x = blockIdx.x * 32 + lane, h = blockIdx.y;
  float acc = 0.f;
  if (x < rows)
    for (int p = slice; p < partials; p += kReduceSlices)
      acc += part[(static_cast<size_t>(h) * partials + p) * rows + x];
  reduce_sums[slice * 32 + lane] = acc;
  __syncthreads();
  if (slice == 0 && x < rows) {
    float total = 0.f;
    for (int s = 0; s < kReduceSlices; ++s) total += reduce_sums[s * 32 + lane];
    dtable[x * d.heads + h] = total;
  }
}

// On failure also clears the runtime's last error, so that a refused call does not surface
// later as the error of an unrelated kernel launch (e.g. torch's next launch check).
template <class Kernel>
cudaError_t allow_smem(Kernel kernel, size_t bytes) {
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(bytes));
  if (e != cudaSuccess) cudaGetLastError();
  return e;
}

template <class T, int NT>
cudaError_t forward_t(const void* q, const void* k, const void* v, const float* table, void* out,
                      float* lse, const Dims& d, cudaStream_t stream) {
  const size_t bytes = FwdSmem<T, NT>(d).bytes;
  if (cudaError_t e = allow_smem(fwd_kernel<T, NT>, bytes)) return e;
  const dim3 grid(ceil_div(d.tokens, kTile), d.heads, d.batch * d.windows);
  fwd_kernel<T, NT><<<grid, kThreads, bytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), table,
      static_cast<T*>(out), lse, d);
  return cudaGetLastError();
}

template <class T, int NT>
cudaError_t backward_t(const void* dout, const void* q, const void* k, const void* v,
                       const void* out, const float* table, const float* lse, void* dq, void* dk,
                       void* dv, float* dtable, float* workspace, const Dims& d,
                       cudaStream_t stream) {
  const int BW = d.batch * d.windows, rows = BW * d.heads * d.tokens;
  const int tiles = ceil_div(d.tokens, kTile);
  float* di = workspace;
  float* part = workspace + rows;
  const T* go = static_cast<const T*>(dout);
  const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k),
          *vt = static_cast<const T*>(v);
  const size_t dkdv_bytes = DkdvSmem<T, NT>(d).bytes, dq_bytes = DqSmem<T, NT>(d).bytes;
  if (cudaError_t e = allow_smem(dkdv_kernel<T, NT>, dkdv_bytes)) return e;
  if (cudaError_t e = allow_smem(dq_kernel<T, NT>, dq_bytes)) return e;
  constexpr int kRowsPerBlock = 8;
  rowdot_kernel<T><<<ceil_div(rows, kRowsPerBlock), 32 * kRowsPerBlock, 0, stream>>>(
      go, static_cast<const T*>(out), di, rows, d.head_dim);
  dq_kernel<T, NT><<<dim3(tiles, d.heads, d.batch), kThreads, dq_bytes, stream>>>(
      go, qt, kt, vt, table, lse, di, static_cast<T*>(dq), part, d);
  table_reduce_kernel<<<dim3(ceil_div(table_rows(d), 32), d.heads), 32 * kReduceSlices,
                        kReduceSlices * 32 * sizeof(float), stream>>>(part, dtable, d.batch * tiles, d);
  dkdv_kernel<T, NT><<<dim3(tiles, d.heads, BW), kThreads, dkdv_bytes, stream>>>(
      go, qt, kt, vt, table, lse, di, static_cast<T*>(dk), static_cast<T*>(dv), d);
  return cudaGetLastError();
}

template <class T, int NT> struct Config {
  using Elem = T;
  static constexpr int kNT = NT;
};
// Calls f(Config<T, NT>{}) for the element type and the tile width of the problem.
template <class F> auto dispatch(DType dtype, int head_dim, F f) {
  const int nt = nt_for(head_dim);
  auto by_nt = [&](auto t) {
    using T = decltype(t);
    return nt == 2 ? f(Config<T, 2>{}) : nt == 4 ? f(Config<T, 4>{}) : f(Config<T, 8>{});
  };
  switch (dtype) {
    case DType::kFloat16: return by_nt(__half{});
    case DType::kBFloat16: return by_nt(__nv_bfloat16{});
    default: return by_nt(0.f);
  }
}

}  // namespace

cudaError_t forward(DType dtype, const void* q, const void* k, const void* v, const float* table,
                    void* out, float* lse, const Dims& d, cudaStream_t stream) {
  return dispatch(dtype, d.head_dim, [&](auto c) {
    return forward_t<typename decltype(c)::Elem, decltype(c)::kNT>(q, k, v, table, out, lse, d, stream);
  });
}

size_t forward_smem(DType dtype, const Dims& d) {
  return dispatch(dtype, d.head_dim, [&](auto c) {
    return FwdSmem<typename decltype(c)::Elem, decltype(c)::kNT>(d).bytes;
  });
}

size_t backward_smem(DType dtype, const Dims& d) {
  return dispatch(dtype, d.head_dim, [&](auto c) {
    using C = decltype(c);
    return std::max(DkdvSmem<typename C::Elem, C::kNT>(d).bytes, DqSmem<typename C::Elem, C::kNT>(d).bytes);
  });
}

size_t backward_workspace(const Dims& d) {
  const size_t di = static_cast<size_t>(d.batch) * d.windows * d.heads * d.tokens;
  return di + static_cast<size_t>(d.batch) * d.heads * ceil_div(d.tokens, kTile) * table_rows(d);
}

cudaError_t backward(DType dtype, const void* dout, const void* q, const void* k, const void* v,
                     const void* out, const float* table, const float* lse, void* dq, void* dk,
                     void* dv, float* dtable, float* workspace, const Dims& d,
                     cudaStream_t stream) {
  return dispatch(dtype, d.head_dim, [&](auto c) {
    return backward_t<typename decltype(c)::Elem, decltype(c)::kNT>(dout, q, k, v, out, table, lse, dq,
                                                                    dk, dv, dtable, workspace, d, stream);
  });
}

std::string unsupported(DType dtype, int64_t batch, int64_t windows, int64_t heads,
                        int64_t tokens, int64_t head_dim, int64_t wh, int64_t ww,
                        size_t max_smem) {
  if (head_dim > kMaxHeadDim)
    return "head_dim " + std::to_string(head_dim) + " > " + std::to_string(kMaxHeadDim);
  // Grid axes y (heads) and z (B*nW windows, or B images) are capped at 65535 by CUDA.
  if (batch * windows > 65535 || heads > 65535)
    return "B*nW = " + std::to_string(batch * windows) + " and H = " + std::to_string(heads) +
           " must be <= 65535 (CUDA grid axes y and z)";
  if (batch * windows * heads * tokens * head_dim >= std::numeric_limits<int>::max())
    return "k has " + std::to_string(batch * windows * heads * tokens * head_dim) +
           " elements: more than 32-bit row indices address";
  const Dims d{static_cast<int>(batch), static_cast<int>(windows), static_cast<int>(heads),
               static_cast<int>(tokens), static_cast<int>(head_dim), static_cast<int>(wh),
               static_cast<int>(ww), 1.f};
  const size_t need = std::max(forward_smem(dtype, d), backward_smem(dtype, d));
  if (need > max_smem)
    return "window " + std::to_string(wh) + "x" + std::to_string(ww) + " with head_dim " +
           std::to_string(head_dim) + " needs " + std::to_string(need) +
           " bytes of shared memory per block, the GPU allows " + std::to_string(max_smem) +
           " (use float16/bfloat16, a smaller head_dim or window)";
  return "";
}

}  // namespace poster_fast::cuda
