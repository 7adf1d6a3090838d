// AVX2 + FMA path, for x86-64 CPUs without AVX-512 BF16: MXFP4 codes decoded to fp32 with the block scale
// folded in (vpermps on the magnitude bits, the sign bit moved into place, one multiply), fp32 FMA against fp32
// activations (the F32 layout: [K][tokens]).
//
// Kernel shape: a packed row group (16 rows: two halves, each the lanes of a ymm) × N ≤ 8 tokens, over the whole
// reduction; the halves together up to 4 tokens, one after the other beyond. Decoded weights are exact
// (code × 2^(s−127)), so this path rounds only in its fp32 sums, each one chain in k order: results are
// bit-reproducible whatever the thread count or the batch.
// Reference: PortableKernels.swift (same layout); tests: Tests/MoECPUTests.
#include "moekit_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2_TARGET __attribute__((target("avx2,fma")))
#define AVX2_INLINE AVX2_TARGET __attribute__((always_inline)) static inline
#define AVX2_MAX_TOKENS 8

/// The 8 E2M1 magnitudes; vpermps reads the low 3 bits of each index (a nibble's magnitude bits).
static const float code_magnitudes[8] __attribute__((aligned(32))) = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};

/// 2^(s−127) for 8 E8M0 scale bytes, exactly: s = 0 gives the subnormal 2^−127 and s = 255 NaN.
AVX2_INLINE __m256 e8m0_scales(const uint8_t *scales) {
    const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)scales));
    const __m256i bits = _mm256_slli_epi32(s, 23);
    const __m256i wrapped = _mm256_and_si256(_mm256_add_epi32(s, _mm256_set1_epi32(1)), _mm256_set1_epi32(255));
    const __m256i special = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), wrapped);
    return _mm256_castsi256_ps(_mm256_or_si256(bits, _mm256_and_si256(special, _mm256_set1_epi32(0x00400000))));
}

/// Decodes nibble position p of every lane (one input of 8 rows) and multiplies by the rows' block scales.
AVX2_INLINE __m256 decode(__m256i words, int p, __m256 magnitudes, __m256 scale) {
    const __m256i index = p == 0 ? words : _mm256_srli_epi32(words, 4 * p);
    const __m256 magnitude = _mm256_permutevar8x32_ps(magnitudes, index);
    const __m256i shifted = p == 7 ? words : _mm256_slli_epi32(words, 28 - 4 * p);
    const __m256 sign = _mm256_castsi256_ps(_mm256_and_si256(shifted, _mm256_set1_epi32((int)0x80000000u)));
    return _mm256_mul_ps(magnitude, _mm256_xor_ps(scale, sign));
}

/// acc[h·N + t][j] = Σ_k W[row 8·(first_half + h) + j][k] · x[t][k] for h < HALVES. x: [K][N] floats.
/// Every output element is one FMA chain, in k order, whatever N and HALVES: a token's sum must not depend on how many
/// tokens share its tile (a served batch equals its requests alone; TileKernelTests.aTokensBitsDoNotDependOnItsTileSize).
/// One chain alone is FMA-latency bound (4 cycles), so few tokens take both halves of the row group at once
/// (HALVES = 2): more independent chains without splitting any sum.
AVX2_INLINE void halves_dot(
    const uint8_t *w, int32_t blocks, const int first_half, const int HALVES, const float *x, const int N, __m256 *acc) {
    // Nibble position p of a row's 4 bytes holds input k0 + order[p] (see the layout in moekit_cpu.h).
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    const __m256 magnitudes = _mm256_load_ps(code_magnitudes);
    __m256 chain[2 * AVX2_MAX_TOKENS];
    for (int i = 0; i < N * HALVES; i++) chain[i] = _mm256_setzero_ps();
    for (int32_t b0 = 0; b0 < blocks; b0 += 4) {
        const int32_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
        const uint8_t *scales = w + nb * 256;
        if (first_half == 0) {
            // As in avx512_bf16.c: the superblock 8 KiB ahead into L2 (a second pass re-reads from cache).
            for (int32_t line = 0; line <= 4 * nb; line++) _mm_prefetch((const char *)(w + 8192 + 64 * line), _MM_HINT_T1);
        }
        for (int32_t b = 0; b < nb; b++) {
            __m256 scale[2];
            #pragma clang loop unroll(full)
            for (int h = 0; h < HALVES; h++) scale[h] = e8m0_scales(scales + b * 16 + (first_half + h) * 8);
            #pragma clang loop unroll(full)
            for (int c = 0; c < 4; c++) {
                __m256i words[2];
                #pragma clang loop unroll(full)
                for (int h = 0; h < HALVES; h++) {
                    words[h] = _mm256_loadu_si256((const __m256i *)(w + b * 256 + c * 64 + (first_half + h) * 32));
                }
                const float *xc = x + ((size_t)(b0 + b) * 32 + c * 8) * N;
                #pragma clang loop unroll(full)
                for (int p = 0; p < 8; p++) {
                    const float *xk = xc + order[p] * N;
                    #pragma clang loop unroll(full)
                    for (int h = 0; h < HALVES; h++) {
                        const __m256 wp = decode(words[h], p, magnitudes, scale[h]);
                        #pragma clang loop unroll(full)
                        for (int t = 0; t < N; t++) {
                            chain[h * N + t] = _mm256_fmadd_ps(wp, _mm256_broadcast_ss(xk + t), chain[h * N + t]);
                        }
                    }
                }
            }
        }
        w += nb * 256 + 64;
    }
    for (int i = 0; i < N * HALVES; i++) acc[i] = chain[i];
}

/// Both halves of a row group: at once for up to 4 tokens (8 chains), one after the other beyond (8 chains each;
/// more would spill the 16 ymm registers). acc[h·N + t] as in halves_dot.
AVX2_INLINE void group_dot(const uint8_t *w, int32_t blocks, const float *x, const int N, __m256 *acc) {
    if (N <= 4) {
        halves_dot(w, blocks, 0, 2, x, N, acc);
    } else {
        halves_dot(w, blocks, 0, 1, x, N, acc);
        halves_dot(w, blocks, 1, 1, x, N, acc + N);
    }
}

/// float32 → bf16 bits (BF16.bits in MoECore): round to nearest even, NaN kept quiet with its sign; 8 lanes
/// returned in the low 16 bits of each 32-bit lane.
AVX2_INLINE __m256i to_bf16_lanes(__m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i high = _mm256_srli_epi32(bits, 16);
    const __m256i lsb = _mm256_and_si256(high, _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    const __m256i quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet, nan);
}

/// e^x to about 1 ulp (Cephes' expf polynomial); +inf past 88.7, 0 below −103, NaN stays NaN.
AVX2_INLINE __m256 exp_ps(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(104.0f), x);  // NaN in x survives: min/max return the second operand
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
    const __m256 n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n as 2^(n/2)·2^(n−n/2): each factor's exponent stays in range for |n| ≤ 150, the product over/underflows
    // the way e^x does. A NaN n gives a garbage factor, but p is NaN then too.
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

AVX2_INLINE __m256 swiglu(__m256 gate, __m256 up, float alpha, float limit) {
    const __m256 lim = _mm256_set1_ps(limit);
    const __m256 g = _mm256_min_ps(lim, gate);
    const __m256 u = _mm256_min_ps(lim, _mm256_max_ps(_mm256_set1_ps(-limit), up));
    const __m256 e = exp_ps(_mm256_mul_ps(_mm256_set1_ps(-alpha), g));
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_add_ps(u, one));
}

#define MOEKIT_FORCE_MEMORY(buffer) __asm__ volatile("" : : "r"(buffer) : "memory")

AVX2_INLINE void gemm1_tokens(const moekit_gemm1_tile *tile, const int N) {
    const float *x = (const float *)tile->activations;
    float *out = (float *)tile->intermediate;
    float gate_out[2 * AVX2_MAX_TOKENS * 8] __attribute__((aligned(32)));
    {
        __m256 gate[2 * AVX2_MAX_TOKENS];
        group_dot(tile->gate_weights, tile->blocks, x, N, gate);
        for (int i = 0; i < 2 * N; i++) _mm256_store_ps(gate_out + 8 * i, gate[i]);
        MOEKIT_FORCE_MEMORY(gate_out);
    }
    __m256 up[2 * AVX2_MAX_TOKENS];
    group_dot(tile->up_weights, tile->blocks, x, N, up);
    for (int half = 0; half < 2; half++) {
        const __m256 gate_bias = _mm256_loadu_ps(tile->gate_bias + 8 * half);
        const __m256 up_bias = _mm256_loadu_ps(tile->up_bias + 8 * half);
        for (int t = 0; t < N; t++) {
            const __m256 g = _mm256_add_ps(_mm256_load_ps(gate_out + 8 * (half * N + t)), gate_bias);
            const __m256 u = _mm256_add_ps(up[half * N + t], up_bias);
            // GEMM 2 reads fp32: the bf16-rounded value, widened back.
            const __m256i bf16 = to_bf16_lanes(swiglu(g, u, tile->swiglu_alpha, tile->swiglu_limit));
            float values[8] __attribute__((aligned(32)));
            _mm256_store_si256((__m256i *)values, _mm256_slli_epi32(bf16, 16));
            for (int j = 0; j < 8; j++) out[(size_t)(8 * half + j) * N + t] = values[j];
        }
    }
}

AVX2_INLINE void gemm2_tokens(const moekit_gemm2_tile *tile, const int N) {
    __m256 acc[2 * AVX2_MAX_TOKENS];
    group_dot(tile->weights, tile->blocks, (const float *)tile->intermediate, N, acc);
    for (int half = 0; half < 2; half++) {
        const __m256 bias = _mm256_loadu_ps(tile->bias + 8 * half);
        for (int t = 0; t < N; t++) {
            const __m256 y = _mm256_add_ps(acc[half * N + t], bias);
            const __m256i lanes = to_bf16_lanes(_mm256_mul_ps(_mm256_set1_ps(tile->row_weights[t]), y));
            // Pack 8 lanes' low halves into 8 words (values are ≤ 0xFFFF, so unsigned saturation is exact).
            const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
            _mm_storeu_si128((__m128i *)(tile->output_rows[t] + tile->column + 8 * half), words);
        }
    }
}

#define MOEKIT_AVX2_TOKEN_CASES(F, tile) \
    switch ((tile)->tokens) { \
    case 1: F(tile, 1); break; case 2: F(tile, 2); break; case 3: F(tile, 3); break; \
    case 4: F(tile, 4); break; case 5: F(tile, 5); break; case 6: F(tile, 6); break; \
    case 7: F(tile, 7); break; case 8: F(tile, 8); break; \
    default: __builtin_trap(); \
    }

AVX2_TARGET void moekit_avx2_gemm1(const moekit_gemm1_tile *tile) { MOEKIT_AVX2_TOKEN_CASES(gemm1_tokens, tile) }

AVX2_TARGET void moekit_avx2_gemm2(const moekit_gemm2_tile *tile) { MOEKIT_AVX2_TOKEN_CASES(gemm2_tokens, tile) }

AVX2_TARGET double moekit_avx2_peak_probe(int64_t iterations) {
    __m256 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i * 1e-3f);
    const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t n = 0; n < iterations; n++) {
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, b);
        __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]), "+x"(acc[4]), "+x"(acc[5]),
                         "+x"(acc[6]), "+x"(acc[7]), "+x"(acc[8]), "+x"(acc[9]), "+x"(acc[10]), "+x"(acc[11]));
    }
    __m256 sum = acc[0];
    for (int i = 1; i < 12; i++) sum = _mm256_add_ps(sum, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    volatile float sink = lanes[0];
    (void)sink;
    return (double)iterations * 12.0 * 8.0 * 2.0;
}

#else

void moekit_avx2_gemm1(const moekit_gemm1_tile *tile) { (void)tile; __builtin_trap(); }
void moekit_avx2_gemm2(const moekit_gemm2_tile *tile) { (void)tile; __builtin_trap(); }
double moekit_avx2_peak_probe(int64_t iterations) { (void)iterations; __builtin_trap(); }

#endif
