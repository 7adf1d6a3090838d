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

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define AVX512_INLINE AVX512_TARGET __attribute__((always_inline)) static inline

/// bf16 bit patterns of the 16 E2M1 code values, twice: vpermw reads 5 index bits and the fifth is noise.
static const uint16_t code_bf16[32] __attribute__((aligned(64))) = {
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
};

/// 2^(s−127) for 16 E8M0 scale bytes, exactly: s = 0 gives the subnormal 2^−127 and s = 255 NaN.
AVX512_INLINE __m512 e8m0_scales(const uint8_t *scales) {
    const __m512i s = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)scales));
    const __m512i bits = _mm512_slli_epi32(s, 23);
    // (s + 1) & 255 ≤ 1 exactly for s = 255 (inf's pattern → quiet NaN) and s = 0 (0 → 2^−127): set bit 22.
    const __m512i wrapped = _mm512_and_si512(_mm512_add_epi32(s, _mm512_set1_epi32(1)), _mm512_set1_epi32(255));
    const __mmask16 special = _mm512_cmple_epu32_mask(wrapped, _mm512_set1_epi32(1));
    return _mm512_castsi512_ps(_mm512_mask_or_epi32(bits, special, bits, _mm512_set1_epi32(0x00400000)));
}

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

/// float32 → bf16 bits, round to nearest even, NaN kept quiet with its sign: BF16.bits in MoECore, 16 lanes.
AVX512_INLINE __m256i to_bf16(__m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i high = _mm512_srli_epi32(bits, 16);
    const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    rounded = _mm512_mask_or_epi32(rounded, nan, high, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(rounded);
}

/// e^x to about 1 ulp (Cephes' expf polynomial); +inf past 88.7, 0 below −103, NaN stays NaN.
AVX512_INLINE __m512 exp_ps(__m512 x) {
    // vminps/vmaxps return their second operand when either is NaN: x second keeps a NaN.
    x = _mm512_min_ps(_mm512_set1_ps(104.0f), x);
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    const __m512 n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/// gpt-oss clamped SwiGLU (SwiGLU.apply in MoECore, same operation order and NaN behaviour).
AVX512_INLINE __m512 swiglu(__m512 gate, __m512 up, float alpha, float limit) {
    const __m512 lim = _mm512_set1_ps(limit);
    const __m512 g = _mm512_min_ps(lim, gate);                                   // min(gate, limit)
    const __m512 u = _mm512_min_ps(lim, _mm512_max_ps(_mm512_set1_ps(-limit), up));  // clamp(up, −limit, limit)
    const __m512 e = exp_ps(_mm512_mul_ps(_mm512_set1_ps(-alpha), g));
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_add_ps(u, one));
}

/// Keeps the values in `buffer` in memory: the second row-group pass needs every register.
#define MOEKIT_FORCE_MEMORY(buffer) __asm__ volatile("" : : "r"(buffer) : "memory")

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

#define MOEKIT_TOKEN_CASES(F, tile) \
    switch ((tile)->tokens) { \
    case 1: F(tile, 1); break; case 2: F(tile, 2); break; case 3: F(tile, 3); break; \
    case 4: F(tile, 4); break; case 5: F(tile, 5); break; case 6: F(tile, 6); break; \
    case 7: F(tile, 7); break; case 8: F(tile, 8); break; case 9: F(tile, 9); break; \
    case 10: F(tile, 10); break; case 11: F(tile, 11); break; case 12: F(tile, 12); break; \
    default: __builtin_trap(); \
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
