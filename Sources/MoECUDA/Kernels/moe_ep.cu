// moe_ep.cu — expert parallelism over a GPU symmetric heap (DESIGN §4): every rank process owns one device
// buffer of identical layout, exported with CUDA IPC and opened by every peer, so a kernel stores straight into
// any rank's regions. Device-side barriers (epoch flags, system-scope release/acquire, %globaltimer timeout)
// order the phases inside one CUDA graph per token bucket; nothing here waits on the host.
//
// The routing plan kernels of moe_routing.cu (included) build the GLOBAL plan from the gathered routing, so every
// rank computes the same sorted positions as the single-rank forward; the grouped GEMMs (moe_experts.cu) then run
// on this rank's experts' tiles only.
//
// Heap layout (offsets passed in MoEEPParams; see CUDAExpertParallelLayout.swift):
//   control:  0 epoch u64 (this rank's barrier count, written by its own barrier kernel only)
//             8 status u32 (0 ok, 1 timeout, 2 aborted) · 12 phase u32 · 16 awaited rank u32 · 24 epoch u64
//            64 abort word u32 (the host sets it to make a waiting barrier give up)
//   flags:    [R] u64, slot q = the last barrier epoch rank q reached
//   routing ids / weights [R·T_cap·k], dispatch [R·T_cap·k, H] bf16, combine [T_cap·k, H] bf16, …
#include "moe_routing.cu"

#define MOE_EP_STATUS_OK 0
#define MOE_EP_STATUS_TIMEOUT 1
#define MOE_EP_STATUS_ABORTED 2

/// Every field is 8 bytes so the struct has the same layout in Swift (CUDAExpertParallelParams) and here.
typedef struct MoEEPParams {
    MoEDevicePointer peerHeaps;    ///< [R] u64: every rank's heap base in this process's address space
    MoEDevicePointer ownHeap;
    long long controlOffset, flagsOffset, routingIdsOffset, routingWeightsOffset, dispatchOffset, combineOffset;
    MoEDevicePointer ownerOfExpert;  ///< [E] i32
    MoEDevicePointer x;              ///< [T_loc, H] bf16 this rank's tokens
    MoEDevicePointer localIds;       ///< [T_loc, k] i32 local top-k
    MoEDevicePointer localWeights;   ///< [T_loc, k] f32
    MoEDevicePointer slotToSorted;   ///< [R·T_loc·k] i32 global plan
    MoEDevicePointer sortedToSlot;   ///< [R·T_loc·k] i32 global plan
    MoEDevicePointer tiles;          ///< global tiles
    MoEDevicePointer tileCount;
    MoEDevicePointer localTiles;     ///< this rank's experts' tiles, in global order
    MoEDevicePointer localTileCount;
    MoEDevicePointer expertRows;     ///< [R·T_loc·k, H] bf16 GEMM 2 output at sorted positions
    long long rank, world, tokensPerRank, validTokens, topK, hidden, experts, maxTiles, phase, timeoutNs;
} MoEEPParams;

MOE_DEVICE unsigned long long global_timer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

MOE_DEVICE void store_release_sys_u64(unsigned long long *pointer, unsigned long long value) {
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(pointer), "l"(value) : "memory");
}

MOE_DEVICE unsigned long long load_acquire_sys_u64(const unsigned long long *pointer) {
    unsigned long long v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(pointer) : "memory");
    return v;
}

MOE_DEVICE unsigned load_volatile_u32(const unsigned *pointer) {
    unsigned v;
    asm volatile("ld.volatile.global.u32 %0, [%1];" : "=r"(v) : "l"(pointer) : "memory");
    return v;
}

MOE_DEVICE char *heap_of(const MoEEPParams &p, long long rank) {
    return (char *)((const unsigned long long *)p.peerHeaps)[rank];
}

MOE_DEVICE bool ep_failed(const MoEEPParams &p) {
    return load_volatile_u32((const unsigned *)((char *)p.ownHeap + p.controlOffset + 8)) != MOE_EP_STATUS_OK;
}

/// Copies one bf16 row of H elements (H a multiple of 8) with 16-byte accesses, the block's threads striding.
MOE_DEVICE void copy_row(bf16_t *destination, const bf16_t *source, int hidden) {
    const uint4 *s = (const uint4 *)source;
    uint4 *d = (uint4 *)destination;
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) d[i] = s[i];
}

// MARK: barrier

/// grid 1 × 32 threads (lane 0 works). Epoch n: store n into slot `rank` of every peer's flags (release, system
/// scope), then wait until every slot of this rank's flags holds ≥ n (acquire). On timeout or a host abort,
/// records (status, phase, awaited rank, epoch) in the control block and returns; later kernels see the status
/// and skip their stores, and the host throws naming the rank and phase. A failed heap stays failed.
extern "C" __global__ void __launch_bounds__(32) moe_ep_barrier(MoEEPParams p) {
    if (threadIdx.x != 0) return;
    char *control = (char *)p.ownHeap + p.controlOffset;
    unsigned *status = (unsigned *)(control + 8);
    if (load_volatile_u32(status) != MOE_EP_STATUS_OK) return;
    unsigned long long *epochWord = (unsigned long long *)control;
    const unsigned long long epoch = *epochWord + 1;
    *epochWord = epoch;
    __threadfence_system();  // this rank's earlier stores (previous kernels) before the arrival
    for (long long q = 0; q < p.world; ++q) {
        store_release_sys_u64((unsigned long long *)(heap_of(p, q) + p.flagsOffset) + p.rank, epoch);
    }
    const unsigned long long *flags = (const unsigned long long *)((char *)p.ownHeap + p.flagsOffset);
    const unsigned *abortWord = (const unsigned *)(control + 64);
    const unsigned long long start = global_timer();
    for (long long q = 0; q < p.world; ++q) {
        unsigned spins = 0;
        while (load_acquire_sys_u64(flags + q) < epoch) {
            unsigned failure = MOE_EP_STATUS_OK;
            if (load_volatile_u32(abortWord) != 0) failure = MOE_EP_STATUS_ABORTED;
            else if (global_timer() - start > (unsigned long long)p.timeoutNs) failure = MOE_EP_STATUS_TIMEOUT;
            if (failure != MOE_EP_STATUS_OK) {
                ((unsigned *)control)[3] = (unsigned)p.phase;
                ((unsigned *)control)[4] = (unsigned)q;
                *(unsigned long long *)(control + 24) = epoch;
                __threadfence_system();
                *status = failure;
                __threadfence_system();
                return;
            }
            // Ranks sharing a GPU time-slice: back off so a waiting rank costs little while its peer runs.
            __nanosleep(spins < 64 ? 64 : 1024);
            ++spins;
        }
    }
    __threadfence_system();
}

// MARK: phases

/// grid ceil(T_loc·k / 256) × 256. Step 1: this rank's top-k into every peer's routing region at row
/// rank·T_loc; padding rows (t ≥ T_r) route nowhere (id −1, weight 0).
extern "C" __global__ void __launch_bounds__(256) moe_ep_publish(MoEEPParams p) {
    const long long slots = p.tokensPerRank * p.topK;
    const long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s < slots) {
        const bool valid = s / p.topK < p.validTokens;
        const int id = valid ? ((const int *)p.localIds)[s] : -1;
        const float w = valid ? ((const float *)p.localWeights)[s] : 0.0f;
        const long long at = p.rank * slots + s;
        for (long long q = 0; q < p.world; ++q) {
            char *heap = heap_of(p, q);
            ((int *)(heap + p.routingIdsOffset))[at] = id;
            ((float *)(heap + p.routingWeightsOffset))[at] = w;
        }
    }
    __threadfence_system();
}

/// grid ceil(R·T_loc / 32) × 256: the global plan's per-block histograms (the top-k is already there).
extern "C" __global__ void __launch_bounds__(256) moe_ep_count(MoERoutingParams p) { count_block(p, blockIdx.x); }

/// grid 1 × 1024: keeps the global tiles whose expert this rank owns, in order.
extern "C" __global__ void __launch_bounds__(1024) moe_ep_local_tiles(MoEEPParams p) {
    __shared__ int scratch[33];
    const MoETile *tiles = (const MoETile *)p.tiles;
    MoETile *local = (MoETile *)p.localTiles;
    const int *owner = (const int *)p.ownerOfExpert;
    const int count = *(const int *)p.tileCount;
    int base = 0;
    for (int first = 0; first < count; first += blockDim.x) {
        const int i = first + threadIdx.x;
        MoETile tile;
        int mine = 0;
        if (i < count) {
            tile = tiles[i];
            mine = tile.expert >= 0 && tile.expert < p.experts && owner[tile.expert] == p.rank;
        }
        int total;
        const int at = block_exclusive_scan(mine, scratch, &total);
        if (mine) local[base + at] = tile;
        base += total;
    }
    if (threadIdx.x == 0) *(int *)p.localTileCount = base;
}

/// grid T_loc·k blocks × 128. Step 3: the row of local (token, slot) s stored into its expert owner's dispatch
/// region at the slot's global sorted position.
extern "C" __global__ void __launch_bounds__(128) moe_ep_dispatch(MoEEPParams p) {
    if (ep_failed(p)) return;
    const long long s = blockIdx.x;
    const long long t = s / p.topK;
    if (t < p.validTokens) {
        const int id = ((const int *)p.localIds)[s];
        const int position = ((const int *)p.slotToSorted)[p.rank * p.tokensPerRank * p.topK + s];
        if (id >= 0 && id < p.experts && position >= 0) {
            const int owner = ((const int *)p.ownerOfExpert)[id];
            bf16_t *row = (bf16_t *)(heap_of(p, owner) + p.dispatchOffset) + (long long)position * p.hidden;
            copy_row(row, (const bf16_t *)p.x + t * p.hidden, (int)p.hidden);
        }
    }
    __threadfence_system();
}

/// grid maxTiles × 128. Step 5: each row this rank computed (already weighted, bf16) stored into its home rank's
/// combine region at the (token, slot) index.
extern "C" __global__ void __launch_bounds__(128) moe_ep_combine(MoEEPParams p) {
    if (ep_failed(p)) return;
    if ((int)blockIdx.x < *(const int *)p.localTileCount) {
        const MoETile tile = ((const MoETile *)p.localTiles)[blockIdx.x];
        const long long slotsPerRank = p.tokensPerRank * p.topK;
        for (int r = 0; r < tile.rowCount; ++r) {
            const long long sorted = tile.rowStart + r;
            const long long slot = ((const int *)p.sortedToSlot)[sorted];
            const long long home = slot / slotsPerRank;
            bf16_t *row = (bf16_t *)(heap_of(p, home) + p.combineOffset) + (slot - home * slotsPerRank) * p.hidden;
            copy_row(row, (const bf16_t *)p.expertRows + sorted * p.hidden, (int)p.hidden);
        }
    }
    __threadfence_system();
}

// MARK: all-to-all baseline helpers

/// grid rows × 128: destination[i] = source[index[i]] (rows of H bf16): packing and unpacking.
extern "C" __global__ void __launch_bounds__(128) moe_ep_gather_rows(
    MoEDevicePointer destination, MoEDevicePointer source, MoEDevicePointer index, long long hidden) {
    const long long i = blockIdx.x;
    const long long from = ((const int *)index)[i];
    copy_row((bf16_t *)destination + i * hidden, (const bf16_t *)source + from * hidden, (int)hidden);
}

/// grid rows × 128: destination[index[i]] = source[i].
extern "C" __global__ void __launch_bounds__(128) moe_ep_scatter_rows(
    MoEDevicePointer destination, MoEDevicePointer source, MoEDevicePointer index, long long hidden) {
    const long long i = blockIdx.x;
    const long long to = ((const int *)index)[i];
    copy_row((bf16_t *)destination + to * hidden, (const bf16_t *)source + i * hidden, (int)hidden);
}
