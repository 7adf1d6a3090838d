// Helpers shared by the AVX-512 BF16 and AMX BF16 paths (included by both .c files; not part of the module's API).
#ifndef MOEKIT_AVX512_HELPERS_H
#define MOEKIT_AVX512_HELPERS_H

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

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

/// Calls F(tile, N) with N = tile->tokens as a constant, for N = 1 … 12.
#define MOEKIT_TOKEN_CASES(F, tile) \
    switch ((tile)->tokens) { \
    case 1: F(tile, 1); break; case 2: F(tile, 2); break; case 3: F(tile, 3); break; \
    case 4: F(tile, 4); break; case 5: F(tile, 5); break; case 6: F(tile, 6); break; \
    case 7: F(tile, 7); break; case 8: F(tile, 8); break; case 9: F(tile, 9); break; \
    case 10: F(tile, 10); break; case 11: F(tile, 11); break; case 12: F(tile, 12); break; \
    default: __builtin_trap(); \
    }

#endif
#endif
