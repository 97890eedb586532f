// CPU implementations of poster_fast::wmca_fwd / wmca_bwd: dtype handling around the
// torch-free kernels (fp64 computes in fp64; fp32, fp16, bf16 compute in fp32).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../wmca.h"
#include "wmca_cpu.h"

namespace poster_fast {
namespace {

at::ScalarType compute_type(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor prepared(const at::Tensor& t, at::ScalarType ct) { return t.to(ct).contiguous(); }

cpu::Dims dims(const Problem& p, double scale) {
  return {p.batch, p.windows, p.heads, p.tokens, p.head_dim, p.wh, p.ww, scale};
}

// The AVX2 + FMA kernels where the CPU has them (x86-64 only), else the baseline ones.
template <class T> auto forward_kernel() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &cpu::avx2::forward<T>;
#endif
  return &cpu::generic::forward<T>;
}
template <class T> auto backward_kernel() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &cpu::avx2::backward<T>;
#endif
  return &cpu::generic::backward<T>;
}

void check_cpu(const at::Tensor& q) {
  TORCH_CHECK(q.device().is_cpu(), "poster_fast CPU kernel called with tensors on ", q.device());
}

std::tuple<at::Tensor, at::Tensor> fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, const at::Tensor& table,
                                           int64_t wh, int64_t ww, double scale) {
  check_cpu(q);
  const Problem p = check_forward(q, k, v, table, wh, ww);
  const auto ct = compute_type(q);
  const at::Tensor qc = prepared(q, ct), kc = prepared(k, ct), vc = prepared(v, ct),
                   tc = prepared(table, ct);
  at::Tensor out = at::empty(k.sizes(), kc.options());
  at::Tensor lse = at::empty({k.size(0), p.heads, p.tokens}, kc.options());
  const cpu::Dims d = dims(p, scale);
  AT_DISPATCH_SWITCH(ct, "wmca_fwd_cpu", AT_DISPATCH_CASE_FLOATING_TYPES([&] {
    auto run = forward_kernel<scalar_t>();
    run(qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
        tc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), d);
  }));
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& table, const at::Tensor& out, const at::Tensor& lse, int64_t wh, int64_t ww,
    double scale) {
  check_cpu(q);
  const Problem p = check_backward(dout, q, k, v, table, out, lse, wh, ww);
  const auto ct = compute_type(q);
  const at::Tensor gc = prepared(dout, ct), qc = prepared(q, ct), kc = prepared(k, ct),
                   vc = prepared(v, ct), tc = prepared(table, ct), oc = prepared(out, ct),
                   lc = prepared(lse, ct);
  at::Tensor dq = at::empty(q.sizes(), qc.options());
  at::Tensor dq_win = p.windows == 1 ? dq : at::empty(k.sizes(), qc.options());
  at::Tensor dk = at::empty(k.sizes(), kc.options()), dv = at::empty(k.sizes(), kc.options());
  at::Tensor dtable = at::empty(table.sizes(), tc.options());
  at::Tensor part = at::empty({k.size(0) * p.heads, p.table_rows()}, tc.options());
  const cpu::Dims d = dims(p, scale);
  AT_DISPATCH_SWITCH(ct, "wmca_bwd_cpu", AT_DISPATCH_CASE_FLOATING_TYPES([&] {
    auto run = backward_kernel<scalar_t>();
    run(gc.data_ptr<scalar_t>(), qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(),
        vc.data_ptr<scalar_t>(), tc.data_ptr<scalar_t>(), oc.data_ptr<scalar_t>(),
        lc.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), dq_win.data_ptr<scalar_t>(),
        dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), dtable.data_ptr<scalar_t>(),
        part.data_ptr<scalar_t>(), d);
  }));
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()),
          dtable.to(table.scalar_type())};
}

}  // namespace
}  // namespace poster_fast

TORCH_LIBRARY_IMPL(poster_fast, CPU, m) {
  m.impl("wmca_fwd", &poster_fast::fwd_cpu);
  m.impl("wmca_bwd", &poster_fast::bwd_cpu);
}
