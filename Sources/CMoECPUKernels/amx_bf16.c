// AMX BF16 path: the tensor tiles of Sapphire Rapids and later. One tdpbf16ps multiplies a 16 × 32 bf16 tile
// by a 32 × 16 one (8192 multiply-adds in 16 cycles), against 32 for an AVX-512 vdpbf16ps.
//
// Operands, per 32-k MXFP4 block of one packed row group (16 output rows):
//   A (tokens × 32 k): the tokens' bf16 rows as they are (BF16_ROWS), loaded with the row stride K;
//   B (16 k pairs × 16 outputs, the pair layout AMX wants): the row group's codes decoded by vpermw exactly as the
//     AVX-512 path does, whose zmm of 16 rows × one input pair is one row of B — so no transpose;
//   C (tokens × 16 outputs, fp32).
// Scales: where every scale byte of the row group is in [2, 252] (any real checkpoint), the block's 2^(s−127) is
// folded into B by raising each nonzero decoded value's exponent — exact, since the result is a normal bf16 — and C
// accumulates the whole K (GEMM 2: two chains, even and odd blocks; GEMM 1's gate/up pair: one chain each). Elsewhere
// (a scale of 0, 1, 253 … 255) each block's partial sums go through memory and are scaled in fp32 exactly as the
// AVX-512 path does, so every scale byte means what it means there, at a cost (a tile store and vector loads a
// block; `scripts/cpu/amx_loop.c N gemm2 1` times it). Every product is exact (E2M1 codes, bf16 activations), only
// the fp32 sums round. AMX, like vdpbf16ps, reads bf16 subnormals as zero.
//
// A C element depends only on its own token's row and its own output row, and every tile size runs the same chains,
// so a token's bits do not depend on which or how many tokens share its tile: batches served together equal the same requests alone, and expert-parallel ranks equal
// one rank. (The AVX-512 kernels' vdpbf16ps chains give other bits than tdpbf16ps — in a standalone check most
// elements differed — so this path runs AMX even for one token.)
// Reference: PortableKernels.swift; tests: Tests/MoECPUTests (every path this CPU supports).
#include "moekit_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "avx512_helpers.h"

#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#define AMX_INLINE AMX_TARGET __attribute__((always_inline)) static inline

/// Bytes of a full superblock of a packed row group: 4 blocks' codes and their 64 scale bytes (moekit_cpu.h).
#define SUPERBLOCK_BYTES (4 * 256 + 64)

/// The tile configuration block (palette 1). configure: the per-block path's two sets of C (a block's partial sums),
/// A (activations) and B (decoded weights), so that one block's tile product runs while the previous block's partial
/// sums are scaled.
typedef struct __attribute__((packed, aligned(64))) {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

AMX_INLINE void configure(int N) {
    amx_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int set = 0; set < 2; set++) {
        config.colsb[3 * set + 0] = 64, config.rows[3 * set + 0] = (uint8_t)N;  // C
        config.colsb[3 * set + 1] = 64, config.rows[3 * set + 1] = (uint8_t)N;  // A
        config.colsb[3 * set + 2] = 64, config.rows[3 * set + 2] = 16;          // B
    }
    _tile_loadconfig(&config);
}

/// Block b's codes (chunk c: pairs 4c … 4c + 3, one zmm each) into B's pair layout: 16 pairs × 16 rows.
AMX_INLINE void decode_block(const uint8_t *codes, __m512i lut, uint16_t *decoded) {
    for (int c = 0; c < 4; c++) {
        const __m512i raw = _mm512_loadu_si512(codes + c * 64);
        _mm512_store_si512(decoded + (4 * c + 0) * 32, _mm512_permutexvar_epi16(raw, lut));
        _mm512_store_si512(decoded + (4 * c + 1) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 4), lut));
        _mm512_store_si512(decoded + (4 * c + 2) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 8), lut));
        _mm512_store_si512(decoded + (4 * c + 3) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 12), lut));
    }
}

/// acc[t] += partial[t] · 2^(s−127) for the 16 rows' scale bytes of one block.
AMX_INLINE void scale_into(const float *partial, const uint8_t *scales, const int N, __m512 *acc) {
    const __m512 scale = e8m0_scales(scales);
    for (int t = 0; t < N; t++) acc[t] = _mm512_fmadd_ps(_mm512_load_ps(partial + 16 * t), scale, acc[t]);
}

/// One block's tile product into tile set SET (tiles 3·SET … 3·SET + 2): C = A · B, then C stored to `partial`.
#define MOEKIT_AMX_BLOCK(SET, decoded, activations, stride, partial) \
    do { \
        _tile_loadd(3 * (SET) + 2, (decoded), 64); \
        _tile_loadd(3 * (SET) + 1, (activations), (stride)); \
        _tile_zero(3 * (SET) + 0); \
        _tile_dpbf16ps(3 * (SET) + 0, 3 * (SET) + 1, 3 * (SET) + 2); \
        _tile_stored(3 * (SET) + 0, (partial), 64); \
    } while (0)

/// acc[t][j] = Σ_k W[row j][k] · x[t][k] for one packed row group, any scale bytes; x: N rows of K = 32·blocks bf16,
/// stride K. Each block's partial sums go through memory to be scaled in fp32 (exactly as the AVX-512 path): the
/// tile store and the loads after it cost about as much as the rest of the block, so only row groups with a scale
/// outside [2, 252] take this way. Blocks go in pairs through the two tile sets.
AMX_INLINE void row_group_tiles_exact(const uint8_t *w, int32_t blocks, const uint16_t *x, const int N, __m512 *acc) {
    const __m512i lut = _mm512_load_si512(code_bf16);
    uint16_t decoded[2][16 * 32] __attribute__((aligned(64)));  // B of each set: 16 pairs × 16 rows
    float partial[2][16 * 16] __attribute__((aligned(64)));     // C of each set: N tokens × 16 rows
    const size_t stride = (size_t)blocks * 64;                  // bytes from one token's row to the next
    for (int t = 0; t < N; t++) acc[t] = _mm512_setzero_ps();
    const uint8_t *pendingScales = NULL;  // the block whose partial sums wait in partial[1]
    for (int32_t b0 = 0; b0 < blocks; b0 += 4) {
        const int32_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
        const uint8_t *scales = w + nb * 256;
        for (int32_t line = 0; line <= 4 * nb; line++) _mm_prefetch((const char *)(w + 8192 + 64 * line), _MM_HINT_T1);
        for (int32_t b = 0; b < nb; b += 2) {
            decode_block(w + b * 256, lut, decoded[0]);
            MOEKIT_AMX_BLOCK(0, decoded[0], (const char *)x + (size_t)(b0 + b) * 64, stride, partial[0]);
            if (pendingScales) scale_into(partial[1], pendingScales, N, acc);
            pendingScales = NULL;
            if (b + 1 < nb) {
                decode_block(w + (b + 1) * 256, lut, decoded[1]);
                MOEKIT_AMX_BLOCK(1, decoded[1], (const char *)x + (size_t)(b0 + b + 1) * 64, stride, partial[1]);
                pendingScales = scales + (b + 1) * 16;
            }
            scale_into(partial[0], scales + b * 16, N, acc);
        }
        w += nb * 256 + 64;
    }
    if (pendingScales) scale_into(partial[1], pendingScales, N, acc);
}

/// Whether every scale byte of a row group is in [2, 252]: then 2^(s−127) times any E2M1 code value is a normal bf16
/// (0.5 · 2^−125 … 6 · 2^125) and folding the scale into the decoded weights is exact.
AMX_INLINE int scales_fold_exactly(const uint8_t *w, int32_t blocks) {
    __mmask64 outside = 0;
    for (int32_t b0 = 0; b0 < blocks; b0 += 4) {
        const int32_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
        const __mmask64 valid = nb == 4 ? ~(__mmask64)0 : (((__mmask64)1 << (16 * nb)) - 1);
        const __m512i s = _mm512_maskz_loadu_epi8(valid, w + nb * 256);
        outside |= _mm512_mask_cmplt_epu8_mask(valid, s, _mm512_set1_epi8(2));
        outside |= _mm512_mask_cmpgt_epu8_mask(valid, s, _mm512_set1_epi8((char)252));
        w += nb * 256 + 64;
    }
    return outside == 0;
}

/// decode_block with the block's scales folded in: each nonzero decoded bf16's exponent raised by s − 127 (exact for
/// scale bytes in [2, 252]); zeros stay zero.
AMX_INLINE void decode_block_scaled(const uint8_t *codes, const uint8_t *scales, __m512i lut, uint16_t *decoded) {
    const __m512i s = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)scales));
    const __m512i shift = _mm512_slli_epi32(_mm512_sub_epi32(s, _mm512_set1_epi32(127)), 7);  // per row, int32
    const __m512i adjust = _mm512_or_si512(_mm512_and_si512(shift, _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(shift, 16));
    const __m512i magnitude = _mm512_set1_epi16(0x7FFF);
    for (int c = 0; c < 4; c++) {
        const __m512i raw = _mm512_loadu_si512(codes + c * 64);
        for (int m = 0; m < 4; m++) {
            const __m512i d = _mm512_permutexvar_epi16(m == 0 ? raw : _mm512_srli_epi16(raw, 4 * m), lut);
            _mm512_store_si512(decoded + (4 * c + m) * 32, _mm512_mask_add_epi16(d, _mm512_test_epi16_mask(d, magnitude), d, adjust));
        }
    }
}

/// Row groups whose scales fold exactly: S = 1 sub-tile of N ≤ 16 tokens, or S = 2 (q + 1 rows for the first r, q for
/// the rest) sharing each decoded block, so a weight is decoded once for up to 32 tokens. Every sub-tile accumulates
/// even and odd blocks in two chains (independent, so one's product runs while the other's operands load), summed
/// at the end: the same arithmetic for every tile size, so a token's bits do not depend on its tile. No store per
/// block. Tiles: C of sub-tile s = 2s (even blocks) and 2s + 1 (odd), A of q + 1 rows = 4 and of q rows = 5, B = 6
/// (even blocks) and 7 (odd). configure_subtiles: those tiles' rows; `pair` (row_group_pair_folded): C tile c holds
/// sub-tile c % 2 instead of c / 2.
AMX_INLINE void configure_subtiles(int q, int r, int pair) {
    amx_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int c = 0; c < 4; c++) config.colsb[c] = 64, config.rows[c] = (uint8_t)((pair ? c % 2 : c / 2) < r ? q + 1 : q);
    config.colsb[4] = 64, config.rows[4] = (uint8_t)(r > 0 ? q + 1 : q);  // unused when r = 0; 17 rows would fault
    config.colsb[5] = 64, config.rows[5] = (uint8_t)q;
    config.colsb[6] = 64, config.rows[6] = 16;
    config.colsb[7] = 64, config.rows[7] = 16;
    _tile_loadconfig(&config);
}

/// The folded routines' token sub-tiles: S of them (one up to 16 tokens), the first r of q + 1 rows and the rest of q,
/// sub-tile s from token first[s].
typedef struct {
    int S, q, r, first[2];
} amx_subtiles;

/// Splits N ≤ 32 tokens into sub-tiles, configures their tiles (configure_subtiles) and zeroes C (tiles 0–3).
AMX_INLINE amx_subtiles begin_subtiles(int N, int pair) {
    amx_subtiles sub;
    sub.S = N > 16 ? 2 : 1, sub.q = N / sub.S, sub.r = N % sub.S;
    sub.first[0] = 0, sub.first[1] = sub.q + sub.r;
    configure_subtiles(sub.q, sub.r, pair);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    return sub;
}

/// L2 prefetches at a superblock's start: the superblock 8 KiB ahead in this row group, and the same bytes `next` on,
/// in the row group the worker takes after this one (units are expert-major; for GEMM 1's gate/up pairs, two groups
/// on). So the DRAM stream runs a whole row group ahead of the decode instead of 8 KiB (BENCHMARKS.md "Session 18").
AMX_INLINE void prefetch_superblock(const uint8_t *superblock, size_t next) {
    for (int32_t line = 0; line <= 16; line++) {
        _mm_prefetch((const char *)(superblock + 8192 + 64 * line), _MM_HINT_T1);
        _mm_prefetch((const char *)(superblock + next + 64 * line), _MM_HINT_T1);
    }
}

/// Sub-tile s's product with the block in tile BT into its chain C, its A rows from `base` (the block's column in
/// token row 0).
#define MOEKIT_AMX_SUBTILE(s, C, BT) \
    do { \
        const char *a = base + (size_t)sub.first[s] * stride; \
        if ((s) < sub.r) { \
            _tile_loadd(4, a, stride); \
            _tile_dpbf16ps(C, 4, BT); \
        } else { \
            _tile_loadd(5, a, stride); \
            _tile_dpbf16ps(C, 5, BT); \
        } \
    } while (0)

/// Block b's codes and scales in a packed row group: superblocks of 4 blocks (1088 bytes), the last possibly shorter.
AMX_INLINE void block_address(const uint8_t *w, int32_t blocks, int32_t b, const uint8_t **codes, const uint8_t **scales) {
    const int32_t b0 = b & ~3, nb = blocks - b0 < 4 ? blocks - b0 : 4;
    const uint8_t *superblock = w + (size_t)(b0 / 4) * SUPERBLOCK_BYTES;
    *codes = superblock + (b - b0) * 256;
    *scales = superblock + nb * 256 + (b - b0) * 16;
}

/// Block b of a packed row group, decoded with its scales folded in (decode_block_scaled) into `decoded`.
AMX_INLINE void decode_block_at(const uint8_t *w, int32_t blocks, int32_t b, __m512i lut, uint16_t *decoded) {
    const uint8_t *codes, *scales;
    block_address(w, blocks, b, &codes, &scales);
    decode_block_scaled(codes, scales, lut, decoded);
}

/// How many blocks ahead of its tile product a block is decoded. A tile load waits until the stores it reads have
/// left the core, and those retire in order behind the tile products before them: decoded just in time, a block's
/// decode and the previous block's products ran one after the other (scripts/cpu/amx_loop.c 16, BENCHMARKS.md: 26.2 ns a
/// block just in time, 19.0 two blocks ahead). DECODE_RING buffers hold the blocks in between.
#define DECODE_AHEAD 2
#define DECODE_RING 4

/// result[t][j] = Σ_k W[row j][k] · x[t][k] for N ≤ 32 tokens of a row group whose scales fold exactly.
AMX_INLINE void row_group_folded(const uint8_t *w, int32_t blocks, const uint16_t *x, int N, float *result) {
    const amx_subtiles sub = begin_subtiles(N, 0);
    const __m512i lut = _mm512_load_si512(code_bf16);
    uint16_t ring[DECODE_RING][16 * 32] __attribute__((aligned(64)));
    float sums[4][16 * 16] __attribute__((aligned(64)));
    const size_t stride = (size_t)blocks * 64, groupBytes = moekit_row_group_bytes(blocks);
#define MOEKIT_AMX_DECODE(b) \
    do { \
        if (((b) & 3) == 0) prefetch_superblock(w + (size_t)((b) / 4) * SUPERBLOCK_BYTES, groupBytes); \
        decode_block_at(w, blocks, (b), lut, ring[(b) % DECODE_RING]); \
    } while (0)
    for (int32_t b = 0; b < DECODE_AHEAD && b < blocks; b++) MOEKIT_AMX_DECODE(b);
    for (int32_t b = 0; b < blocks; b += 2) {  // even block b into chains 0 / 2, odd block b + 1 into 1 / 3
        if (b + DECODE_AHEAD < blocks) MOEKIT_AMX_DECODE(b + DECODE_AHEAD);
        const char *base = (const char *)x + (size_t)b * 64;
        _tile_loadd(6, ring[b % DECODE_RING], 64);
        MOEKIT_AMX_SUBTILE(0, 0, 6);
        if (sub.S > 1) MOEKIT_AMX_SUBTILE(1, 2, 6);
        if (b + 1 < blocks) {
            if (b + 1 + DECODE_AHEAD < blocks) MOEKIT_AMX_DECODE(b + 1 + DECODE_AHEAD);
            base += 64;
            _tile_loadd(7, ring[(b + 1) % DECODE_RING], 64);
            MOEKIT_AMX_SUBTILE(0, 1, 7);
            if (sub.S > 1) MOEKIT_AMX_SUBTILE(1, 3, 7);
        }
    }
#undef MOEKIT_AMX_DECODE
    _tile_stored(0, sums[0], 64);
    _tile_stored(1, sums[1], 64);
    if (sub.S > 1) {
        _tile_stored(2, sums[2], 64);
        _tile_stored(3, sums[3], 64);
    }
    for (int t = 0; t < N; t++) {  // even chain + odd chain
        const int s = t < sub.first[1] ? 0 : 1, row = t - sub.first[s];
        _mm512_storeu_ps(result + 16 * t, _mm512_add_ps(_mm512_load_ps(sums[2 * s] + 16 * row), _mm512_load_ps(sums[2 * s + 1] + 16 * row)));
    }
}

/// GEMM 1's gate and up row groups together, when both fold exactly: each block's activation rows are loaded once for
/// both (the separate passes loaded them twice). One chain per row group and sub-tile (a standalone loop ran one chain
/// as fast as two once the decode runs ahead), the same for every tile size. Tiles: C of gate sub-tile s = s, of up
/// sub-tile s = 2 + s, A of q + 1 rows = 4 and of q rows = 5, B gate = 6, B up = 7.
AMX_INLINE void row_group_pair_folded(
    const uint8_t *wg, const uint8_t *wu, int32_t blocks, const uint16_t *x, int N, float *gate, float *up) {
    const amx_subtiles sub = begin_subtiles(N, 1);
    const __m512i lut = _mm512_load_si512(code_bf16);
    uint16_t ringGate[DECODE_RING][16 * 32] __attribute__((aligned(64)));
    uint16_t ringUp[DECODE_RING][16 * 32] __attribute__((aligned(64)));
    float sums[4][16 * 16] __attribute__((aligned(64)));
    const size_t stride = (size_t)blocks * 64, groupBytes = moekit_row_group_bytes(blocks);
#define MOEKIT_AMX_DECODE_PAIR(b) \
    do { \
        decode_block_at(wg, blocks, (b), lut, ringGate[(b) % DECODE_RING]); \
        decode_block_at(wu, blocks, (b), lut, ringUp[(b) % DECODE_RING]); \
    } while (0)
#define MOEKIT_AMX_PAIR_SUBTILE(s) \
    do { \
        const char *a = base + (size_t)sub.first[s] * stride; \
        if ((s) < sub.r) { \
            _tile_loadd(4, a, stride); \
            _tile_dpbf16ps(s, 4, 6); \
            _tile_dpbf16ps(2 + (s), 4, 7); \
        } else { \
            _tile_loadd(5, a, stride); \
            _tile_dpbf16ps(s, 5, 6); \
            _tile_dpbf16ps(2 + (s), 5, 7); \
        } \
    } while (0)
    for (int32_t b = 0; b < DECODE_AHEAD && b < blocks; b++) MOEKIT_AMX_DECODE_PAIR(b);
    for (int32_t b = 0; b < blocks; b++) {
        if ((b & 3) == 0) {
            prefetch_superblock(wg + (size_t)(b / 4) * SUPERBLOCK_BYTES, 2 * groupBytes);
            prefetch_superblock(wu + (size_t)(b / 4) * SUPERBLOCK_BYTES, 2 * groupBytes);
        }
        if (b + DECODE_AHEAD < blocks) MOEKIT_AMX_DECODE_PAIR(b + DECODE_AHEAD);
        const char *base = (const char *)x + (size_t)b * 64;
        _tile_loadd(6, ringGate[b % DECODE_RING], 64);
        _tile_loadd(7, ringUp[b % DECODE_RING], 64);
        MOEKIT_AMX_PAIR_SUBTILE(0);
        if (sub.S > 1) MOEKIT_AMX_PAIR_SUBTILE(1);
    }
#undef MOEKIT_AMX_DECODE_PAIR
#undef MOEKIT_AMX_PAIR_SUBTILE
    _tile_stored(0, sums[0], 64);
    _tile_stored(2, sums[2], 64);
    if (sub.S > 1) {
        _tile_stored(1, sums[1], 64);
        _tile_stored(3, sums[3], 64);
    }
    for (int t = 0; t < N; t++) {
        const int s = t < sub.first[1] ? 0 : 1, row = t - sub.first[s];
        _mm512_storeu_ps(gate + 16 * t, _mm512_load_ps(sums[s] + 16 * row));
        _mm512_storeu_ps(up + 16 * t, _mm512_load_ps(sums[2 + s] + 16 * row));
    }
}

/// result[t][j] (float [N][16]) = Σ_k W[row j][k] · x[t][k] for one packed row group and N ≤ 32 tokens (rows of x:
/// stride K = 32·blocks), `folds` = scales_fold_exactly(w, blocks). Configures the tiles itself.
AMX_INLINE void row_group_result(const uint8_t *w, int32_t blocks, const uint16_t *x, int N, float *result, int folds) {
    if (folds) {
        row_group_folded(w, blocks, x, N, result);
        return;
    }
    for (int t0 = 0; t0 < N; t0 += 16) {  // 16 tokens at a time
        const int n = N - t0 < 16 ? N - t0 : 16;
        __m512 acc[16];
        configure(n);
        row_group_tiles_exact(w, blocks, x + (size_t)t0 * blocks * 32, n, acc);
        for (int t = 0; t < n; t++) _mm512_storeu_ps(result + 16 * (t0 + t), acc[t]);
    }
}

/// GEMM 1's two row groups' fp32 sums: together where both fold exactly, else one after the other.
AMX_INLINE void gate_up_result(
    const uint8_t *wg, const uint8_t *wu, int32_t blocks, const uint16_t *x, int N, float *gate, float *up) {
    const int gateFolds = scales_fold_exactly(wg, blocks), upFolds = scales_fold_exactly(wu, blocks);
    if (gateFolds && upFolds) {
        row_group_pair_folded(wg, wu, blocks, x, N, gate, up);
    } else {
        row_group_result(wg, blocks, x, N, gate, gateFolds);
        row_group_result(wu, blocks, x, N, up, upFolds);
    }
}

AMX_TARGET void moekit_amxbf16_gemm1(const moekit_gemm1_tile *tile) {
    const int N = tile->tokens;
    if (N < 1 || N > MOEKIT_AMX_TILE_TOKENS) __builtin_trap();
    const uint16_t *x = (const uint16_t *)tile->activations;
    float gate[MOEKIT_AMX_TILE_TOKENS * 16] __attribute__((aligned(64)));
    float up[MOEKIT_AMX_TILE_TOKENS * 16] __attribute__((aligned(64)));
    gate_up_result(tile->gate_weights, tile->up_weights, tile->blocks, x, N, gate, up);
    _tile_release();
    const __m512 gate_bias = _mm512_loadu_ps(tile->gate_bias), up_bias = _mm512_loadu_ps(tile->up_bias);
    uint16_t *out = (uint16_t *)tile->intermediate;
    for (int t = 0; t < N; t++) {
        const __m512 g = _mm512_add_ps(_mm512_load_ps(gate + 16 * t), gate_bias);
        const __m512 u = _mm512_add_ps(_mm512_load_ps(up + 16 * t), up_bias);
        _mm256_storeu_si256(
            (__m256i *)(out + (size_t)t * tile->intermediate_stride), to_bf16(swiglu(g, u, tile->swiglu_alpha, tile->swiglu_limit)));
    }
}

AMX_TARGET void moekit_amxbf16_gemm2(const moekit_gemm2_tile *tile) {
    const int N = tile->tokens;
    if (N < 1 || N > MOEKIT_AMX_TILE_TOKENS) __builtin_trap();
    float acc[MOEKIT_AMX_TILE_TOKENS * 16] __attribute__((aligned(64)));
    row_group_result(
        tile->weights, tile->blocks, (const uint16_t *)tile->intermediate, N, acc, scales_fold_exactly(tile->weights, tile->blocks));
    _tile_release();
    const __m512 bias = _mm512_loadu_ps(tile->bias);
    for (int t = 0; t < N; t++) {
        const __m512 y = _mm512_add_ps(_mm512_load_ps(acc + 16 * t), bias);
        const __m512 weighted = _mm512_mul_ps(_mm512_set1_ps(tile->row_weights[t]), y);
        _mm256_storeu_si256((__m256i *)(tile->output_rows[t] + tile->column), to_bf16(weighted));
    }
}

AMX_TARGET void moekit_amxbf16_row_group(const uint8_t *weights, int32_t blocks, const uint16_t *x, int32_t tokens, float *result) {
    if (tokens < 1 || tokens > MOEKIT_AMX_TILE_TOKENS) __builtin_trap();
    row_group_result(weights, blocks, x, tokens, result, scales_fold_exactly(weights, blocks));
    _tile_release();
}

AMX_TARGET void moekit_amxbf16_gate_up(
    const uint8_t *gate_weights, const uint8_t *up_weights, int32_t blocks, const uint16_t *x, int32_t tokens, float *gate,
    float *up) {
    if (tokens < 1 || tokens > MOEKIT_AMX_TILE_TOKENS) __builtin_trap();
    gate_up_result(gate_weights, up_weights, blocks, x, tokens, gate, up);
    _tile_release();
}

AMX_TARGET double moekit_amxbf16_peak_probe(int64_t iterations) {
    amx_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 6; i++) config.colsb[i] = 64, config.rows[i] = 16;
    _tile_loadconfig(&config);
    static const uint16_t operand[16 * 32] __attribute__((aligned(64))) = {0};  // the values do not change the rate
    _tile_loadd(4, operand, 64);
    _tile_loadd(5, operand, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t n = 0; n < iterations; n++) {  // four independent accumulator chains
        _tile_dpbf16ps(0, 4, 5);
        _tile_dpbf16ps(1, 4, 5);
        _tile_dpbf16ps(2, 4, 5);
        _tile_dpbf16ps(3, 4, 5);
    }
    float sink[16 * 16] __attribute__((aligned(64)));
    _tile_stored(0, sink, 64);
    _tile_release();
    volatile float keep = sink[0];
    (void)keep;
    return (double)iterations * 4.0 * 16 * 16 * 32 * 2;
}

#else

void moekit_amxbf16_gemm1(const moekit_gemm1_tile *tile) { (void)tile; __builtin_trap(); }
void moekit_amxbf16_gemm2(const moekit_gemm2_tile *tile) { (void)tile; __builtin_trap(); }
void moekit_amxbf16_row_group(const uint8_t *weights, int32_t blocks, const uint16_t *x, int32_t tokens, float *result) {
    (void)weights; (void)blocks; (void)x; (void)tokens; (void)result;
    __builtin_trap();
}
void moekit_amxbf16_gate_up(
    const uint8_t *gate_weights, const uint8_t *up_weights, int32_t blocks, const uint16_t *x, int32_t tokens, float *gate,
    float *up) {
    (void)gate_weights; (void)up_weights; (void)blocks; (void)x; (void)tokens; (void)gate; (void)up;
    __builtin_trap();
}
double moekit_amxbf16_peak_probe(int64_t iterations) { (void)iterations; __builtin_trap(); }

#endif
