// moe_routing.cu — DESIGN §3 steps 1–3 on the device: router GEMM, top-k with weights, and the routing plan
// (histogram, stable expert-major order and its inverse, offsets, tile schedule). No host synchronisation.
//
// Three paths with identical plans (CUDABackend picks by token count; reference: CPUBackend.route, TopK.route
// and RoutingPlan.init in MoECore):
//   T ≤ 8    moe_route_small: one launch. Warps compute slices of one expert's logits for all tokens (fp32 FMA,
//            x slice in shared memory); the last block to arrive sums the slices, then runs top-k and the
//            whole plan for the batch in shared memory.
//   T ≤ 128  moe_router_mma (bf16 tensor cores, K split over S blocks) → moe_route_finish: one block runs
//            top-k and the whole plan in shared memory.
//   larger   moe_router_mma → moe_topk (top-k and per-block histograms) → moe_plan_scan (one block: offsets and
//            tiles) → moe_plan_scatter (stable placement).
// Every kernel after the router waits for its predecessor (griddepcontrol.wait) and lets its successor launch
// early, so with programmatic launches a kernel's blocks are resident when its input lands.
#include "moe_common.cuh"

#ifndef MOE_WIDE_ROUTER_HALF
#define MOE_WIDE_ROUTER_HALF 0
#endif
// MOE_CUDA_ROUTER_TOPK=1 (an A/B build switch): the unsplit wide router runs moe_topk's work for its tile itself.
#ifndef MOE_ROUTER_TOPK
#define MOE_ROUTER_TOPK 0
#endif

// MARK: top-k

/// (a, ia) comes before (b, ib) in top-k order: larger value first, ties to the lower expert id.
MOE_DEVICE bool topk_before(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

/// A logit as an unsigned key with the same order (−0 as +0, since they compare equal; NaN below every number).
MOE_DEVICE unsigned topk_key(float v) {
    if (v != v) return 1u;
    const unsigned bits = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

/// The warp's largest (Max) or smallest unsigned value: one redux instruction from sm_80, shuffles before.
template <bool Max>
MOE_DEVICE unsigned warp_extreme_u32(unsigned v) {
#if __CUDA_ARCH__ >= 800
    unsigned r;
    if (Max) asm volatile("redux.sync.max.u32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(v));
    else asm volatile("redux.sync.min.u32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(v));
    return r;
#else
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const unsigned other = __shfl_xor_sync(0xffffffffu, v, offset);
        v = Max ? max(v, other) : min(v, other);
    }
    return v;
#endif
}

/// Experts a lane holds in registers in the fast top-k (E ≤ 32 · this).
#define MOE_TOPK_KEYS_PER_LANE 8

/// Top-k of one token by one warp: `k` rounds, each picking the first expert (in top-k order) after the
/// previous pick. Writes ids by descending weight and the weights of DESIGN §2 for `mode`.
/// logits: [E] of this token, in shared memory or written by an earlier launch; ids/weights likewise.
/// E ≤ 256: lane l keeps experts l, l + 32, … as order-preserving keys in registers; a round is the lane's best
/// key, a warp max, and a warp min over the ids holding it (two redux instructions), and the winner's key is
/// cleared. Larger E: a scan of the logits per round, skipping what earlier rounds took.
MOE_DEVICE void topk_token(
    const float *logits, int experts, int k, int mode, int *ids, float *weights, int lane) {
    float top = 0.0f;
    if (experts <= 32 * MOE_TOPK_KEYS_PER_LANE) {
        unsigned keys[MOE_TOPK_KEYS_PER_LANE];  // 0: taken, or no expert
#pragma unroll
        for (int i = 0; i < MOE_TOPK_KEYS_PER_LANE; ++i) {
            const int e = lane + 32 * i;
            keys[i] = e < experts ? topk_key(logits[e]) : 0u;
        }
        for (int j = 0; j < k; ++j) {
            unsigned best = 0u;
            int bestSlot = 0;
#pragma unroll
            for (int i = 0; i < MOE_TOPK_KEYS_PER_LANE; ++i) {
                if (keys[i] > best) {  // strict: the lower expert of equal keys
                    best = keys[i];
                    bestSlot = i;
                }
            }
            const unsigned bestKey = warp_extreme_u32<true>(best);
            const unsigned winner = warp_extreme_u32<false>(best == bestKey ? (unsigned)(lane + 32 * bestSlot) : 0xffffffffu);
#pragma unroll
            for (int i = 0; i < MOE_TOPK_KEYS_PER_LANE; ++i)
                if ((unsigned)(lane + 32 * i) == winner) keys[i] = 0u;
            const float value = logits[winner];
            if (j == 0) top = value;
            if (lane == 0) {
                ids[j] = (int)winner;
                weights[j] = value;  // the logit for now; turned into a weight below
            }
        }
    } else {
        float previous = __int_as_float(0x7f800000);  // +inf
        int previousId = -1;
        for (int j = 0; j < k; ++j) {
            float best = __int_as_float(0xff800000);  // -inf
            int bestId = 0x7fffffff;
            for (int e = lane; e < experts; e += 32) {
                const float v = logits[e];
                if (topk_before(previous, previousId, v, e) && topk_before(v, e, best, bestId)) {
                    best = v;
                    bestId = e;
                }
            }
#pragma unroll
            for (int offset = 16; offset > 0; offset >>= 1) {
                const float v = __shfl_xor_sync(0xffffffffu, best, offset);
                const int id = __shfl_xor_sync(0xffffffffu, bestId, offset);
                if (topk_before(v, id, best, bestId)) {
                    best = v;
                    bestId = id;
                }
            }
            if (j == 0) top = best;
            if (lane == 0) {
                ids[j] = bestId;
                weights[j] = best;
            }
            previous = best;
            previousId = bestId;
        }
    }
    __syncwarp();
    if (mode == MOE_ROUTING_RENORMALIZE) {
        if (lane == 0) {
            float sum = 0.0f;
            for (int j = 0; j < k; ++j) {
                const float w = expf(weights[j] - top);
                weights[j] = w;
                sum += w;
            }
            for (int j = 0; j < k; ++j) weights[j] = weights[j] / sum;
        }
    } else {
        float partial = 0.0f;
        for (int e = lane; e < experts; e += 32) partial += expf(logits[e] - top);
        const float sum = warp_sum(partial);
        if (lane == 0) {
            for (int j = 0; j < k; ++j) weights[j] = expf(weights[j] - top) / sum;
        }
    }
    __syncwarp();
}

/// One token's top-k by one warp (topk_token), then its ids counted into the token block's shared histogram: read back
/// after the warp's stores (lane 0 wrote them), −1 (routes nowhere) not counted. moe_topk's step, and the wide router's
/// when it takes the top-k (MOE_ROUTER_TOPK).
MOE_DEVICE void topk_token_counted(
    const float *logits, int experts, int k, int mode, int *ids, float *weights, int *histogram, int lane) {
    topk_token(logits, experts, k, mode, ids, weights, lane);
    __syncwarp();  // lane 0's id stores, to the lanes reading them back
    for (int j = lane; j < k; j += 32) {
        const int id = ids[j];
        if (id >= 0 && id < experts) atomicAdd(&histogram[id], 1);
    }
}

// MARK: plan pieces (each run by one whole block)

/// Histogram of token block `b` from top-k ids in global memory (thread-per-expert counting, no atomics):
/// blockCounts[b][e]. Expert parallelism builds its global plan with it (moe_ep_count) from the gathered routing.
MOE_DEVICE void count_block(const MoERoutingParams &p, int b) {
    const int *__restrict__ ids = (const int *)p.topkIds;
    int *__restrict__ counts = (int *)p.blockCounts;
    const int first = b * MOE_TOKENS_PER_BLOCK * p.topK;
    const int last = min(p.tokens, (b + 1) * MOE_TOKENS_PER_BLOCK) * p.topK;
    for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
        int c = 0;
        for (int s = first; s < last; ++s) c += ids[s] == e;
        counts[(long long)b * p.experts + e] = c;
    }
}

/// Block-wide exclusive scan of one int per thread (blockDim.x ≤ 1024); returns the thread's prefix and
/// writes the total to *total. Uses `scratch` (≥ 33 ints of shared memory).
MOE_DEVICE int block_exclusive_scan(int value, int *scratch, int *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    const int inclusive = warp_inclusive_scan(value, lane);
    if (lane == 31) scratch[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        const int w = lane < warps ? scratch[lane] : 0;
        const int scanned = warp_inclusive_scan(w, lane);
        scratch[lane] = scanned - w;
        if (lane == 31) scratch[32] = scanned;
    }
    __syncthreads();
    const int result = scratch[warp] + inclusive - value;
    *total = scratch[32];
    __syncthreads();
    return result;
}

/// A fitted tile schedule (p.tileWidths: the GEMM's wgmma widths, ascending, the last tileRows): how many of an
/// expert's ceil(rows / tileRows) tiles run at each narrower width, `narrow[i]` for width i. RoutingPlan.tileSizes says
/// why and is the host's copy, loop for loop: the counts whose shortfalls below tileRows sum most within the slack
/// tiles · tileRows − rows (ties: fewer narrow tiles). No widths: none narrower.
MOE_DEVICE void fitted_narrow_tiles(const MoERoutingParams &p, int rows, int (&narrow)[MOE_TILE_WIDTHS - 1]) {
    const int tileRows = p.tileRows, tiles = (rows + tileRows - 1) / tileRows, slack = tiles * tileRows - rows;
    int widths = 0;
    while (widths < MOE_TILE_WIDTHS && p.tileWidths[widths] > 0) ++widths;
    const int count = max(0, widths - 1);
    int shortBy[MOE_TILE_WIDTHS - 1];
#pragma unroll
    for (int i = 0; i < MOE_TILE_WIDTHS - 1; ++i) {
        shortBy[i] = i < count ? tileRows - p.tileWidths[i] : 0;
        narrow[i] = 0;
    }
    int bestShortfall = 0, bestTiles = 0;
    const int aEnd = count > 0 ? min(tiles, slack / shortBy[0]) : 0;
    for (int a = 0; a <= aEnd; ++a) {
        const int bEnd = count > 1 ? min(tiles - a, (slack - a * shortBy[0]) / shortBy[1]) : 0;
        for (int b = 0; b <= bEnd; ++b) {
            const int cEnd = count > 2 ? min(tiles - a - b, (slack - a * shortBy[0] - b * shortBy[1]) / shortBy[2]) : 0;
            for (int c = 0; c <= cEnd; ++c) {
                const int shortfall = a * shortBy[0] + b * shortBy[1] + c * shortBy[2], used = a + b + c;
                if (shortfall > bestShortfall || (shortfall == bestShortfall && used < bestTiles)) {
                    bestShortfall = shortfall;
                    bestTiles = used;
                    narrow[0] = a;
                    narrow[1] = b;
                    narrow[2] = c;
                }
            }
        }
    }
}

/// Writes an expert's tiles (`rows` sorted rows from rowBase, tiles from index tileBase, none at or past maxTiles):
/// the fitted ones narrowest first, then full ones, the last short; returns the index after them (tileBase plus
/// ceil(rows / tileRows)). Width classes in an unrolled loop, so `narrow` stays in registers (indexed by a running class
/// it took a stack frame in every routing kernel).
MOE_DEVICE int write_expert_tiles(const MoERoutingParams &p, MoETile *tiles, int expert, int rowBase, int rows, int tileBase) {
    int narrow[MOE_TILE_WIDTHS - 1] = {};
    if (p.tileWidths[0] > 0) fitted_narrow_tiles(p, rows, narrow);
    int start = 0;
#pragma unroll
    for (int i = 0; i < MOE_TILE_WIDTHS; ++i) {
        const bool full = i == MOE_TILE_WIDTHS - 1;
        const int size = full ? p.tileRows : p.tileWidths[i];
        for (int j = 0; start < rows && (full || j < narrow[i]); ++j) {
            const int rowCount = min(size, rows - start);
            if (tileBase < p.maxTiles) {
                MoETile tile;
                tile.expert = expert;
                tile.rowStart = rowBase + start;
                tile.rowCount = rowCount;
                tile.reserved = 0;
                tiles[tileBase] = tile;
            }
            ++tileBase;
            start += rowCount;
        }
    }
    return tileBase;
}

/// One block: expert offsets (shared `offsets` and p.expertOffsets) and the tile schedule from the per-expert row
/// counts in shared memory; each thread takes a contiguous run of experts. Thread 0 also writes the totals.
/// Publish = false: the shared offsets alone (moe_plan_place's blocks but one).
template <bool Publish = true>
MOE_DEVICE void offsets_and_tiles(const MoERoutingParams &p, const int *counts, int *offsets, int *scratch) {
    const int E = p.experts;
    const int per = (E + blockDim.x - 1) / blockDim.x;
    const int e0 = min(E, (int)threadIdx.x * per), e1 = min(E, e0 + per);
    int rows = 0, tileSum = 0;
    for (int expert = e0; expert < e1; ++expert) {
        rows += counts[expert];
        tileSum += (counts[expert] + p.tileRows - 1) / p.tileRows;
    }
    int totalRows, totalTiles;
    int rowBase = block_exclusive_scan(rows, scratch, &totalRows);
    if (!Publish) {
        for (int expert = e0; expert < e1; ++expert) {
            offsets[expert] = rowBase;
            rowBase += counts[expert];
        }
        return;
    }
    int tileBase = block_exclusive_scan(tileSum, scratch, &totalTiles);
    MoETile *tiles = (MoETile *)p.tiles;
    for (int expert = e0; expert < e1; ++expert) {
        const int c = counts[expert];
        offsets[expert] = rowBase;
        ((int *)p.expertOffsets)[expert] = rowBase;
        tileBase = write_expert_tiles(p, tiles, expert, rowBase, c, tileBase);
        rowBase += c;
    }
    if (threadIdx.x == 0) {
        ((int *)p.expertOffsets)[E] = totalRows;
        *(int *)p.tileCount = min(totalTiles, p.maxTiles);
    }
}

/// One block: per-expert totals and per-block prefixes, expert offsets, and the tile schedule (tiles of
/// ≤ tileRows rows, expert-major, never straddling experts). Inputs come from an earlier launch.
MOE_DEVICE void scan_plan(const MoERoutingParams &p, int *scratch) {
    const int *__restrict__ counts = (const int *)p.blockCounts;
    int *__restrict__ prefix = (int *)p.blockPrefix;
    int *__restrict__ expertCounts = (int *)p.expertCounts;
    int *__restrict__ offsets = (int *)p.expertOffsets;
    MoETile *__restrict__ tiles = (MoETile *)p.tiles;
    const int E = p.experts, B = p.tokenBlocks, rowsPerTile = p.tileRows;
    __shared__ int totals[1024];
    __shared__ int partSums[1024];
    // Totals per expert and the rows of e in blocks before b. With E ≤ the block's threads, each expert's B blocks are
    // split over parts = threads / E threads (8 for E = 128): each sums its run, then writes its run's prefixes from
    // the runs before it (two passes over its counts, B / parts long, instead of one pass B long: at 32768 tokens B =
    // 1024 serial steps took 105.5 µs, split 24.4: H100, runs 62 and 63). Integer sums: the same values either way.
    // prefixes: expert e's rows before each block b in [b0, b1), from `running` rows before b0 (loads independent of the
    // running sum: pipelined); returns the rows before b1.
    auto prefixes = [&](int e, int b0, int b1, int running) {
#pragma unroll 8
        for (int b = b0; b < b1; ++b) {
            const long long i = (long long)b * E + e;
            const int c = counts[i];
            prefix[i] = running;
            running += c;
        }
        return running;
    };
    if (E <= (int)blockDim.x) {
        const int parts = blockDim.x / E, part = threadIdx.x / E, e = threadIdx.x % E;
        const int b0 = B * part / parts, b1 = B * (part + 1) / parts;
        int sum = 0;
        if (part < parts) {
#pragma unroll 8
            for (int b = b0; b < b1; ++b) sum += counts[(long long)b * E + e];
            partSums[part * E + e] = sum;
        }
        __syncthreads();
        if (part < parts) {
            int before = 0;
            for (int q = 0; q < part; ++q) before += partSums[q * E + e];
            const int running = prefixes(e, b0, b1, before);
            if (part == parts - 1) {
                expertCounts[e] = running;
                totals[e] = running;
            }
        }
    } else {
        for (int e = threadIdx.x; e < E; e += blockDim.x) {
            const int running = prefixes(e, 0, B, 0);
            expertCounts[e] = running;
            if (e < 1024) totals[e] = running;
        }
    }
    __syncthreads();
    // Each thread takes a contiguous run of experts.
    const int per = (E + blockDim.x - 1) / blockDim.x;
    const int e0 = min(E, (int)threadIdx.x * per), e1 = min(E, e0 + per);
    auto total = [&](int e) { return e < 1024 ? totals[e] : expertCounts[e]; };
    int rows = 0, tileSum = 0;
    for (int e = e0; e < e1; ++e) {
        const int c = total(e);
        rows += c;
        tileSum += (c + rowsPerTile - 1) / rowsPerTile;
    }
    int totalRows, totalTiles;
    int rowBase = block_exclusive_scan(rows, scratch, &totalRows);
    int tileBase = block_exclusive_scan(tileSum, scratch, &totalTiles);
    for (int e = e0; e < e1; ++e) {
        const int c = total(e);
        offsets[e] = rowBase;
        tileBase = write_expert_tiles(p, tiles, e, rowBase, c, tileBase);
        rowBase += c;
    }
    if (threadIdx.x == 0) {
        offsets[E] = totalRows;
        *(int *)p.tileCount = min(totalTiles, p.maxTiles);
    }
}

// MARK: decode batches: one launch (fp32 FMA router, top-k and plan)

/// grid: (ceil(E / 8), S) blocks of 256 threads; T ≤ MAX_TOKENS ≤ MOE_FUSED_ROUTING_MAX_TOKENS. At these sizes one launch
/// beats the tensor-core router + moe_route_finish pair (H200, 8 tokens: 16.5 µs against ≈ 20); by 32 tokens the FMA
/// work of its 48 blocks costs more than the second launch (44.5 µs against 23; docs/bench-cuda.md, session 3).
/// Block (bx, by): experts 8·bx … 8·bx+7 (a warp each) over slice by of H (≤ 128 segments of 8 values):
/// the slice of x is copied to shared memory once, each lane keeps its ≤ 4 weight segments in registers
/// (all loads in flight at once), partial logits go to routerPartials[by]. The last block to arrive sums
/// the S slices in order (deterministic), then runs top-k and the whole plan in shared memory, writing
/// only results to global memory.
template <int MAX_TOKENS>
MOE_DEVICE void route_small(const MoERoutingParams &p) {
    extern __shared__ __align__(16) unsigned char routeShared[];
    unsigned char *shared = routeShared;
    __shared__ int scratch[33];
    allow_next_kernel();  // GEMM 1's blocks may launch now (all of this grid's blocks fit at once); they wait for it to finish
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int e = blockIdx.x * MOE_FUSED_ROUTING_WARPS + warp;
    const int T = p.tokens, H = p.hidden, E = p.experts, K = p.topK;
    const int segments = H / 8;
    const int first = segments * blockIdx.y / gridDim.y, count = segments * (blockIdx.y + 1) / gridDim.y - first;

    // The logits this thread sums after the election (i = threadIdx.x + THREADS·r, r < PER, where E ≤ 128 and S ≤ 4) and
    // their bias, loaded now, under the GEMV, instead of after the partials' round trips (run 113: −0.9 / −1.0% at 1
    // token, −3.0 / −1.3% at 2, −0.9 / −1.7% at 8 on 120b; the same bits).
    constexpr int THREADS = 32 * MOE_FUSED_ROUTING_WARPS, MAX_EXPERTS = 128, MAX_SPLITS = 4;
    constexpr int PER = (MAX_TOKENS * MAX_EXPERTS + THREADS - 1) / THREADS;
    const bool sumFirst = E <= MAX_EXPERTS && gridDim.y <= MAX_SPLITS && blockDim.x == THREADS;
    float biasAhead[PER];
#pragma unroll
    for (int r = 0; r < PER; ++r) {
        const int i = threadIdx.x + THREADS * r;
        biasAhead[r] = sumFirst && i < T * E ? ((const float *)p.routerBias)[i % E] : 0.0f;
    }
    // The x slice, then the router weights. Asking for the weights first (session 34's MOE_CUDA_ROUTER_LOADS_FIRST: ptxas
    // issues most of them after the slice's wait) ended the route 0.9 µs earlier at 8 tokens but left the layer level
    // (run 114: +0.5 / +0.7% at 1 token, −1.0 / +2.6% at 2, 0.0 / +0.5% at 8 on 120b); removed.
    uint4 *xs = (uint4 *)shared;  // [T][count]
    const uint4 *x = (const uint4 *)p.x;
    for (int i = threadIdx.x; i < T * count; i += blockDim.x) {
        const int t = i / count, s = i - t * count;
        copy_async_16(shared_address(xs + i), x + (long long)t * segments + first + s, 16);
    }
    copy_async_commit();
    uint4 w[4];
    const uint4 *weightRow = (const uint4 *)((const bf16_t *)p.routerWeight + (long long)min(e, E - 1) * H) + first;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int s = lane + 32 * i;
        w[i] = (s < count && e < E) ? load_readonly_16(weightRow + s) : make_uint4(0u, 0u, 0u, 0u);
    }
    copy_async_wait<0>();
    __syncthreads();
    float acc[MAX_TOKENS];
#pragma unroll
    for (int t = 0; t < MAX_TOKENS; ++t) acc[t] = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int s = lane + 32 * i;
        if (s < count) {
            const float wf[8] = {bf16_low(w[i].x), bf16_high(w[i].x), bf16_low(w[i].y), bf16_high(w[i].y),
                                 bf16_low(w[i].z), bf16_high(w[i].z), bf16_low(w[i].w), bf16_high(w[i].w)};
#pragma unroll
            for (int t = 0; t < MAX_TOKENS; ++t) {
                if (t < T) {
                    const uint4 xv = xs[t * count + s];
                    float sum = acc[t];
                    sum = fmaf(wf[0], bf16_low(xv.x), sum);
                    sum = fmaf(wf[1], bf16_high(xv.x), sum);
                    sum = fmaf(wf[2], bf16_low(xv.y), sum);
                    sum = fmaf(wf[3], bf16_high(xv.y), sum);
                    sum = fmaf(wf[4], bf16_low(xv.z), sum);
                    sum = fmaf(wf[5], bf16_high(xv.z), sum);
                    sum = fmaf(wf[6], bf16_low(xv.w), sum);
                    sum = fmaf(wf[7], bf16_high(xv.w), sum);
                    acc[t] = sum;
                }
            }
        }
    }
    float *partials = (float *)p.routerPartials + (long long)blockIdx.y * T * E;
#pragma unroll
    for (int t = 0; t < MAX_TOKENS; ++t) {
        if (t < T) {
            const float total = warp_sum(acc[t]);
            if (lane == 0 && e < E) partials[t * E + e] = total;
        }
    }
    MOE_TRACE_MARK(p, MOE_MARK_ROUTE_PARTIALS);
    // Arrival: the last block sees every other block's partial logits.
    if (!last_block_to_arrive((unsigned *)p.arrivals, gridDim.x * gridDim.y)) return;
    MOE_TRACE_MARK(p, MOE_MARK_ROUTE_ELECTED);

    float *logits = (float *)shared;          // [T, E]
    int *ids = (int *)(logits + T * E);       // [T·k]
    float *weights = (float *)(ids + T * K);  // [T·k]
    int *counts = (int *)(weights + T * K);   // [E]
    int *offsets = counts + E;                // [E+1]
    const float *bias = (const float *)p.routerBias;
    if (sumFirst) {
        // Every partial in flight at once (one L2 round trip, not one a split and a logit), then the sums in split order
        // (run 112's SASS of the loop below: split 0, then splits 1–2, then the bias, a round trip each, logit by logit).
        float part[PER][MAX_SPLITS];
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const int i = threadIdx.x + THREADS * r;
#pragma unroll
            for (int split = 0; split < MAX_SPLITS; ++split)
                part[r][split] = i < T * E && split < (int)gridDim.y
                    ? load_coherent_f32((const float *)p.routerPartials + (long long)split * T * E + i) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const int i = threadIdx.x + THREADS * r;
            if (i >= T * E) continue;
            float sum = 0.0f;
#pragma unroll
            for (int split = 0; split < MAX_SPLITS; ++split)
                if (split < (int)gridDim.y) sum += part[r][split];
            const float logit = sum + biasAhead[r];
            logits[i] = logit;
            ((float *)p.logits)[i] = logit;
        }
    } else {
        for (int i = threadIdx.x; i < T * E; i += blockDim.x) {
            float sum = 0.0f;
            for (int split = 0; split < (int)gridDim.y; ++split)
                sum += load_coherent_f32((const float *)p.routerPartials + (long long)split * T * E + i);
            const float logit = sum + bias[i % E];
            logits[i] = logit;
            ((float *)p.logits)[i] = logit;
        }
    }
    __syncthreads();
    for (int t = warp; t < T; t += MOE_FUSED_ROUTING_WARPS) {
        topk_token(logits + t * E, E, K, p.mode, ids + t * K, weights + t * K, lane);
    }
    __syncthreads();
    MOE_TRACE_MARK(p, MOE_MARK_ROUTE_TOPK);
    const int slots = T * K;
    for (int s = threadIdx.x; s < slots; s += blockDim.x) {
        ((int *)p.topkIds)[s] = ids[s];
        ((float *)p.topkWeights)[s] = weights[s];
        if (ids[s] < 0) ((int *)p.slotToSorted)[s] = -1;
    }
    for (int expert = threadIdx.x; expert < E; expert += blockDim.x) {
        int c = 0;
        for (int s = 0; s < slots; ++s) c += ids[s] == expert;
        counts[expert] = c;
        ((int *)p.expertCounts)[expert] = c;
    }
    __syncthreads();
    offsets_and_tiles(p, counts, offsets, scratch);
    if (threadIdx.x == 0) *(unsigned *)p.arrivals = 0u;  // ready for the next launch
    __syncthreads();
    MOE_TRACE_MARK(p, MOE_MARK_ROUTE_TILES);
    // Stable placement: slots in order, per expert.
    int *sortedToSlot = (int *)p.sortedToSlot, *slotToSorted = (int *)p.slotToSorted;
    float *sortedWeights = (float *)p.sortedWeights;
    for (int expert = threadIdx.x; expert < E; expert += blockDim.x) {
        if (counts[expert] == 0) continue;
        int cursor = offsets[expert];
        for (int s = 0; s < slots; ++s) {
            if (ids[s] == expert) {
                sortedToSlot[cursor] = s;
                slotToSorted[s] = cursor;
                sortedWeights[cursor] = weights[s];
                ++cursor;
            }
        }
    }
}

// One instantiation per power of two of tokens: the unrolled per-token code (and its instruction fetch) grows
// with the bound, so T = 1 runs a kernel sized for 1 token.
#define MOE_ROUTE_SMALL(N) \
    extern "C" __global__ void __launch_bounds__(256) moe_route_small_##N(MoERoutingParams p) { \
        MOE_TRACE_KERNEL(p);                                                                           \
        route_small<N>(p);                                                                             \
    }
MOE_ROUTE_SMALL(1)
MOE_ROUTE_SMALL(2)
MOE_ROUTE_SMALL(4)
MOE_ROUTE_SMALL(8)

// MARK: router GEMM (every batch size)

/// The unsplit wide router's top-k (MOE_ROUTER_TOPK), after its tile's logits are in shared memory ([TILE][ETILE]):
/// moe_topk's work for the tile's token blocks (a warp a token, topk_token_counted), then their histograms. Not inlined:
/// inlined, ptxas gave the whole kernel 58 registers and a different step loop (fragments loaded a k16 at a time, NVRTC
/// 13.0), which an A/B of the top-k alone must not change. The fields it needs come by value: a reference to the
/// parameters made ptxas copy them all to the stack.
template <int TILE, int ETILE, int THREADS>
__device__ __noinline__ void router_tile_topk(
    int T, int E, int K, int mode, int *topkIds, float *topkWeights, int *blockCounts, const float *tileLogits,
    int *histogram, int t0) {
    constexpr int BLOCKS = TILE / MOE_TOKENS_PER_BLOCK;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int row = warp; row < TILE && t0 + row < T; row += THREADS / 32) {
        const long long token = t0 + row;
        topk_token_counted(tileLogits + row * ETILE, E, K, mode, topkIds + token * K, topkWeights + token * K,
                           histogram + (row / MOE_TOKENS_PER_BLOCK) * E, lane);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < BLOCKS * E; i += THREADS) {
        const int block = t0 / MOE_TOKENS_PER_BLOCK + i / E;
        if (block * MOE_TOKENS_PER_BLOCK < T) blockCounts[(long long)block * E + i % E] = histogram[i];
    }
}

/// logits[T, E] = x[T, H] · Wr[E, H]ᵀ + br with bf16 tensor cores, fp32 accumulation.
/// grid: (ceil(E / ETILE), ceil(T / 64), S), 4·ETILE threads: warp w owns tokens 16(w % 4)…+15 of the tile × experts
/// 32(w / 4)…+31. Block z covers the K steps [steps·z/S, steps·(z+1)/S) of 32, staged through a STAGES-deep cp.async
/// ring (dynamic shared memory: LaunchPlan.routerShape); rows past T or E read zeros. S = 1: the block writes logits.
/// S > 1 (small batches, where the tiles alone would leave most SMs idle and each block would wait out H/32 memory
/// round trips): the block writes its partial tile to routerPartials[z], and the last of the tile's S blocks to arrive
/// (a per-tile counter in `arrivals`, reset by that block) adds the S partials in z order — the same order whatever
/// the arrival order — plus the bias.
/// A token's logits depend on S but not on T, ETILE or its row in the tile (each expert's sum runs over the same k steps
/// in the same order), so expert parallelism, which runs this kernel on each rank's rows with the single-rank S,
/// chooses the same experts bit for bit. ETILE = 128 (moe_router_mma_wide, large batches): every expert of 120b in one
/// block, so x is read once instead of E / 32 times (L2 traffic T·E·H·2·(1/ETILE + 1/64)). Measured (H100, run 62,
/// `cuda-debug --timing`): 78.5 → 61.7 µs at 8192 tokens, 295.4 → 230.2 at 32768; slower than the narrow one at 2048
/// and 4096 (fewer blocks than SMs), hence LaunchPlan.routerIsWide's threshold.
/// WT: tokens a warp (16, or 32 for the wide router's half blocks: MOE_WIDE_ROUTER_HALF, two m16 tiles a warp, so each B
/// fragment serves two MMAs and a block is 8 warps, two blocks an SM that pass their step barriers independently).
/// TOPK (MOE_ROUTER_TOPK, the wide router): unsplit and with every expert in the block (S = 1, E ≤ ETILE), the block
/// then does moe_topk's work for its tile's two token blocks — the same top-k of the same logits, ids, weights and
/// histograms — so the host launches no moe_topk after it (LaunchPlan.routerTakesTopK, on the single-rank path and in
/// expert parallelism's local routing). A forced wide router on the decode paths still has moe_route_finish recompute
/// the same top-k from the logits.
template <int ETILE, int WT = 16, bool TOPK = false>
MOE_DEVICE void router_mma(const MoERoutingParams &p) {
    // 80-byte rows: ldmatrix without bank conflicts. A 12-stage wide ring (132 KB in flight an SM instead of 48) timed
    // no faster (run 66: 62.9 against 60.4 µs at 8192 tokens, 239.4 against 237.0 at 32768).
    constexpr int TILE = MOE_ROUTER_TOKENS, KSTEP = 32, STRIDE = MOE_ROUTER_ROW_ELEMENTS;
    constexpr int STAGES = ETILE == MOE_ROUTER_EXPERTS ? MOE_ROUTER_STAGES : MOE_ROUTER_WIDE_STAGES;
    static_assert(STRIDE == KSTEP + 8, "80-byte rows");
    constexpr int TOKEN_WARPS = TILE / WT, MT = WT / 16;
    static_assert(TILE % WT == 0 && WT % 16 == 0, "a warp's tokens are whole m16 tiles of the block's");
    constexpr int THREADS = 32 * TOKEN_WARPS * (ETILE / 32), STAGE_ELEMENTS = (TILE + ETILE) * STRIDE;
    extern __shared__ __align__(16) bf16_t routerStages[];  // per stage: x [TILE][STRIDE], then Wr [ETILE][STRIDE]
    allow_next_kernel();  // the next routing kernel may start launching; it waits for this one to finish
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int tokenWarp = warp % TOKEN_WARPS, expertWarp = warp / TOKEN_WARPS;
    const int e0 = blockIdx.x * ETILE, t0 = blockIdx.y * TILE;
    const int T = p.tokens, H = p.hidden, E = p.experts, S = gridDim.z;
    const bf16_t *x = (const bf16_t *)p.x;
    const bf16_t *wr = (const bf16_t *)p.routerWeight;
    const int steps = H / KSTEP;  // H is a multiple of 32
    const int first = steps * blockIdx.z / S, count = steps * (blockIdx.z + 1) / S - first;
    auto xs = [&](int stage) { return routerStages + stage * STAGE_ELEMENTS; };
    auto ws = [&](int stage) { return routerStages + stage * STAGE_ELEMENTS + TILE * STRIDE; };

    // Per stage: TILE·4 segments of 16 B of x and ETILE·4 of Wr (row = idx / 4, segment = idx % 4), THREADS at a time.
    // Each thread's segments are the same at every step but for k0: their sources, shared offsets and sizes are worked
    // out once (run 66's samples at 8192 tokens put the per-step index arithmetic among the wide kernel's busiest sites).
    constexpr int SEGMENTS = (TILE + ETILE) * 4, COPIES = (SEGMENTS + THREADS - 1) / THREADS;
    const bf16_t *source[COPIES];
    u32 target[COPIES];
    int bytes[COPIES];
#pragma unroll
    for (int c = 0; c < COPIES; ++c) {
        const int idx = threadIdx.x + c * THREADS, row = idx >> 2, segment = idx & 3;
        if (row < TILE) {
            const int token = t0 + row;
            source[c] = x + (long long)min(token, T - 1) * H + segment * 8;
            target[c] = shared_address(xs(0) + row * STRIDE + segment * 8);
            bytes[c] = token < T ? 16 : 0;
        } else {
            const int expert = e0 + row - TILE;
            source[c] = wr + (long long)min(expert, E - 1) * H + segment * 8;
            target[c] = shared_address(ws(0) + (row - TILE) * STRIDE + segment * 8);
            bytes[c] = expert < E ? 16 : 0;
        }
    }
    auto issue = [&](int stage, int k0) {
#pragma unroll
        for (int c = 0; c < COPIES; ++c)
            if (SEGMENTS % THREADS == 0 || threadIdx.x + c * THREADS < SEGMENTS)
                copy_async_16(target[c] + stage * STAGE_ELEMENTS * (u32)sizeof(bf16_t), source[c] + k0, bytes[c]);
    };

    float acc[MT][4][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[mt][j][q] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < count) issue(s, (first + s) * KSTEP);
        copy_async_commit();
    }
    for (int step = 0; step < count; ++step) {
        copy_async_wait<STAGES - 2>();  // this thread's copies of `step` have landed
        __syncthreads();                // everyone's have, and everyone is done with step − 1's stage
        const int ahead = step + STAGES - 1;
        if (ahead < count) issue(ahead % STAGES, (first + ahead) * KSTEP);
        copy_async_commit();
        const int stage = step % STAGES;
        // Every fragment of the step first, then its MMAs: each HMMA waited on its own ldmatrix (run 66: the wide
        // kernel's most sampled instruction, short-scoreboard stalls). Each acc[j] still adds its k16 steps in order.
        // Half blocks (MT = 2) hold one k16 step's fragments at a time: holding both spilled (168 B at 128 registers,
        // NVRTC 13.0), and the SM's other block covers the ldmatrix waits.
        constexpr int HELD = MT == 1 ? KSTEP / 16 : 1;
#pragma unroll
        for (int s0 = 0; s0 < KSTEP / 16; s0 += HELD) {
            u32 a[HELD][MT][4], b[HELD][2][4];
#pragma unroll
            for (int h = 0; h < HELD; ++h) {
                const int kk = 16 * (s0 + h);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const int row = WT * tokenWarp + 16 * mt + (lane & 7) + 8 * ((lane >> 3) & 1);
                    const int col = kk + 8 * (lane >> 4);
                    load_matrix_x4(a[h][mt], shared_address(xs(stage) + row * STRIDE + col));
                }
#pragma unroll
                for (int j = 0; j < 4; j += 2) {
                    // matrices: experts 8j.. (k, k+8), experts 8(j+1).. (k, k+8) of this warp's 32
                    const int row = 32 * expertWarp + 8 * j + (lane & 7) + 8 * (lane >> 4);
                    const int col = kk + 8 * ((lane >> 3) & 1);
                    load_matrix_x4(b[h][j / 2], shared_address(ws(stage) + row * STRIDE + col));
                }
            }
#pragma unroll
            for (int h = 0; h < HELD; ++h) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const u32 *am = a[h][mt];
#pragma unroll
                    for (int j = 0; j < 4; j += 2) {
                        mma_bf16_16816(acc[mt][j], am[0], am[1], am[2], am[3], b[h][j / 2][0], b[h][j / 2][1]);
                        mma_bf16_16816(acc[mt][j + 1], am[0], am[1], am[2], am[3], b[h][j / 2][2], b[h][j / 2][3]);
                    }
                }
            }
        }
    }
    copy_async_wait<0>();
    const float *bias = (const float *)p.routerBias;
    float *logits = (float *)p.logits;
    float *partials = (float *)p.routerPartials;
    const long long sliceFloats = (long long)T * E;
    float *out = S == 1 ? logits : partials + blockIdx.z * sliceFloats;
    const int gid = lane >> 2, tig = lane & 3;
    // TOPK, unsplit with every expert here (e0 = 0): each logit also goes to the tile in the stages' shared memory, free
    // once every warp is out of the step loop, for the tile's top-k after.
    constexpr int BLOCKS = TILE / MOE_TOKENS_PER_BLOCK;
    const bool tileTopK = TOPK && S == 1 && E <= ETILE;
    float *tileLogits = (float *)routerStages;            // [TILE][ETILE]
    int *histogram = (int *)(tileLogits + TILE * ETILE);  // [BLOCKS][E]
    if constexpr (TOPK) {
        static_assert(TILE % MOE_TOKENS_PER_BLOCK == 0, "whole token blocks a tile");
        static_assert((TILE + BLOCKS) * ETILE * 4 <= STAGES * STAGE_ELEMENTS * 2, "the logits and histograms fit the stages");
        if (tileTopK) {
            __syncthreads();
            for (int i = threadIdx.x; i < BLOCKS * E; i += THREADS) histogram[i] = 0;
        }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int token = t0 + WT * tokenWarp + 16 * mt + gid + 8 * (q >> 1);
                const int expert = e0 + 32 * expertWarp + 8 * j + 2 * tig + (q & 1);
                if (token < T && expert < E) {
                    const float logit = S == 1 ? acc[mt][j][q] + bias[expert] : acc[mt][j][q];
                    out[(long long)token * E + expert] = logit;
                    if constexpr (TOPK) {
                        if (tileTopK) tileLogits[(token - t0) * ETILE + expert] = logit;
                    }
                }
            }
        }
    }
    if constexpr (TOPK) {
        if (tileTopK) {
            __syncthreads();
            router_tile_topk<TILE, ETILE, THREADS>(T, E, p.topK, p.mode, (int *)p.topkIds, (float *)p.topkWeights,
                                                   (int *)p.blockCounts, tileLogits, histogram, t0);
        }
    }
    if (S == 1) return;
    // Arrival: the tile's last block sees the other S − 1 partial tiles.
    unsigned *counter = (unsigned *)p.arrivals + blockIdx.y * gridDim.x + blockIdx.x;
    if (!last_block_to_arrive(counter, (unsigned)S)) return;
    // Thread t sums column t % ETILE of rows t / ETILE + 4j: a warp reads 128 contiguous bytes per row, and the loads of
    // 16 rows × 2 slices are in flight together (the additions stay in z order).
    // At most 16 rows a pass (half blocks give a thread 32: two passes, each row's slices still added in z order).
    constexpr int ROWS_PER_THREAD = TILE * ETILE / THREADS, ROW_STEP = THREADS / ETILE;
    constexpr int ROWS_PER_PASS = ROWS_PER_THREAD < 16 ? ROWS_PER_THREAD : 16;
#pragma unroll
    for (int pass = 0; pass < ROWS_PER_THREAD / ROWS_PER_PASS; ++pass) {
        const int column = e0 + threadIdx.x % ETILE, firstRow = t0 + threadIdx.x / ETILE + pass * ROWS_PER_PASS * ROW_STEP;
        float sums[ROWS_PER_PASS];
#pragma unroll
        for (int j = 0; j < ROWS_PER_PASS; ++j) sums[j] = 0.0f;
        if (column < E) {
#pragma unroll 2
            for (int z = 0; z < S; ++z) {
                const float *slice = partials + z * sliceFloats + column;
#pragma unroll
                for (int j = 0; j < ROWS_PER_PASS; ++j) {
                    const int token = firstRow + ROW_STEP * j;
                    if (token < T) sums[j] += load_coherent_f32(slice + (long long)token * E);
                }
            }
#pragma unroll
            for (int j = 0; j < ROWS_PER_PASS; ++j) {
                const int token = firstRow + ROW_STEP * j;
                if (token < T) logits[(long long)token * E + column] = sums[j] + bias[column];
            }
        }
    }
    if (threadIdx.x == 0) *counter = 0u;  // ready for the next launch (graph replay)
}

extern "C" __global__ void __launch_bounds__(128) moe_router_mma(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    router_mma<MOE_ROUTER_EXPERTS>(p);
}
#if MOE_WIDE_ROUTER_HALF
// Half blocks (MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1, an A/B build switch): 8 warps of 32 tokens × 32 experts, two blocks an SM.
// The 16-warp block passes a __syncthreads every 32-k step, so its warps load fragments together (ldmatrix: 3 x4 loads
// for 4 MMAs a k16) and then multiply together; two independent blocks can overlap one's loads with the other's MMAs,
// and 32-token warps load 4 x4 for 8 MMAs (2 A, 2 B). The same sums in the same order (LaunchPlan.routerShape's block follows).
extern "C" __global__ void __launch_bounds__(256, 2) moe_router_mma_wide(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    router_mma<MOE_ROUTER_WIDE_EXPERTS, 32, MOE_ROUTER_TOPK>(p);
}
#else
// The top-k build bounds the block to one an SM: with the bare 512, ptxas gave the fused kernel 64 registers and spills
// (the top-k not inlined) or 58 and a different step loop (inlined), NVRTC 13.0.
#if MOE_ROUTER_TOPK
extern "C" __global__ void __launch_bounds__(512, 1) moe_router_mma_wide(MoERoutingParams p) {
#else
extern "C" __global__ void __launch_bounds__(512) moe_router_mma_wide(MoERoutingParams p) {
#endif
    MOE_TRACE_KERNEL(p);
    router_mma<MOE_ROUTER_WIDE_EXPERTS, 16, MOE_ROUTER_TOPK>(p);
}
#endif

// MARK: small batches: top-k and the whole plan in one block

/// The plan of one block from the top-k in shared memory (moe_route_finish after its top-k; moe_ep_plan_small from the
/// gathered routing): histogram, offsets, tiles and the stable placement, writing only results to global memory.
/// The placement needs no serial scans: warp c takes slots 32c…32c+31, finds the lanes with its expert
/// (__match_any_sync), and counts them per chunk; a thread per expert turns the chunk counts into chunk offsets; a
/// slot's sorted row is then its expert's offset + its chunk's offset + the earlier lanes of its chunk with its expert.
/// chunkRows [chunks, E] must be zero on entry (and visible to the block); `publishTopk` also writes ids and weights
/// to p.topkIds / p.topkWeights. Slots with id −1 route nowhere.
MOE_DEVICE void plan_in_block(
    const MoERoutingParams &p, int warp, int lane, int warps, int E, int slots, int chunks, const int *ids,
    const float *weights, int *counts, int *offsets, int *chunkRows, int *scratch, bool publishTopk) {
    // Per chunk of 32 slots: each slot's rank among the chunk's earlier slots of its expert, and the chunk's counts.
    int rank[MOE_FINISH_SLOTS_PER_LANE], slotExpert[MOE_FINISH_SLOTS_PER_LANE];  // this lane's slot in chunks warp, warp + warps, …
#pragma unroll
    for (int i = 0; i < MOE_FINISH_SLOTS_PER_LANE; ++i) {
        const int c = warp + i * warps, s = 32 * c + lane;
        slotExpert[i] = s < slots ? ids[s] : -1;
        rank[i] = 0;
        if (c < chunks) {
            const unsigned same = __match_any_sync(0xffffffffu, slotExpert[i]);
            rank[i] = __popc(same & ((1u << lane) - 1u));
            if (s < slots && rank[i] == 0 && slotExpert[i] >= 0) chunkRows[c * E + slotExpert[i]] = __popc(same);
            if (publishTopk && s < slots) {
                ((int *)p.topkIds)[s] = ids[s];
                ((float *)p.topkWeights)[s] = weights[s];
            }
        }
    }
    __syncthreads();
    // Per expert: total rows, and each chunk's offset within the expert.
    for (int expert = threadIdx.x; expert < E; expert += blockDim.x) {
        int running = 0;
        for (int c = 0; c < chunks; ++c) {
            const int n = chunkRows[c * E + expert];
            chunkRows[c * E + expert] = running;
            running += n;
        }
        counts[expert] = running;
        ((int *)p.expertCounts)[expert] = running;
    }
    __syncthreads();
    offsets_and_tiles(p, counts, offsets, scratch);
    __syncthreads();
    // Stable placement: slot s of expert e (chunk c) goes to offsets[e] + chunkRows[c][e] + rank.
    int *sortedToSlot = (int *)p.sortedToSlot, *slotToSorted = (int *)p.slotToSorted;
    float *sortedWeights = (float *)p.sortedWeights;
#pragma unroll
    for (int i = 0; i < MOE_FINISH_SLOTS_PER_LANE; ++i) {
        const int c = warp + i * warps, s = 32 * c + lane;
        if (c >= chunks || s >= slots) continue;
        const int expert = slotExpert[i];
        if (expert < 0) {
            slotToSorted[s] = -1;
            continue;
        }
        const int row = offsets[expert] + chunkRows[c * E + expert] + rank[i];
        sortedToSlot[row] = s;
        slotToSorted[s] = row;
        sortedWeights[row] = weights[s];
    }
}

/// grid: 1 block of 1024 threads, T ≤ MOE_SMALL_ROUTING_MAX_TOKENS. Top-k from the router's logits (a warp per token),
/// then the whole plan in shared memory (plan_in_block), writing only results to global memory.
/// Dynamic shared memory: logits [T, E] | ids [T·k] | weights [T·k] | counts [E] | offsets [E+1] | chunk rows [C, E].
extern "C" __global__ void __launch_bounds__(1024) moe_route_finish(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    extern __shared__ __align__(16) unsigned char finishShared[];
    __shared__ int scratch[33];
    wait_for_previous_kernel();
    allow_next_kernel();  // GEMM 1's blocks may start launching; they wait for this kernel to finish
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    const int T = p.tokens, E = p.experts, K = p.topK, slots = T * K, chunks = (slots + 31) / 32;
    float *logits = (float *)finishShared;    // [T, E]
    int *ids = (int *)(logits + T * E);       // [T·k]
    float *weights = (float *)(ids + T * K);  // [T·k]
    int *counts = (int *)(weights + T * K);   // [E]
    int *offsets = counts + E;                // [E+1]
    int *chunkRows = offsets + E + 1;         // [chunks, E]: rows of expert e in chunk c, then rows before it
    const float4 *logitSource = (const float4 *)p.logits;
    if ((T * E) % 4 == 0) {
        for (int i = threadIdx.x; i < T * E / 4; i += blockDim.x) ((float4 *)logits)[i] = logitSource[i];
    } else {
        for (int i = threadIdx.x; i < T * E; i += blockDim.x) logits[i] = ((const float *)p.logits)[i];
    }
    for (int i = threadIdx.x; i < chunks * E; i += blockDim.x) chunkRows[i] = 0;
    __syncthreads();
    for (int t = warp; t < T; t += warps) topk_token(logits + t * E, E, K, p.mode, ids + t * K, weights + t * K, lane);
    __syncthreads();
    plan_in_block(p, warp, lane, warps, E, slots, chunks, ids, weights, counts, offsets, chunkRows, scratch, true);
}

// MARK: larger batches: top-k, scan, scatter

/// grid: tokenBlocks blocks of 1024 threads (a warp per token), two an SM. Top-k for the block's tokens (logits staged
/// in shared memory per warp when E ≤ MOE_TOPK_SHARED_EXPERTS), then the block's histogram: lanes < k add their
/// token's ids to shared counters (integers: the same counts in any order). Dynamic shared memory: 32·E floats (or
/// none) + E counters. Bounded to two blocks an SM (32 registers): with one, each block's chain of dependent loads
/// and warp reductions left its SM idle (run 62: 75.5 µs at 32768 tokens for 16.8 MB of logits), and the histogram
/// was a loop over the block's 32·k slots per expert. moe_plan_place, moe_plan_scan and expert parallelism build the
/// plan from these counts.
extern "C" __global__ void __launch_bounds__(1024, 2) moe_topk(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    extern __shared__ __align__(16) unsigned char topkShared[];
    unsigned char *shared = topkShared;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int E = p.experts, K = p.topK;
    const bool staged = E <= MOE_TOPK_SHARED_EXPERTS;
    float *warpLogits = (float *)shared + (staged ? warp * E : 0);
    int *histogram = (int *)shared + (staged ? 32 * E : 0);
    const int t = blockIdx.x * MOE_TOKENS_PER_BLOCK + warp;
    for (int e = threadIdx.x; e < E; e += blockDim.x) histogram[e] = 0;
    __syncthreads();
    wait_for_previous_kernel();
    allow_next_kernel();
    if (t < p.tokens) {
        const float *row = (const float *)p.logits + (long long)t * E;
        if (staged) {
            for (int e = lane; e < E; e += 32) warpLogits[e] = row[e];
            __syncwarp();
            row = warpLogits;
        }
        topk_token_counted(row, E, K, p.mode, (int *)p.topkIds + (long long)t * K, (float *)p.topkWeights + (long long)t * K,
                           histogram, lane);
    }
    __syncthreads();
    int *counts = (int *)p.blockCounts + (long long)blockIdx.x * E;
    for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = histogram[e];
}

/// grid: 1 block of 1024 threads.
extern "C" __global__ void __launch_bounds__(1024) moe_plan_scan(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    __shared__ int scratch[33];
    wait_for_previous_kernel();
    allow_next_kernel();
    scan_plan(p, scratch);
}

/// grid: tokenBlocks blocks of 256 threads. Stable placement of the block's slots: slot s of expert e goes to
/// sorted row offsets[e] + (rows of e in earlier blocks) + (earlier slots of e in this block). The block's ids
/// and weights are staged in shared memory (dynamic: 32·k ints + 32·k floats).
extern "C" __global__ void __launch_bounds__(256) moe_plan_scatter(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    extern __shared__ __align__(16) unsigned char scatterShared[];
    unsigned char *shared = scatterShared;
    const int E = p.experts, K = p.topK, b = blockIdx.x;
    const int first = b * MOE_TOKENS_PER_BLOCK * K;
    const int slots = min(p.tokens, (b + 1) * MOE_TOKENS_PER_BLOCK) * K - first;
    int *ids = (int *)shared;
    float *weights = (float *)(ids + MOE_TOKENS_PER_BLOCK * K);
    int *__restrict__ sortedToSlot = (int *)p.sortedToSlot;
    int *__restrict__ slotToSorted = (int *)p.slotToSorted;
    float *__restrict__ sortedWeights = (float *)p.sortedWeights;
    wait_for_previous_kernel();
    allow_next_kernel();
    for (int s = threadIdx.x; s < slots; s += blockDim.x) {
        ids[s] = ((const int *)p.topkIds)[first + s];
        weights[s] = ((const float *)p.topkWeights)[first + s];
        if (ids[s] < 0) slotToSorted[first + s] = -1;  // routes nowhere (expert-parallel padding)
    }
    __syncthreads();
    const int *__restrict__ prefix = (const int *)p.blockPrefix;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const int before = prefix[(long long)b * E + e];
        const int after = b + 1 < p.tokenBlocks ? prefix[(long long)(b + 1) * E + e] : ((const int *)p.expertCounts)[e];
        if (after == before) continue;
        int cursor = ((const int *)p.expertOffsets)[e] + before;
        for (int s = 0; s < slots; ++s) {
            if (ids[s] == e) {
                sortedToSlot[cursor] = first + s;
                slotToSorted[first + s] = cursor;
                sortedWeights[cursor] = weights[s];
                ++cursor;
            }
        }
    }
}

/// Where token block b's slots of each expert start, base[e] = offsets[e] + rows of e in blocks before b, from the top-k
/// histograms (blockCounts [B, E], copied to `counts`) with no scan launch before: every block of moe_plan_place derives
/// them itself, and block (0, 0) publishes expertCounts, expertOffsets, the tiles and tileCount as moe_plan_scan would.
/// Shared: counts [B·E], totals [E], before [E], offsets [E], base [E]. Every thread of the block must call it.
MOE_DEVICE void plan_in_place(const MoERoutingParams &p, int *counts, int *totals, int *before, int *offsets, int *base, int *scratch) {
    const int E = p.experts, B = p.tokenBlocks, b = blockIdx.x;
    const int *__restrict__ blockCounts = (const int *)p.blockCounts;
#pragma unroll 4
    for (int i = threadIdx.x; i < B * E; i += blockDim.x) counts[i] = blockCounts[i];
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int running = 0, mine = 0;
        for (int q = 0; q < B; ++q) {
            mine = q == b ? running : mine;
            running += counts[q * E + e];
        }
        totals[e] = running;
        before[e] = mine;
    }
    __syncthreads();
    const bool publish = blockIdx.x == 0 && blockIdx.y == 0;
    if (publish) {
        offsets_and_tiles<true>(p, totals, offsets, scratch);
    } else {
        offsets_and_tiles<false>(p, totals, offsets, scratch);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        base[e] = offsets[e] + before[e];
        if (publish) ((int *)p.expertCounts)[e] = totals[e];
    }
    __syncthreads();
}

/// grid: (tokenBlocks, gather slices), 256 threads: moe_plan_scatter's stable placement and moe_gather_rows in one
/// launch (session 30: one kernel boundary fewer before GEMM 1). Block (b, y) places token block b's slots: slot s of
/// expert e goes to sorted row offsets[e] + (rows of e in earlier blocks) + (earlier slots of e in this block), each
/// thread counting the earlier slots of its own (no serial pass per expert); blocks y = 0 write the placement. The
/// offsets and prefixes come from plan_in_place, right after moe_topk: no scan launch, and no serial pass in one block
/// (session 30, run 104: the scan in top-k's last block instead was 0.2–0.9% slower at 256–1024 tokens, and 0.3%
/// behind the separate launches at 2048–4096, run 105). With p.gathered, block (b, y) then copies
/// columns [32·8·y, 32·8·(y+1)) of its tokens' rows of x to their sorted rows (a warp a token, 16 B a lane): every
/// slice recomputes the plan and the placement, which costs less than a launch.
/// Dynamic shared memory: 32·k ints (ids) + 32·k floats (weights) + 32·k ints (sorted rows), then B·E + 4·E ints
/// (plan_in_place's; B·E ≤ MOE_PLAN_IN_PLACE_COUNTS). 256 threads (LaunchPlan.placeShape): the gather's warps take 4 tokens each.
extern "C" __global__ void __launch_bounds__(256) moe_plan_place(MoERoutingParams p) {
    MOE_TRACE_KERNEL(p);
    extern __shared__ __align__(16) unsigned char placeShared[];
    __shared__ int scratch[33];
    const int E = p.experts, K = p.topK, b = blockIdx.x;
    const int firstToken = b * MOE_TOKENS_PER_BLOCK, first = firstToken * K;
    const int slots = min(p.tokens, firstToken + MOE_TOKENS_PER_BLOCK) * K - first;
    const int blockSlots = MOE_TOKENS_PER_BLOCK * K;  // a multiple of 4: the arrays stay 16-byte aligned
    int *ids = (int *)placeShared;
    float *weights = (float *)(ids + blockSlots);
    int *sortedRows = (int *)(weights + blockSlots);
    int *base = sortedRows + blockSlots;  // [E], then plan_in_place's other arrays
    int *totals = base + E, *before = totals + E, *offsets = before + E, *counts = offsets + E;
    wait_for_previous_kernel();
    allow_next_kernel();
    for (int s = threadIdx.x; s < blockSlots; s += blockDim.x) {
        ids[s] = s < slots ? ((const int *)p.topkIds)[first + s] : -1;
        weights[s] = s < slots ? ((const float *)p.topkWeights)[first + s] : 0.0f;
    }
    plan_in_place(p, counts, totals, before, offsets, base, scratch);
    const bool writesPlan = blockIdx.y == 0;
    for (int s = threadIdx.x; s < slots; s += blockDim.x) {
        const int e = ids[s];
        int row = -1;
        if (e >= 0) {
            // Earlier slots with the same expert, four ids a load (ids past s are not counted: s4 stops at s).
            int earlier = 0;
            const int4 *ids4 = (const int4 *)ids;
            for (int q = 0; q < s / 4; ++q) {
                const int4 v = ids4[q];
                earlier += (v.x == e) + (v.y == e) + (v.z == e) + (v.w == e);
            }
            for (int r = s & ~3; r < s; ++r) earlier += ids[r] == e;
            row = base[e] + earlier;
            if (writesPlan) {
                ((int *)p.sortedToSlot)[row] = first + s;
                ((float *)p.sortedWeights)[row] = weights[s];
            }
        }
        sortedRows[s] = row;
        if (writesPlan) ((int *)p.slotToSorted)[first + s] = row;  // −1: routes nowhere (expert-parallel padding)
    }
    if (p.gathered == 0) return;
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int column = (blockIdx.y * 32 + lane) * 8;
    const int tokens = min(p.tokens - firstToken, MOE_TOKENS_PER_BLOCK);
    if (column >= p.hidden) return;
    // The warp's tokens' loads first, all in flight together, then their stores (with one token's load after the previous
    // one's stores, each waited out a memory round trip: the compiler cannot move a load of x above a store to gathered).
    constexpr int WARPS = 8, PER_WARP = MOE_TOKENS_PER_BLOCK / WARPS;  // 256 threads
    uint4 rows[PER_WARP];
#pragma unroll
    for (int i = 0; i < PER_WARP; ++i) {
        const int t = warp + WARPS * i;
        if (t < tokens) rows[i] = *(const uint4 *)((const bf16_t *)p.x + (long long)(firstToken + t) * p.hidden + column);
    }
#pragma unroll
    for (int i = 0; i < PER_WARP; ++i) {
        const int t = warp + WARPS * i;
        if (t >= tokens) break;
        for (int j = 0; j < K; ++j) {
            const long long r = sortedRows[t * K + j];
            if (r >= 0) *(uint4 *)((bf16_t *)p.gathered + r * p.hidden + column) = rows[i];
        }
    }
}
