// moe_ep.cu — expert parallelism over a GPU symmetric heap (DESIGN §4): every rank process owns one device
// buffer of identical layout, exported with CUDA IPC and opened by every peer, so a kernel stores straight into
// any rank's regions. Device-side barriers (epoch flags, system-scope release/acquire, %globaltimer timeout)
// order the phases inside one CUDA graph per token bucket; nothing here waits on the host.
//
// The routing plan kernels of moe_routing.cu (included) build the GLOBAL plan from the gathered routing, so every
// rank computes the same sorted positions as the single-rank forward; the grouped GEMMs (moe_experts.cu) then run
// on this rank's experts' tiles only.
//
// Across nodes (N > 1, L ranks per node, rank = node·L + local) CUDA IPC reaches only the node's ranks: the stores
// and barriers here stay inside the node, and each rank's RAIL (the ranks with its local index, one per node) moves
// the rest over NCCL inside the same graph, at static sizes:
//   route:    rail send/recv of every rank's top-k into the same routing rows, then moe_ep_forward_routing copies
//             the rail's rows into the node peers' routing regions: every rank still sees the global routing;
//   dispatch: rail send/recv of the T_loc token rows (railTokens); a token whose expert is on node m reaches it
//             through its rail peer on m, which stores the row at the global sorted position (moe_ep_dispatch_forward);
//   combine:  a row for a token homed on node m goes to this node's rank on the home's rail (railCombineOut, at the
//             home's (token, slot) index), which sends it over the rail; the home copies it into its combine region
//             (moe_ep_combine_collect). The k-way sum stays on the home rank in slot order: output bit-identical.
//
// Heap layout (offsets passed in MoEEPParams; see CUDAExpertParallelLayout.swift):
//   control:  0 epoch u64 (this rank's barrier count, written by its own barrier kernel only)
//             8 status u32 (0 ok, 1 timeout, 2 aborted) · 12 phase u32 · 16 awaited rank u32 · 24 epoch u64
//            64 abort word u32 (the host sets it to make a waiting barrier give up)
//   flags:    [R] u64, slot q = the last barrier epoch rank q reached
//   routing ids / weights [R·T_cap·k], dispatch [R·T_cap·k, H] bf16, combine [T_cap·k, H] bf16, …
//   railTokens [N·T_cap, H], railCombineOut / railCombineIn [N·T_cap·k, H] bf16 (empty on one node)
#include "moe_routing.cu"
#include "moe_ep_node.cuh"

#define MOE_EP_STATUS_OK 0
#define MOE_EP_STATUS_TIMEOUT 1
#define MOE_EP_STATUS_ABORTED 2


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


MOE_DEVICE bool ep_failed(const MoEEPParams &p) {
    return load_volatile_u32((const unsigned *)((char *)p.ownHeap + p.controlOffset + 8)) != MOE_EP_STATUS_OK;
}

/// First statement of every layer kernel here: with a programmatic launch (MOE_CUDA_PDL, the default on sm_90) this
/// kernel's blocks may be resident before the previous kernel ends; they wait for it here, then let the next kernel
/// launch in turn. Bodies stay strictly ordered: only the launches overlap.
MOE_DEVICE void ep_kernel_start() {
    wait_for_previous_kernel();
    allow_next_kernel();
}


// MARK: barrier

/// grid 1 × 32 threads. Epoch n: store n into slot `rank` of every node peer's flags (release, system scope; lane j
/// stores to peers j, j + 32, …, so the arrivals travel in parallel instead of one release store after another,
/// each waiting for the last to reach its GPU), then lane 0 waits until the node's slots of this rank's flags hold
/// ≥ n (acquire). Ranks on other nodes are ordered by the rail's NCCL operations in the stream, not by this
/// barrier. On timeout or a host abort, lane 0 records (status, phase, awaited rank, epoch) in the control block and
/// returns; later kernels see the status and skip their stores, and the host throws naming the rank and phase. A
/// failed heap stays failed.
MOE_DEVICE void ep_barrier_warp(const MoEEPParams &p) {
    const unsigned lane = threadIdx.x;
    char *control = (char *)p.ownHeap + p.controlOffset;
    unsigned *status = (unsigned *)(control + 8);
    if (load_volatile_u32(status) != MOE_EP_STATUS_OK) return;  // the same for every lane: only lane 0 writes it, below
    unsigned long long *epochWord = (unsigned long long *)control;
    const unsigned long long epoch = *epochWord + 1;
    __syncwarp();  // every lane has read the epoch before lane 0 advances it
    if (lane == 0) *epochWord = epoch;
    __threadfence_system();  // this rank's earlier stores (previous kernels) before the arrival
    const long long first = node_first(p);
    for (long long q = first + lane; q < first + p.nodeRanks; q += 32) {
        store_release_sys_u64((unsigned long long *)(heap_of(p, q) + p.flagsOffset) + p.rank, epoch);
    }
    if (lane != 0) return;
    const unsigned long long *flags = (const unsigned long long *)((char *)p.ownHeap + p.flagsOffset);
    const unsigned *abortWord = (const unsigned *)(control + 64);
    const unsigned long long start = global_timer();
    for (long long q = first; q < first + p.nodeRanks; ++q) {
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

extern "C" __global__ void __launch_bounds__(32) moe_ep_barrier(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    ep_barrier_warp(p);
}

/// The barrier fused into the kernel whose stores it orders (`MOE_CUDA_EP_FUSED=1`, one node): one launch less per
/// barrier. Every block fences its stores at system scope and arrives at arrivals[phase % 4]; the last block to
/// arrive resets the count (every other block has counted) and runs the barrier's warp. The kernel ends when that
/// warp's wait does, so the next kernel still starts after the barrier, as with the separate launch.
MOE_DEVICE void ep_arrive_then_barrier(const MoEEPParams &p) {
    __threadfence_system();
    unsigned *counter = (unsigned *)p.arrivals + (p.phase & 3);
    if (!last_block_to_arrive(counter, gridDim.x * gridDim.y * gridDim.z)) return;
    if (threadIdx.x == 0) *counter = 0u;
    if (threadIdx.x < 32) ep_barrier_warp(p);
}

// MARK: phases

/// grid ceil(T_loc·k / 256) × 256. Step 1: this rank's top-k into every node peer's routing region (its own
/// included) at row rank·T_loc; padding rows (t ≥ T_r) route nowhere (id −1, weight 0).
extern "C" __global__ void __launch_bounds__(256) moe_ep_publish(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    ep_publish_block(p);
    __threadfence_system();
}

/// moe_ep_publish with the route barrier fused (one node).
extern "C" __global__ void __launch_bounds__(256) moe_ep_publish_barrier(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    ep_publish_block(p);
    ep_arrive_then_barrier(p);
}

/// grid (ceil(T_loc·k / 256), N) × 256, across nodes only. After the rail's NCCL exchange put the top-k of rank
/// (m, local) into this rank's routing region, copy those rows into every other node peer's routing region: each
/// rank of the node forwards its own rail, so after the route barrier every rank holds all R ranks' rows.
extern "C" __global__ void __launch_bounds__(256) moe_ep_forward_routing(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    ep_forward_routing_block(p);
    __threadfence_system();
}

/// grid ceil(R·T_loc / 32) × 256: the global plan's per-block histograms (the top-k is already there).
extern "C" __global__ void __launch_bounds__(256) moe_ep_count(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    ep_kernel_start();
    count_block(p, blockIdx.x);
}

/// grid 1 × 1024, R·T_loc·k ≤ 1024·MOE_FINISH_SLOTS_PER_LANE: the whole global plan in one block from the gathered
/// routing, what moe_ep_count → moe_plan_scan → moe_plan_scatter compute in three launches (the same canonical plan:
/// slots stable by expert). Dynamic shared memory: ids [S] | weights [S] | counts [E] | offsets [E+1] | chunk rows [C, E].
MOE_DEVICE void ep_plan_small_block(const MoERoutingParams &p) {
    extern __shared__ __align__(16) unsigned char planShared[];
    __shared__ int scratch[33];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const int E = p.experts, slots = p.tokens * p.topK, chunks = (slots + 31) / 32;
    int *ids = (int *)planShared;
    float *weights = (float *)(ids + slots);
    int *counts = (int *)(weights + slots);
    int *offsets = counts + E;
    int *chunkRows = offsets + E + 1;
    for (int i = threadIdx.x; i < slots; i += blockDim.x) {
        ids[i] = ((const int *)p.topkIds)[i];
        weights[i] = ((const float *)p.topkWeights)[i];
    }
    for (int i = threadIdx.x; i < chunks * E; i += blockDim.x) chunkRows[i] = 0;
    __syncthreads();
    plan_in_block(p, warp, lane, warps, E, slots, chunks, ids, weights, counts, offsets, chunkRows, scratch, false);
}

extern "C" __global__ void __launch_bounds__(1024) moe_ep_plan_small(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    ep_kernel_start();
    ep_plan_small_block(p);
}

/// grid 1 × 1024: keeps the global tiles whose expert this rank owns, in order, each renamed to the index of its
/// expert's weights on this GPU (a rank holds only its own experts).
MOE_DEVICE void ep_local_tiles_block(const MoEEPParams &p) {
    __shared__ int scratch[33];
    const MoETile *tiles = (const MoETile *)p.tiles;
    MoETile *local = (MoETile *)p.localTiles;
    const int *owner = (const int *)p.ownerOfExpert;
    const int *held = (const int *)p.heldExpertIndex;
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
        if (mine) {
            tile.expert = held[tile.expert];
            local[base + at] = tile;
        }
        base += total;
    }
    if (threadIdx.x == 0) *(int *)p.localTileCount = base;
}

extern "C" __global__ void __launch_bounds__(1024) moe_ep_local_tiles(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    ep_local_tiles_block(p);
}

/// The one-block global plan and this rank's tiles in one launch (`MOE_CUDA_EP_FUSED=1`): the tiles the plan wrote
/// are read by the same block after a barrier (global writes before __syncthreads are visible to the block).
extern "C" __global__ void __launch_bounds__(1024) moe_ep_plan_small_tiles(MoEEPPlanParams p) {
    MOE_TRACE_EP_KERNEL(p.ep);
    ep_kernel_start();
    ep_plan_small_block(p.routing);
    __syncthreads();
    ep_local_tiles_block(p.ep);
}

/// grid T_loc·k blocks × 128. Step 3: the row of local (token, slot) s stored into its expert owner's dispatch
/// region at the slot's global sorted position, when the owner is on this node (others get it over the rail).
extern "C" __global__ void __launch_bounds__(128) moe_ep_dispatch(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    if (ep_failed(p)) return;
    ep_dispatch_block(p);
    __threadfence_system();
}

/// moe_ep_dispatch with the dispatch barrier fused (one node). On a failed heap every block returns before arriving:
/// the status cannot change during the launch (only a barrier writes it), so no block waits for one that left.
extern "C" __global__ void __launch_bounds__(128) moe_ep_dispatch_barrier(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    if (ep_failed(p)) return;
    ep_dispatch_block(p);
    ep_arrive_then_barrier(p);
}

/// grid (T_loc·k, N) × 128, across nodes only. Slot s of rank (m, local), whose token row arrived over the rail in
/// railTokens[m]: stored into its expert owner's dispatch region at its global sorted position when the owner is on
/// this node. Padding slots route nowhere (id −1 in the routing region).
extern "C" __global__ void __launch_bounds__(128) moe_ep_dispatch_forward(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    if (ep_failed(p)) return;
    ep_dispatch_forward_block(p);
    __threadfence_system();
}

/// grid maxTiles × 128. Step 5: each row this rank computed (already weighted, bf16) stored at the (token, slot)
/// index of its home rank: into the home's combine region on this node; for a home on node m, into railCombineOut[m]
/// of this node's rank on the home's rail, which sends it over NCCL after the combine barrier.
extern "C" __global__ void __launch_bounds__(128) moe_ep_combine(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    if (ep_failed(p)) return;
    ep_combine_block(p);
    __threadfence_system();
}

/// moe_ep_combine with the combine barrier fused (one node), as moe_ep_dispatch_barrier.
extern "C" __global__ void __launch_bounds__(128) moe_ep_combine_barrier(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    if (ep_failed(p)) return;
    ep_combine_block(p);
    ep_arrive_then_barrier(p);
}

/// grid T_loc·k × 128, across nodes only. After the rail's NCCL exchange brought railCombineIn[m] (rows computed on
/// node m for this rank's slots), copy each slot whose expert lives on another node into this rank's combine region.
extern "C" __global__ void __launch_bounds__(128) moe_ep_combine_collect(MoEEPParams p) {
    MOE_TRACE_EP_KERNEL(p);
    ep_kernel_start();
    if (ep_failed(p)) return;
    ep_combine_collect_block(p);
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

// MARK: the peer-copy ceiling

/// grid-stride copy of `bytes` (a multiple of 16) with 16-byte loads and stores: the SM-driven twin of
/// cuMemcpyDtoDAsync for the peer-copy ceiling (the symmetric kernels store into peers this way, not with copy engines).
extern "C" __global__ void __launch_bounds__(256) moe_ep_copy_bytes(
    MoEDevicePointer destination, MoEDevicePointer source, long long bytes) {
    const uint4 *s = (const uint4 *)source;
    uint4 *d = (uint4 *)destination;
    const long long count = bytes / 16;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        d[i] = s[i];
    }
}
