// moe_params.h — kernel parameter structs shared by the host (Swift, via CCUDA) and the device (NVRTC).
//
// Letters: T tokens, H hidden, I intermediate, E experts, k experts per token, N output rows of a weight
// matrix (2I for GEMM 1, H for GEMM 2), K its reduction width, G = N/16 row groups, C = ceil(K/64) chunks.
// Every device pointer is a plain 64-bit address (CUdeviceptr) so that the layout is identical on both sides.
#pragma once

typedef unsigned long long MoEDevicePointer;

#define MOE_ROUTING_RENORMALIZE 0
#define MOE_ROUTING_SOFTMAX_FIRST 1

#define MOE_EPILOGUE_SWIGLU 0
#define MOE_EPILOGUE_WEIGHTED 1

/// Tokens per block of the routing plan's histogram (one warp per token in the top-k kernel).
#define MOE_TOKENS_PER_BLOCK 32
/// moe_topk stages each warp's logits in shared memory when E is at most this.
#define MOE_TOPK_SHARED_EXPERTS 1024
/// Batches of at most this many tokens route in one launch (moe_route_small: fp32 FMA router, top-k and plan).
#define MOE_FUSED_ROUTING_MAX_TOKENS 8
/// Warps (= experts) per block of the fused router.
#define MOE_FUSED_ROUTING_WARPS 8
/// 16-byte segments of H one fused-router block covers at most (4 per lane): H/8 is split into ceil(H/8/128) slices.
#define MOE_FUSED_ROUTING_SEGMENTS 128
/// Batches of at most this many tokens build their whole plan in one block (moe_route_finish).
#define MOE_SMALL_ROUTING_MAX_TOKENS 128
/// Slots each lane of moe_route_finish's 1024 threads places: at most 32 · 1024 · this slots (T·k) per batch.
#define MOE_FINISH_SLOTS_PER_LANE 4
/// The router splits K until its grid has about this many blocks (each keeping ≥ 8 K steps of 32). 128, not 256
/// (session 30, run 103, H100): −0.2 to −0.6% at 256–512 tokens of 120b and level at 1024–2048 (the tile's last block
/// adds half as many partials); 512 and 1024 were +0.2 to +1.4% at 1024–4096 (run 101).
#define MOE_ROUTER_BLOCK_TARGET 128
/// Per-tile arrival counters of the split router: a split grid has at most 128 tiles at the default target, and
/// MOE_CUDA_ROUTER_BLOCKS never makes one past this many.
#define MOE_ROUTER_TILE_COUNTERS 256
/// moe_plan_place derives the plan itself (after moe_topk, no scan) when the top-k histograms (B·E ints) are at most
/// this many: every block copies them to shared memory. 120b: up to 1024 tokens; 20b: up to 4096. Past it the four
/// launches (moe_topk, moe_plan_scan, moe_plan_scatter, moe_gather_rows).
#define MOE_PLAN_IN_PLACE_COUNTS 4096
/// The tensor-core router's tiles (router_mma<ETILE>: 4·ETILE threads) and cp.async ring depths, which its launch shape
/// (LaunchPlan.routerShape) sizes shared memory by: 64 tokens × 32 experts a block (moe_router_mma) or × 128
/// (moe_router_mma_wide), a stage of 32 k a row padded to 40 elements.
#define MOE_ROUTER_TOKENS 64
#define MOE_ROUTER_EXPERTS 32
#define MOE_ROUTER_WIDE_EXPERTS 128
#define MOE_ROUTER_ROW_ELEMENTS 40
#define MOE_ROUTER_STAGES 6
#define MOE_ROUTER_WIDE_STAGES 5

/// One unit of grouped-GEMM work: `rowCount` consecutive sorted rows of one expert.
typedef struct MoETile {
    int expert;
    int rowStart;
    int rowCount;
    int reserved;
} MoETile;

/// A TMA tensor map (the driver's CUtensorMap: 128 opaque bytes), encoded on the host by cuTensorMapEncodeTiled and
/// read by cp.async.bulk.tensor from global memory (64-byte aligned there).
typedef struct MoETensorMap {
    unsigned long long opaque[16];
} MoETensorMap;

/// The tensor maps of one registered GEMM with tensor copies (…_T, T = 1), in device memory: codes and scales as 2D
/// u64 tensors of E·G rows (a row: one row group's chunks · 512 and scale groups · 128 bytes); input (GEMM 2, inputIndex
/// 0) the input rows, bf16 [rows, K], boxes of 64 × 64 in the 128-byte swizzle the wgmma descriptors read.
typedef struct MoEGemmTensorMaps {
    MoETensorMap codes;
    MoETensorMap scales;
    MoETensorMap input;
} MoEGemmTensorMaps;

/// Where a launch marks its span in a trace (builds with MOE_TRACE defined, `moe cuda-debug --trace`; other builds
/// never read it): spans is u64 [phases][MOE_TRACE_SLOTS][2], per phase and SM slot (%smid mod MOE_TRACE_SLOTS) the
/// earliest block start and the latest warp end (%globaltimer ns), folded over the slots on the host (KernelTrace);
/// 0: no trace. One pair a phase had every block and warp of a kernel update the same two words, and kernels of many
/// small blocks read long (session 24: the gather 790 µs traced at 32768 tokens, 355 under ncu).
#define MOE_TRACE_SLOTS 256
typedef struct MoETrace {
    MoEDevicePointer spans;
    int phase;
    int marks;  ///< the phase of this launch's first mark (MOE_MARK_*: points inside a kernel), or −1: none
} MoETrace;

/// Marks: points inside a kernel a trace build times like a phase (the first and the last block to reach each), each at
/// the launch's `marks` + its index. moe_route_small: partial logits stored, last block elected, top-k done, tiles
/// written; the resident GEMMs: past the wait (GEMM 1 the launch's, GEMM 2 its tile's), activations in shared memory
/// (where the ring is filled first, with its first S − 1 groups), main loop done.
#define MOE_MARK_ROUTE_PARTIALS 0
#define MOE_MARK_ROUTE_ELECTED 1
#define MOE_MARK_ROUTE_TOPK 2
#define MOE_MARK_ROUTE_TILES 3
#define MOE_MARK_ROUTE_COUNT 4
#define MOE_MARK_GEMM_WAITED 0
#define MOE_MARK_GEMM_STAGED 1
#define MOE_MARK_GEMM_LOOPED 2
#define MOE_MARK_GEMM_COUNT 3

/// Widths a fitted tile schedule chooses from (MoERoutingParams.tileWidths): the most any registered kernel has.
#define MOE_TILE_WIDTHS 4

/// Router GEMM, top-k and the routing plan (DESIGN §3 steps 1–3).
typedef struct MoERoutingParams {
    MoEDevicePointer x;             ///< [T, H] bf16
    MoEDevicePointer routerWeight;  ///< [E, H] bf16
    MoEDevicePointer routerBias;    ///< [E] f32
    MoEDevicePointer logits;        ///< [T, E] f32
    MoEDevicePointer topkIds;       ///< [T, k] i32, by descending weight (ties: lower id)
    MoEDevicePointer topkWeights;   ///< [T, k] f32
    MoEDevicePointer blockCounts;   ///< [B, E] i32: per token block histogram
    MoEDevicePointer blockPrefix;   ///< [B, E] i32: rows of expert e in token blocks before b
    MoEDevicePointer expertCounts;  ///< [E] i32
    MoEDevicePointer expertOffsets; ///< [E+1] i32
    MoEDevicePointer sortedToSlot;  ///< [T·k] i32
    MoEDevicePointer slotToSorted;  ///< [T·k] i32
    MoEDevicePointer sortedWeights; ///< [T·k] f32: routing weight of each sorted row
    MoEDevicePointer tiles;         ///< [maxTiles] MoETile
    MoEDevicePointer tileCount;     ///< [1] i32
    MoEDevicePointer arrivals;      ///< [MOE_ROUTER_TILE_COUNTERS] u32 per-tile arrival counters of the split router; zero between launches
    MoEDevicePointer routerPartials;///< [S, T, E] f32: the split router's per-slice partial logits (S > 1)
    MoEDevicePointer gathered;      ///< [T·k, H] bf16 or 0: moe_plan_place copies x's rows here in sorted order
    int tokens;
    int hidden;
    int experts;
    int topK;
    int mode;         ///< MOE_ROUTING_*
    int tileRows;     ///< rows per GEMM tile
    int maxTiles;     ///< static bound on the number of tiles (grid size of the GEMMs)
    int tokenBlocks;  ///< ceil(T / MOE_TOKENS_PER_BLOCK)
    int routerSplits; ///< S: slices of H the router splits K into (its grid's z)
    int tileWidths[MOE_TILE_WIDTHS]; ///< the GEMM's wgmma widths, ascending, the last tileRows (0s: none): fitted tiles
    MoETrace trace;  ///< last, so the fields above keep their offsets in the tracing build
} MoERoutingParams;

/// One grouped GEMM over the tile schedule: out[r] = epilogue(W[e] · in[r] + b[e]) for the sorted rows r of
/// each tile. Weights are MXFP4 in the repacked fragment layout (see WeightRepacking.swift):
///   codes:  [E][G][C][32 lanes][16 B]          scales: [E][G][ceil(C/4)][8 row pairs][4 chunks][4 B]
typedef struct MoEGemmParams {
    MoEDevicePointer codes;
    MoEDevicePointer scales;
    MoEDevicePointer bias;         ///< [E, N] f32, checkpoint row order
    MoEDevicePointer input;        ///< bf16 rows of K (stride inputStride)
    MoEDevicePointer inputIndex;   ///< i32 [rows] or 0: row of sorted row r is inputIndex[r] / inputDivisor
    MoEDevicePointer output;       ///< bf16 rows (stride outputStride)
    MoEDevicePointer outputIndex;  ///< i32 [rows] or 0: output row of sorted row r is outputIndex[r]
    MoEDevicePointer rowWeights;   ///< f32 [rows]: routing weight of sorted row r (weighted epilogue)
    MoEDevicePointer tiles;        ///< [maxTiles] MoETile
    MoEDevicePointer tileCount;    ///< [1] i32
    long long inputStride;         ///< elements
    long long outputStride;        ///< elements
    int inputDivisor;
    int n;            ///< N: weight rows (2I: gate/up interleaved in the checkpoint; H)
    int k;            ///< K
    int groups;       ///< G = N / 16
    int chunks;       ///< C = ceil(K / 64)
    int scaleGroups;  ///< ceil(C / 4)
    int maxTiles;
    int epilogue;     ///< MOE_EPILOGUE_*
    int residentRows; ///< rows of activations the resident kernel keeps in shared memory (≤ tile rows)
    int prefetchBeforeWait; ///< 1: tiles and weights may be read before griddepcontrol.wait (they come from a
                            ///< kernel two launches back); 0: wait first
    float swigluAlpha;
    float swigluLimit;
    // The k-way sum fused into GEMM 2 (decode sizes; resident kernels only): reduceOutput ≠ 0 makes the last block of
    // each column range (blocks counted in reduceCounters, reset by that block) add up the combine rows of every
    // token for its columns, exactly as moe_reduce does.
    MoEDevicePointer reduceOutput;   ///< bf16 [T, n], or 0
    MoEDevicePointer reduceCounters; ///< u32 [grid.x], zero between launches
    MoEDevicePointer slotToSorted;   ///< i32 [T·k]: slots with −1 route nowhere
    int reduceTokens;
    int topK;
    // Tile-by-tile hand-over between the resident GEMMs: GEMM 1 (role 1) lets GEMM 2 launch as soon as each of its
    // blocks is past its own wait and counts its finished blocks per tile; GEMM 2 (role 2) starts a tile once all tileReadyTarget
    // blocks of it are done, instead of waiting for the whole of GEMM 1, so it fills GEMM 1's last wave.
    MoEDevicePointer tileReady;     ///< u32 [maxTiles], zero between launches
    MoEDevicePointer tileConsumed;  ///< u32 [maxTiles]: GEMM 2's blocks past the wait; the last resets both
    int tileReadyTarget;            ///< GEMM 1's blocks per tile (its grid.x)
    int tileRole;                   ///< 0: none, 1: GEMM 1 (signal), 2: GEMM 2 (wait)
    int fullWidthOnly;              ///< registered kernels: 1 multiplies all N tokens of every tile (no half-width wgmma)
    MoETrace trace;  ///< after the fields most kernels read, so they keep their offsets in the tracing build
    MoEDevicePointer tensorMaps;  ///< MoEGemmTensorMaps (64-byte aligned): registered kernels with tensor copies only
} MoEGemmParams;

/// GEMM 1's input rows in sorted order: gathered[slotToSorted[t·k + j]] = x[t] for each of token t's k slots (with
/// tensor copies; MOE_CUDA_GATHER_ROWS=0 turns it off).
typedef struct MoEGatherParams {
    MoEDevicePointer input;         ///< [T, H] bf16
    MoEDevicePointer slotToSorted;  ///< [T·k] i32; slots with −1 route nowhere and are skipped
    MoEDevicePointer output;        ///< [T·k, H] bf16
    int tokens;
    int topK;
    int hidden;
    MoETrace trace;  ///< last, as in the other parameter structs
} MoEGatherParams;

/// The k-way sum per token, in slot order, fp32 → bf16.
typedef struct MoEReduceParams {
    MoEDevicePointer combine;       ///< [T·k, H] bf16, slot order
    MoEDevicePointer slotToSorted;  ///< [T·k] i32; slots with −1 route nowhere and are skipped
    MoEDevicePointer output;        ///< [T, H] bf16
    int tokens;
    int topK;
    int hidden;
    MoETrace trace;  ///< last, so the fields above keep their offsets in the tracing build
} MoEReduceParams;
