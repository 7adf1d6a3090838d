// CPU feature detection: CPUID for what the cores implement, XGETBV for what the OS saves on a context switch
// (an AVX-512 instruction is only usable when both say yes).
#include "moekit_cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/// Linux keeps AMX tile data off until a process asks for it (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
/// the permission is process-wide and asking again is harmless. False where the kernel refuses or is too old.
static int request_amx_permission(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

uint32_t moekit_cpu_features(void) {
    uint32_t eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, fma = (ecx >> 12) & 1;
    if (!osxsave || !avx) return 0;
    const uint64_t xcr0 = read_xcr0();
    const int ymm_state = (xcr0 & 0x6) == 0x6;           // SSE + AVX state
    const int zmm_state = ymm_state && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
    uint32_t max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const int avx2 = (ebx >> 5) & 1, avx512f = (ebx >> 16) & 1, avx512bw = (ebx >> 30) & 1, avx512vl = (ebx >> 31) & 1;
    const int avx512vnni = (ecx >> 11) & 1;
    const uint32_t subleaves = eax;
    const int amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
    const int tile_state = (xcr0 & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA
    int avx512bf16 = 0;
    if (subleaves >= 1) {
        __cpuid_count(7, 1, eax, ebx, ecx, edx);
        avx512bf16 = (eax >> 5) & 1;
    }
    uint32_t features = 0;
    if (ymm_state && avx2 && fma) features |= MOEKIT_CPU_AVX2_FMA;
    if (zmm_state && avx512f && avx512bw && avx512vl && avx512bf16) features |= MOEKIT_CPU_AVX512_BF16;
    if (zmm_state && avx512f && avx512vnni) features |= MOEKIT_CPU_AVX512_VNNI;
    // The AMX path decodes with the AVX-512 BF16 path's instructions and routes with its router kernel.
    if ((features & MOEKIT_CPU_AVX512_BF16) && amx_bf16 && amx_tile && tile_state && request_amx_permission())
        features |= MOEKIT_CPU_AMX_BF16;
    return features;
}

#elif defined(__aarch64__)

uint32_t moekit_cpu_features(void) { return MOEKIT_CPU_NEON; }

#else

uint32_t moekit_cpu_features(void) { return 0; }

#endif
