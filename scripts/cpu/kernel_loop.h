// What amx_loop.c and avx2_loop.c share: 180 packed row groups of K = 2880 (gpt-oss) with random codes and one scale
// byte everywhere, and the timing loop (the minimum of 15 rounds over every row group; this VM's runs vary by ±30%).
#include "moekit_cpu.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { LOOP_GROUPS = 180, LOOP_BLOCKS = 90 };

static double loop_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/// LOOP_GROUPS row groups of LOOP_BLOCKS blocks, each superblock's 64 scale bytes set to `scale` after its codes.
static uint8_t *loop_weights(int scale) {
    const size_t groupBytes = moekit_row_group_bytes(LOOP_BLOCKS);
    uint8_t *w = aligned_alloc(64, groupBytes * LOOP_GROUPS);
    for (size_t i = 0; i < groupBytes * LOOP_GROUPS; i++) w[i] = (uint8_t)rand();
    for (int g = 0; g < LOOP_GROUPS; g++) {
        uint8_t *p = w + g * groupBytes;
        for (int b0 = 0; b0 < LOOP_BLOCKS; b0 += 4) {
            const int nb = LOOP_BLOCKS - b0 < 4 ? LOOP_BLOCKS - b0 : 4;
            memset(p + nb * 256, scale, 64);
            p += nb * 256 + 64;
        }
    }
    return w;
}

/// Tiles of N ≤ 32 tokens over activations `x` (the path's layout), all biases 0 and routing weights 1: GEMM 2's
/// output rows and GEMM 1's `intermediate` (intermediate_stride 2880 for BF16_ROWS) are the caller's.
static void loop_tiles(int N, const void *x, void *intermediate, moekit_gemm1_tile *pair, moekit_gemm2_tile *tile) {
    static float bias[16], rowWeights[32];
    static uint16_t *rows[32];
    uint16_t *out = aligned_alloc(64, (size_t)N * 2880 * 2);
    for (int t = 0; t < N; t++) rows[t] = out + t * 2880, rowWeights[t] = 1;
    *tile = (moekit_gemm2_tile){0};
    tile->bias = bias, tile->intermediate = x, tile->row_weights = rowWeights;
    tile->output_rows = (uint16_t *const *)rows, tile->blocks = LOOP_BLOCKS, tile->tokens = N;
    *pair = (moekit_gemm1_tile){0};
    pair->gate_bias = bias, pair->up_bias = bias, pair->activations = x, pair->intermediate = intermediate;
    pair->blocks = LOOP_BLOCKS, pair->tokens = N, pair->swiglu_alpha = 1.702f, pair->swiglu_limit = 7;
    pair->intermediate_stride = 2880;
}

/// ns a block (GEMM 2: of one row group; GEMM 1: of a gate/up pair, the row groups taken two by two), best of 15.
static double loop_best_ns(
    const uint8_t *w, int gemm1, moekit_gemm1_tile *pair, moekit_gemm2_tile *tile,
    void (*gemm1_kernel)(const moekit_gemm1_tile *), void (*gemm2_kernel)(const moekit_gemm2_tile *)) {
    const size_t groupBytes = moekit_row_group_bytes(LOOP_BLOCKS);
    double best = 1e9;
    for (int round = 0; round < 15; round++) {
        const double start = loop_now();
        for (int g = 0; g < LOOP_GROUPS; g += gemm1 ? 2 : 1) {
            if (gemm1) {
                pair->gate_weights = w + g * groupBytes, pair->up_weights = w + (g + 1) * groupBytes;
                gemm1_kernel(pair);
            } else {
                tile->weights = w + g * groupBytes;
                gemm2_kernel(tile);
            }
        }
        const double ns = (loop_now() - start) / (gemm1 ? LOOP_GROUPS / 2 : LOOP_GROUPS) / LOOP_BLOCKS * 1e9;
        if (ns < best) best = ns;
    }
    return best;
}
