// Fused W-MCSA CPU kernels, included once per instruction set by kernels_*.cpp inside
// `namespace poster_fast::cpu::<isa>`, which first defines:
//   POSTER_FAST_VEC_BYTES  vector width in bytes (32: 8 floats, 64: 16 floats);
//   POSTER_FAST_TILE_M     rows of the GEMM register tile (tile = TILE_M x 2 vectors);
//   POSTER_FAST_F16C       1 to convert fp16 with the F16C / AVX-512F instructions (<immintrin.h>
//                          included), 0 to use the compiler's _Float16 conversions.
// Torch-free and free of std templates, so one ISA's copy cannot leak into another's through
// shared inline instantiations.
//
// One task = one (window, head): it owns that window's dk, dv, dq rows and a partial table
// gradient, so every result is independent of the thread count and schedule. Inputs are read in
// their own dtype and strides while their tiles are staged (converted to the compute type T and
// zero padded), and results are converted on their last write: no whole-tensor copies. Within a
// task, queries go in blocks of kBlockQ rows; each block holds its full (rows x N) logit panel, so
// the softmax is an exact two-pass one in T. Matrices are padded with zeros to whole vectors
// (N, D) and whole register tiles (rows); padded keys get a -inf logit.

template <class T> struct VecOf;
template <> struct VecOf<float> {
  typedef float type __attribute__((vector_size(POSTER_FAST_VEC_BYTES)));
};
template <> struct VecOf<double> {
  typedef double type __attribute__((vector_size(POSTER_FAST_VEC_BYTES)));
};
template <class T> using Vec = typename VecOf<T>::type;
typedef int32_t VecI32 __attribute__((vector_size(POSTER_FAST_VEC_BYTES)));
typedef uint32_t VecU32 __attribute__((vector_size(POSTER_FAST_VEC_BYTES)));
typedef uint16_t VecU16 __attribute__((vector_size(POSTER_FAST_VEC_BYTES / 2)));  // fp16 / bf16

template <class T> constexpr int64_t kLanes = POSTER_FAST_VEC_BYTES / sizeof(T);
constexpr int64_t kLanesF = kLanes<float>;
constexpr int64_t kTileM = POSTER_FAST_TILE_M;
constexpr int64_t kBlockQ = 64;
static_assert(kBlockQ % kTileM == 0, "query blocks must be whole register tiles");

template <class V, class T> inline V vload(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <class T> inline Vec<T> vload(const T* p) { return vload<Vec<T>>(p); }
template <class V, class T> inline void vstore(T* p, V v) { __builtin_memcpy(p, &v, sizeof(v)); }
template <class T> inline Vec<T> vsplat(T x) { return Vec<T>{} + x; }
template <class T> inline T hsum(Vec<T> v) {
  T s = 0;
  for (int64_t i = 0; i < kLanes<T>; ++i) s += v[i];
  return s;
}
template <class T> inline T hmax(Vec<T> v) {
  T s = v[0];
  for (int64_t i = 1; i < kLanes<T>; ++i) s = v[i] > s ? v[i] : s;
  return s;
}

// ---- dtype conversions (round to nearest even, as torch's .to()) ----

inline uint32_t bits(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  return u;
}
inline float from_bits(uint32_t u) {
  float x;
  __builtin_memcpy(&x, &u, 4);
  return x;
}
inline float bf16_to_f32(uint16_t h) { return from_bits(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float x) {
  if (x != x) return 0x7fc0;
  const uint32_t u = bits(x);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline Vec<float> bf16_to_f32(VecU16 h) { return (Vec<float>)(__builtin_convertvector(h, VecU32) << 16); }
inline VecU16 f32_to_bf16(Vec<float> x) {
  const VecU32 u = (VecU32)x;
  const VecU32 r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const VecI32 nan = x != x;
  return __builtin_convertvector(nan ? (VecU32{} + 0x7fc0u) : r, VecU16);
}

#if POSTER_FAST_F16C
inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t f32_to_f16(float x) { return _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
#if POSTER_FAST_VEC_BYTES == 64  // the zero-masked forms: GCC 12 warns on the plain ones' undefined
inline Vec<float> f16_to_f32(VecU16 h) {
  return (Vec<float>)_mm512_maskz_cvtph_ps(__mmask16(0xffff), (__m256i)h);
}
inline VecU16 f32_to_f16(Vec<float> x) {
  return (VecU16)_mm512_maskz_cvtps_ph(__mmask16(0xffff), (__m512)x, _MM_FROUND_TO_NEAREST_INT);
}
#else
inline Vec<float> f16_to_f32(VecU16 h) { return (Vec<float>)_mm256_cvtph_ps((__m128i)h); }
inline VecU16 f32_to_f16(Vec<float> x) {
  return (VecU16)_mm256_cvtps_ph((__m256)x, _MM_FROUND_TO_NEAREST_INT);
}
#endif
#else
inline float f16_to_f32(uint16_t h) {
  _Float16 x;
  __builtin_memcpy(&x, &h, 2);
  return float(x);
}
inline uint16_t f32_to_f16(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t u;
  __builtin_memcpy(&u, &h, 2);
  return u;
}
inline Vec<float> f16_to_f32(VecU16 h) {
  Vec<float> x;
  for (int64_t i = 0; i < kLanesF; ++i) x[i] = f16_to_f32(uint16_t(h[i]));
  return x;
}
inline VecU16 f32_to_f16(Vec<float> x) {
  VecU16 h;
  for (int64_t i = 0; i < kLanesF; ++i) h[i] = f32_to_f16(x[i]);
  return h;
}
#endif

inline int64_t elem_size(DType t) {
  return t == DType::kFloat64 ? 8 : t == DType::kFloat32 ? 4 : 2;
}

// Element i of a buffer of dtype t, in T. Doubles go to half precision through float, as torch.
template <class T> inline T read(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat32: return T(static_cast<const float*>(p)[i]);
    case DType::kFloat64: return T(static_cast<const double*>(p)[i]);
    case DType::kFloat16: return T(f16_to_f32(static_cast<const uint16_t*>(p)[i]));
    default: return T(bf16_to_f32(static_cast<const uint16_t*>(p)[i]));
  }
}
template <class T> inline void write(void* p, DType t, int64_t i, T x) {
  switch (t) {
    case DType::kFloat32: static_cast<float*>(p)[i] = float(x); break;
    case DType::kFloat64: static_cast<double*>(p)[i] = double(x); break;
    case DType::kFloat16: static_cast<uint16_t*>(p)[i] = f32_to_f16(float(x)); break;
    default: static_cast<uint16_t*>(p)[i] = f32_to_bf16(float(x)); break;
  }
}

// Address of element (i0, i1, i2, i3) of a strided input.
inline const void* at(const In& a, int64_t i0, int64_t i1, int64_t i2 = 0, int64_t i3 = 0) {
  const int64_t e = i0 * a.stride[0] + i1 * a.stride[1] + i2 * a.stride[2] + i3 * a.stride[3];
  return static_cast<const char*>(a.data) + e * elem_size(a.dtype);
}
inline void* at(Out o, int64_t offset) {
  return static_cast<char*>(o.data) + offset * elem_size(o.dtype);
}

// dst[0, n) = s * (n elements of dtype t at stride cs from src).
template <class T> void load_row(const void* src, DType t, int64_t cs, int64_t n, T* dst, T s) {
  int64_t c = 0;
  if constexpr (sizeof(T) == sizeof(float)) {
    if (cs == 1) {
      constexpr int64_t L = kLanesF;
      if (t == DType::kFloat32) {
        for (const float* p = static_cast<const float*>(src); c + L <= n; c += L)
          vstore(dst + c, vload(p + c) * s);
      } else if (t == DType::kBFloat16) {
        for (const uint16_t* p = static_cast<const uint16_t*>(src); c + L <= n; c += L)
          vstore(dst + c, bf16_to_f32(vload<VecU16>(p + c)) * s);
      } else if (t == DType::kFloat16) {
        for (const uint16_t* p = static_cast<const uint16_t*>(src); c + L <= n; c += L)
          vstore(dst + c, f16_to_f32(vload<VecU16>(p + c)) * s);
      }
    }
  }
  for (; c < n; ++c) dst[c] = read<T>(src, t, c * cs) * s;
}

// n elements of dtype t at dst (contiguous) = s * src[0, n).
template <class T> void store_row(void* dst, DType t, int64_t n, const T* src, T s) {
  int64_t c = 0;
  if constexpr (sizeof(T) == sizeof(float)) {
    constexpr int64_t L = kLanesF;
    if (t == DType::kFloat32) {
      for (float* p = static_cast<float*>(dst); c + L <= n; c += L) vstore(p + c, vload(src + c) * s);
    } else if (t == DType::kBFloat16) {
      for (uint16_t* p = static_cast<uint16_t*>(dst); c + L <= n; c += L)
        vstore(p + c, f32_to_bf16(vload(src + c) * s));
    } else if (t == DType::kFloat16) {
      for (uint16_t* p = static_cast<uint16_t*>(dst); c + L <= n; c += L)
        vstore(p + c, f32_to_f16(vload(src + c) * s));
    }
  }
  for (; c < n; ++c) write<T>(dst, t, c, src[c] * s);
}

// exp for one vector of floats: Cody-Waite reduction to [-ln2/2, ln2/2] and the Cephes expf
// polynomial (about 1 ulp); exp(x) = 0 below -87 (so exp(-inf) = 0), x clamped at 88.
inline Vec<float> vexp(Vec<float> x) {
  const Vec<float> lo = vsplat(-87.0f), hi = vsplat(88.0f), magic = vsplat(12582912.0f);
  const VecI32 underflow = x < lo;
  Vec<float> xc = underflow ? lo : x;
  xc = xc > hi ? hi : xc;
  const Vec<float> t = xc * 1.44269504088896341f + magic;  // round(x / ln2) in the low bits
  const Vec<float> n = t - magic;
  const VecI32 ni = (VecI32)t - (VecI32)magic;
  Vec<float> r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec<float> p = vsplat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Vec<float> y = p * (Vec<float>)((ni + 127) << 23);
  return underflow ? vsplat(0.0f) : y;
}
inline Vec<double> vexp(Vec<double> x) {
  for (int64_t i = 0; i < kLanes<double>; ++i) x[i] = __builtin_exp(x[i]);
  return x;
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// C[M x NV vectors] += A B for the column block at c: a kTileM x NV-vector register tile per
// kTileM rows, the B panel reused over M.
template <int NV, class T>
void gemm_block(int64_t M, int64_t c, int64_t K, const T* A, int64_t am, int64_t ak, const T* B,
                int64_t ldb, T* C, int64_t ldc) {
  constexpr int64_t L = kLanes<T>;
  for (int64_t m = 0; m < M; m += kTileM) {
    T* cp = C + m * ldc + c;
    Vec<T> acc[kTileM][NV];
#pragma GCC unroll 8
    for (int64_t i = 0; i < kTileM; ++i)
#pragma GCC unroll 2
      for (int64_t j = 0; j < NV; ++j) acc[i][j] = vload(cp + i * ldc + j * L);
    const T* ap = A + m * am;
    const T* bp = B + c;
    for (int64_t k = 0; k < K; ++k, ap += ak, bp += ldb) {
      Vec<T> b[NV];
#pragma GCC unroll 2
      for (int64_t j = 0; j < NV; ++j) b[j] = vload(bp + j * L);
#pragma GCC unroll 8
      for (int64_t i = 0; i < kTileM; ++i) {
        const T s = ap[i * am];
#pragma GCC unroll 2
        for (int64_t j = 0; j < NV; ++j) acc[i][j] += s * b[j];
      }
    }
#pragma GCC unroll 8
    for (int64_t i = 0; i < kTileM; ++i)
#pragma GCC unroll 2
      for (int64_t j = 0; j < NV; ++j) vstore(cp + i * ldc + j * L, acc[i][j]);
  }
}

// C[M x ncols] += A B with a(m, k) = A[m*am + k*ak] and B rows of ncols at stride ldb.
// M % kTileM == 0, ncols % lanes == 0: blocks of two vectors, then one.
template <class T>
void gemm_acc(int64_t M, int64_t ncols, int64_t K, const T* A, int64_t am, int64_t ak,
              const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int64_t L = kLanes<T>;
  int64_t c = 0;
  for (; c + 2 * L <= ncols; c += 2 * L) gemm_block<2>(M, c, K, A, am, ak, B, ldb, C, ldc);
  if (c < ncols) gemm_block<1>(M, c, K, A, am, ak, B, ldb, C, ldc);
}

// Per-problem sizes shared by forward and backward.
struct Layout {
  int64_t N, D, H, Np, Dp, rows;  // rows: table rows (2Wh-1)(2Ww-1)
  template <class T> static Layout make(const Dims& d) {
    static_assert(kLanes<T> % kTileM == 0, "padded N must be whole register tiles (dK, dV rows)");
    return {d.tokens, d.head_dim, d.heads, round_up(d.tokens, kLanes<T>),
            round_up(d.head_dim, kLanes<T>), (2 * d.wh - 1) * (2 * d.ww - 1)};
  }
};

template <class T> T* alloc(int64_t n) {
  const size_t bytes = static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(T)), 64));
  return static_cast<T*>(aligned_alloc(64, bytes > 0 ? bytes : 64));
}

template <class T> void zero(T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = 0;
}

// dst (rows_p x cols_p) = s * the (rows x cols) matrix at rows r0.. of a(i0, i1), zero padded.
template <class T>
void stage(const In& a, int64_t i0, int64_t i1, int64_t r0, int64_t rows, int64_t cols, T* dst,
           int64_t rows_p, int64_t cols_p, T s = 1) {
  for (int64_t r = 0; r < rows; ++r) {
    T* row = dst + r * cols_p;
    load_row(at(a, i0, i1, r0 + r), a.dtype, a.stride[3], cols, row, s);
    zero(row + cols, cols_p - cols);
  }
  zero(dst + rows * cols_p, (rows_p - rows) * cols_p);
}

// dst (cols_p x rows_p) = src (rows_p x cols_p)^T.
template <class T> void transpose(const T* src, int64_t rows_p, int64_t cols_p, T* dst) {
  for (int64_t c = 0; c < cols_p; ++c)
    for (int64_t r = 0; r < rows_p; ++r) dst[c * rows_p + r] = src[r * cols_p + c];
}

// The table column of head h reversed: rev[x] = table[rows-1-x, h]. Then the bias of query
// i = (hi, wi) and key (hj, wj) is rev[(hj + Wh-1-hi)*(2Ww-1) + (Ww-1-wi) + wj]: contiguous in wj.
template <class T> void reversed_column(const In& table, int64_t h, const Layout& l, T* rev) {
  for (int64_t x = 0; x < l.rows; ++x) rev[x] = read<T>(at(table, l.rows - 1 - x, h), table.dtype, 0);
}
inline int64_t bias_base(int64_t i, int64_t hj, const Dims& d) {
  return (hj + d.wh - 1 - i / d.ww) * (2 * d.ww - 1) + d.ww - 1 - i % d.ww;
}

// S rows [0, Mr): real query rows get the bias (and -inf on padded keys), padded rows 0.
template <class T>
void fill_bias(T* S, int64_t i0, int64_t rows, int64_t Mr, const T* rev, const Layout& l,
               const Dims& d) {
  const T neg_inf = -__builtin_inf();
  for (int64_t r = 0; r < Mr; ++r) {
    T* s = S + r * l.Np;
    if (r >= rows) {
      zero(s, l.Np);
      continue;
    }
    for (int64_t hj = 0; hj < d.wh; ++hj) {
      const T* b = rev + bias_base(i0 + r, hj, d);
      for (int64_t wj = 0; wj < d.ww; ++wj) s[hj * d.ww + wj] = b[wj];
    }
    for (int64_t j = l.N; j < l.Np; ++j) s[j] = neg_inf;
  }
}

template <class T> T row_max(const T* s, int64_t n) {
  Vec<T> m = vload(s);
  for (int64_t j = kLanes<T>; j < n; j += kLanes<T>) {
    const Vec<T> x = vload(s + j);
    m = x > m ? x : m;
  }
  return hmax<T>(m);
}

// s[j] = exp(s[j] - shift) in place; returns the sum.
template <class T> T exp_row(T* s, int64_t n, T shift) {
  Vec<T> acc = vsplat(T(0));
  for (int64_t j = 0; j < n; j += kLanes<T>) {
    const Vec<T> e = vexp(vload(s + j) - shift);
    vstore(s + j, e);
    acc += e;
  }
  return hsum<T>(acc);
}

template <class T>
void forward(const In& q, const In& k, const In& v, const In& table, Out out, T* lse,
             const Dims& d) {
  const Layout l = Layout::make<T>(d);
  const int64_t tasks = d.batch * d.windows * l.H, BQ = kBlockQ;
#pragma omp parallel
  {
    T* kp = alloc<T>(l.Np * l.Dp);
    T* kt = alloc<T>(l.Dp * l.Np);  // K^T
    T* vp = alloc<T>(l.Np * l.Dp);
    T* qs = alloc<T>(BQ * l.Dp);  // scaled queries
    T* S = alloc<T>(BQ * l.Np);
    T* o = alloc<T>(BQ * l.Dp);
    T* rev = alloc<T>(l.rows);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t h = task % l.H, bw = task / l.H, b = bw / d.windows;
      stage(k, bw, h, 0, l.N, l.D, kp, l.Np, l.Dp);
      transpose(kp, l.Np, l.Dp, kt);
      stage(v, bw, h, 0, l.N, l.D, vp, l.Np, l.Dp);
      reversed_column(table, h, l, rev);
      for (int64_t i0 = 0; i0 < l.N; i0 += BQ) {
        const int64_t rows = min64(BQ, l.N - i0), Mr = round_up(rows, kTileM);
        stage(q, b, h, i0, rows, l.D, qs, Mr, l.Dp, T(d.scale));
        fill_bias(S, i0, rows, Mr, rev, l, d);
        gemm_acc(Mr, l.Np, l.Dp, qs, l.Dp, 1, kt, l.Np, S, l.Np);
        T inv_sum[kBlockQ];
        for (int64_t r = 0; r < rows; ++r) {
          T* s = S + r * l.Np;
          const T m = row_max(s, l.Np);
          const T sum = exp_row(s, l.Np, m);
          inv_sum[r] = T(1) / sum;
          lse[task * l.N + i0 + r] = m + __builtin_log(sum);
        }
        zero(o, Mr * l.Dp);
        gemm_acc(Mr, l.Dp, l.Np, S, l.Np, 1, vp, l.Dp, o, l.Dp);
        for (int64_t r = 0; r < rows; ++r)
          store_row(at(out, (task * l.N + i0 + r) * l.D), out.dtype, l.D, o + r * l.Dp, inv_sum[r]);
      }
    }
    free(kp); free(kt); free(vp); free(qs); free(S); free(o); free(rev);
  }
}

template <class T>
void backward(const In& dout, const In& q, const In& k, const In& v, const In& table,
              const In& out, const In& lse, Out dq, Out dk, Out dv, Out dtable, T* dq_win,
              T* part, const Dims& d) {
  const Layout l = Layout::make<T>(d);
  const int64_t tasks = d.batch * d.windows * l.H, BQ = kBlockQ, ND = l.N * l.D;
  const T scale = T(d.scale);
#pragma omp parallel
  {
    T* kp = alloc<T>(l.Np * l.Dp);  // K (for dQ)
    T* kt = alloc<T>(l.Dp * l.Np);  // K^T (for S)
    T* vp = alloc<T>(l.Np * l.Dp);
    T* vt = alloc<T>(l.Dp * l.Np);  // V^T (for dP)
    T* qs = alloc<T>(BQ * l.Dp);
    T* go = alloc<T>(BQ * l.Dp);  // dout block
    T* ob = alloc<T>(BQ * l.Dp);  // out block
    T* P = alloc<T>(BQ * l.Np);
    T* dS = alloc<T>(BQ * l.Np);
    T* gq = alloc<T>(BQ * l.Dp);
    T* gk = alloc<T>(l.Np * l.Dp);
    T* gv = alloc<T>(l.Np * l.Dp);
    T* rev = alloc<T>(l.rows);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t h = task % l.H, bw = task / l.H, b = bw / d.windows;
      T* gtab = part + task * l.rows;  // reversed order, like `rev`
      stage(k, bw, h, 0, l.N, l.D, kp, l.Np, l.Dp);
      transpose(kp, l.Np, l.Dp, kt);
      stage(v, bw, h, 0, l.N, l.D, vp, l.Np, l.Dp);
      transpose(vp, l.Np, l.Dp, vt);
      reversed_column(table, h, l, rev);
      zero(gk, l.Np * l.Dp);
      zero(gv, l.Np * l.Dp);
      zero(gtab, l.rows);
      for (int64_t i0 = 0; i0 < l.N; i0 += BQ) {
        const int64_t rows = min64(BQ, l.N - i0), Mr = round_up(rows, kTileM);
        stage(q, b, h, i0, rows, l.D, qs, Mr, l.Dp, scale);
        stage(dout, bw, h, i0, rows, l.D, go, Mr, l.Dp);
        stage(out, bw, h, i0, rows, l.D, ob, Mr, l.Dp);
        // P = exp(S - lse); padded rows stay 0.
        fill_bias(P, i0, rows, Mr, rev, l, d);
        gemm_acc(Mr, l.Np, l.Dp, qs, l.Dp, 1, kt, l.Np, P, l.Np);
        for (int64_t r = 0; r < rows; ++r)
          exp_row(P + r * l.Np, l.Np, read<T>(at(lse, bw, h, i0 + r), lse.dtype, 0));
        // dS = P * (dout V^T - rowsum(dout * out)).
        zero(dS, Mr * l.Np);
        gemm_acc(Mr, l.Np, l.Dp, go, l.Dp, 1, vt, l.Np, dS, l.Np);
        for (int64_t r = 0; r < rows; ++r) {
          T di = 0;
          for (int64_t c = 0; c < l.D; ++c) di += go[r * l.Dp + c] * ob[r * l.Dp + c];
          T* g = dS + r * l.Np;
          const T* p = P + r * l.Np;
          for (int64_t j = 0; j < l.Np; ++j) g[j] = p[j] * (g[j] - di);
        }
        gemm_acc(l.Np, l.Dp, Mr, P, 1, l.Np, go, l.Dp, gv, l.Dp);   // dV += P^T dout
        gemm_acc(l.Np, l.Dp, Mr, dS, 1, l.Np, qs, l.Dp, gk, l.Dp);  // dK += dS^T (scale q)
        zero(gq, Mr * l.Dp);
        gemm_acc(Mr, l.Dp, l.Np, dS, l.Np, 1, kp, l.Dp, gq, l.Dp);  // dQ = dS K (times scale)
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = task * ND + (i0 + r) * l.D;
          if (d.windows == 1)  // task == b*H + h: this is dq's own row
            store_row(at(dq, row), dq.dtype, l.D, gq + r * l.Dp, scale);
          else
            store_row<T>(dq_win + row, sizeof(T) == 4 ? DType::kFloat32 : DType::kFloat64, l.D,
                         gq + r * l.Dp, scale);
        }
        for (int64_t r = 0; r < rows; ++r) {
          const T* g = dS + r * l.Np;
          for (int64_t hj = 0; hj < d.wh; ++hj) {
            T* t = gtab + bias_base(i0 + r, hj, d);
            for (int64_t wj = 0; wj < d.ww; ++wj) t[wj] += g[hj * d.ww + wj];
          }
        }
      }
      for (int64_t j = 0; j < l.N; ++j) {
        store_row(at(dk, task * ND + j * l.D), dk.dtype, l.D, gk + j * l.Dp, T(1));
        store_row(at(dv, task * ND + j * l.D), dv.dtype, l.D, gv + j * l.Dp, T(1));
      }
    }
    free(kp); free(kt); free(vp); free(vt); free(qs); free(go); free(ob); free(P); free(dS);
    free(gq); free(gk); free(gv); free(rev);
  }
  // Fixed-order reductions: over windows for dq (into window 0's scratch rows, then converted),
  // over (window, head) tasks for the table.
  const int64_t BW = d.batch * d.windows;
  if (d.windows > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < d.batch * l.H; ++bh) {
      const int64_t b = bh / l.H, h = bh % l.H;
      T* acc = dq_win + (b * d.windows * l.H + h) * ND;
      for (int64_t w = 1; w < d.windows; ++w) {
        const T* src = dq_win + ((b * d.windows + w) * l.H + h) * ND;
        for (int64_t e = 0; e < ND; ++e) acc[e] += src[e];
      }
      store_row(at(dq, bh * ND), dq.dtype, ND, acc, T(1));
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < l.rows * l.H; ++e) {
    const int64_t rel = e / l.H, h = e % l.H;
    T s = 0;
    for (int64_t bw = 0; bw < BW; ++bw) s += part[(bw * l.H + h) * l.rows + l.rows - 1 - rel];
    write(dtable.data, dtable.dtype, e, s);
  }
}

template void forward<float>(const In&, const In&, const In&, const In&, Out, float*, const Dims&);
template void forward<double>(const In&, const In&, const In&, const In&, Out, double*,
                              const Dims&);
template void backward<float>(const In&, const In&, const In&, const In&, const In&, const In&,
                              const In&, Out, Out, Out, Out, float*, float*, const Dims&);
template void backward<double>(const In&, const In&, const In&, const In&, const In&, const In&,
                               const In&, Out, Out, Out, Out, double*, double*, const Dims&);
