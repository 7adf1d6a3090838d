#pragma once
// CUDA driver API, NVRTC and NCCL entry points, resolved at run time (see ccuda.c).
