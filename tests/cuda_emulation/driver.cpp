// Runs the CUDA W-MCSA kernels (csrc/cuda/wmca_kernels.cu, compiled for the CPU emulation)
// forward and backward on POSTER's shapes in fp32, fp16 and bf16, and checks every result against
// a float64 evaluation of the formula with the project's error policy: the kernel's error must be
// at most 3x the error of the same formula evaluated eagerly in the input dtype (as PyTorch's
// reference does, rounding where it rounds) plus a small floor. Exits non-zero on any mismatch,
// data race, out-of-bounds or uninitialised access, synchronisation or WMMA misuse.
//
// fp32 runs under three models of the tensor cores' accumulation (see emu_host.h): truncating
// with 0 and with 3 guard bits, and round-to-nearest; fp16/bf16 under the first.
//
//   driver [--cases a,b] [--dtypes fp32,fp16,bf16] [--profile]
// --profile prints per-kernel counters (bank-model shared-memory wavefronts, global sectors,
// tensor-core multiply-adds, barriers) at POSTER's batch 144, extrapolated linearly from runs
// at batch 1 and 2 (every counter is affine in the batch).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "emu_host.h"
#include "wmca_cuda.h"

namespace pc = poster_fast::cuda;

namespace {

struct Case {
  const char* name;
  int batch, windows, heads, wh, ww, head_dim;
  int tokens() const { return wh * ww; }
  int rows() const { return (2 * wh - 1) * (2 * ww - 1); }
};

// POSTER's three levels, then several windows, a non-square window with N = 117 (not a multiple
// of 64) and D = 20 (not a multiple of 16), D = 64, D = 6 (element-wise loads and stores), and a
// window row longer than a tile (1 x 70).
const Case kCases[] = {
    {"level1", 1, 1, 2, 28, 28, 32},   {"level2", 1, 1, 4, 14, 14, 32},
    {"level3", 2, 1, 8, 7, 7, 32},     {"windows", 2, 3, 2, 7, 7, 32},
    {"nonsquare", 1, 2, 3, 9, 13, 20}, {"d64", 1, 2, 2, 6, 6, 64},
    {"d6", 2, 2, 1, 2, 3, 6},          {"wide", 1, 1, 2, 1, 70, 16},
};

struct DTypeInfo {
  const char* name;
  pc::DType dtype;
  int bytes;
  double floor;  // absolute floor per unit of max |exact| (as tests/wmca_utils.py)
};
const DTypeInfo kDTypes[] = {{"fp32", pc::DType::kFloat32, 4, 4e-7},
                             {"fp16", pc::DType::kFloat16, 2, 2e-3},
                             {"bf16", pc::DType::kBFloat16, 2, 1.6e-2}};

// ---- rounding to the dtype -----------------------------------------------------------------
uint32_t fbits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float bitsf(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

uint16_t to_half(float f) {
  const uint32_t x = fbits(f), sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return static_cast<uint16_t>(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(bitsf(a) * 16777216.0f)));
  uint32_t h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
  const uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}
float from_half(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) { const float v = static_cast<float>(m) * 5.9604644775390625e-08f; return sign ? -v : v; }
  if (e == 31) return bitsf(sign | 0x7f800000u | (m << 13));
  return bitsf(sign | ((e + 112u) << 23) | (m << 13));
}
uint16_t to_bf16(float f) {
  uint32_t x = fbits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(((x >> 16) & 0x8000u) | 0x7fc0u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}
float from_bf16(uint16_t b) { return bitsf(static_cast<uint32_t>(b) << 16); }

// Rounds a float to the dtype and back (the eager reference's storage points).
float round_to(pc::DType t, float x) {
  switch (t) {
    case pc::DType::kFloat16: return from_half(to_half(x));
    case pc::DType::kBFloat16: return from_bf16(to_bf16(x));
    default: return x;
  }
}

// Device bytes <-> values.
std::vector<unsigned char> encode(pc::DType t, const std::vector<float>& v) {
  const int b = t == pc::DType::kFloat32 ? 4 : 2;
  std::vector<unsigned char> out(v.size() * b);
  for (size_t i = 0; i < v.size(); ++i) {
    if (b == 4) { std::memcpy(&out[i * 4], &v[i], 4); continue; }
    const uint16_t h = t == pc::DType::kFloat16 ? to_half(v[i]) : to_bf16(v[i]);
    std::memcpy(&out[i * 2], &h, 2);
  }
  return out;
}
std::vector<double> decode(pc::DType t, const void* p, size_t n) {
  std::vector<double> out(n);
  const auto* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (t == pc::DType::kFloat32) { float f; std::memcpy(&f, c + i * 4, 4); out[i] = f; continue; }
    uint16_t h;
    std::memcpy(&h, c + i * 2, 2);
    out[i] = t == pc::DType::kFloat16 ? from_half(h) : from_bf16(h);
  }
  return out;
}

// ---- the formula, in double (exact) and eagerly in the input dtype -------------------------
struct Results {
  std::vector<double> out, lse, dq, dk, dv, dtable;
};

int rel(const Case& c, int i, int j) {
  return (i / c.ww - j / c.ww + c.wh - 1) * (2 * c.ww - 1) + (i % c.ww - j % c.ww + c.ww - 1);
}

// Inputs are the dtype-rounded values. With `eager`, values are floats rounded to dtype `t`
// where PyTorch's reference (poster_fast/ops/reference.py and its autograd) stores tensors of
// that dtype: q*scale, q k^T, P, P v and, backward, every matmul result and dq; the fp32 table
// makes logits, softmax and d_table fp32.
template <class R>
Results evaluate(const Case& c, float scale, const std::vector<float>& q, const std::vector<float>& k,
                 const std::vector<float>& v, const std::vector<float>& table,
                 const std::vector<float>& dout, bool eager, pc::DType t) {
  const int N = c.tokens(), D = c.head_dim, H = c.heads, W = c.windows;
  auto rnd = [&](R x) -> R { return eager ? static_cast<R>(round_to(t, static_cast<float>(x))) : x; };
  Results r;
  const size_t kv = static_cast<size_t>(c.batch) * W * H * N * D;
  r.out.assign(kv, 0); r.dk.assign(kv, 0); r.dv.assign(kv, 0);
  r.lse.assign(kv / D, 0);
  r.dq.assign(static_cast<size_t>(c.batch) * H * N * D, 0);
  r.dtable.assign(static_cast<size_t>(c.rows()) * H, 0);
  std::vector<R> qs(N * D), P(N * N), PT(N * N), dS(N * N), dST(N * N), o(N * D), dqs(N * D);
  std::vector<std::vector<R>> dq_win(W, std::vector<R>(N * D));
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < H; ++h) {
      const size_t qo = (static_cast<size_t>(b) * H + h) * N * D;
      for (int x = 0; x < N * D; ++x) qs[x] = rnd(static_cast<R>(q[qo + x]) * static_cast<R>(scale));
      for (int w = 0; w < W; ++w) {
        const size_t so = ((static_cast<size_t>(b) * W + w) * H + h) * N;  // row of (bw, h, 0)
        const float* kk = &k[so * D];
        const float* vv = &v[so * D];
        const float* g = &dout[so * D];
        for (int i = 0; i < N; ++i) {
          R mx = -INFINITY;
          for (int j = 0; j < N; ++j) {
            R s = 0;
            for (int d = 0; d < D; ++d) s += qs[i * D + d] * static_cast<R>(kk[j * D + d]);
            s = rnd(s) + static_cast<R>(table[rel(c, i, j) * H + h]);
            P[i * N + j] = s;
            mx = std::max(mx, s);
          }
          R sum = 0;
          for (int j = 0; j < N; ++j) sum += (P[i * N + j] = std::exp(P[i * N + j] - mx));
          for (int j = 0; j < N; ++j) {
            P[i * N + j] /= sum;
            PT[i * N + j] = rnd(P[i * N + j]);
          }
          r.lse[so + i] = static_cast<double>(mx + std::log(sum));
          for (int d = 0; d < D; ++d) {
            R acc = 0;
            for (int j = 0; j < N; ++j) acc += PT[i * N + j] * static_cast<R>(vv[j * D + d]);
            o[i * D + d] = rnd(acc);
            r.out[(so + i) * D + d] = static_cast<double>(o[i * D + d]);
          }
        }
        // Backward: dP = dout v^T, dS = P (dP - rowsum(dP P)), the softmax backward of autograd.
        for (int i = 0; i < N; ++i) {
          R dot = 0;
          std::vector<R> dP(N);
          for (int j = 0; j < N; ++j) {
            R acc = 0;
            for (int d = 0; d < D; ++d) acc += static_cast<R>(g[i * D + d]) * static_cast<R>(vv[j * D + d]);
            dP[j] = rnd(acc);
            dot += dP[j] * P[i * N + j];
          }
          for (int j = 0; j < N; ++j) {
            dS[i * N + j] = P[i * N + j] * (dP[j] - dot);
            dST[i * N + j] = rnd(dS[i * N + j]);
            r.dtable[rel(c, i, j) * H + h] += static_cast<double>(dS[i * N + j]);
          }
        }
        for (int j = 0; j < N; ++j)
          for (int d = 0; d < D; ++d) {
            R av = 0, ak = 0;
            for (int i = 0; i < N; ++i) {
              av += PT[i * N + j] * static_cast<R>(g[i * D + d]);
              ak += dST[i * N + j] * qs[i * D + d];
            }
            r.dv[(so + j) * D + d] = static_cast<double>(rnd(av));
            r.dk[(so + j) * D + d] = static_cast<double>(rnd(ak));
          }
        for (int i = 0; i < N; ++i)
          for (int d = 0; d < D; ++d) {
            R acc = 0;
            for (int j = 0; j < N; ++j) acc += dST[i * N + j] * static_cast<R>(kk[j * D + d]);
            dq_win[w][i * D + d] = rnd(rnd(acc) * static_cast<R>(scale));
          }
      }
      for (int x = 0; x < N * D; ++x) {
        R acc = 0;
        for (int w = 0; w < W; ++w) acc += dq_win[w][x];
        r.dq[qo + x] = static_cast<double>(rnd(acc));
      }
    }
  return r;
}

struct Compare {
  const char* name;
  double err, base, bound;
  bool ok() const { return std::isfinite(err) && err <= bound; }
};

Compare compare(const char* name, const std::vector<double>& got, const std::vector<double>& exact,
                const std::vector<double>& same, double floor) {
  double err = 0, base = 0, mx = 1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(got[i] - exact[i]);
    err = std::isfinite(got[i]) ? std::max(err, e) : INFINITY;
    base = std::max(base, std::fabs(same[i] - exact[i]));
    mx = std::max(mx, std::fabs(exact[i]));
  }
  return {name, err, base, 3 * base + floor * mx};
}

struct Buffers {
  void *q, *k, *v, *out, *dout, *dq, *dk, *dv;
  float *table, *lse, *dtable, *work;
};

struct Model {
  const char* name;
  int guard_bits;
};
const Model kModels[] = {{"rz0", 0}, {"rz3", 3}, {"rn", -1}};

bool run_case(const Case& c, const DTypeInfo& dt, const Model& model, int seed) {
  emu::set_tensor_core_model(model.guard_bits);
  const int N = c.tokens(), D = c.head_dim, H = c.heads;
  const size_t nq = static_cast<size_t>(c.batch) * H * N * D, nkv = nq * c.windows;
  const size_t nrow = nkv / D, ntab = static_cast<size_t>(c.rows()) * H;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  auto sample = [&](size_t n, double std, bool round) {
    std::vector<float> v(n);
    for (float& x : v) x = round_to(round ? dt.dtype : pc::DType::kFloat32, static_cast<float>(normal(gen) * std));
    return v;
  };
  const std::vector<float> q = sample(nq, 1, true), k = sample(nkv, 1, true), v = sample(nkv, 1, true),
                           table = sample(ntab, 0.5, false), dout = sample(nkv, 1, true);

  const pc::Dims d{c.batch, c.windows, H, N, D, c.wh, c.ww, scale};
  const std::string why = pc::unsupported(dt.dtype, c.batch, c.windows, H, N, D, c.wh, c.ww,
                                          emu::device_smem_limit());
  if (!why.empty()) {
    std::printf("%-10s %-5s UNSUPPORTED: %s\n", c.name, dt.name, why.c_str());
    return false;
  }
  Buffers b;
  auto input = [&](const std::vector<float>& x, const char* name) {
    const std::vector<unsigned char> bytes = encode(dt.dtype, x);
    void* p = emu::device_alloc(bytes.size(), name, true);
    emu::upload(p, bytes.data(), bytes.size());
    return p;
  };
  b.q = input(q, "q"); b.k = input(k, "k"); b.v = input(v, "v"); b.dout = input(dout, "dout");
  b.table = static_cast<float*>(emu::device_alloc(ntab * 4, "table", true));
  emu::upload(b.table, table.data(), ntab * 4);
  b.out = emu::device_alloc(nkv * dt.bytes, "out", false);
  b.lse = static_cast<float*>(emu::device_alloc(nrow * 4, "lse", false));
  b.dq = emu::device_alloc(nq * dt.bytes, "dq", false);
  b.dk = emu::device_alloc(nkv * dt.bytes, "dk", false);
  b.dv = emu::device_alloc(nkv * dt.bytes, "dv", false);
  b.dtable = static_cast<float*>(emu::device_alloc(ntab * 4, "dtable", false));
  b.work = static_cast<float*>(emu::device_alloc(pc::backward_workspace(d) * 4, "workspace", false));

  const emu::Findings before = emu::findings();
  const auto t0 = std::chrono::steady_clock::now();
  const cudaError_t ef = pc::forward(dt.dtype, b.q, b.k, b.v, b.table, b.out, b.lse, d, nullptr);
  // The backward reads out and lse as the forward wrote them (inputs now).
  const cudaError_t eb = ef != cudaSuccess ? ef
                         : pc::backward(dt.dtype, b.dout, b.q, b.k, b.v, b.out, b.table, b.lse, b.dq,
                                        b.dk, b.dv, b.dtable, b.work, d, nullptr);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const long found = emu::findings().total() - before.total();

  Results got;
  got.out = decode(dt.dtype, b.out, nkv);
  got.lse = decode(pc::DType::kFloat32, b.lse, nrow);
  got.dq = decode(dt.dtype, b.dq, nq);
  got.dk = decode(dt.dtype, b.dk, nkv);
  got.dv = decode(dt.dtype, b.dv, nkv);
  got.dtable = decode(pc::DType::kFloat32, b.dtable, ntab);
  emu::device_free_all();

  const Results exact = evaluate<double>(c, scale, q, k, v, table, dout, false, dt.dtype);
  const Results same = evaluate<float>(c, scale, q, k, v, table, dout, true, dt.dtype);
  const Compare cmp[] = {
      compare("out", got.out, exact.out, same.out, dt.floor),
      compare("lse", got.lse, exact.lse, same.lse, 4e-7),
      compare("dq", got.dq, exact.dq, same.dq, dt.floor),
      compare("dk", got.dk, exact.dk, same.dk, dt.floor),
      compare("dv", got.dv, exact.dv, same.dv, dt.floor),
      compare("dtable", got.dtable, exact.dtable, same.dtable, 4e-7),
  };
  bool ok = ef == cudaSuccess && eb == cudaSuccess && found == 0;
  std::printf("%-10s %-5s %-4s %6.2fs  err/eager-err:", c.name, dt.name, model.name, secs);
  for (const Compare& m : cmp) {
    ok = ok && m.ok();
    std::printf(" %s %.2f%s", m.name, m.base > 0 ? m.err / m.base : (m.err > 0 ? INFINITY : 0.0),
                m.ok() ? "" : "(FAIL)");
  }
  std::printf("  %s\n", ok ? "ok" : "FAILED");
  if (!ok) {
    if (ef != cudaSuccess || eb != cudaSuccess)
      std::printf("    launch errors: forward %d, backward %d\n", static_cast<int>(ef), static_cast<int>(eb));
    if (found) std::printf("    %ld checker findings (see stderr)\n", found);
    for (const Compare& m : cmp)
      if (!m.ok())
        std::printf("    %s: max error %.3e > bound %.3e (eager %s error %.3e)\n", m.name, m.err,
                    m.bound, dt.name, m.base);
  }
  return ok;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = s.find(',', at);
    out.push_back(s.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return out;
}

bool wanted(const std::vector<std::string>& list, const char* name) {
  if (list.empty()) return true;
  for (const std::string& s : list)
    if (s == name) return true;
  return false;
}

// Peak rates of an H100/H200 SXM (132 SMs at 1.83 GHz): dense tensor-core multiply-adds with
// fp16/bf16 and tf32 operands, and one 128-byte shared-memory wavefront per SM and clock. The
// floors below are lower bounds on a kernel's time, not predictions.
constexpr double kTc16FmaPerS = 494.7e12, kTf32FmaPerS = 247.4e12, kWavefrontsPerS = 132 * 1.83e9;

// Counters at batch 144 from runs at batch 1 and 2: p1 + 143 * (p2 - p1).
void print_profile(const std::vector<emu::KernelProfile>& p1, const std::vector<emu::KernelProfile>& p2) {
  std::printf("  %-26s %6s %7s %9s %9s %10s %6s %10s %9s %8s %8s %8s\n", "kernel (batch 144)", "blocks",
              "smem B", "tc16 FMA", "tf32 FMA", "smem wavef", "confl", "gmem sect", "gmem MB", "barriers",
              "tc us", "smem us");
  for (size_t i = 0; i < p1.size() && i < p2.size(); ++i) {
    const emu::KernelProfile &a = p1[i], &b = p2[i];
    auto at144 = [](double x1, double x2) { return x1 + 143 * (x2 - x1); };
    const double ideal = at144(a.smem_ideal_wavefronts, b.smem_ideal_wavefronts);
    const double wave = at144(a.smem_wavefronts, b.smem_wavefronts);
    const double tc16 = at144(a.tc_fma_16bit, b.tc_fma_16bit), tf32 = at144(a.tc_fma_tf32, b.tc_fma_tf32);
    std::printf("  %-26s %6.0f %7zu %9.3g %9.3g %10.4g %5.3fx %10.4g %9.1f %8.3g %8.1f %8.1f\n", a.name.c_str(),
                at144(a.blocks, b.blocks), a.smem_bytes, tc16, tf32, wave, ideal > 0 ? wave / ideal : 1.0,
                at144(a.gmem_sectors, b.gmem_sectors), at144(a.gmem_bytes, b.gmem_bytes) / 1e6,
                at144(a.barriers, b.barriers), 1e6 * (tc16 / kTc16FmaPerS + tf32 / kTf32FmaPerS),
                1e6 * wave / kWavefrontsPerS);
    for (const emu::KernelProfile::Site& site : b.conflicts)
      std::printf("      bank conflicts at %s: %ld requests, %ld extra wavefronts (batch 2)\n",
                  site.where.c_str(), site.requests, site.extra_wavefronts);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> cases, dtypes;
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cases" && i + 1 < argc) cases = split(argv[++i]);
    else if (a == "--dtypes" && i + 1 < argc) dtypes = split(argv[++i]);
    else if (a == "--profile") profile = true;
    else {
      std::fprintf(stderr, "usage: %s [--cases a,b] [--dtypes fp32,fp16,bf16] [--profile]\n", argv[0]);
      return 2;
    }
  }
  emu::set_device_smem_limit(232448);  // H100 / H200 opt-in shared memory per block
  emu::set_profiling(profile);
  const auto t0 = std::chrono::steady_clock::now();
  int failed = 0, run = 0;
  for (const DTypeInfo& dt : kDTypes) {
    if (!wanted(dtypes, dt.name)) continue;
    for (const Model& model : kModels) {
      if (model.guard_bits != 0 && (dt.dtype != pc::DType::kFloat32 || profile)) continue;
      for (const Case& c : kCases) {
        if (!wanted(cases, c.name)) continue;
        const int seed = static_cast<int>(std::hash<std::string>{}(std::string(c.name) + dt.name) % 100000);
        if (!profile) {
          failed += !run_case(c, dt, model, seed);
          ++run;
          continue;
        }
        std::vector<emu::KernelProfile> p[2];
        for (int batch = 1; batch <= 2; ++batch) {
          Case one = c;
          one.batch = batch;
          emu::reset_profiles();
          failed += !run_case(one, dt, model, seed);
          ++run;
          p[batch - 1] = emu::profiles();
        }
        print_profile(p[0], p[1]);
      }
    }
  }
  const emu::Findings f = emu::findings();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%d of %d runs failed; checker: %ld races, %ld out of bounds, %ld uninitialised, "
              "%ld writes to inputs, %ld sync, %ld wmma, %ld launch; %.1f s\n",
              failed, run, f.races, f.out_of_bounds, f.uninitialised, f.read_only_writes,
              f.sync_errors, f.wmma_errors, f.launch_errors, secs);
  return failed || f.total() ? 1 : 0;
}
