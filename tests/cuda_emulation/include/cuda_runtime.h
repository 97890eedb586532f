// Emulation shim: see ../emu_cuda.h.
#pragma once
#include "../emu_cuda.h"
