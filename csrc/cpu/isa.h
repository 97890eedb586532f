// Which compiled build of the CPU kernels runs: the best one this CPU supports, unless the
// environment (POSTER_FAST_CPU_ISA) or select_isa() chose another. Torch-free (cheap to compile);
// wmca_cpu.cpp turns the errors into exceptions and registers the ops over these functions.
#pragma once
#include <string>
#include <vector>

#include "wmca_cpu.h"

namespace poster_fast::cpu {

struct Isa {
  const char* name;
  bool automatic;  // may be picked without being asked for
  bool (*usable)();
  void (*forward_f)(const In&, const In&, const In&, const In&, Out, float*, const Dims&);
  void (*forward_d)(const In&, const In&, const In&, const In&, Out, double*, const Dims&);
  void (*backward_f)(const In&, const In&, const In&, const In&, const In&, const In&, const In&,
                     Out, Out, Out, Out, float*, float*, const Dims&);
  void (*backward_d)(const In&, const In&, const In&, const In&, const In&, const In&, const In&,
                     Out, Out, Out, Out, double*, double*, const Dims&);
};

// Names of the compiled builds (all) or of those this CPU can run, best first.
std::vector<std::string> isa_names(bool all);

// Selects the build called `name` ("auto": the best one); returns "" or why it cannot be, and
// sets *previous to the name of the build selected before.
std::string select_isa(const std::string& name, std::string* previous);

// The build the kernels use now; null, with *error set, if POSTER_FAST_CPU_ISA names one that
// cannot run (and select_isa was not called since).
const Isa* selected_isa(std::string* error);

}  // namespace poster_fast::cpu
