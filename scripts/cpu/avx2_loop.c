// The AVX2 path's GEMM 2 kernel alone, ns a 32-k block of one row group: 180 row groups of K = 2880 (gpt-oss), random
// codes, scale bytes 120, N tokens of 1.0; the minimum of 15 rounds. With a second argument `gemm1`: the GEMM 1 kernel
// on the row groups taken as 90 gate/up pairs, ns a block pair. The weights (4.4 MB) stay in cache: this times the
// kernel's instructions, not DRAM. docs/bench-cpu.md "Session 18" has its figures.
//   clang -O3 -I Sources/CMoECPUKernels/include scripts/cpu/avx2_loop.c Sources/CMoECPUKernels/avx2_fma.c \
//       -o /tmp/avx2_loop && /tmp/avx2_loop 8 [gemm1|gemm2]
#include "moekit_cpu.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    const int N = argc > 1 ? atoi(argv[1]) : 8, groups = 180, blocks = 90;
    if (N < 1 || N > 8) {
        fprintf(stderr, "tokens: 1 … 8\n");
        return 1;
    }
    const size_t groupBytes = moekit_row_group_bytes(blocks);
    uint8_t *w = aligned_alloc(64, groupBytes * groups);
    for (size_t i = 0; i < groupBytes * groups; i++) w[i] = (uint8_t)rand();
    for (int g = 0; g < groups; g++) {  // every superblock's 64 scale bytes after its codes
        uint8_t *p = w + g * groupBytes;
        for (int b0 = 0; b0 < blocks; b0 += 4) {
            const int nb = blocks - b0 < 4 ? blocks - b0 : 4;
            memset(p + nb * 256, 120, 64);
            p += nb * 256 + 64;
        }
    }
    float *x = aligned_alloc(64, (size_t)N * blocks * 32 * 4), *mid = aligned_alloc(64, (size_t)N * 2880 * 4);
    for (int i = 0; i < N * blocks * 32; i++) x[i] = 1;
    uint16_t *out = aligned_alloc(64, (size_t)N * 2880 * 2), *rows[8];
    float bias[16] = {0}, rowWeights[8];
    for (int t = 0; t < N; t++) rows[t] = out + t * 2880, rowWeights[t] = 1;
    moekit_gemm2_tile tile = {0};
    tile.bias = bias, tile.intermediate = x, tile.row_weights = rowWeights, tile.output_rows = (uint16_t *const *)rows;
    tile.blocks = blocks, tile.tokens = N;
    const int gemm1 = argc > 2 && strcmp(argv[2], "gemm1") == 0;
    moekit_gemm1_tile pair = {0};
    pair.gate_bias = bias, pair.up_bias = bias, pair.activations = x, pair.intermediate = mid, pair.blocks = blocks;
    pair.tokens = N, pair.swiglu_alpha = 1.702f, pair.swiglu_limit = 7;
    double best = 1e9;
    for (int round = 0; round < 15; round++) {
        const double start = now();
        for (int g = 0; g < groups; g += gemm1 ? 2 : 1) {
            if (gemm1) {
                pair.gate_weights = w + g * groupBytes, pair.up_weights = w + (g + 1) * groupBytes;
                moekit_avx2_gemm1(&pair);
            } else {
                tile.weights = w + g * groupBytes;
                moekit_avx2_gemm2(&tile);
            }
        }
        const double ns = (now() - start) / (gemm1 ? groups / 2 : groups) / blocks * 1e9;
        if (ns < best) best = ns;
    }
    printf("%s N=%d: %.1f ns a block%s (min of 15)\n", gemm1 ? "gemm1" : "gemm2", N, best, gemm1 ? " pair" : "");
    return 0;
}
