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

// MARK: stream probe — the decode GEMMs' weight stream without the math (CUDAStreamProbe.swift)

/// Warp w of the grid reads its own contiguous region [w·regionBytes, +regionBytes) of `source` in steps of
/// `stepBytes` (a multiple of 512) through a ring of S shared-memory slots, S − 1 steps ahead, as gemm_resident's
/// weight ring does. BULK: lane 0 has the copy engine fill each slot (one cp.async.bulk counted on the slot's
/// mbarrier, kept after the slot's data); else every lane cp.asyncs 16 B of each 512 B. Each lane folds the bytes it
/// would decode into a checksum, stored so that no read can be dropped.
template <int S, bool BULK>
MOE_DEVICE void stream_probe(unsigned long long source, unsigned long long regionBytes, unsigned stepBytes, unsigned long long sink) {
    extern __shared__ __align__(128) unsigned char sharedBytes[];
#if __CUDA_ARCH__ >= 900
    constexpr bool bulk = BULK;
#else
    constexpr bool bulk = false;
#endif
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u32 slotBytes = stepBytes + 16;
    const u32 ring = shared_address(sharedBytes) + warp * S * slotBytes;
    const unsigned char *ringPointer = sharedBytes + warp * S * slotBytes;
    const unsigned long long warpIndex = (unsigned long long)blockIdx.x * (blockDim.x >> 5) + warp;
    const unsigned char *region = (const unsigned char *)source + warpIndex * regionBytes;
    const int steps = (int)(regionBytes / stepBytes);
    auto issue = [&](int step, int slot) {
        const u32 target = ring + slot * slotBytes;
        if constexpr (bulk) {
            if (lane == 0) {
                mbarrier_arrive_expect_bytes(target + stepBytes, stepBytes);
                bulk_copy_to_shared(target, region + (unsigned long long)step * stepBytes, stepBytes, target + stepBytes);
            }
        } else {
            for (u32 offset = lane * 16; offset < stepBytes; offset += 512)
                copy_async_16(target + offset, region + (unsigned long long)step * stepBytes + offset, 16);
        }
    };
    if constexpr (bulk) {
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < S; ++i) mbarrier_init(ring + i * slotBytes + stepBytes, 1);
            fence_mbarrier_init();
        }
        __syncwarp();
    }
#pragma unroll
    for (int i = 0; i < S - 1; ++i) {
        if (i < steps) issue(i, i);
        if constexpr (!bulk) copy_async_commit();
    }
    u32 sum = 0, phases = 0;
    int slot = 0;
#pragma unroll 1
    for (int step = 0; step < steps; ++step) {
        const int next = step + S - 1, nextSlot = slot == 0 ? S - 1 : slot - 1;
        if constexpr (bulk) {
            mbarrier_wait_parity(ring + slot * slotBytes + stepBytes, (phases >> slot) & 1u);
            phases ^= 1u << slot;
            __syncwarp();
            if (next < steps) issue(next, nextSlot);
        } else {
            copy_async_wait<S - 2>();
            if (next < steps) issue(next, nextSlot);
            copy_async_commit();
        }
        for (u32 offset = lane * 16; offset < stepBytes; offset += 512) {
            const uint4 v = *(const uint4 *)(ringPointer + slot * slotBytes + offset);
            sum ^= v.x ^ v.y ^ v.z ^ v.w;
        }
        slot = slot + 1 == S ? 0 : slot + 1;
    }
    copy_async_wait<0>();
    ((u32 *)sink)[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}

#define MOE_STREAM_PROBE(S)                                                                                             \
    extern "C" __global__ void moe_stream_probe_cp_##S(unsigned long long source, unsigned long long regionBytes,     \
        unsigned stepBytes, unsigned long long sink) { stream_probe<S, false>(source, regionBytes, stepBytes, sink); } \
    extern "C" __global__ void moe_stream_probe_bulk_##S(unsigned long long source, unsigned long long regionBytes,   \
        unsigned stepBytes, unsigned long long sink) { stream_probe<S, true>(source, regionBytes, stepBytes, sink); }
MOE_STREAM_PROBE(2)
MOE_STREAM_PROBE(3)
MOE_STREAM_PROBE(4)
MOE_STREAM_PROBE(6)
MOE_STREAM_PROBE(8)

/// The register reference: each warp reads its region 16 B a lane, 8 loads in flight per lane (4 KB per warp), no
/// shared memory — the plain streaming kernel at the same geometry.
extern "C" __global__ void moe_stream_probe_registers(
    unsigned long long source, unsigned long long regionBytes, unsigned stepBytes, unsigned long long sink) {
    const int lane = threadIdx.x & 31;
    const unsigned long long warpIndex = (unsigned long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const uint4 *region = (const uint4 *)((const unsigned char *)source + warpIndex * regionBytes);
    const unsigned long long vectors = regionBytes / 16;
    u32 sum = 0;
#pragma unroll 1
    for (unsigned long long i = lane; i < vectors; i += 8 * 32) {
        uint4 v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) v[u] = i + u * 32 < vectors ? load_readonly_16(region + i + u * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 8; ++u) sum ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    ((u32 *)sink)[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}
