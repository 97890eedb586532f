// The table of compiled kernel builds and their run-time CPU checks.
#include "isa.h"

#include <atomic>
#include <cstdlib>

namespace poster_fast::cpu {
namespace {

#define POSTER_FAST_ISA(NS, AUTOMATIC, USABLE)                                                   \
  Isa {                                                                                          \
    #NS, AUTOMATIC, USABLE, &NS::forward<float>, &NS::forward<double>, &NS::backward<float>,     \
        &NS::backward<double>                                                                    \
  }

bool always() { return true; }

#if defined(__x86_64__)
bool has_avx512() {
  __builtin_cpu_init();  // the checks include the OS's support for the AVX-512 register state
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
#endif

// Best first.
const Isa kIsas[] = {
#if defined(__x86_64__)
    POSTER_FAST_ISA(avx512, true, has_avx512),
    POSTER_FAST_ISA(avx2, true, has_avx2),
#endif
    POSTER_FAST_ISA(generic, true, always),
    POSTER_FAST_ISA(generic512, false, always),
};
#undef POSTER_FAST_ISA

const Isa* best() {
  for (const Isa& isa : kIsas)
    if (isa.automatic && isa.usable()) return &isa;
  return nullptr;  // unreachable: generic is always usable
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// The build called `name`, or null with *error saying why (`source` names who asked).
const Isa* find(const std::string& name, const char* source, std::string* error) {
  if (name == "auto") return best();
  for (const Isa& isa : kIsas) {
    if (name != isa.name) continue;
    if (isa.usable()) return &isa;
    *error = std::string(source) + ": the " + name + " CPU kernels cannot run on this CPU; usable: " +
             joined(isa_names(false));
    return nullptr;
  }
  *error = std::string(source) + ": expected one of auto, " + joined(isa_names(true)) + ", got '" +
           name + "'";
  return nullptr;
}

// The build POSTER_FAST_CPU_ISA names (the best one when unset); null with *error if it cannot run.
const Isa* from_env(std::string* error) {
  const char* env = std::getenv("POSTER_FAST_CPU_ISA");
  return env && *env ? find(env, "POSTER_FAST_CPU_ISA", error) : best();
}

std::atomic<const Isa*> g_selected{nullptr};  // null until the first use or select_isa()

}  // namespace

std::vector<std::string> isa_names(bool all) {
  std::vector<std::string> out;
  for (const Isa& isa : kIsas)
    if (all || isa.usable()) out.emplace_back(isa.name);
  return out;
}

std::string select_isa(const std::string& name, std::string* previous) {
  std::string error;
  const Isa* isa = find(name, "set_cpu_isa", &error);
  if (!isa) return error;
  const Isa* before = g_selected.exchange(isa);
  if (!before) before = from_env(&error);
  *previous = before ? before->name : "auto";
  return "";
}

const Isa* selected_isa(std::string* error) {
  const Isa* isa = g_selected.load();
  if (isa) return isa;
  isa = from_env(error);
  if (!isa) return nullptr;
  const Isa* expected = nullptr;
  g_selected.compare_exchange_strong(expected, isa);
  return g_selected.load();
}

}  // namespace poster_fast::cpu
