// CUDA W-MCSA kernels, torch-free. Simple by design: one 128-thread block per 64-row tile,
// operands staged in shared memory (zero padded to 64 rows and D rounded up to 16), products on
// tensor cores (WMMA 16x16x16, fp32 accumulation) for fp16/bf16 and plain FMA loops for fp32.
//
// forward: block (query tile, head, window): online softmax over 64-key tiles.
// backward: rowsum(dout*out); block (key tile, head, window) accumulates dk, dv; block
// (query tile, head, image) accumulates dq over every window and key tile and a partial table
// gradient in shared memory, each table bin owned by one thread per tile (no atomics);
// the partial tables are then summed in a fixed order. Every result is deterministic.
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

constexpr int kThreads = 128, kWarps = kThreads / 32;
constexpr int BM = 64, BN = 64;  // query rows, key rows of a tile

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ inline int padded_dim(int d) { return ceil_div(d, 16) * 16; }
__host__ __device__ inline int table_rows(const Dims& d) { return (2 * d.wh - 1) * (2 * d.ww - 1); }

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__half x) { return __half2float(x); }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ inline T from_float(float x);
template <> __device__ inline float from_float<float>(float x) { return x; }
template <> __device__ inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Table row of the bias between query i and key j (Swin relative position index).
__device__ inline int rel_index(int i, int j, const Dims& d) {
  return (i / d.ww - j / d.ww + d.wh - 1) * (2 * d.ww - 1) + (i % d.ww - j % d.ww + d.ww - 1);
}

__device__ inline float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ inline float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
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

// C (M x N, float, row-major ldc) = [C +] op(A) op(B), all in shared memory; M, N, K multiples
// of 16. op(A) is M x K: A[m*lda + k], or A[k*lda + m] if TA. op(B) is K x N: B[k*ldb + n], or
// B[n*ldb + k] if TB. Ends without a barrier: the caller syncs before reading C.
template <class T, bool TA, bool TB, bool ACC>
__device__ void smem_mm(const T* A, int lda, const T* B, int ldb, float* C, int ldc, int M, int N,
                        int K) {
  if constexpr (std::is_same_v<T, float>) {
    for (int idx = threadIdx.x; idx < M * N; idx += kThreads) {
      const int m = idx / N, n = idx % N;
      float acc = ACC ? C[m * ldc + n] : 0.f;
      for (int k = 0; k < K; ++k)
        acc += (TA ? A[k * lda + m] : A[m * lda + k]) * (TB ? B[n * ldb + k] : B[k * ldb + n]);
      C[m * ldc + n] = acc;
    }
  } else {
    using LA = std::conditional_t<TA, wmma::col_major, wmma::row_major>;
    using LB = std::conditional_t<TB, wmma::col_major, wmma::row_major>;
    const int warp = threadIdx.x / 32, tiles_n = N / 16;
    for (int t = warp; t < (M / 16) * tiles_n; t += kWarps) {
      const int m0 = t / tiles_n * 16, n0 = t % tiles_n * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
      if (ACC)
        wmma::load_matrix_sync(c, C + m0 * ldc + n0, ldc, wmma::mem_row_major);
      else
        wmma::fill_fragment(c, 0.f);
      for (int k0 = 0; k0 < K; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LA> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LB> b;
        wmma::load_matrix_sync(a, TA ? A + k0 * lda + m0 : A + m0 * lda + k0, lda);
        wmma::load_matrix_sync(b, TB ? B + n0 * ldb + k0 : B + k0 * ldb + n0, ldb);
        wmma::mma_sync(c, a, b, c);
      }
      wmma::store_matrix_sync(C + m0 * ldc + n0, c, ldc, wmma::mem_row_major);
    }
  }
}

// dst (R x DP) = rows [r0, r0+R) of src (rows x D), zero padded.
template <class T>
__device__ void load_tile(T* dst, const T* src, int r0, int R, int rows, int D, int DP) {
  for (int idx = threadIdx.x; idx < R * DP; idx += kThreads) {
    const int r = idx / DP + r0, c = idx % DP;
    dst[idx] = r < rows && c < D ? src[static_cast<size_t>(r) * D + c] : from_float<T>(0.f);
  }
}

__device__ void load_table_column(float* dst, const float* table, int h, const Dims& d) {
  for (int x = threadIdx.x; x < table_rows(d); x += kThreads) dst[x] = table[x * d.heads + h];
}

template <class T> struct FwdSmem {
  size_t tab, q, k, v, p, s, o, m, l, bytes;
  __host__ __device__ explicit FwdSmem(const Dims& d) {
    const int DP = padded_dim(d.head_dim);
    Carver c;
    tab = c.take<float>(table_rows(d));
    q = c.take<T>(BM * DP); k = c.take<T>(BN * DP); v = c.take<T>(BN * DP);
    s = c.take<float>(BM * BN);
    p = std::is_same_v<T, float> ? s : c.take<T>(BM * BN);  // fp32: P overwrites S in place
    o = c.take<float>(BM * DP);
    m = c.take<float>(BM); l = c.take<float>(BM);
    bytes = c.bytes;
  }
};

template <class T>
__global__ void __launch_bounds__(kThreads)
    fwd_kernel(const T* q, const T* k, const T* v, const float* table, T* out, float* lse, Dims d) {
  extern __shared__ __align__(128) unsigned char smem[];
  const FwdSmem<T> L(d);
  float* sTab = reinterpret_cast<float*>(smem + L.tab);
  T* sQ = reinterpret_cast<T*>(smem + L.q);
  T* sK = reinterpret_cast<T*>(smem + L.k);
  T* sV = reinterpret_cast<T*>(smem + L.v);
  T* sP = reinterpret_cast<T*>(smem + L.p);
  float* sS = reinterpret_cast<float*>(smem + L.s);
  float* sO = reinterpret_cast<float*>(smem + L.o);
  float* sM = reinterpret_cast<float*>(smem + L.m);
  float* sL = reinterpret_cast<float*>(smem + L.l);

  const int N = d.tokens, D = d.head_dim, DP = padded_dim(D);
  const int i0 = blockIdx.x * BM, h = blockIdx.y, bw = blockIdx.z, b = bw / d.windows;
  const size_t slice = static_cast<size_t>(bw * d.heads + h) * N;  // row of (bw, h, token 0)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  load_table_column(sTab, table, h, d);
  load_tile(sQ, q + static_cast<size_t>(b * d.heads + h) * N * D, i0, BM, N, D, DP);
  for (int idx = threadIdx.x; idx < BM * DP; idx += kThreads) sO[idx] = 0.f;
  for (int r = threadIdx.x; r < BM; r += kThreads) {
    sM[r] = -INFINITY;
    sL[r] = 0.f;
  }
  for (int j0 = 0; j0 < N; j0 += BN) {
    load_tile(sK, k + slice * D, j0, BN, N, D, DP);
    load_tile(sV, v + slice * D, j0, BN, N, D, DP);
    __syncthreads();
    smem_mm<T, false, true, false>(sQ, DP, sK, DP, sS, BN, BM, BN, DP);  // S = Q K^T
    __syncthreads();
    // Online softmax: a warp per row, each lane two columns. Key j0 < N is valid, so m_new is finite.
    for (int r = warp; r < BM; r += kWarps) {
      const int i = i0 + r;
      float x[BN / 32], mx = -INFINITY;
      for (int u = 0; u < BN / 32; ++u) {
        const int c = lane + 32 * u, j = j0 + c;
        x[u] = j < N ? sS[r * BN + c] * d.scale + (i < N ? sTab[rel_index(i, j, d)] : 0.f)
                     : -INFINITY;
        mx = fmaxf(mx, x[u]);
      }
      const float m_old = sM[r], m_new = fmaxf(m_old, warp_max(mx));
      float sum = 0.f;
      for (int u = 0; u < BN / 32; ++u) {
        const float p = x[u] == -INFINITY ? 0.f : __expf(x[u] - m_new);
        sP[r * BN + lane + 32 * u] = from_float<T>(p);
        sum += p;
      }
      sum = warp_sum(sum);
      const float alpha = m_old == -INFINITY ? 0.f : __expf(m_old - m_new);
      for (int c = lane; c < DP; c += 32) sO[r * DP + c] *= alpha;
      __syncwarp();
      if (lane == 0) {
        sL[r] = sL[r] * alpha + sum;
        sM[r] = m_new;
      }
    }
    __syncthreads();
    smem_mm<T, false, false, true>(sP, BN, sV, DP, sO, DP, BM, DP, BN);  // O += P V
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < BM * D; idx += kThreads) {
    const int r = idx / D, c = idx % D;
    if (i0 + r < N) out[(slice + i0 + r) * D + c] = from_float<T>(sO[r * DP + c] / sL[r]);
  }
  for (int r = threadIdx.x; r < BM; r += kThreads)
    if (i0 + r < N) lse[slice + i0 + r] = sM[r] + logf(sL[r]);
}

// di = rowsum(dout * out) per (window, head, query).
template <class T>
__global__ void rowdot_kernel(const T* dout, const T* out, float* di, int rows, int D) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  float acc = 0.f;
  for (int c = 0; c < D; ++c)
    acc += to_float(dout[static_cast<size_t>(row) * D + c]) * to_float(out[static_cast<size_t>(row) * D + c]);
  di[row] = acc;
}

template <class T> struct BwdSmem {
  size_t tab, ptab, q, go, k, v, s, dp, pt, dst, acc1, acc2, lse, di, bytes;
  __host__ __device__ explicit BwdSmem(const Dims& d) {
    const int DP = padded_dim(d.head_dim);
    Carver c;
    tab = c.take<float>(table_rows(d)); ptab = c.take<float>(table_rows(d));
    q = c.take<T>(BM * DP); go = c.take<T>(BM * DP); k = c.take<T>(BN * DP); v = c.take<T>(BN * DP);
    s = c.take<float>(BM * BN); dp = c.take<float>(BM * BN);
    // fp32: P and dS overwrite S and dP in place (each element read, then written, by one thread).
    pt = std::is_same_v<T, float> ? s : c.take<T>(BM * BN);
    dst = std::is_same_v<T, float> ? dp : c.take<T>(BM * BN);
    acc1 = c.take<float>(BN * DP); acc2 = c.take<float>(BN * DP);
    lse = c.take<float>(BM); di = c.take<float>(BM);
    bytes = c.bytes;
  }
};

template <class T> struct BwdTiles {
  float *tab, *ptab, *s, *dp, *acc1, *acc2, *lse, *di;
  T *q, *go, *k, *v, *pt, *dst;
  __device__ BwdTiles(unsigned char* smem, const BwdSmem<T>& L)
      : tab(reinterpret_cast<float*>(smem + L.tab)), ptab(reinterpret_cast<float*>(smem + L.ptab)),
        s(reinterpret_cast<float*>(smem + L.s)), dp(reinterpret_cast<float*>(smem + L.dp)),
        acc1(reinterpret_cast<float*>(smem + L.acc1)), acc2(reinterpret_cast<float*>(smem + L.acc2)),
        lse(reinterpret_cast<float*>(smem + L.lse)), di(reinterpret_cast<float*>(smem + L.di)),
        q(reinterpret_cast<T*>(smem + L.q)), go(reinterpret_cast<T*>(smem + L.go)),
        k(reinterpret_cast<T*>(smem + L.k)), v(reinterpret_cast<T*>(smem + L.v)),
        pt(reinterpret_cast<T*>(smem + L.pt)), dst(reinterpret_cast<T*>(smem + L.dst)) {}
};

// lse and di of query rows [i0, i0+BM) of slice `slice` (padded rows: 0).
template <class T>
__device__ void load_row_stats(const BwdTiles<T>& t, const float* lse, const float* di,
                               size_t slice, int i0, int N) {
  for (int r = threadIdx.x; r < BM; r += kThreads) {
    t.lse[r] = i0 + r < N ? lse[slice + i0 + r] : 0.f;
    t.di[r] = i0 + r < N ? di[slice + i0 + r] : 0.f;
  }
}

// From the staged q, dout, k, v tiles: t.pt = P, t.dp = dS (float) and t.dst = dS (T), with
// P = exp(S - lse), dS = P (dout v^T - di); zero outside the valid (query, key) rectangle.
template <class T>
__device__ void ds_tile(const BwdTiles<T>& t, int i0, int j0, const Dims& d) {
  const int DP = padded_dim(d.head_dim), N = d.tokens;
  smem_mm<T, false, true, false>(t.q, DP, t.k, DP, t.s, BN, BM, BN, DP);
  smem_mm<T, false, true, false>(t.go, DP, t.v, DP, t.dp, BN, BM, BN, DP);
  __syncthreads();
  for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
    const int r = idx / BN, i = i0 + r, j = j0 + idx % BN;
    float p = 0.f, ds = 0.f;
    if (i < N && j < N) {
      p = __expf(t.s[idx] * d.scale + t.tab[rel_index(i, j, d)] - t.lse[r]);
      ds = p * (t.dp[idx] - t.di[r]);
    }
    t.dp[idx] = ds;
    t.pt[idx] = from_float<T>(p);
    t.dst[idx] = from_float<T>(ds);
  }
  __syncthreads();
}

// dk, dv of key tile blockIdx.x: sums over every query tile of the window's image.
template <class T>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const T* dout, const T* q, const T* k, const T* v, const float* table,
                const float* lse, const float* di, T* dk, T* dv, Dims d) {
  extern __shared__ __align__(128) unsigned char smem[];
  const BwdTiles<T> t(smem, BwdSmem<T>(d));
  const int N = d.tokens, D = d.head_dim, DP = padded_dim(D);
  const int j0 = blockIdx.x * BN, h = blockIdx.y, bw = blockIdx.z, b = bw / d.windows;
  const size_t slice = static_cast<size_t>(bw * d.heads + h) * N;
  const T* qb = q + static_cast<size_t>(b * d.heads + h) * N * D;

  load_table_column(t.tab, table, h, d);
  load_tile(t.k, k + slice * D, j0, BN, N, D, DP);
  load_tile(t.v, v + slice * D, j0, BN, N, D, DP);
  for (int idx = threadIdx.x; idx < BN * DP; idx += kThreads) t.acc1[idx] = t.acc2[idx] = 0.f;
  for (int i0 = 0; i0 < N; i0 += BM) {
    load_tile(t.q, qb, i0, BM, N, D, DP);
    load_tile(t.go, dout + slice * D, i0, BM, N, D, DP);
    load_row_stats(t, lse, di, slice, i0, N);
    __syncthreads();
    ds_tile(t, i0, j0, d);
    smem_mm<T, true, false, true>(t.pt, BN, t.go, DP, t.acc1, DP, BN, DP, BM);  // dV += P^T dout
    smem_mm<T, true, false, true>(t.dst, BN, t.q, DP, t.acc2, DP, BN, DP, BM);  // dK += dS^T q
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < BN * D; idx += kThreads) {
    const int r = idx / D, c = idx % D;
    if (j0 + r < N) {
      dv[(slice + j0 + r) * D + c] = from_float<T>(t.acc1[r * DP + c]);
      dk[(slice + j0 + r) * D + c] = from_float<T>(t.acc2[r * DP + c] * d.scale);
    }
  }
}

// dq of query tile blockIdx.x of image blockIdx.z (summed over its windows and key tiles), and
// this block's partial table gradient: part[((b*H + h)*tiles + tile)*rows + x].
template <class T>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const T* dout, const T* q, const T* k, const T* v, const float* table,
              const float* lse, const float* di, T* dq, float* part, Dims d) {
  extern __shared__ __align__(128) unsigned char smem[];
  const BwdTiles<T> t(smem, BwdSmem<T>(d));
  const int N = d.tokens, D = d.head_dim, DP = padded_dim(D), rows = table_rows(d);
  const int i0 = blockIdx.x * BM, h = blockIdx.y, b = blockIdx.z, span = 2 * d.ww - 1;
  const size_t qslice = static_cast<size_t>(b * d.heads + h) * N;

  load_table_column(t.tab, table, h, d);
  for (int x = threadIdx.x; x < rows; x += kThreads) t.ptab[x] = 0.f;
  for (int idx = threadIdx.x; idx < BM * DP; idx += kThreads) t.acc1[idx] = 0.f;
  load_tile(t.q, q + qslice * D, i0, BM, N, D, DP);
  const int iend = min(i0 + BM, N);
  for (int w = 0; w < d.windows; ++w) {
    const size_t slice = static_cast<size_t>((b * d.windows + w) * d.heads + h) * N;
    load_tile(t.go, dout + slice * D, i0, BM, N, D, DP);
    load_row_stats(t, lse, di, slice, i0, N);
    for (int j0 = 0; j0 < N; j0 += BN) {
      load_tile(t.k, k + slice * D, j0, BN, N, D, DP);
      load_tile(t.v, v + slice * D, j0, BN, N, D, DP);
      __syncthreads();
      ds_tile(t, i0, j0, d);
      smem_mm<T, false, false, true>(t.dst, BN, t.k, DP, t.acc1, DP, BM, DP, BN);  // dQ += dS k
      // Table bins (dh, dw) that this tile can reach; one thread per bin, so no races.
      const int jend = min(j0 + BN, N);
      const int dh_lo = i0 / d.ww - (jend - 1) / d.ww, dh_hi = (iend - 1) / d.ww - j0 / d.ww;
      for (int u = threadIdx.x; u < (dh_hi - dh_lo + 1) * span; u += kThreads) {
        const int dh = dh_lo + u / span, dw = u % span - (d.ww - 1);
        float acc = 0.f;
        for (int i = i0; i < iend; ++i) {
          const int hj = i / d.ww - dh, wj = i % d.ww - dw, j = hj * d.ww + wj;
          if (hj >= 0 && hj < d.wh && wj >= 0 && wj < d.ww && j >= j0 && j < jend)
            acc += t.dp[(i - i0) * BN + j - j0];
        }
        t.ptab[(dh + d.wh - 1) * span + dw + d.ww - 1] += acc;
      }
      __syncthreads();
    }
  }
  for (int idx = threadIdx.x; idx < BM * D; idx += kThreads) {
    const int r = idx / D, c = idx % D;
    if (i0 + r < N) dq[(qslice + i0 + r) * D + c] = from_float<T>(t.acc1[r * DP + c] * d.scale);
  }
  float* mine = part + (static_cast<size_t>(b * d.heads + h) * gridDim.x + blockIdx.x) * rows;
  for (int x = threadIdx.x; x < rows; x += kThreads) mine[x] = t.ptab[x];
}

// dtable[x, h] = sum over (image, query tile) of the partial tables, in a fixed order.
__global__ void table_reduce_kernel(const float* part, float* dtable, int images, int tiles,
                                    Dims d) {
  const int rows = table_rows(d), e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= rows * d.heads) return;
  const int x = e / d.heads, h = e % d.heads;
  float acc = 0.f;
  for (int b = 0; b < images; ++b)
    for (int tile = 0; tile < tiles; ++tile)
      acc += part[(static_cast<size_t>(b * d.heads + h) * tiles + tile) * rows + x];
  dtable[e] = acc;
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

template <class T>
cudaError_t forward_t(const void* q, const void* k, const void* v, const float* table, void* out,
                      float* lse, const Dims& d, cudaStream_t stream) {
  const size_t bytes = FwdSmem<T>(d).bytes;
  if (cudaError_t e = allow_smem(fwd_kernel<T>, bytes)) return e;
  const dim3 grid(ceil_div(d.tokens, BM), d.heads, d.batch * d.windows);
  fwd_kernel<T><<<grid, kThreads, bytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), table,
      static_cast<T*>(out), lse, d);
  return cudaGetLastError();
}

template <class T>
cudaError_t backward_t(const void* dout, const void* q, const void* k, const void* v,
                       const void* out, const float* table, const float* lse, void* dq, void* dk,
                       void* dv, float* dtable, float* workspace, const Dims& d,
                       cudaStream_t stream) {
  const int BW = d.batch * d.windows, rows = BW * d.heads * d.tokens;
  const int tiles = ceil_div(d.tokens, BM);
  float* di = workspace;
  float* part = workspace + rows;
  const T* go = static_cast<const T*>(dout);
  const T *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k),
          *vt = static_cast<const T*>(v);
  const size_t bytes = BwdSmem<T>(d).bytes;
  if (cudaError_t e = allow_smem(dkdv_kernel<T>, bytes)) return e;
  if (cudaError_t e = allow_smem(dq_kernel<T>, bytes)) return e;
  rowdot_kernel<T><<<ceil_div(rows, 256), 256, 0, stream>>>(go, static_cast<const T*>(out), di,
                                                              rows, d.head_dim);
  dkdv_kernel<T><<<dim3(ceil_div(d.tokens, BN), d.heads, BW), kThreads, bytes, stream>>>(
      go, qt, kt, vt, table, lse, di, static_cast<T*>(dk), static_cast<T*>(dv), d);
  dq_kernel<T><<<dim3(tiles, d.heads, d.batch), kThreads, bytes, stream>>>(
      go, qt, kt, vt, table, lse, di, static_cast<T*>(dq), part, d);
  table_reduce_kernel<<<ceil_div(table_rows(d) * d.heads, 256), 256, 0, stream>>>(
      part, dtable, d.batch, tiles, d);
  return cudaGetLastError();
}

}  // namespace

cudaError_t forward(DType dtype, const void* q, const void* k, const void* v, const float* table,
                    void* out, float* lse, const Dims& d, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return forward_t<__half>(q, k, v, table, out, lse, d, stream);
    case DType::kBFloat16: return forward_t<__nv_bfloat16>(q, k, v, table, out, lse, d, stream);
    default: return forward_t<float>(q, k, v, table, out, lse, d, stream);
  }
}

size_t forward_smem(DType dtype, const Dims& d) {
  switch (dtype) {
    case DType::kFloat16: return FwdSmem<__half>(d).bytes;
    case DType::kBFloat16: return FwdSmem<__nv_bfloat16>(d).bytes;
    default: return FwdSmem<float>(d).bytes;
  }
}

size_t backward_smem(DType dtype, const Dims& d) {
  switch (dtype) {
    case DType::kFloat16: return BwdSmem<__half>(d).bytes;
    case DType::kBFloat16: return BwdSmem<__nv_bfloat16>(d).bytes;
    default: return BwdSmem<float>(d).bytes;
  }
}

size_t backward_workspace(const Dims& d) {
  const size_t di = static_cast<size_t>(d.batch) * d.windows * d.heads * d.tokens;
  return di + static_cast<size_t>(d.batch) * d.heads * ceil_div(d.tokens, BM) * table_rows(d);
}

cudaError_t backward(DType dtype, const void* dout, const void* q, const void* k, const void* v,
                     const void* out, const float* table, const float* lse, void* dq, void* dk,
                     void* dv, float* dtable, float* workspace, const Dims& d,
                     cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16:
      return backward_t<__half>(dout, q, k, v, out, table, lse, dq, dk, dv, dtable, workspace, d,
                                stream);
    case DType::kBFloat16:
      return backward_t<__nv_bfloat16>(dout, q, k, v, out, table, lse, dq, dk, dv, dtable,
                                       workspace, d, stream);
    default:
      return backward_t<float>(dout, q, k, v, out, table, lse, dq, dk, dv, dtable, workspace, d,
                               stream);
  }
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
