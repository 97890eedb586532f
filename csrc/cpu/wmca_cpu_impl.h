// Fused W-MCSA CPU kernels, included once per instruction set by kernels_*.cpp inside
// `namespace poster_fast::cpu::<isa>`. Torch-free and free of std templates, so the AVX2
// copy cannot leak into the generic one through shared inline instantiations.
//
// One task = one (window, head): it owns that window's dk, dv, dq rows and a partial table
// gradient, so every result is independent of the thread count and schedule. Within a task,
// queries go in blocks of kBlockQ rows; each block holds its full (rows x N) logit panel, so the
// softmax is an exact two-pass one in the compute type. Matrices are padded with zeros to whole
// vectors (N, D) and 4-row tiles; padded keys get a -inf logit.

template <class T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(32))); };
template <class T> using Vec = typename VecOf<T>::type;
typedef int32_t VecI32 __attribute__((vector_size(32)));

template <class T> constexpr int64_t kLanes = 32 / sizeof(T);
constexpr int64_t kBlockQ = 64;

template <class T> inline Vec<T> vload(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <class T> inline void vstore(T* p, Vec<T> v) { __builtin_memcpy(p, &v, sizeof(v)); }
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

// exp for 8 floats: Cody-Waite reduction to [-ln2/2, ln2/2] and the Cephes expf polynomial
// (about 1 ulp); exp(x) = 0 below -87 (so exp(-inf) = 0), x clamped at 88.
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

// C[M x ncols] += A B with a(m, k) = A[m*am + k*ak] and B rows of ncols at stride ldb.
// M % 4 == 0, ncols % (2*lanes) == 0. 4 x (2 vectors) register tile, B panel reused over M.
template <class T>
void gemm_acc(int64_t M, int64_t ncols, int64_t K, const T* A, int64_t am, int64_t ak,
              const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int64_t L = kLanes<T>;
  for (int64_t c = 0; c < ncols; c += 2 * L) {
    for (int64_t m = 0; m < M; m += 4) {
      T* cp = C + m * ldc + c;
      Vec<T> a0 = vload(cp), a1 = vload(cp + L), b0 = vload(cp + ldc), b1 = vload(cp + ldc + L);
      Vec<T> c0 = vload(cp + 2 * ldc), c1 = vload(cp + 2 * ldc + L);
      Vec<T> d0 = vload(cp + 3 * ldc), d1 = vload(cp + 3 * ldc + L);
      const T* ap = A + m * am;
      const T* bp = B + c;
      for (int64_t k = 0; k < K; ++k, ap += ak, bp += ldb) {
        const Vec<T> x = vload(bp), y = vload(bp + L);
        const T s0 = ap[0], s1 = ap[am], s2 = ap[2 * am], s3 = ap[3 * am];
        a0 += s0 * x; a1 += s0 * y;
        b0 += s1 * x; b1 += s1 * y;
        c0 += s2 * x; c1 += s2 * y;
        d0 += s3 * x; d1 += s3 * y;
      }
      vstore(cp, a0); vstore(cp + L, a1); vstore(cp + ldc, b0); vstore(cp + ldc + L, b1);
      vstore(cp + 2 * ldc, c0); vstore(cp + 2 * ldc + L, c1);
      vstore(cp + 3 * ldc, d0); vstore(cp + 3 * ldc + L, d1);
    }
  }
}

// Per-problem sizes shared by forward and backward.
struct Layout {
  int64_t N, D, H, Np, Dp, rows;  // rows: table rows (2Wh-1)(2Ww-1)
  template <class T> static Layout make(const Dims& d) {
    const int64_t v = 2 * kLanes<T>;
    return {d.tokens, d.head_dim, d.heads, round_up(d.tokens, v), round_up(d.head_dim, v),
            (2 * d.wh - 1) * (2 * d.ww - 1)};
  }
};

template <class T> T* alloc(int64_t n) {
  const size_t bytes = static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(T)), 64));
  return static_cast<T*>(aligned_alloc(64, bytes > 0 ? bytes : 64));
}

template <class T> void zero(T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = 0;
}

// dst (rows_p x cols_p) = src (rows x cols) * s, zero padded.
template <class T>
void copy_padded(const T* src, int64_t rows, int64_t cols, T* dst, int64_t rows_p, int64_t cols_p,
                 T s = 1) {
  for (int64_t r = 0; r < rows_p; ++r)
    for (int64_t c = 0; c < cols_p; ++c)
      dst[r * cols_p + c] = r < rows && c < cols ? src[r * cols + c] * s : T(0);
}

// dst (cols_p x rows_p) = src (rows x cols)^T, zero padded.
template <class T>
void copy_transposed(const T* src, int64_t rows, int64_t cols, T* dst, int64_t rows_p,
                     int64_t cols_p) {
  zero(dst, rows_p * cols_p);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows_p + r] = src[r * cols + c];
}

// The table column of head h reversed: rev[x] = table[rows-1-x, h]. Then the bias of query
// i = (hi, wi) and key (hj, wj) is rev[(hj + Wh-1-hi)*(2Ww-1) + (Ww-1-wi) + wj]: contiguous in wj.
template <class T> void reversed_column(const T* table, int64_t h, const Layout& l, T* rev) {
  for (int64_t x = 0; x < l.rows; ++x) rev[x] = table[(l.rows - 1 - x) * l.H + h];
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
void forward(const T* q, const T* k, const T* v, const T* table, T* out, T* lse, const Dims& d) {
  const Layout l = Layout::make<T>(d);
  const int64_t tasks = d.batch * d.windows * l.H, BQ = kBlockQ;
#pragma omp parallel
  {
    T* kt = alloc<T>(l.Dp * l.Np);  // K^T
    T* vp = alloc<T>(l.Np * l.Dp);
    T* qs = alloc<T>(BQ * l.Dp);  // scaled queries
    T* S = alloc<T>(BQ * l.Np);
    T* o = alloc<T>(BQ * l.Dp);
    T* rev = alloc<T>(l.rows);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t h = task % l.H, b = task / l.H / d.windows;
      const T* qb = q + (b * l.H + h) * l.N * l.D;
      copy_transposed(k + task * l.N * l.D, l.N, l.D, kt, l.Np, l.Dp);
      copy_padded(v + task * l.N * l.D, l.N, l.D, vp, l.Np, l.Dp);
      reversed_column(table, h, l, rev);
      for (int64_t i0 = 0; i0 < l.N; i0 += BQ) {
        const int64_t rows = min64(BQ, l.N - i0), Mr = round_up(rows, 4);
        copy_padded(qb + i0 * l.D, rows, l.D, qs, Mr, l.Dp, T(d.scale));
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
        T* ob = out + (task * l.N + i0) * l.D;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < l.D; ++c) ob[r * l.D + c] = o[r * l.Dp + c] * inv_sum[r];
      }
    }
    free(kt); free(vp); free(qs); free(S); free(o); free(rev);
  }
}

template <class T>
void backward(const T* dout, const T* q, const T* k, const T* v, const T* table, const T* out,
              const T* lse, T* dq, T* dq_win, T* dk, T* dv, T* dtable, T* part, const Dims& d) {
  const Layout l = Layout::make<T>(d);
  const int64_t tasks = d.batch * d.windows * l.H, BQ = kBlockQ, ND = l.N * l.D;
  const T scale = T(d.scale);
#pragma omp parallel
  {
    T* kt = alloc<T>(l.Dp * l.Np);  // K^T (for S)
    T* vt = alloc<T>(l.Dp * l.Np);  // V^T (for dP)
    T* kp = alloc<T>(l.Np * l.Dp);  // K (for dQ)
    T* qs = alloc<T>(BQ * l.Dp);
    T* go = alloc<T>(BQ * l.Dp);  // dout block
    T* P = alloc<T>(BQ * l.Np);
    T* dS = alloc<T>(BQ * l.Np);
    T* gq = alloc<T>(BQ * l.Dp);
    T* gk = alloc<T>(l.Np * l.Dp);
    T* gv = alloc<T>(l.Np * l.Dp);
    T* rev = alloc<T>(l.rows);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t h = task % l.H, b = task / l.H / d.windows;
      const T* qb = q + (b * l.H + h) * ND;
      const T* kb = k + task * ND;
      T* gtab = part + task * l.rows;  // reversed order, like `rev`
      copy_transposed(kb, l.N, l.D, kt, l.Np, l.Dp);
      copy_transposed(v + task * ND, l.N, l.D, vt, l.Np, l.Dp);
      copy_padded(kb, l.N, l.D, kp, l.Np, l.Dp);
      reversed_column(table, h, l, rev);
      zero(gk, l.Np * l.Dp);
      zero(gv, l.Np * l.Dp);
      zero(gtab, l.rows);
      for (int64_t i0 = 0; i0 < l.N; i0 += BQ) {
        const int64_t rows = min64(BQ, l.N - i0), Mr = round_up(rows, 4);
        const T* gob = dout + task * ND + i0 * l.D;
        const T* ob = out + task * ND + i0 * l.D;
        copy_padded(qb + i0 * l.D, rows, l.D, qs, Mr, l.Dp, scale);
        copy_padded(gob, rows, l.D, go, Mr, l.Dp);
        // P = exp(S - lse); padded rows stay 0.
        fill_bias(P, i0, rows, Mr, rev, l, d);
        gemm_acc(Mr, l.Np, l.Dp, qs, l.Dp, 1, kt, l.Np, P, l.Np);
        for (int64_t r = 0; r < rows; ++r) exp_row(P + r * l.Np, l.Np, lse[task * l.N + i0 + r]);
        // dS = P * (dout V^T - rowsum(dout * out)).
        zero(dS, Mr * l.Np);
        gemm_acc(Mr, l.Np, l.Dp, go, l.Dp, 1, vt, l.Np, dS, l.Np);
        for (int64_t r = 0; r < rows; ++r) {
          T di = 0;
          for (int64_t c = 0; c < l.D; ++c) di += gob[r * l.D + c] * ob[r * l.D + c];
          T* g = dS + r * l.Np;
          const T* p = P + r * l.Np;
          for (int64_t j = 0; j < l.Np; ++j) g[j] = p[j] * (g[j] - di);
        }
        gemm_acc(l.Np, l.Dp, Mr, P, 1, l.Np, go, l.Dp, gv, l.Dp);   // dV += P^T dout
        gemm_acc(l.Np, l.Dp, Mr, dS, 1, l.Np, qs, l.Dp, gk, l.Dp);  // dK += dS^T (scale q)
        zero(gq, Mr * l.Dp);
        gemm_acc(Mr, l.Dp, l.Np, dS, l.Np, 1, kp, l.Dp, gq, l.Dp);  // dQ = dS K (times scale)
        T* gqb = dq_win + task * ND + i0 * l.D;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < l.D; ++c) gqb[r * l.D + c] = gq[r * l.Dp + c] * scale;
        for (int64_t r = 0; r < rows; ++r) {
          const T* g = dS + r * l.Np;
          for (int64_t hj = 0; hj < d.wh; ++hj) {
            T* t = gtab + bias_base(i0 + r, hj, d);
            for (int64_t wj = 0; wj < d.ww; ++wj) t[wj] += g[hj * d.ww + wj];
          }
        }
      }
      for (int64_t j = 0; j < l.N; ++j)
        for (int64_t c = 0; c < l.D; ++c) {
          dk[task * ND + j * l.D + c] = gk[j * l.Dp + c];
          dv[task * ND + j * l.D + c] = gv[j * l.Dp + c];
        }
    }
    free(kt); free(vt); free(kp); free(qs); free(go); free(P); free(dS); free(gq); free(gk);
    free(gv); free(rev);
  }
  // Fixed-order reductions: over windows for dq, over (window, head) tasks for the table.
  const int64_t BW = d.batch * d.windows;
  if (d.windows > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < d.batch * l.H; ++bh) {
      const int64_t b = bh / l.H, h = bh % l.H;
      T* dst = dq + bh * ND;
      for (int64_t e = 0; e < ND; ++e) {
        T s = 0;
        for (int64_t w = 0; w < d.windows; ++w) s += dq_win[((b * d.windows + w) * l.H + h) * ND + e];
        dst[e] = s;
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < l.rows * l.H; ++e) {
    const int64_t rel = e / l.H, h = e % l.H;
    T s = 0;
    for (int64_t bw = 0; bw < BW; ++bw) s += part[(bw * l.H + h) * l.rows + l.rows - 1 - rel];
    dtable[e] = s;
  }
}

template void forward<float>(const float*, const float*, const float*, const float*, float*,
                             float*, const Dims&);
template void forward<double>(const double*, const double*, const double*, const double*,
                              double*, double*, const Dims&);
template void backward<float>(const float*, const float*, const float*, const float*,
                              const float*, const float*, const float*, float*, float*, float*,
                              float*, float*, float*, const Dims&);
template void backward<double>(const double*, const double*, const double*, const double*,
                               const double*, const double*, const double*, double*, double*,
                               double*, double*, double*, double*, const Dims&);
