// Checks the NEON kernels (Sources/CMoECPUKernels/neon_fp32.c) against float64 on the packed layout, for every
// token count a tile takes, block counts around the 4-block superblock, and E8M0's special scales. Built and run
// under qemu-aarch64 by check.sh on an x86-64 machine; on arm64 the Swift tests cover the path directly.
#include "moekit_cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state = 0x9E3779B97F4A7C15u;
static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}
static double normal(void) {
    double u1 = ((next() >> 11) + 1) * 0x1.0p-53, u2 = (next() >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}
static uint16_t bf16_bits(float f) {
    uint32_t raw;
    memcpy(&raw, &f, 4);
    if (f != f) return (uint16_t)((raw >> 16) | 0x40);
    return (uint16_t)((raw + 0x7FFF + ((raw >> 16) & 1)) >> 16);
}
static float bf16_float(uint16_t b) {
    uint32_t raw = (uint32_t)b << 16;
    float f;
    memcpy(&f, &raw, 4);
    return f;
}
static const double code_value[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};

/// The code and scale of (row j, input k) of a packed row group, read as the header documents the layout.
static double weight(const uint8_t *group, int blocks, int j, int k) {
    int b = k / 32, c = (k % 32) / 8, i = k % 8;
    const uint8_t *superblock = group + (size_t)(b / 4) * 1088;
    int in_superblock = blocks - 4 * (b / 4) < 4 ? blocks - 4 * (b / 4) : 4;
    const uint8_t *chunk = superblock + (b % 4) * 256 + c * 64;
    uint16_t word = (uint16_t)(chunk[4 * j + 2 * (i & 1)] | chunk[4 * j + 2 * (i & 1) + 1] << 8);
    int code = (word >> (4 * (i >> 1))) & 15;
    uint8_t s = superblock[in_superblock * 256 + (b % 4) * 16 + j];
    if (s == 255) return NAN;
    return code_value[code] * ldexp(1.0, s - 127);
}

static void random_group(uint8_t *group, int blocks) {
    size_t bytes = moekit_row_group_bytes(blocks);
    for (size_t i = 0; i < bytes; i++) group[i] = (uint8_t)next();
    for (int b0 = 0; b0 < blocks; b0 += 4) {
        int nb = blocks - b0 < 4 ? blocks - b0 : 4;
        uint8_t *scales = group + (size_t)(b0 / 4) * 1088 + nb * 256;
        for (int i = 0; i < 64; i++) scales[i] = (uint8_t)(122 + next() % 5);
    }
}

static int failures = 0;
static void check(int ok, const char *what, int blocks, int n, int t, int j, double got, double expected) {
    if (!ok && failures++ < 20)
        printf("FAIL %s blocks=%d N=%d t=%d j=%d: got %.9g expected %.9g\n", what, blocks, n, t, j, got, expected);
}

int main(void) {
    const int block_counts[] = {1, 3, 4, 5, 9};
    int checked = 0;
    for (int bi = 0; bi < 5; bi++) {
        const int blocks = block_counts[bi], K = 32 * blocks;
        for (int N = 1; N <= 8; N++) {
            uint8_t *gate = aligned_alloc(64, moekit_row_group_bytes(blocks));
            uint8_t *up = aligned_alloc(64, moekit_row_group_bytes(blocks));
            random_group(gate, blocks);
            random_group(up, blocks);
            if (N == 3) {  // special scales: row 3 of block 0 NaN in `up`, row 7 of block 0 = 2^-127 in `gate`
                up[(blocks < 4 ? blocks : 4) * 256 + 3] = 255;
                gate[(blocks < 4 ? blocks : 4) * 256 + 7] = 0;
                // All codes of that NaN block +1.0: NaN must come from the scale, not from inf·0 or inf − inf.
                for (int c = 0; c < 4; c++) memset(up + c * 64 + 4 * 3, 0x22, 4);
            }
            float *x = malloc(sizeof(float) * K * N);  // [K][N]
            uint16_t xb[9 * 32 * 8];
            for (int t = 0; t < N; t++)
                for (int k = 0; k < K; k++) {
                    // N = 3: positive inputs in block 0, so the NaN block's products all share a sign.
                    xb[t * K + k] = bf16_bits((float)(N == 3 && k < 32 ? fabs(normal()) + 0.01 : normal()));
                    x[k * N + t] = bf16_float(xb[t * K + k]);
                }
            float bias_g[16], bias_u[16];
            for (int j = 0; j < 16; j++) {
                bias_g[j] = bf16_float(bf16_bits((float)(0.1 * normal())));
                bias_u[j] = bf16_float(bf16_bits((float)(0.1 * normal())));
            }
            // GEMM 2 on `gate`: out = bf16(w·(W x + b)) at columns 16..31 of 48-wide rows.
            uint16_t out[8][48];
            memset(out, 0x55, sizeof out);
            uint16_t *rows[8];
            float row_weights[8];
            for (int t = 0; t < N; t++) rows[t] = out[t], row_weights[t] = 0.25f * (t + 1);
            moekit_gemm2_tile tile2 = {gate, bias_g, x, row_weights, rows, 16, blocks, N};
            moekit_neon_gemm2(&tile2);
            for (int t = 0; t < N; t++)
                for (int h = 0; h < 48; h++) {
                    if (h < 16 || h >= 32) {
                        check(out[t][h] == 0x5555, "gemm2 wrote outside its columns", blocks, N, t, h, out[t][h], 0x5555);
                        continue;
                    }
                    int j = h - 16;
                    double dot = 0;
                    for (int k = 0; k < K; k++) dot += weight(gate, blocks, j, k) * bf16_float(xb[t * K + k]);
                    double expected = row_weights[t] * (dot + bias_g[j]);
                    double got = bf16_float(out[t][h]);
                    check(fabs(got - expected) <= 4e-3 * fabs(expected) + 1e-4, "gemm2", blocks, N, t, j, got, expected);
                    checked++;
                }
            // GEMM 1 on (gate, up): a = bf16(SwiGLU) at inputs 16..31 of a 48-input F32 intermediate.
            float *inter = malloc(sizeof(float) * 48 * N);
            for (int i = 0; i < 48 * N; i++) inter[i] = 12345.0f;
            moekit_gemm1_tile tile1 = {gate, up, bias_g, bias_u, x, inter + 16 * N, blocks, N, 1.702f, 7.0f};
            moekit_neon_gemm1(&tile1);
            for (int t = 0; t < N; t++)
                for (int i = 0; i < 48; i++) {
                    float got = inter[i * N + t];
                    if (i < 16 || i >= 32) {
                        check(got == 12345.0f, "gemm1 wrote outside its inputs", blocks, N, t, i, got, 12345);
                        continue;
                    }
                    int j = i - 16;
                    double g = bias_g[j], u = bias_u[j];
                    for (int k = 0; k < K; k++) {
                        g += weight(gate, blocks, j, k) * bf16_float(xb[t * K + k]);
                        u += weight(up, blocks, j, k) * bf16_float(xb[t * K + k]);
                    }
                    g = g < 7 ? g : (g != g ? g : 7);
                    u = u != u ? u : (u < -7 ? -7 : (u > 7 ? 7 : u));
                    double expected = g / (1 + exp(-1.702 * g)) * (u + 1);
                    check(bf16_float(bf16_bits(got)) == got || got != got, "gemm1 output not bf16", blocks, N, t, j, got, expected);
                    if (expected != expected) check(got != got, "gemm1 NaN", blocks, N, t, j, got, expected);
                    else check(fabs(got - expected) <= 5e-3 * fabs(expected) + 2e-4, "gemm1", blocks, N, t, j, got, expected);
                    checked++;
                }
            free(inter);
            free(x);
            free(gate);
            free(up);
        }
    }
    printf("%s: %d outputs checked, %d failures\n", failures ? "FAILED" : "passed", checked, failures);
    return failures != 0;
}
