// AVX-512 BF16 path: MXFP4 codes decoded to bf16 with one vpermw per 32 values, bf16 dot products
// (vdpbf16ps) against bf16 activations, fp32 accumulation.
//
// Why bf16: an E2M1 code value (0, ±0.5 ... ±6) and a bf16 activation are both exact in bf16, so every
// product vdpbf16ps forms is exact and only the fp32 sums round, as in a plain fp32 kernel; the arithmetic
// rate is 32 multiply-adds per instruction. The E8M0 block scale is applied once per block and row in
// fp32 (a per-block partial sum times 2^(s−127)), which is exact too.
//
// Kernel shape: one packed row group (16 output rows, lanes of a zmm) × N ≤ 12 tokens (registers), over the
// whole reduction (K = H or I), so each output is one fixed sequence of instructions whatever the thread
// count or the token grouping: results are bit-reproducible.
// Reference: PortableKernels.swift (same layout, scalar decode); tests: Tests/MoECPUTests.
#include "moekit_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "avx512_helpers.h"

#ifndef MOEKIT_PREFETCH_BYTES
/// How far ahead of the row group's stream the kernel prefetches, into L2 (the hardware prefetchers alone leave the
/// cores waiting on memory while they decode; 8 KiB into L2 beat 1–4 KiB into L1 and 12–16 KiB: docs/bench-cpu.md).
#define MOEKIT_PREFETCH_BYTES 8192
#endif

/// acc[t][j] = Σ_k W[row j][k] · x[t][k] for one packed row group. x: [K/2][N] bf16 pairs.
AVX512_INLINE void row_group_dot(const uint8_t *w, int32_t blocks, const uint32_t *x, const int N, __m512 *acc) {
    const __m512i lut = _mm512_load_si512(code_bf16);
    for (int t = 0; t < N; t++) acc[t] = _mm512_setzero_ps();
    for (int32_t b0 = 0; b0 < blocks; b0 += 4) {
        const int32_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
        const uint8_t *scales = w + nb * 256;
#if MOEKIT_PREFETCH_BYTES > 0
        // The superblock MOEKIT_PREFETCH_BYTES ahead, into L2: its lines (codes and scales), possibly in the next
        // row group (consecutive units of a worker are consecutive row groups of one expert).
        for (int32_t line = 0; line <= 4 * nb; line++)
            _mm_prefetch((const char *)(w + MOEKIT_PREFETCH_BYTES + 64 * line), _MM_HINT_T1);
#endif
        for (int32_t b = 0; b < nb; b++) {
            __m512 partial[MOEKIT_MAX_TILE_TOKENS];
            for (int t = 0; t < N; t++) partial[t] = _mm512_setzero_ps();
            const uint8_t *codes = w + b * 256;
            const uint32_t *xb = x + (size_t)(b0 + b) * 16 * N;
            for (int c = 0; c < 4; c++) {
                const __m512i raw = _mm512_loadu_si512(codes + c * 64);
                const __m512bh d0 = (__m512bh)_mm512_permutexvar_epi16(raw, lut);
                const __m512bh d1 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 4), lut);
                const __m512bh d2 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 8), lut);
                const __m512bh d3 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 12), lut);
                const uint32_t *xc = xb + c * 4 * N;
                for (int t = 0; t < N; t++)
                    partial[t] = _mm512_dpbf16_ps(partial[t], d0, (__m512bh)_mm512_set1_epi32((int)xc[t]));
                for (int t = 0; t < N; t++)
                    partial[t] = _mm512_dpbf16_ps(partial[t], d1, (__m512bh)_mm512_set1_epi32((int)xc[N + t]));
                for (int t = 0; t < N; t++)
                    partial[t] = _mm512_dpbf16_ps(partial[t], d2, (__m512bh)_mm512_set1_epi32((int)xc[2 * N + t]));
                for (int t = 0; t < N; t++)
                    partial[t] = _mm512_dpbf16_ps(partial[t], d3, (__m512bh)_mm512_set1_epi32((int)xc[3 * N + t]));
            }
            const __m512 scale = e8m0_scales(scales + b * 16);
            for (int t = 0; t < N; t++) acc[t] = _mm512_fmadd_ps(partial[t], scale, acc[t]);
        }
        w += nb * 256 + 64;
    }
}

AVX512_INLINE void gemm1_tokens(const moekit_gemm1_tile *tile, const int N) {
    float gate_out[MOEKIT_MAX_TILE_TOKENS * 16] __attribute__((aligned(64)));
    {
        __m512 gate[MOEKIT_MAX_TILE_TOKENS];
        row_group_dot(tile->gate_weights, tile->blocks, (const uint32_t *)tile->activations, N, gate);
        for (int t = 0; t < N; t++) _mm512_store_ps(gate_out + 16 * t, gate[t]);
        MOEKIT_FORCE_MEMORY(gate_out);
    }
    __m512 up[MOEKIT_MAX_TILE_TOKENS];
    row_group_dot(tile->up_weights, tile->blocks, (const uint32_t *)tile->activations, N, up);
    const __m512 gate_bias = _mm512_loadu_ps(tile->gate_bias), up_bias = _mm512_loadu_ps(tile->up_bias);
    uint32_t *out = (uint32_t *)tile->intermediate;
    for (int t = 0; t < N; t++) {
        const __m512 g = _mm512_add_ps(_mm512_load_ps(gate_out + 16 * t), gate_bias);
        const __m512 u = _mm512_add_ps(up[t], up_bias);
        uint32_t pairs[8] __attribute__((aligned(32)));
        _mm256_store_si256((__m256i *)pairs, to_bf16(swiglu(g, u, tile->swiglu_alpha, tile->swiglu_limit)));
        for (int m = 0; m < 8; m++) out[m * N + t] = pairs[m];
    }
}

AVX512_INLINE void gemm2_tokens(const moekit_gemm2_tile *tile, const int N) {
    __m512 acc[MOEKIT_MAX_TILE_TOKENS];
    row_group_dot(tile->weights, tile->blocks, (const uint32_t *)tile->intermediate, N, acc);
    const __m512 bias = _mm512_loadu_ps(tile->bias);
    for (int t = 0; t < N; t++) {
        const __m512 y = _mm512_add_ps(acc[t], bias);
        const __m512 weighted = _mm512_mul_ps(_mm512_set1_ps(tile->row_weights[t]), y);
        _mm256_storeu_si256((__m256i *)(tile->output_rows[t] + tile->column), to_bf16(weighted));
    }
}

AVX512_TARGET void moekit_avx512bf16_gemm1(const moekit_gemm1_tile *tile) { MOEKIT_TOKEN_CASES(gemm1_tokens, tile) }

AVX512_TARGET void moekit_avx512bf16_gemm2(const moekit_gemm2_tile *tile) { MOEKIT_TOKEN_CASES(gemm2_tokens, tile) }

AVX512_TARGET void moekit_avx512bf16_router(
    const uint16_t *x, const uint16_t *wr, const float *bias, int32_t hidden, int32_t experts, float *logits) {
    int32_t e = 0;
    for (; e + 4 <= experts; e += 4) {
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int32_t h = 0; h < hidden; h += 32) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + h);
            for (int i = 0; i < 4; i++)
                acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_loadu_si512(wr + (size_t)(e + i) * hidden + h), xv);
        }
        for (int i = 0; i < 4; i++) logits[e + i] = _mm512_reduce_add_ps(acc[i]) + bias[e + i];
    }
    for (; e < experts; e++) {
        __m512 acc = _mm512_setzero_ps();
        for (int32_t h = 0; h < hidden; h += 32)
            acc = _mm512_dpbf16_ps(
                acc, (__m512bh)_mm512_loadu_si512(wr + (size_t)e * hidden + h), (__m512bh)_mm512_loadu_si512(x + h));
        logits[e] = _mm512_reduce_add_ps(acc) + bias[e];
    }
}

AVX512_TARGET double moekit_avx512bf16_peak_probe(int64_t iterations) {
    __m512 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i * 1e-3f);
    const __m512bh a = (__m512bh)_mm512_set1_epi16((short)0x3F80), b = (__m512bh)_mm512_set1_epi16((short)0x3A80);
    for (int64_t n = 0; n < iterations; n++) {
        for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        // Opaque to the optimiser, so the chains are neither merged nor hoisted.
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]), "+v"(acc[5]),
                         "+v"(acc[6]), "+v"(acc[7]), "+v"(acc[8]), "+v"(acc[9]), "+v"(acc[10]), "+v"(acc[11]));
    }
    __m512 sum = acc[0];
    for (int i = 1; i < 12; i++) sum = _mm512_add_ps(sum, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(sum);
    (void)sink;
    return (double)iterations * 12.0 * 32.0 * 2.0;
}

#else

void moekit_avx512bf16_gemm1(const moekit_gemm1_tile *tile) { (void)tile; __builtin_trap(); }
void moekit_avx512bf16_gemm2(const moekit_gemm2_tile *tile) { (void)tile; __builtin_trap(); }
void moekit_avx512bf16_router(
    const uint16_t *x, const uint16_t *wr, const float *bias, int32_t hidden, int32_t experts, float *logits) {
    (void)x; (void)wr; (void)bias; (void)hidden; (void)experts; (void)logits;
    __builtin_trap();
}
double moekit_avx512bf16_peak_probe(int64_t iterations) { (void)iterations; __builtin_trap(); }

#endif
