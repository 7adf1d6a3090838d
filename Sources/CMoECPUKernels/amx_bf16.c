// AMX BF16 path: the tensor tiles of Sapphire Rapids and later. One tdpbf16ps multiplies a 16 × 32 bf16 tile
// by a 32 × 16 one (8192 multiply-adds in 16 cycles), against 32 for an AVX-512 vdpbf16ps.
//
// Operands, per 32-k MXFP4 block of one packed row group (16 output rows):
//   A (tokens × 32 k): the tokens' bf16 rows as they are (BF16_ROWS), loaded with the row stride K;
//   B (16 k pairs × 16 outputs, the pair layout AMX wants): the row group's codes decoded by vpermw exactly as the
//     AVX-512 path does, whose zmm of 16 rows × one input pair is one row of B — so no transpose;
//   C (tokens × 16 outputs, fp32): this block's partial sums, zeroed per block.
// The block's E8M0 scale is then applied in fp32 to the partial sums (acc += partial · 2^(s−127)), as the AVX-512
// path does: every product is exact (E2M1 codes and bf16 activations are exact in bf16), only the fp32 sums
// round, and every scale byte (0 and 255 included) means what it means there. AMX, like vdpbf16ps, reads bf16
// subnormals as zero.
//
// A C element depends only on its own token's row and its own output row, in a fixed k order: results do not
// depend on which tokens share a tile, so the expert-parallel ranks agree with one rank bit for bit.
// Reference: PortableKernels.swift; tests: Tests/MoECPUTests (every path this CPU supports).
#include "moekit_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "avx512_helpers.h"

#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#define AMX_INLINE AMX_TARGET __attribute__((always_inline)) static inline

/// The tile configuration (palette 1): tile 0 the partial sums C, 1 the activations A, 2 the decoded weights B.
typedef struct __attribute__((packed, aligned(64))) {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

enum { TILE_C = 0, TILE_A = 1, TILE_B = 2 };

AMX_INLINE void configure(int N) {
    amx_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    config.colsb[TILE_C] = 64, config.rows[TILE_C] = (uint8_t)N;
    config.colsb[TILE_A] = 64, config.rows[TILE_A] = (uint8_t)N;
    config.colsb[TILE_B] = 64, config.rows[TILE_B] = 16;
    _tile_loadconfig(&config);
}

/// acc[t][j] = Σ_k W[row j][k] · x[t][k] for one packed row group; x: N rows of K = 32·blocks bf16, stride K.
AMX_INLINE void row_group_tiles(const uint8_t *w, int32_t blocks, const uint16_t *x, const int N, __m512 *acc) {
    const __m512i lut = _mm512_load_si512(code_bf16);
    uint16_t decoded[16 * 32] __attribute__((aligned(64)));  // B: 16 pairs × 16 rows
    float partial[16 * 16] __attribute__((aligned(64)));     // C: N tokens × 16 rows
    const size_t stride = (size_t)blocks * 64;               // bytes from one token's row to the next
    for (int t = 0; t < N; t++) acc[t] = _mm512_setzero_ps();
    for (int32_t b0 = 0; b0 < blocks; b0 += 4) {
        const int32_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
        const uint8_t *scales = w + nb * 256;
        for (int32_t line = 0; line <= 4 * nb; line++) _mm_prefetch((const char *)(w + 8192 + 64 * line), _MM_HINT_T1);
        for (int32_t b = 0; b < nb; b++) {
            const uint8_t *codes = w + b * 256;
            for (int c = 0; c < 4; c++) {  // chunk c: pairs 4c … 4c + 3 of the block, one zmm each
                const __m512i raw = _mm512_loadu_si512(codes + c * 64);
                _mm512_store_si512(decoded + (4 * c + 0) * 32, _mm512_permutexvar_epi16(raw, lut));
                _mm512_store_si512(decoded + (4 * c + 1) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 4), lut));
                _mm512_store_si512(decoded + (4 * c + 2) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 8), lut));
                _mm512_store_si512(decoded + (4 * c + 3) * 32, _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 12), lut));
            }
            _tile_loadd(TILE_B, decoded, 64);
            _tile_loadd(TILE_A, (const char *)x + (size_t)(b0 + b) * 64, stride);
            _tile_zero(TILE_C);
            _tile_dpbf16ps(TILE_C, TILE_A, TILE_B);
            _tile_stored(TILE_C, partial, 64);
            const __m512 scale = e8m0_scales(scales + b * 16);
            for (int t = 0; t < N; t++) acc[t] = _mm512_fmadd_ps(_mm512_load_ps(partial + 16 * t), scale, acc[t]);
        }
        w += nb * 256 + 64;
    }
}

AMX_INLINE void gemm1_tokens(const moekit_gemm1_tile *tile, const int N) {
    configure(N);
    const uint16_t *x = (const uint16_t *)tile->activations;
    float gate_out[16 * 16] __attribute__((aligned(64)));
    {
        __m512 gate[16];
        row_group_tiles(tile->gate_weights, tile->blocks, x, N, gate);
        for (int t = 0; t < N; t++) _mm512_store_ps(gate_out + 16 * t, gate[t]);
        MOEKIT_FORCE_MEMORY(gate_out);
    }
    __m512 up[16];
    row_group_tiles(tile->up_weights, tile->blocks, x, N, up);
    _tile_release();
    const __m512 gate_bias = _mm512_loadu_ps(tile->gate_bias), up_bias = _mm512_loadu_ps(tile->up_bias);
    uint16_t *out = (uint16_t *)tile->intermediate;
    for (int t = 0; t < N; t++) {
        const __m512 g = _mm512_add_ps(_mm512_load_ps(gate_out + 16 * t), gate_bias);
        const __m512 u = _mm512_add_ps(up[t], up_bias);
        _mm256_storeu_si256(
            (__m256i *)(out + (size_t)t * tile->intermediate_stride), to_bf16(swiglu(g, u, tile->swiglu_alpha, tile->swiglu_limit)));
    }
}

AMX_INLINE void gemm2_tokens(const moekit_gemm2_tile *tile, const int N) {
    configure(N);
    __m512 acc[16];
    row_group_tiles(tile->weights, tile->blocks, (const uint16_t *)tile->intermediate, N, acc);
    _tile_release();
    const __m512 bias = _mm512_loadu_ps(tile->bias);
    for (int t = 0; t < N; t++) {
        const __m512 y = _mm512_add_ps(acc[t], bias);
        const __m512 weighted = _mm512_mul_ps(_mm512_set1_ps(tile->row_weights[t]), y);
        _mm256_storeu_si256((__m256i *)(tile->output_rows[t] + tile->column), to_bf16(weighted));
    }
}

#define MOEKIT_AMX_TOKEN_CASES(F, tile) \
    switch ((tile)->tokens) { \
    case 1: F(tile, 1); break; case 2: F(tile, 2); break; case 3: F(tile, 3); break; \
    case 4: F(tile, 4); break; case 5: F(tile, 5); break; case 6: F(tile, 6); break; \
    case 7: F(tile, 7); break; case 8: F(tile, 8); break; case 9: F(tile, 9); break; \
    case 10: F(tile, 10); break; case 11: F(tile, 11); break; case 12: F(tile, 12); break; \
    case 13: F(tile, 13); break; case 14: F(tile, 14); break; case 15: F(tile, 15); break; \
    case 16: F(tile, 16); break; \
    default: __builtin_trap(); \
    }

AMX_TARGET void moekit_amxbf16_gemm1(const moekit_gemm1_tile *tile) { MOEKIT_AMX_TOKEN_CASES(gemm1_tokens, tile) }

AMX_TARGET void moekit_amxbf16_gemm2(const moekit_gemm2_tile *tile) { MOEKIT_AMX_TOKEN_CASES(gemm2_tokens, tile) }

AMX_TARGET double moekit_amxbf16_peak_probe(int64_t iterations) {
    amx_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 6; i++) config.colsb[i] = 64, config.rows[i] = 16;
    _tile_loadconfig(&config);
    static const uint16_t ones[16 * 32] __attribute__((aligned(64))) = {0};
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
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
double moekit_amxbf16_peak_probe(int64_t iterations) { (void)iterations; __builtin_trap(); }

#endif
