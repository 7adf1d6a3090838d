// moe_ceilings.cu — helpers for measuring the machine's ceilings in the same run as the engine
// (CUDACeilings.swift): random bf16 fill (never time on zeros), and a register-resident mma.sync loop that
// gives the tensor cores' instruction peak when cuBLAS is not available.
#include "moe_common.cuh"

MOE_DEVICE u32 hash32(u32 x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/// values[i] = bf16(uniform in [−1, 1)) from a hash of (i, seed). grid-stride over `count`.
extern "C" __global__ void moe_fill_random_bf16(unsigned long long values, unsigned long long count, unsigned seed) {
    bf16_t *out = (bf16_t *)values;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < count;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const u32 h = hash32((u32)i * 0x9E3779B9u ^ hash32((u32)(i >> 32) + seed));
        out[i] = float_to_bf16((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

/// Each warp issues `iterations` × 8 independent m16n8k16 MMAs on register operands; the sums are stored
/// so nothing is eliminated. Flops = 2·16·8·16 per MMA.
extern "C" __global__ void __launch_bounds__(256) moe_mma_peak(unsigned long long sink, int iterations, unsigned seed) {
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[j][q] = 0.0f;
    const u32 a = hash32(threadIdx.x + seed) & 0x3F7F3F7Fu, b = hash32(threadIdx.x * 3u + seed) & 0x3F7F3F7Fu;
    for (int i = 0; i < iterations; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) mma_bf16_16816(acc[j], a, b, a ^ (u32)j, b, a, b ^ (u32)i);
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) s += acc[j][0] + acc[j][1] + acc[j][2] + acc[j][3];
    ((float *)sink)[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
