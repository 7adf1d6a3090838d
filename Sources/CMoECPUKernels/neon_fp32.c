// NEON path (every arm64 CPU): MXFP4 codes decoded to fp32 with a 64-byte table lookup (tbl on the 4 bytes of each
// lane's float), the block scale folded in by one multiply, fp32 FMA against fp32 activations (the F32 layout:
// [K][tokens]).
//
// Kernel shape: a quarter of a packed row group (4 rows, the lanes of a float32x4) × N ≤ 8 tokens, over the whole
// reduction, the four quarters one after the other. Decoded weights are exact (code × 2^(s−127)), so the path
// rounds only in its fp32 sums, in a fixed order: results are bit-reproducible whatever the thread count.
// Reference: PortableKernels.swift (same layout). On arm64 the Swift tests run this path like the others; on x86-64
// Benchmarks/neon-check runs it under qemu-aarch64 against float64 (see its README).
#include "moekit_cpu.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define NEON_INLINE __attribute__((always_inline)) static inline
#define NEON_MAX_TOKENS 8

/// The 16 code values as float bytes, for tbl: entry c occupies bytes 4c..4c+3.
static const float code_values[16] __attribute__((aligned(16))) = {
    0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
};

/// 2^(s−127) for 4 E8M0 scale bytes, exactly: s = 0 gives the subnormal 2^−127 and s = 255 NaN.
NEON_INLINE float32x4_t e8m0_scales(const uint8_t *scales) {
    const uint32x4_t s = {scales[0], scales[1], scales[2], scales[3]};
    const uint32x4_t bits = vshlq_n_u32(s, 23);
    const uint32x4_t wrapped = vandq_u32(vaddq_u32(s, vdupq_n_u32(1)), vdupq_n_u32(255));
    const uint32x4_t special = vcleq_u32(wrapped, vdupq_n_u32(1));
    return vreinterpretq_f32_u32(vorrq_u32(bits, vandq_u32(special, vdupq_n_u32(0x00400000))));
}

/// The code at nibble position p of every lane, as a float: byte indices 4·code + 0..3 into the value table.
NEON_INLINE float32x4_t decode(uint32x4_t words, int p, uint8x16x4_t table) {
    const uint32x4_t code = vandq_u32(vshlq_u32(words, vdupq_n_s32(-4 * p)), vdupq_n_u32(15));
    const uint32x4_t bytes = vmlaq_u32(vdupq_n_u32(0x03020100), code, vdupq_n_u32(0x04040404));
    return vreinterpretq_f32_u8(vqtbl4q_u8(table, vreinterpretq_u8_u32(bytes)));
}

/// acc[t][j] = Σ_k W[row 4·quarter + j][k] · x[t][k]. x: [K][N] floats.
/// With few tokens one FMA chain per token would be latency-bound, so inputs are spread over CHAINS independent
/// accumulators per token (by nibble position) and summed at the end in a fixed order.
NEON_INLINE void quarter_group_dot(
    const uint8_t *w, int32_t blocks, int quarter, const float *x, const int N, float32x4_t *acc) {
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // nibble position p holds input k0 + order[p]
    // The same chains for every N: a token's sum must not depend on how many tokens share its tile (a served batch
    // equals its requests alone; TileKernelTests.aTokensBitsDoNotDependOnItsTileSize). Before, 4 chains at one token
    // and 2 at two made a token's bits depend on its batch. 2 was chosen with the AVX2 kernel, which has since moved to
    // one chain an output with independent rows (avx2_fma.c); on arm64 neither has been measured.
    enum { CHAINS = 2 };
    const uint8x16x4_t table = vld1q_u8_x4((const uint8_t *)code_values);
    float32x4_t chain[NEON_MAX_TOKENS * CHAINS];
    for (int i = 0; i < N * CHAINS; i++) chain[i] = vdupq_n_f32(0.0f);
    for (int32_t b0 = 0; b0 < blocks; b0 += 4) {
        const int32_t nb = blocks - b0 < 4 ? blocks - b0 : 4;
        const uint8_t *scales = w + nb * 256;
        if (quarter == 0) {
            // As in avx512_bf16.c: the superblock 8 KiB ahead into L2 (later quarters re-read from cache).
            for (int32_t line = 0; line <= 4 * nb; line++) __builtin_prefetch(w + 8192 + 64 * line, 0, 2);
        }
        for (int32_t b = 0; b < nb; b++) {
            const float32x4_t scale = e8m0_scales(scales + b * 16 + quarter * 4);
            for (int c = 0; c < 4; c++) {
                const uint32x4_t words = vld1q_u32((const uint32_t *)(w + b * 256 + c * 64 + quarter * 16));
                const float *xc = x + ((size_t)(b0 + b) * 32 + c * 8) * N;
                for (int p = 0; p < 8; p++) {
                    const float32x4_t wp = vmulq_f32(decode(words, p, table), scale);
                    const float *xk = xc + order[p] * N;
                    for (int t = 0; t < N; t++) {
                        float32x4_t *a = &chain[t * CHAINS + p % CHAINS];
                        *a = vfmaq_n_f32(*a, wp, xk[t]);
                    }
                }
            }
        }
        w += nb * 256 + 64;
    }
    for (int t = 0; t < N; t++) {
        acc[t] = vaddq_f32(chain[t * CHAINS], chain[t * CHAINS + 1]);
    }
}

/// float32 → bf16 bits (BF16.bits in MoECore): round to nearest even, NaN kept quiet with its sign.
NEON_INLINE uint16x4_t to_bf16(float32x4_t v) {
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint32x4_t high = vshrq_n_u32(bits, 16);
    const uint32x4_t lsb = vandq_u32(high, vdupq_n_u32(1));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(vaddq_u32(bits, vdupq_n_u32(0x7FFF)), lsb), 16);
    const uint32x4_t quiet = vorrq_u32(high, vdupq_n_u32(0x40));
    const uint32x4_t is_number = vceqq_f32(v, v);
    return vmovn_u32(vbslq_u32(is_number, rounded, quiet));
}

/// e^x to about 1 ulp (Cephes' expf polynomial); +inf past 88.7, 0 below −103, NaN stays NaN (FMIN/FMAX
/// propagate NaN).
NEON_INLINE float32x4_t exp_ps(float32x4_t x) {
    x = vminq_f32(vdupq_n_f32(104.0f), x);
    x = vmaxq_f32(vdupq_n_f32(-104.0f), x);
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    // 2^n as 2^(n/2)·2^(n−n/2): each factor's exponent stays in range for |n| ≤ 150.
    const int32x4_t ni = vcvtq_s32_f32(n);
    const int32x4_t n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    const float32x4_t f1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    const float32x4_t f2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, f1), f2);
}

NEON_INLINE float32x4_t swiglu(float32x4_t gate, float32x4_t up, float alpha, float limit) {
    const float32x4_t lim = vdupq_n_f32(limit), one = vdupq_n_f32(1.0f);
    const float32x4_t g = vminq_f32(lim, gate);
    const float32x4_t u = vminq_f32(lim, vmaxq_f32(vdupq_n_f32(-limit), up));
    const float32x4_t e = exp_ps(vmulq_f32(vdupq_n_f32(-alpha), g));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(one, e)), vaddq_f32(u, one));
}

NEON_INLINE void gemm1_tokens(const moekit_gemm1_tile *tile, const int N) {
    const float *x = (const float *)tile->activations;
    float *out = (float *)tile->intermediate;
    for (int quarter = 0; quarter < 4; quarter++) {
        float32x4_t gate[NEON_MAX_TOKENS], up[NEON_MAX_TOKENS];
        quarter_group_dot(tile->gate_weights, tile->blocks, quarter, x, N, gate);
        quarter_group_dot(tile->up_weights, tile->blocks, quarter, x, N, up);
        const float32x4_t gate_bias = vld1q_f32(tile->gate_bias + 4 * quarter);
        const float32x4_t up_bias = vld1q_f32(tile->up_bias + 4 * quarter);
        for (int t = 0; t < N; t++) {
            const float32x4_t a = swiglu(
                vaddq_f32(gate[t], gate_bias), vaddq_f32(up[t], up_bias), tile->swiglu_alpha, tile->swiglu_limit);
            // GEMM 2 reads fp32: the bf16-rounded value, widened back.
            const uint32x4_t widened = vshll_n_u16(to_bf16(a), 16);
            float values[4];
            vst1q_f32(values, vreinterpretq_f32_u32(widened));
            for (int j = 0; j < 4; j++) out[(size_t)(4 * quarter + j) * N + t] = values[j];
        }
    }
}

NEON_INLINE void gemm2_tokens(const moekit_gemm2_tile *tile, const int N) {
    for (int quarter = 0; quarter < 4; quarter++) {
        float32x4_t acc[NEON_MAX_TOKENS];
        quarter_group_dot(tile->weights, tile->blocks, quarter, (const float *)tile->intermediate, N, acc);
        const float32x4_t bias = vld1q_f32(tile->bias + 4 * quarter);
        for (int t = 0; t < N; t++) {
            const float32x4_t y = vaddq_f32(acc[t], bias);
            vst1_u16(tile->output_rows[t] + tile->column + 4 * quarter, to_bf16(vmulq_n_f32(y, tile->row_weights[t])));
        }
    }
}

#define MOEKIT_NEON_TOKEN_CASES(F, tile) \
    switch ((tile)->tokens) { \
    case 1: F(tile, 1); break; case 2: F(tile, 2); break; case 3: F(tile, 3); break; \
    case 4: F(tile, 4); break; case 5: F(tile, 5); break; case 6: F(tile, 6); break; \
    case 7: F(tile, 7); break; case 8: F(tile, 8); break; \
    default: __builtin_trap(); \
    }

void moekit_neon_gemm1(const moekit_gemm1_tile *tile) { MOEKIT_NEON_TOKEN_CASES(gemm1_tokens, tile) }

void moekit_neon_gemm2(const moekit_gemm2_tile *tile) { MOEKIT_NEON_TOKEN_CASES(gemm2_tokens, tile) }

double moekit_neon_peak_probe(int64_t iterations) {
    float32x4_t acc[12];
    for (int i = 0; i < 12; i++) acc[i] = vdupq_n_f32((float)i * 1e-3f);
    const float32x4_t m = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
    for (int64_t n = 0; n < iterations; n++) {
        for (int i = 0; i < 12; i++) acc[i] = vfmaq_f32(b, acc[i], m);
        __asm__ volatile("" : "+w"(acc[0]), "+w"(acc[1]), "+w"(acc[2]), "+w"(acc[3]), "+w"(acc[4]), "+w"(acc[5]),
                         "+w"(acc[6]), "+w"(acc[7]), "+w"(acc[8]), "+w"(acc[9]), "+w"(acc[10]), "+w"(acc[11]));
    }
    float32x4_t sum = acc[0];
    for (int i = 1; i < 12; i++) sum = vaddq_f32(sum, acc[i]);
    volatile float sink = vaddvq_f32(sum);
    (void)sink;
    return (double)iterations * 12.0 * 4.0 * 2.0;
}

#else

void moekit_neon_gemm1(const moekit_gemm1_tile *tile) { (void)tile; __builtin_trap(); }
void moekit_neon_gemm2(const moekit_gemm2_tile *tile) { (void)tile; __builtin_trap(); }
double moekit_neon_peak_probe(int64_t iterations) { (void)iterations; __builtin_trap(); }

#endif
