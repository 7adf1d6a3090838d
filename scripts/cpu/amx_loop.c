// The AMX path's GEMM 2 kernel alone, ns a 32-k block of one row group: 180 row groups of K = 2880 (gpt-oss), random
// codes, scale bytes 120 (they fold), N tokens of 1.0; the minimum of 15 rounds (this VM's runs vary by ±30%).
// With a second argument `gemm1`: the GEMM 1 kernel on the row groups taken as 90 gate/up pairs, ns a block pair.
// A third sets every scale byte (default 120); one outside [2, 252], e.g. 1, takes the per-block scaling path.
// docs/bench-cpu.md "Session 17" has its figures; the breakdowns there came from copies of amx_bf16.c with the decode,
// the A loads or the B loads removed.
//   clang -O2 -I Sources/CMoECPUKernels/include -I Sources/CMoECPUKernels scripts/cpu/amx_loop.c \
//       Sources/CMoECPUKernels/amx_bf16.c -o /tmp/amx_loop && /tmp/amx_loop 16 [gemm1|gemm2] [scale]
#include "kernel_loop.h"
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
        fprintf(stderr, "no AMX tile state on this machine\n");
        return 1;
    }
    const int N = argc > 1 ? atoi(argv[1]) : 16, blocks = LOOP_BLOCKS, scale = argc > 3 ? atoi(argv[3]) : 120;
    if (N < 1 || N > MOEKIT_AMX_TILE_TOKENS) {
        fprintf(stderr, "tokens: 1 … %d\n", MOEKIT_AMX_TILE_TOKENS);
        return 1;
    }
    const uint8_t *w = loop_weights(scale);
    uint16_t *x = aligned_alloc(64, (size_t)N * blocks * 64), *mid = aligned_alloc(64, (size_t)N * 2880 * 2);
    for (int i = 0; i < N * blocks * 32; i++) x[i] = 0x3F80;
    moekit_gemm1_tile pair;
    moekit_gemm2_tile tile;
    loop_tiles(N, x, mid, &pair, &tile);
    const int gemm1 = argc > 2 && strcmp(argv[2], "gemm1") == 0;
    const double best = loop_best_ns(w, gemm1, &pair, &tile, moekit_amxbf16_gemm1, moekit_amxbf16_gemm2);
    printf("%s N=%d, scale bytes %d: %.1f ns a block%s (min of 15)\n", gemm1 ? "gemm1" : "gemm2", N, scale, best,
           gemm1 ? " pair" : "");
    return 0;
}
