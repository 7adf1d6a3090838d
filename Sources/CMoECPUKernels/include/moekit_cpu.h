// CMoECPUKernels: the CPU backend's vector kernels, its thread pool and CPU feature detection.
//
// Every kernel here has a portable Swift twin in Sources/MoECPU/PortableKernels.swift reading the same
// packed layout and the same parameter structs; tests compare each path with it and with the float64
// reference (Tests/MoECPUTests). Each instruction-set path is compiled with per-function target
// attributes, so the package builds for plain x86-64 (or arm64) and the path is chosen at run time from
// `moekit_cpu_features()`.
//
// Packed MXFP4 row group (the unit every GEMM kernel reads; built by PackedExpertStack.swift):
//   16 output rows over K = 32·blocks inputs, stored as superblocks of nb = min(4, blocks left) blocks:
//     nb·256 code bytes: for each block, 4 chunks of 64 bytes; chunk c of block b holds inputs
//       k0 = 32b + 8c ... k0+7 of all 16 rows, 4 bytes per row: row j at bytes 4j..4j+3 =
//       (e0 | e2<<4), (e4 | e6<<4), (e1 | e3<<4), (e5 | e7<<4)   with e_i the E2M1 code of (row j, k0+i);
//       read as 32 16-bit words, nibble m of word 2j+h is the code of (row j, k0 + 2m + h), so
//       one vpermw per nibble position decodes a zmm of 16 rows × one input pair (the bf16 pair layout).
//     64 scale bytes: the E8M0 scale of (block b, row j) at byte 16·b + j; unused bytes are 0.
//   Row groups of one expert follow each other; a row group is `moekit_row_group_bytes(blocks)` long,
//   always a multiple of 64.
#ifndef MOEKIT_CPU_H
#define MOEKIT_CPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Rows per packed row group.
#define MOEKIT_ROW_GROUP 16
/// Most tokens one tile call takes on any path (the AVX-512 path's register budget).
#define MOEKIT_MAX_TILE_TOKENS 12

/// Bytes of one packed row group over `blocks` MXFP4 blocks.
static inline size_t moekit_row_group_bytes(int32_t blocks) {
    return (size_t)blocks * 256 + (size_t)((blocks + 3) / 4) * 64;
}

// MARK: CPU features

/// AVX2 and FMA3 with OS support for the ymm state.
#define MOEKIT_CPU_AVX2_FMA 1u
/// AVX-512 F, BW, VL and BF16 with OS support for the zmm and opmask state.
#define MOEKIT_CPU_AVX512_BF16 2u
/// AVX-512 VNNI (reported, not required by any kernel).
#define MOEKIT_CPU_AVX512_VNNI 4u
/// Advanced SIMD on arm64 (always there).
#define MOEKIT_CPU_NEON 8u
/// AMX tiles with BF16 (Sapphire Rapids and later), the OS's permission granted, and MOEKIT_CPU_AVX512_BF16.
#define MOEKIT_CPU_AMX_BF16 16u

/// The instruction-set features of this CPU (an OR of the MOEKIT_CPU_* bits).
uint32_t moekit_cpu_features(void);

// MARK: tile parameters (shared with the Swift kernels)

/// Activation layouts a path packs its GEMM inputs in.
/// BF16_PAIRS: [K/2][tokens] uint32, each the bf16 pair (k even in the low half, k odd in the high half).
/// F32:        [K][tokens] float.
/// BF16_ROWS:  [tokens][K] bf16, each token's row as it is (the AMX path's A tiles); GEMM 1 writes the
///             intermediate's rows with stride `intermediate_stride`.

/// GEMM 1 for one gate/up row-group pair and up to the path's tile tokens (MOEKIT_MAX_TILE_TOKENS; AMX:
/// MOEKIT_AMX_TILE_TOKENS):
///   gate[t][j] = Σ_k W1[gate row j][k]·x[t][k] + gate_bias[j], up likewise (fp32),
///   a[t][j] = bf16(SwiGLU(gate, up)), j = 0..<16, written into the packed intermediate of GEMM 2.
typedef struct moekit_gemm1_tile {
    /// Packed row group of the 16 gate rows i0..i0+15 (checkpoint rows 2i).
    const uint8_t *gate_weights;
    /// Packed row group of the 16 up rows i0..i0+15 (checkpoint rows 2i+1).
    const uint8_t *up_weights;
    /// [16] gate and up biases (fp32 values of bf16 numbers).
    const float *gate_bias;
    const float *up_bias;
    /// The tokens' inputs in the path's activation layout, K = 32·blocks.
    const void *activations;
    /// The path's packed intermediate for these tokens ([I/2][tokens] pairs or [I][tokens] floats),
    /// offset to input i0 of GEMM 2; the tile writes its 16 values per token.
    void *intermediate;
    int32_t blocks;
    int32_t tokens;
    float swiglu_alpha;
    float swiglu_limit;
    /// BF16_ROWS: elements from one token's intermediate row to the next's (I); unused by the other layouts.
    int32_t intermediate_stride;
} moekit_gemm1_tile;

/// GEMM 2 for one row group of 16 output columns h0..h0+15 and up to the path's tile tokens:
///   out[t][h] = bf16(row_weights[t] · (Σ_i W2[h][i]·a[t][i] + bias[h])), written to output_rows[t][h0 + j].
typedef struct moekit_gemm2_tile {
    const uint8_t *weights;
    /// [16] biases of columns h0..h0+15.
    const float *bias;
    /// The tokens' intermediate in the path's activation layout, I = 32·blocks.
    const void *intermediate;
    /// [tokens] routing weights.
    const float *row_weights;
    /// [tokens] bf16 output rows; the tile writes elements h0..h0+15 of each.
    uint16_t *const *output_rows;
    int32_t column;
    int32_t blocks;
    int32_t tokens;
} moekit_gemm2_tile;

// MARK: AVX-512 BF16 path (bf16 dot products on decoded MXFP4, fp32 accumulation; BF16_PAIRS layout)

void moekit_avx512bf16_gemm1(const moekit_gemm1_tile *tile);
void moekit_avx512bf16_gemm2(const moekit_gemm2_tile *tile);
/// Router logits of one token: logits[e] = Σ_h x[h]·wr[e][h] + bias[e] (bf16 products, fp32 sums).
/// x: [H] bf16; wr: [E, H] bf16; H a multiple of 32.
void moekit_avx512bf16_router(
    const uint16_t *x, const uint16_t *wr, const float *bias, int32_t hidden, int32_t experts, float *logits);
/// Runs `iterations` rounds of 12 independent vdpbf16ps zmm chains; returns the number of flops done.
double moekit_avx512bf16_peak_probe(int64_t iterations);

// MARK: AMX BF16 path (MXFP4 decoded to bf16 AMX tiles with the scale folded in, tdpbf16ps, fp32 sums; BF16_ROWS)

/// Most tokens one AMX tile call takes: two sub-tiles of ≤ 16 rows share each decoded block.
#define MOEKIT_AMX_TILE_TOKENS 32

void moekit_amxbf16_gemm1(const moekit_gemm1_tile *tile);
void moekit_amxbf16_gemm2(const moekit_gemm2_tile *tile);
/// The fp32 sums under both GEMMs' epilogues, for tests: result[t][j] = Σ_k W[row j][k]·x[t][k] for one packed row
/// group and `tokens` ≤ MOEKIT_AMX_TILE_TOKENS rows of x (BF16_ROWS, K = 32·blocks).
void moekit_amxbf16_row_group(const uint8_t *weights, int32_t blocks, const uint16_t *x, int32_t tokens, float *result);
/// GEMM 1's fp32 sums under its epilogue, for tests: moekit_amxbf16_row_group for the gate and the up row groups.
void moekit_amxbf16_gate_up(
    const uint8_t *gate_weights, const uint8_t *up_weights, int32_t blocks, const uint16_t *x, int32_t tokens, float *gate,
    float *up);
/// Runs `iterations` rounds of 4 independent tdpbf16ps tile chains; returns the number of flops done.
double moekit_amxbf16_peak_probe(int64_t iterations);

// MARK: AVX2 + FMA path (decoded MXFP4 times fp32 activations, fp32 FMA; F32 layout)

void moekit_avx2_gemm1(const moekit_gemm1_tile *tile);
void moekit_avx2_gemm2(const moekit_gemm2_tile *tile);
/// Runs `iterations` rounds of 12 independent ymm FMA chains; returns the number of flops done.
double moekit_avx2_peak_probe(int64_t iterations);

// MARK: NEON path (arm64: decoded MXFP4 times fp32 activations, fp32 FMA; F32 layout)

void moekit_neon_gemm1(const moekit_gemm1_tile *tile);
void moekit_neon_gemm2(const moekit_gemm2_tile *tile);
/// Runs `iterations` rounds of 12 independent float32x4 FMA chains; returns the number of flops done.
double moekit_neon_peak_probe(int64_t iterations);

// MARK: thread pool

/// A fixed set of threads that run one task at a time: `moekit_pool_run` calls task(context, w) for every
/// worker w in 0..<workers, w = 0 on the calling thread, and returns when all have finished. Idle workers spin
/// briefly (so the phases of one forward pass hand over in well under a microsecond) and then sleep.
typedef struct moekit_pool moekit_pool;
typedef void (*moekit_pool_task)(void *context, int32_t worker);

/// Starts workers − 1 threads. Returns NULL and sets errno when a thread cannot be started.
moekit_pool *moekit_pool_create(int32_t workers);
int32_t moekit_pool_workers(const moekit_pool *pool);
/// Runs one task on every worker. Calls from different threads are serialised.
void moekit_pool_run(moekit_pool *pool, moekit_pool_task task, void *context);
/// Stops and joins the threads.
void moekit_pool_destroy(moekit_pool *pool);

#ifdef __cplusplus
}
#endif

#endif
