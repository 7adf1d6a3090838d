// The AVX2 path's GEMM 2 kernel alone, ns a 32-k block of one row group: 180 row groups of K = 2880 (gpt-oss), random
// codes, scale bytes 120, N tokens of 1.0; the minimum of 15 rounds. With a second argument `gemm1`: the GEMM 1 kernel
// on the row groups taken as 90 gate/up pairs, ns a block pair. The weights (4.4 MB) stay in cache: this times the
// kernel's instructions, not DRAM. BENCHMARKS.md "Session 18" has its figures.
//   clang -O2 -I Sources/CMoECPUKernels/include scripts/cpu/avx2_loop.c Sources/CMoECPUKernels/avx2_fma.c \
//       -o /tmp/avx2_loop && /tmp/avx2_loop 8 [gemm1|gemm2]
#include "kernel_loop.h"
#include <stdio.h>

int main(int argc, char **argv) {
    const int N = argc > 1 ? atoi(argv[1]) : 8, blocks = LOOP_BLOCKS;
    if (N < 1 || N > 8) {
        fprintf(stderr, "tokens: 1 … 8\n");
        return 1;
    }
    const uint8_t *w = loop_weights(120);
    float *x = aligned_alloc(64, (size_t)N * blocks * 32 * 4), *mid = aligned_alloc(64, (size_t)N * 2880 * 4);
    for (int i = 0; i < N * blocks * 32; i++) x[i] = 1;
    moekit_gemm1_tile pair;
    moekit_gemm2_tile tile;
    loop_tiles(N, x, mid, &pair, &tile);
    const int gemm1 = argc > 2 && strcmp(argv[2], "gemm1") == 0;
    const double best = loop_best_ns(w, gemm1, &pair, &tile, moekit_avx2_gemm1, moekit_avx2_gemm2);
    printf("%s N=%d: %.1f ns a block%s (min of 15)\n", gemm1 ? "gemm1" : "gemm2", N, best, gemm1 ? " pair" : "");
    return 0;
}
