// CPU implementations of poster_fast::wmca_fwd / wmca_bwd: the kernels read every input in its
// own dtype and strides and write results in their inputs' dtypes (no whole-tensor copies);
// fp64 computes in fp64, fp32 / fp16 / bf16 in fp32. isa.cpp picks the kernel build; the private
// ops cpu_isas(all=False), cpu_isa() and set_cpu_isa(name) list and select the builds.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../wmca.h"
#include "isa.h"

namespace poster_fast {
namespace {

cpu::DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cpu::DType::kFloat32;
    case at::kDouble: return cpu::DType::kFloat64;
    case at::kHalf: return cpu::DType::kFloat16;
    case at::kBFloat16: return cpu::DType::kBFloat16;
    default: TORCH_CHECK(false, "poster_fast CPU kernels: unsupported dtype ", t.scalar_type());
  }
}

cpu::In in(const at::Tensor& t) {
  cpu::In a{t.const_data_ptr(), kernel_dtype(t), {0, 0, 0, 0}};
  for (int64_t i = 0; i < t.dim(); ++i) a.stride[i] = t.stride(i);
  return a;
}

cpu::Out out(const at::Tensor& t) { return {t.data_ptr(), kernel_dtype(t)}; }

cpu::Dims dims(const Problem& p, double scale) {
  return {p.batch, p.windows, p.heads, p.tokens, p.head_dim, p.wh, p.ww, scale};
}

at::ScalarType compute_type(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

const cpu::Isa& kernels() {
  std::string error;
  const cpu::Isa* isa = cpu::selected_isa(&error);
  TORCH_CHECK(isa, error);
  return *isa;
}

std::string cpu_isa() { return kernels().name; }

std::string set_cpu_isa(const std::string& name) {
  std::string previous;
  const std::string error = cpu::select_isa(name, &previous);
  TORCH_CHECK(error.empty(), error);
  return previous;
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
  at::Tensor o = at::empty(k.sizes(), q.options());
  at::Tensor lse = at::empty({k.size(0), p.heads, p.tokens}, q.options().dtype(ct));
  const cpu::Isa& isa = kernels();
  const cpu::Dims d = dims(p, scale);
  if (ct == at::kDouble)
    isa.forward_d(in(q), in(k), in(v), in(table), out(o), lse.data_ptr<double>(), d);
  else
    isa.forward_f(in(q), in(k), in(v), in(table), out(o), lse.data_ptr<float>(), d);
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& table, const at::Tensor& o, const at::Tensor& lse, int64_t wh, int64_t ww,
    double scale) {
  check_cpu(q);
  const Problem p = check_backward(dout, q, k, v, table, o, lse, wh, ww);
  const auto ct = compute_type(q);
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
             dv = at::empty(v.sizes(), v.options()), dtable = at::empty(table.sizes(), table.options());
  at::Tensor dq_win = p.windows > 1 ? at::empty(k.sizes(), q.options().dtype(ct)) : at::Tensor();
  at::Tensor part = at::empty({k.size(0) * p.heads, p.table_rows()}, q.options().dtype(ct));
  const cpu::Isa& isa = kernels();
  const cpu::Dims d = dims(p, scale);
  if (ct == at::kDouble)
    isa.backward_d(in(dout), in(q), in(k), in(v), in(table), in(o), in(lse), out(dq), out(dk),
                   out(dv), out(dtable), dq_win.defined() ? dq_win.data_ptr<double>() : nullptr,
                   part.data_ptr<double>(), d);
  else
    isa.backward_f(in(dout), in(q), in(k), in(v), in(table), in(o), in(lse), out(dq), out(dk),
                   out(dv), out(dtable), dq_win.defined() ? dq_win.data_ptr<float>() : nullptr,
                   part.data_ptr<float>(), d);
  return {dq, dk, dv, dtable};
}

}  // namespace
}  // namespace poster_fast

TORCH_LIBRARY_FRAGMENT(poster_fast, m) {
  m.def("cpu_isas(bool all=False) -> str[]", &poster_fast::cpu::isa_names);
  m.def("cpu_isa() -> str", &poster_fast::cpu_isa);
  m.def("set_cpu_isa(str isa) -> str", &poster_fast::set_cpu_isa);
}

TORCH_LIBRARY_IMPL(poster_fast, CPU, m) {
  m.impl("wmca_fwd", &poster_fast::fwd_cpu);
  m.impl("wmca_bwd", &poster_fast::bwd_cpu);
}
