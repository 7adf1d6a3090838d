// moe_common.cuh — device helpers shared by MoEKit's kernels: bf16 conversions, warp reductions, inline-PTX
// wrappers for cp.async, ldmatrix and the bf16 tensor-core MMA, and the MXFP4 fragment decoder.
//
// Compiled by NVRTC with no CUDA headers: everything beyond the compiler's built-ins is written here.
#pragma once
#include "moe_params.h"

typedef unsigned int u32;
typedef unsigned short bf16_t;

#define MOE_DEVICE __device__ __forceinline__

// MARK: bf16

MOE_DEVICE float bf16_to_float(bf16_t b) { return __uint_as_float(((u32)b) << 16); }
MOE_DEVICE float bf16_low(u32 pair) { return __uint_as_float(pair << 16); }
MOE_DEVICE float bf16_high(u32 pair) { return __uint_as_float(pair & 0xFFFF0000u); }

/// float → bf16, round to nearest even (the hardware conversion; NaN stays NaN).
MOE_DEVICE bf16_t float_to_bf16(float f) {
    bf16_t r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

/// Two floats → one bf16x2 word, `low` in bits 0..15.
MOE_DEVICE u32 pack_bf16x2(float low, float high) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(high), "f"(low));
    return r;
}

/// a·b per bf16 half, exactly rounded (an FMA with −0 addend: sm_80+, unlike mul.bf16x2 which needs sm_90).
MOE_DEVICE u32 mul_bf16x2(u32 a, u32 b) {
    u32 r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(0x80008000u));
    return r;
}

MOE_DEVICE u32 byte_perm(u32 a, u32 b, u32 selector) {
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(selector));
    return r;
}

// MARK: memory

/// A 16-byte read-only load through the normal cache path.
MOE_DEVICE uint4 load_readonly_16(const void *pointer) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(pointer));
    return v;
}

/// Elects the last block of a launch to arrive at `counter`, which counts `total` arrivals (or *totalAt, read by
/// thread 0 only). Every thread of the block must call it; in the last block every thread may then read the other
/// blocks' writes (with load_coherent_*, past L1).
/// Every thread fences its own writes, then the block counts itself. (Thread 0 alone fencing after the barrier, as
/// cooperative groups' grid sync does, was measured in session 10: no difference at 1–8 tokens.)
template <typename Count>
MOE_DEVICE bool last_block_to_arrive_counted(unsigned *counter, Count total) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == total() - 1u;
    __syncthreads();
    if (!last) return false;
    __threadfence();
    return true;
}
MOE_DEVICE bool last_block_to_arrive(unsigned *counter, unsigned total) {
    return last_block_to_arrive_counted(counter, [total] { return total; });
}
MOE_DEVICE bool last_block_to_arrive(unsigned *counter, const int *totalAt) {
    return last_block_to_arrive_counted(counter, [totalAt] { return (unsigned)*totalAt; });
}

/// Loads that bypass L1: for data other blocks of the same launch wrote (L1 is not coherent).
MOE_DEVICE float load_coherent_f32(const float *pointer) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(pointer));
    return v;
}
MOE_DEVICE int load_coherent_i32(const int *pointer) {
    int v;
    asm volatile("ld.global.cg.s32 %0, [%1];" : "=r"(v) : "l"(pointer));
    return v;
}
MOE_DEVICE uint4 load_coherent_16(const void *pointer) {
    uint4 v;
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(pointer));
    return v;
}

/// Four 8×8 bf16 matrices to shared memory from the mma fragment layout (lane l holds row l/4, columns 2·(l%4)
/// and +1 of each matrix); lanes 8i..8i+7 give the row addresses of matrix i (16 B each).
MOE_DEVICE void store_matrix_x4(u32 address, u32 r0, u32 r1, u32 r2, u32 r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(address), "r"(r0), "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
}

/// store_matrix_x4 transposed: fragment row r, columns c and c + 1 land in rows c and c + 1 of the stored matrix, column r.
MOE_DEVICE void store_matrix_x4_transposed(u32 address, u32 r0, u32 r1, u32 r2, u32 r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(address), "r"(r0), "r"(r1), "r"(r2),
                 "r"(r3)
                 : "memory");
}

/// Two matrices, transposed as store_matrix_x4_transposed; lanes 0–15 give the row addresses.
MOE_DEVICE void store_matrix_x2_transposed(u32 address, u32 r0, u32 r1) {
    asm volatile("stmatrix.sync.aligned.m8n8.x2.trans.shared.b16 [%0], {%1, %2};" ::"r"(address), "r"(r0), "r"(r1) : "memory");
}

MOE_DEVICE u32 shared_address(const void *pointer) { return (u32)__cvta_generic_to_shared(pointer); }
/// Loads from a shared-memory address (a uniform base plus a per-thread offset), where a generic pointer made ptxas
/// move the base out of the generic window and back every use. Volatile keeps them after the mbarrier wait that
/// publishes the data.
MOE_DEVICE uint4 load_shared_16(u32 address) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(address));
    return v;
}
MOE_DEVICE u32 load_shared_4(u32 address) {
    u32 v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(address));
    return v;
}

/// cp.async of 16 bytes; `sourceBytes` 0 fills the destination with zeros and reads nothing.
MOE_DEVICE void copy_async_16(u32 destination, const void *source, int sourceBytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(destination), "l"(source), "r"(sourceBytes));
}
MOE_DEVICE void copy_async_commit() { asm volatile("cp.async.commit_group;" ::); }
template <int Pending> MOE_DEVICE void copy_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(Pending)); }

// Bulk copies (the copy engine, sm_90) completing on an mbarrier in shared memory: the producer arrives once with the
// byte count it expects, each copy counts its bytes off, and the phase completes when all have landed.
MOE_DEVICE void mbarrier_init(u32 barrier, u32 arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(barrier), "r"(arrivals) : "memory");
}
/// Orders this thread's mbarrier.init before the copy engine's updates of those barriers.
MOE_DEVICE void fence_mbarrier_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
MOE_DEVICE void mbarrier_arrive_expect_bytes(u32 barrier, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(barrier), "r"(bytes) : "memory");
}
/// One arrival on `barrier` (release: this thread's earlier reads and writes of shared memory come before it).
MOE_DEVICE void mbarrier_arrive(u32 barrier) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(barrier) : "memory");
}
MOE_DEVICE void mbarrier_wait_parity(u32 barrier, u32 parity) {
    u32 done = 0;
    while (!done) {
        asm volatile("{\n .reg .pred ready;\n mbarrier.try_wait.parity.shared::cta.b64 ready, [%1], %2;\n selp.u32 %0, 1, 0, ready;\n}"
                     : "=r"(done) : "r"(barrier), "r"(parity) : "memory");
    }
}
/// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to shared memory by the copy engine.
MOE_DEVICE void bulk_copy_to_shared(u32 destination, const void *source, u32 bytes, u32 barrier) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(destination), "l"(source), "r"(bytes), "r"(barrier) : "memory");
}

/// A 2D box of the tensor map at `map` (global memory, 64-byte aligned) into shared memory at `destination` by the
/// copy engine, counted off `barrier`'s transaction bytes; x is the innermost coordinate (elements), y the row. Boxes
/// reaching past the tensor are zero-filled (and counted whole).
MOE_DEVICE void tensor_copy_2d(u32 destination, const void *map, int x, int y, u32 barrier) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
                 ::"r"(destination), "l"(map), "r"(x), "r"(y), "r"(barrier) : "memory");
}
MOE_DEVICE void prefetch_tensor_map(const void *map) { asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory"); }
/// One of `barrier`'s expected arrivals, made once every cp.async this thread issued before it has landed.
MOE_DEVICE void copy_async_arrive_noinc(u32 barrier) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(barrier) : "memory");
}

/// Four 8×8 bf16 matrices from shared memory: lanes 8i..8i+7 give the row addresses of matrix i.
MOE_DEVICE void load_matrix_x4(u32 (&r)[4], u32 address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// MARK: kernel trace (builds with MOE_TRACE defined: `moe cuda-debug --trace`)

#if defined(MOE_TRACE)
/// Marks a kernel's span inside a graph replay, programmatic overlap included: block thread 0 lowers the phase's start
/// to its start time; at every return, the first lane of each group of lanes leaving together raises the phase's end.
/// Each SM marks its own pair of the phase (MOE_TRACE_SLOTS, moe_params.h): with one pair a phase, every block and warp
/// of a kernel updated the same two words, and at 32768 tokens the gather's and the reduce's spans read 790 and 757 µs
/// where ncu timed them alone at 355 and 313 (run 87).
struct MoETraceScope {
    unsigned long long *span;
    MOE_DEVICE static unsigned long long now() {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        return t;
    }
    MOE_DEVICE static unsigned sm() {
        unsigned id;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
        return id;
    }
    /// This SM's pair of `phase` in the trace buffer `spans`.
    MOE_DEVICE static unsigned long long *pair(MoEDevicePointer spans, long long phase) {
        return (unsigned long long *)spans + 2 * (phase * MOE_TRACE_SLOTS + sm() % MOE_TRACE_SLOTS);
    }
    MOE_DEVICE MoETraceScope(MoEDevicePointer spans, long long phase) : span(spans == 0 ? nullptr : pair(spans, phase)) {
        if (span != nullptr && threadIdx.x == 0) atomicMin(span, now());
    }
    MOE_DEVICE explicit MoETraceScope(const MoETrace &trace) : MoETraceScope(trace.spans, trace.phase) {}
    MOE_DEVICE ~MoETraceScope() {
        const unsigned lane = threadIdx.x & 31;
        if (span != nullptr && (__activemask() & ((1u << lane) - 1u)) == 0u) atomicMax(span + 1, now());
    }
};
#define MOE_TRACE_KERNEL(p) MoETraceScope moeTraceScope((p).trace)
/// Thread 0 of the block reaching mark `index` of its launch lowers the mark's start and raises its end: its span runs
/// from the first block to the last to get there.
MOE_DEVICE void trace_mark(const MoETrace &trace, int index) {
    if (trace.spans == 0 || trace.marks < 0 || threadIdx.x != 0) return;
    unsigned long long *span = MoETraceScope::pair(trace.spans, trace.marks + index);
    const unsigned long long t = MoETraceScope::now();
    atomicMin(span, t);
    atomicMax(span + 1, t);
}
#define MOE_TRACE_MARK(p, index) trace_mark((p).trace, index)
/// The expert-parallel kernels' parameters keep every field 8 bytes wide: the span slot is two fields there.
#define MOE_TRACE_EP_KERNEL(p) MoETraceScope moeTraceScope((p).traceSpans, (p).tracePhase)
#else
#define MOE_TRACE_KERNEL(p)
#define MOE_TRACE_EP_KERNEL(p)
#define MOE_TRACE_MARK(p, index)
#endif

// MARK: programmatic dependent launch (sm_90+; no-ops when the launch did not ask for it)

/// Blocks until the previous kernel in the stream has finished and its writes are visible.
MOE_DEVICE void wait_for_previous_kernel() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Lets the next kernel in the stream start launching its blocks (they wait before reading this one's output).
MOE_DEVICE void allow_next_kernel() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// MARK: tensor cores

/// c += A·B for one m16n8k16 bf16 tile (A row-major 16×16, B column-major 16×8, fp32 accumulators).
MOE_DEVICE void mma_bf16_16816(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// MARK: warpgroup MMA (sm_90a)

/// Shared-memory matrix descriptor, no swizzle: start address, LBO (bytes between core matrices adjacent in K)
/// and SBO (bytes between core matrices adjacent in M/N), each >> 4.
MOE_DEVICE unsigned long long wgmma_descriptor(u32 address, u32 leadingBytes, u32 strideBytes) {
    return (unsigned long long)((address & 0x3FFFF) >> 4) | ((unsigned long long)((leadingBytes & 0x3FFFF) >> 4) << 16)
        | ((unsigned long long)((strideBytes & 0x3FFFF) >> 4) << 32);
}

/// Descriptor of a K-major operand in the 128-byte-swizzle layout: rows of 64 bf16 (128 B), 8-row atoms of 1 KB
/// (SBO = 1024), the 16-byte chunk c of row r stored at chunk c ^ (r % 8). `address` must lie in a 1024-aligned
/// atom (plus the k16 step's 32-byte offset within the row, as the hardware applies the swizzle to address bits).
MOE_DEVICE unsigned long long wgmma_descriptor_swizzled(u32 address) {
    return (unsigned long long)((address & 0x3FFFF) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}

/// Byte offset of (row r, 16-byte chunk c) in a 128-byte-swizzled K-major tile of 64-wide rows.
MOE_DEVICE u32 swizzled_offset(int r, int c) { return (u32)((r >> 3) * 1024 + (r & 7) * 128 + ((c ^ (r & 7)) << 4)); }

MOE_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
MOE_DEVICE void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int Pending> MOE_DEVICE void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(Pending) : "memory"); }
/// Warp-specialised kernels: hand registers from the producer warpgroup to the consumers (all warps of a
/// warpgroup execute it; counts are per thread, multiples of 8).
template <int Registers> MOE_DEVICE void registers_decrease() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(Registers)); }
template <int Registers> MOE_DEVICE void registers_increase() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(Registers)); }
/// setmaxnreg.inc waits until the block's pool holds the registers, and the pool is what the launch gave (launch bounds
/// (threads, 1): 65536 / threads rounded down to 8 a thread): the consumers can only take what the producers free, or
/// they spin forever (session 13's first registered kernel, 224 with 64: a hang).
__device__ constexpr bool setmaxnreg_fits(int threads, int producerThreads, int producerRegisters, int consumerRegisters, int blocks = 1) {
    return producerThreads * producerRegisters + (threads - producerThreads) * consumerRegisters <= threads * (65536 / blocks / threads / 8 * 8)
        && producerRegisters % 8 == 0 && consumerRegisters % 8 == 0 && consumerRegisters <= 256 && producerRegisters >= 24;
}

/// Named barriers (ids 1…15; 0 is __syncthreads): `arrive` signals without waiting, `sync` waits until
/// `threads` threads (both kinds counted) have reached the barrier.
MOE_DEVICE void named_barrier_arrive(int id, int threads) { asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory"); }
MOE_DEVICE void named_barrier_sync(int id, int threads) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory"); }

MOE_DEVICE void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
/// Global memory written by the generic proxy (another block's stores, seen through an acquire), before this thread's
/// tensor copies read it.
MOE_DEVICE void fence_proxy_async_global() { asm volatile("fence.proxy.async.global;" ::: "memory"); }

/// d[64×16] += A[64×16] · B[16×16]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x16x16(float (&d)[8], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×24] += A[64×16] · B[16×24]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x24x16(float (&d)[12], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n24k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11}, {%12, %13, %14, %15}, %16, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×32] += A[64×16] · B[16×32]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x32x16(float (&d)[16], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×40] += A[64×16] · B[16×40]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x40x16(float (&d)[20], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n40k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19}, {%20, %21, %22, %23}, %24, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×48] += A[64×16] · B[16×48]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x48x16(float (&d)[24], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, {%24, %25, %26, %27}, %28, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×64] += A[64×16] · B[16×64]: A from registers (each warp of the warpgroup its 16 rows, the mma.sync
/// m16n8k16 A layout), B from shared memory (K-major, descriptor), fp32 accumulators in the m16n8 C layout
/// per 8-column tile j: d[4j..4j+3].
MOE_DEVICE void wgmma_64x64x16(float (&d)[32], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×80] += A[64×16] · B[16×80]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x80x16(float (&d)[40], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}, {%40, %41, %42, %43}, %44, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×96] += A[64×16] · B[16×96]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x96x16(float (&d)[48], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, {%48, %49, %50, %51}, %52, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×128] += A[64×16] · B[16×128]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x128x16(float (&d)[64], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×160] += A[64×16] · B[16×160]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x160x16(float (&d)[80], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n160k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79}, {%80, %81, %82, %83}, %84, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// d[64×192] += A[64×16] · B[16×192]: A from registers (as wgmma_64x64x16), B from shared memory (descriptor).
MOE_DEVICE void wgmma_64x192x16(float (&d)[96], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, {%96, %97, %98, %99}, %100, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(descriptor));
#endif
}

/// The register-A wgmma of a tile W tokens wide (the widths the registered kernels use: each its own PTX shape above;
/// m64n256, session 21–23's widest, is in git history).
template <int N>
MOE_DEVICE void warpgroup_mma(float (&d)[N / 2], u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long descriptor) {
    static_assert(N == 16 || N == 24 || N == 32 || N == 40 || N == 48 || N == 64 || N == 80 || N == 96 || N == 128 ||
                      N == 160 || N == 192,
                  "a register-A wgmma width with no shape above");
    if constexpr (N == 16) wgmma_64x16x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 24) wgmma_64x24x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 32) wgmma_64x32x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 40) wgmma_64x40x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 48) wgmma_64x48x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 64) wgmma_64x64x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 80) wgmma_64x80x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 96) wgmma_64x96x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 128) wgmma_64x128x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 160) wgmma_64x160x16(d, a0, a1, a2, a3, descriptor);
    if constexpr (N == 192) wgmma_64x192x16(d, a0, a1, a2, a3, descriptor);
}

/// d[64×64] += A[64×16] · B[16×64], both from shared memory (K-major descriptors), fp32 accumulators in the
/// m16n8 C layout per 8-column tile j: d[4j..4j+3].
MOE_DEVICE void wgmma_ss_64x64x16(float (&d)[32], unsigned long long descriptorA, unsigned long long descriptorB) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(descriptorA), "l"(descriptorB));
#endif
}

/// d[64×128] += A[64×16] · B[16×128], both from shared memory (K-major descriptors), fp32 accumulators in the
/// m16n8 C layout per 8-column tile j: d[4j..4j+3].
MOE_DEVICE void wgmma_ss_64x128x16(float (&d)[64], unsigned long long descriptorA, unsigned long long descriptorB) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(descriptorA), "l"(descriptorB));
#endif
}

/// The both-operands-in-shared-memory wgmma of an N-token tile (N = 64 or 128).
template <int N> struct WarpgroupMMAShared;
template <> struct WarpgroupMMAShared<64> {
    static MOE_DEVICE void run(float (&d)[32], unsigned long long a, unsigned long long b) { wgmma_ss_64x64x16(d, a, b); }
};
template <> struct WarpgroupMMAShared<128> {
    static MOE_DEVICE void run(float (&d)[64], unsigned long long a, unsigned long long b) { wgmma_ss_64x128x16(d, a, b); }
};

// MARK: warp reductions

MOE_DEVICE float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

MOE_DEVICE int warp_inclusive_scan(int v, int lane) {
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        int other = __shfl_up_sync(0xffffffffu, v, offset);
        if (lane >= offset) v += other;
    }
    return v;
}

// MARK: MXFP4 fragment decoding
//
// Each 32-bit word of the repacked weights holds 8 E2M1 codes: four (low, high) pairs, the pair for
// output q feeding one bf16x2 register of an MMA A fragment. The codes' bits are placed (at load time, see
// WeightRepacking.swift) so that
//   out0 = w & M,  out1 = (w << 6) & M,  out2 = rotl(w, 10) & M,  with M = 0x81C081C0,
//   out3 = ((w << 4) & 0x81808180) | ((w >> 4) & 0x00400040)
// each put a code's sign at bit 15/31 and its three magnitude bits at bits 8..6 / 24..22 (9 integer ops a
// word: four shifts, five LOP3; the four outputs' source bits partition the word). Read as bf16,
// such a pattern is exactly (E2M1 value) · 2^-126 (code 1, the subnormal 0.5, included). One bf16
// multiply by 2^(s−1) then applies the block scale 2^(s−127), exactly, for scale bytes s ≤ 128; larger
// scales (rare: |w| > 12) take two multiplies, and s = 255 gives NaN as the format says.

#define MOE_FP4_MASK 0x81C081C0u

/// bf16x2 factor for scale byte `j` of the word `scales` (fast path: every byte ≤ 128).
MOE_DEVICE u32 mxfp4_fast_factor(u32 scales, int j) {
    // bytes j and j into halves: {s, 0, s, 0}; then (s + 126) << 7 in each half.
    u32 spread = byte_perm(scales, 0u, 0x4040u | (u32)j | ((u32)j << 8));
    return spread * 128u + 0x3F003F00u;
}

MOE_DEVICE bool mxfp4_needs_slow_path(u32 scales) {
    return ((((scales & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) & scales & 0x80808080u) != 0u);
}

MOE_DEVICE u32 mxfp4_slow_scale(u32 scales, int j, u32 raw) {
    const u32 s = (scales >> (8 * j)) & 0xFFu;
    if (s <= 128u) return mul_bf16x2(raw, ((s + 126u) << 7) * 0x10001u);
    const u32 factor = (s == 255u ? 0x7FC0u : (s << 7)) * 0x10001u;
    return mul_bf16x2(mul_bf16x2(raw, 0x7E807E80u), factor);  // · 2^126, then · 2^(s−127)
}

/// The four unscaled (· 2^-126) bf16x2 outputs of one repacked word.
MOE_DEVICE void mxfp4_unpack_word(u32 w, u32 (&raw)[4]) {
    raw[0] = w & MOE_FP4_MASK;
    raw[1] = (w << 6) & MOE_FP4_MASK;
    raw[2] = __funnelshift_l(w, w, 10) & MOE_FP4_MASK;  // rotate left by 10
    raw[3] = ((w << 4) & 0x81808180u) | ((w >> 4) & 0x00400040u);
}

/// Decodes one word with scale byte `j` of `scales` into four bf16x2 values. `Slow` must be true when any
/// scale byte of the word may exceed 128 (the caller decides once per chunk, warp-uniformly).
template <bool Slow>
MOE_DEVICE void mxfp4_decode_word(u32 w, u32 scales, int j, u32 (&out)[4]) {
    u32 raw[4];
    mxfp4_unpack_word(w, raw);
    if (!Slow) {
        const u32 factor = mxfp4_fast_factor(scales, j);
#pragma unroll
        for (int q = 0; q < 4; ++q) out[q] = mul_bf16x2(raw[q], factor);
    } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) out[q] = mxfp4_slow_scale(scales, j, raw[q]);
    }
}

MOE_DEVICE u32 uint4_component(const uint4 &v, int i) {
    return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}
