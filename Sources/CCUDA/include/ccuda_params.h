#pragma once
// The kernels' parameter structs, shared by the Swift host (through this module) and the device code
// (NVRTC compiles the same file, embedded from Sources/MoECUDA/Kernels).
#include "../../MoECUDA/Kernels/moe_params.h"
