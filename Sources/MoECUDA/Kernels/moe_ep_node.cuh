// moe_ep_node.cuh — moe_ep.cu's parameters and the per-block work of its layer phases: where every row and routing entry
// of the symmetric layer goes, on one node and across nodes (the rails). The kernels in moe_ep.cu wrap each `*_block`
// function with their launch protocol, failure check and fences. Nothing here is device-only beyond blockIdx,
// threadIdx and blockDim, so the host tests compile this file too (Tests/CMoEEPHost) and run the phases over heaps in
// host memory: the index arithmetic the GPU runs is the one CI checks.
//
// The includer provides MOE_DEVICE, bf16_t, uint4 and MoETile (moe_common.cuh and moe_params.h on the device).
#pragma once

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
    long long nodeRanks;  ///< L: ranks per node (= world on one node); rank q is on node q / L
    long long nodes;      ///< N
    long long railTokensOffset, railCombineOutOffset, railCombineInOffset;
    MoEDevicePointer arrivals;  ///< u32 [4] fused barriers' block counts by phase, zero between launches (the last block resets)
    MoEDevicePointer heldExpertIndex;  ///< [E] i32: where this rank's GPU holds the expert's weights (−1: not here)
    MoEDevicePointer traceSpans;  ///< MoETrace.spans of a MOE_TRACE build (`MOE_CUDA_EP_TRACE=1`), or 0
    long long tracePhase;         ///< MoETrace.phase: this launch's slot in traceSpans
} MoEEPParams;

/// The fused plan-and-tiles kernel's parameters (moe_ep_plan_small_tiles; Swift: CUDAExpertParallelPlanParams).
typedef struct MoEEPPlanParams {
    MoERoutingParams routing;
    MoEEPParams ep;
} MoEEPPlanParams;

MOE_DEVICE char *heap_of(const MoEEPParams &p, long long rank) {
    return (char *)((const unsigned long long *)p.peerHeaps)[rank];
}

MOE_DEVICE long long node_of(const MoEEPParams &p, long long q) { return q / p.nodeRanks; }

/// The first rank of this rank's node: the IPC-reachable ranks are [first, first + L).
MOE_DEVICE long long node_first(const MoEEPParams &p) { return node_of(p, p.rank) * p.nodeRanks; }

/// Copies one bf16 row of H elements (H a multiple of 8) with 16-byte accesses, the block's threads striding.
MOE_DEVICE void copy_row(bf16_t *destination, const bf16_t *source, int hidden) {
    const uint4 *s = (const uint4 *)source;
    uint4 *d = (uint4 *)destination;
    for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) d[i] = s[i];
}

/// Routing entry `at` (expert id, weight) into the routing regions of this node's ranks (this rank's own too, unless
/// `skipOwn`).
MOE_DEVICE void publish_on_node(const MoEEPParams &p, long long at, int id, float w, bool skipOwn) {
    const long long first = node_first(p);
    for (long long q = first; q < first + p.nodeRanks; ++q) {
        if (skipOwn && q == p.rank) continue;
        char *heap = heap_of(p, q);
        ((int *)(heap + p.routingIdsOffset))[at] = id;
        ((float *)(heap + p.routingWeightsOffset))[at] = w;
    }
}

/// One token row to the dispatch region of the owner of expert `id`, at sorted `position`, when that owner is on this
/// node (padding and unrouted slots, id or position −1, go nowhere).
MOE_DEVICE void place_on_node(const MoEEPParams &p, int id, int position, const bf16_t *source) {
    if (id < 0 || id >= p.experts || position < 0) return;
    const int owner = ((const int *)p.ownerOfExpert)[id];
    if (node_of(p, owner) != node_of(p, p.rank)) return;
    copy_row((bf16_t *)(heap_of(p, owner) + p.dispatchOffset) + (long long)position * p.hidden, source, (int)p.hidden);
}

/// moe_ep_publish's block: this rank's top-k (padding rows: id −1, weight 0) into its node's routing regions.
MOE_DEVICE void ep_publish_block(const MoEEPParams &p) {
    const long long slots = p.tokensPerRank * p.topK;
    const long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s < slots) {
        const bool valid = s / p.topK < p.validTokens;
        const int id = valid ? ((const int *)p.localIds)[s] : -1;
        const float w = valid ? ((const float *)p.localWeights)[s] : 0.0f;
        publish_on_node(p, p.rank * slots + s, id, w, false);
    }
}

/// moe_ep_forward_routing's block y = node m: the top-k rows of this rank's rail peer on m into the node peers.
MOE_DEVICE void ep_forward_routing_block(const MoEEPParams &p) {
    const long long node = blockIdx.y;
    if (node == node_of(p, p.rank)) return;
    const long long slots = p.tokensPerRank * p.topK;
    const long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s < slots) {
        const long long source = node * p.nodeRanks + p.rank % p.nodeRanks;
        const long long at = source * slots + s;
        const int id = ((const int *)((char *)p.ownHeap + p.routingIdsOffset))[at];
        const float w = ((const float *)((char *)p.ownHeap + p.routingWeightsOffset))[at];
        publish_on_node(p, at, id, w, true);
    }
}

/// moe_ep_dispatch's block s: this rank's slot s to its owner on this node.
MOE_DEVICE void ep_dispatch_block(const MoEEPParams &p) {
    const long long s = blockIdx.x;
    const long long t = s / p.topK;
    if (t < p.validTokens) {
        place_on_node(
            p, ((const int *)p.localIds)[s], ((const int *)p.slotToSorted)[p.rank * p.tokensPerRank * p.topK + s],
            (const bf16_t *)p.x + t * p.hidden);
    }
}

/// moe_ep_dispatch_forward's block (s, m): slot s of the rail peer on node m, from railTokens, to its owner here.
MOE_DEVICE void ep_dispatch_forward_block(const MoEEPParams &p) {
    const long long node = blockIdx.y;
    if (node == node_of(p, p.rank)) return;
    const long long slots = p.tokensPerRank * p.topK;
    const long long s = blockIdx.x;
    const long long at = (node * p.nodeRanks + p.rank % p.nodeRanks) * slots + s;
    const bf16_t *tokens = (const bf16_t *)((char *)p.ownHeap + p.railTokensOffset);
    place_on_node(
        p, ((const int *)((char *)p.ownHeap + p.routingIdsOffset))[at], ((const int *)p.slotToSorted)[at],
        tokens + (node * p.tokensPerRank + s / p.topK) * p.hidden);
}

/// moe_ep_combine's block: the rows of one local tile to their homes (or the homes' rail forwarders).
MOE_DEVICE void ep_combine_block(const MoEEPParams &p) {
    if ((int)blockIdx.x < *(const int *)p.localTileCount) {
        const MoETile tile = ((const MoETile *)p.localTiles)[blockIdx.x];
        const long long slotsPerRank = p.tokensPerRank * p.topK;
        const long long node = node_of(p, p.rank);
        for (int r = 0; r < tile.rowCount; ++r) {
            const long long sorted = tile.rowStart + r;
            const long long slot = ((const int *)p.sortedToSlot)[sorted];
            const long long home = slot / slotsPerRank;
            const long long homeNode = node_of(p, home);
            bf16_t *row;
            if (homeNode == node) {
                row = (bf16_t *)(heap_of(p, home) + p.combineOffset) + (slot - home * slotsPerRank) * p.hidden;
            } else {
                const long long forwarder = node * p.nodeRanks + home % p.nodeRanks;
                row = (bf16_t *)(heap_of(p, forwarder) + p.railCombineOutOffset)
                    + (homeNode * slotsPerRank + slot - home * slotsPerRank) * p.hidden;
            }
            copy_row(row, (const bf16_t *)p.expertRows + sorted * p.hidden, (int)p.hidden);
        }
    }
}

/// moe_ep_combine_collect's block s: slot s's row from railCombineIn when its expert is on another node.
MOE_DEVICE void ep_combine_collect_block(const MoEEPParams &p) {
    const long long s = blockIdx.x;
    if (s / p.topK >= p.validTokens) return;
    const int id = ((const int *)p.localIds)[s];
    const int position = ((const int *)p.slotToSorted)[p.rank * p.tokensPerRank * p.topK + s];
    if (id < 0 || id >= p.experts || position < 0) return;
    const long long node = node_of(p, ((const int *)p.ownerOfExpert)[id]);
    if (node == node_of(p, p.rank)) return;
    const bf16_t *rows = (const bf16_t *)((char *)p.ownHeap + p.railCombineInOffset);
    bf16_t *row = (bf16_t *)((char *)p.ownHeap + p.combineOffset) + s * p.hidden;
    copy_row(row, rows + (node * p.tokensPerRank * p.topK + s) * p.hidden, (int)p.hidden);
}
