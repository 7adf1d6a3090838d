// moe_experts.cu — the grouped expert GEMMs with MXFP4 weights decoded in registers and fed to bf16 tensor
// cores (mma.sync m16n8k16), and the k-way reduce. Reference: CPUBackend.gemm1 / gemm2 and MoEPipeline.reduce.
//
// Operand roles ("swap AB"): the weights are the MMA's A operand (16 output rows n × 16 k per fragment,
// decoded from the repacked codes straight into registers), the tokens of a tile are the B operand
// (8 tokens × 16 k per fragment, ldmatrix from shared memory). The accumulator fragment of a lane holds
// rows gid and gid+8 (gid = lane / 4) for tokens 2·(lane % 4) and +1. GEMM 1's weight rows are permuted at
// load so that row gid of a 16-row group is gate_i and row gid+8 is up_i of the same i = 8·group + gid:
// SwiGLU is then local to a lane.
//
//   GEMM 1: a[r, i] = bf16(SwiGLU(W1[e] · x[token(r)] + b1[e]))        (input gathered by sortedToSlot / k)
//   GEMM 2: combine[slot(r), h] = bf16(w_r · (W2[e] · a[r] + b2[e])[h])  (output scattered by sortedToSlot)
//
// Grid: x = blocks of output row groups, y = tiles (static bound; blocks past the device-side tile count
// exit at once).
//   moe_gemm_resident_MI_NJ_WN_WK_S (decode): the tile's ≤ 8·NJ activation rows stay in shared memory for the
//     whole K; WN warps × MI groups of 16 rows, each K split over WK warps (partial sums added in a fixed
//     order). Weights stream through a per-warp ring of S four-chunk groups in shared memory, filled by each lane's
//     cp.async copies or (bulk kernels: resident_1_1_4_1_4) by the copy engine.
//   moe_gemm_staged_MI_NJ_WN (larger batches): 16·MI·WN weight rows × 8·NJ tokens per block; codes, scales
//     and activations for 256 k at a time go through a 3-stage cp.async ring in shared memory, so the loads
//     of two stages are in flight while one is multiplied, with no registers held for them.
#include "moe_common.cuh"

#ifndef MOE_RESIDENT_BULK
#define MOE_RESIDENT_BULK 0
#endif
// Measurement build (MOE_CUDA_ALIAS_EXPERTS=1): the resident GEMMs read expert 0's weights for every tile, so a decode
// step's weights sit in L2. Outputs are wrong by design.
#ifndef MOE_ALIAS_EXPERTS
#define MOE_ALIAS_EXPERTS 0
#endif
// MOE_CUDA_RING_WHOLE=1 (an A/B build switch): a resident warp whose K share fits its ring asks for all of it at once.
#ifndef MOE_RING_WHOLE
#define MOE_RING_WHOLE 0
#endif

/// Index of the source row of sorted row r.
MOE_DEVICE long long gemm_input_row(const MoEGemmParams &p, int r) {
    if (p.inputIndex == 0) return r;
    return ((const int *)p.inputIndex)[r] / p.inputDivisor;
}

MOE_DEVICE long long gemm_output_row(const MoEGemmParams &p, int r) {
    if (p.outputIndex == 0) return r;
    return ((const int *)p.outputIndex)[r];
}

/// acc += W · Xᵀ for one 64-k chunk: this lane's 16 code bytes and scale word per row group; B rows at
/// rowAddress[nj] + byteOffset (shared memory). The scales multiply the decoded weights before the MMA. Session 31's
/// late form (the unscaled codes into the MMA, each 32-k block's sum scaled by one FFMA an accumulator after it, the
/// activations prescaled in shared memory) ran 15–53 fewer instructions a four-chunk group but lost 2.5–12% at 1–192
/// tokens, level at 2 (run 107; reading: each FFMA waits on two MMAs from zero); it is in git history (192f012).
template <int MI, int NJ, bool Slow>
MOE_DEVICE void mma_chunk_decoded(
    float (&acc)[MI][NJ][4], const uint4 (&codes)[MI], const u32 (&scaleWords)[MI], const u32 (&rowAddress)[NJ],
    u32 byteOffset) {
#pragma unroll
    for (int sp = 0; sp < 2; ++sp) {  // one MXFP4 block (32 k) = two k16 steps
        u32 b[NJ][4];
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj) load_matrix_x4(b[nj], rowAddress[nj] + byteOffset + sp * 64);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
            u32 low[4], high[4];  // rows gid and gid+8
            mxfp4_decode_word<Slow>(uint4_component(codes[mi], 2 * sp), scaleWords[mi], 2 * sp, low);
            mxfp4_decode_word<Slow>(uint4_component(codes[mi], 2 * sp + 1), scaleWords[mi], 2 * sp + 1, high);
#pragma unroll
            for (int nj = 0; nj < NJ; ++nj) {
                mma_bf16_16816(acc[mi][nj], low[0], high[0], low[1], high[1], b[nj][0], b[nj][1]);
                mma_bf16_16816(acc[mi][nj], low[2], high[2], low[3], high[3], b[nj][2], b[nj][3]);
            }
        }
    }
}

/// One warp-uniform branch per chunk: the two-multiply decode only when some lane has a scale byte > 128.
template <int MI, int NJ>
MOE_DEVICE void mma_chunk(
    float (&acc)[MI][NJ][4], const uint4 (&codes)[MI], const u32 (&scaleWords)[MI], const u32 (&rowAddress)[NJ],
    u32 byteOffset) {
    bool slow = false;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) slow |= mxfp4_needs_slow_path(scaleWords[mi]);
    if (__any_sync(0xffffffffu, slow)) {
        mma_chunk_decoded<MI, NJ, true>(acc, codes, scaleWords, rowAddress, byteOffset);
    } else {
        mma_chunk_decoded<MI, NJ, false>(acc, codes, scaleWords, rowAddress, byteOffset);
    }
}

/// acc[ci] += W · Xᵀ for the 64-k chunks ci < chunksValid of one 4-chunk group (codes and scale words per chunk).
/// One warp vote for the whole group: on the common path (4 chunks, every scale byte ≤ 128) the four chunks are
/// straight-line code, so the compiler interleaves one chunk's decode with another's MMAs.
template <int MI, int NJ, int CHAINS>
MOE_DEVICE void mma_group(
    float (&acc)[CHAINS][MI][NJ][4], const uint4 (&codes)[4][MI], const u32 (&words)[4][MI], int chunksValid,
    const u32 (&rowAddress)[NJ], u32 groupByteOffset) {
    bool slow = false;
#pragma unroll
    for (int ci = 0; ci < 4; ++ci)
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) slow |= mxfp4_needs_slow_path(words[ci][mi]);
    if (chunksValid == 4 && !__any_sync(0xffffffffu, slow)) {
#pragma unroll
        for (int ci = 0; ci < 4; ++ci)
            mma_chunk_decoded<MI, NJ, false>(acc[ci % CHAINS], codes[ci], words[ci], rowAddress, groupByteOffset + ci * 128);
    } else {
#pragma unroll
        for (int ci = 0; ci < 4; ++ci)
            if (ci < chunksValid) mma_chunk<MI, NJ>(acc[ci % CHAINS], codes[ci], words[ci], rowAddress, groupByteOffset + ci * 128);
    }
}

/// The clamped SwiGLU of one gate/up accumulator pair (gpt-oss: gate ≤ limit, |up| ≤ limit, σ(α·gate), up + 1).
MOE_DEVICE float swiglu_output(const MoEGemmParams &p, float gate, float up) {
    const float g = fminf(gate, p.swigluLimit);
    const float u = fminf(fmaxf(up, -p.swigluLimit), p.swigluLimit);
    return g / (1.0f + expf(-p.swigluAlpha * g)) * (u + 1.0f);
}

/// Writes one accumulator fragment (row group `group`, token tile nj) through the epilogue.
MOE_DEVICE void gemm_epilogue(
    const MoEGemmParams &p, const MoETile &tile, int group, int nj, const float (&c)[4], int lane) {
    const int gid = lane >> 2, tig = lane & 3;
    const float *bias = (const float *)p.bias + (long long)tile.expert * p.n;
    bf16_t *out = (bf16_t *)p.output;
    if (p.epilogue == MOE_EPILOGUE_SWIGLU) {
        const int pair = 8 * group + gid;  // column of a
        const float gateBias = bias[2 * pair], upBias = bias[2 * pair + 1];
#pragma unroll
        for (int tok = 0; tok < 2; ++tok) {
            const int j = 8 * nj + 2 * tig + tok;
            if (j < tile.rowCount) {
                const int r = tile.rowStart + j;
                out[gemm_output_row(p, r) * p.outputStride + pair] = float_to_bf16(swiglu_output(p, c[tok] + gateBias, c[2 + tok] + upBias));
            }
        }
    } else {
        const int h0 = 16 * group + gid, h1 = h0 + 8;
        const float b0 = bias[h0], b1 = bias[h1];
        const float *rowWeights = (const float *)p.rowWeights;
#pragma unroll
        for (int tok = 0; tok < 2; ++tok) {
            const int j = 8 * nj + 2 * tig + tok;
            if (j < tile.rowCount) {
                const int r = tile.rowStart + j;
                const float w = rowWeights[r];
                bf16_t *row = out + gemm_output_row(p, r) * p.outputStride;
                row[h0] = float_to_bf16(w * (c[tok] + b0));
                row[h1] = float_to_bf16(w * (c[2 + tok] + b1));
            }
        }
    }
}

template <int MI, int NJ>
MOE_DEVICE void zero_accumulators(float (&acc)[MI][NJ][4]) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[mi][nj][q] = 0.0f;
}

// MARK: the k-way sum (moe_reduce, or fused into GEMM 2's last blocks)

/// output[t, h..h+7] = bf16(Σ_j combine[t·k + j, h..h+7]) over the routed slots j in order, fp32 accumulation.
template <bool Coherent>
MOE_DEVICE void reduce_eight(const bf16_t *combine, const int *slotToSorted, bf16_t *output, int t, int h, int topK, int hidden) {
    float sum[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < topK; ++j) {
        const long long slot = (long long)t * topK + j;
        if (slotToSorted[slot] < 0) continue;
        const bf16_t *source = combine + slot * hidden + h;
        const uint4 v = Coherent ? load_coherent_16(source) : *(const uint4 *)source;
        sum[0] += bf16_low(v.x);
        sum[1] += bf16_high(v.x);
        sum[2] += bf16_low(v.y);
        sum[3] += bf16_high(v.y);
        sum[4] += bf16_low(v.z);
        sum[5] += bf16_high(v.z);
        sum[6] += bf16_low(v.w);
        sum[7] += bf16_high(v.w);
    }
    uint4 packed;
    packed.x = pack_bf16x2(sum[0], sum[1]);
    packed.y = pack_bf16x2(sum[2], sum[3]);
    packed.z = pack_bf16x2(sum[4], sum[5]);
    packed.w = pack_bf16x2(sum[6], sum[7]);
    *(uint4 *)(output + (long long)t * hidden + h) = packed;
}

/// GEMM 2 with the sum fused: called by every thread of a block after its epilogue stores. The block that completes
/// column range [first, first + columns) (the tileCount-th to arrive) sums it for every token; others return.
MOE_DEVICE void fused_reduce_tail(const MoEGemmParams &p, int first, int columns) {
    // This election is written out: through last_block_to_arrive, ptxas schedules the resident kernels with WK = 1
    // differently (NVRTC 13.0), and these are the kernels the figures were measured with.
    __shared__ int isLast;
    __threadfence();
    __syncthreads();
    unsigned *counter = (unsigned *)p.reduceCounters + blockIdx.x;
    if (threadIdx.x == 0) isLast = atomicAdd(counter, 1u) == (unsigned)*(const int *)p.tileCount - 1u;
    __syncthreads();
    if (!isLast) return;
    __threadfence();
    const int segments = (min(p.n, first + columns) - first) / 8;  // n is a multiple of 16
    for (int i = threadIdx.x; i < p.reduceTokens * segments; i += blockDim.x) {
        const int t = i / segments, h = first + 8 * (i - t * segments);
        reduce_eight<true>((const bf16_t *)p.output, (const int *)p.slotToSorted, (bf16_t *)p.reduceOutput, t, h, p.topK, p.n);
    }
    if (threadIdx.x == 0) *counter = 0u;  // ready for the next launch (graph replay)
}

// MARK: tile-by-tile hand-over from GEMM 1 to GEMM 2 (resident kernels)

MOE_DEVICE unsigned load_acquire_u32(const unsigned *pointer) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(pointer) : "memory");
    return v;
}

/// GEMM 1, every thread that stored, after its epilogue stores: one more finished block for this tile. `gather` brings
/// those threads together (the whole block for the resident kernels; the registered ones' consumers by their named
/// barrier, their producers having returned) and the thread with `counts` adds the block.
template <class Gather>
MOE_DEVICE void signal_tile_ready(const MoEGemmParams &p, Gather gather, bool counts) {
    __threadfence();
    gather();
    if (counts) atomicAdd((unsigned *)p.tileReady + blockIdx.y, 1u);
}
MOE_DEVICE void signal_tile_ready(const MoEGemmParams &p) {
    signal_tile_ready(p, [] { __syncthreads(); }, threadIdx.x == 0);
}

/// GEMM 2: waits until every GEMM 1 block of this tile is done (bounded: a tile that never completes traps, which the
/// host sees as a failed launch, instead of hanging the GPU). The tile's last block past the wait resets its counters.
MOE_DEVICE void wait_for_tile(const MoEGemmParams &p) {
    if (threadIdx.x == 0) {
        const unsigned *ready = (const unsigned *)p.tileReady + blockIdx.y;
        unsigned spins = 0;
        while (load_acquire_u32(ready) < (unsigned)p.tileReadyTarget) {
            __nanosleep(100);
            if (++spins == (1u << 24)) __trap();
        }
        if (atomicAdd((unsigned *)p.tileConsumed + blockIdx.y, 1u) == gridDim.x - 1) {
            *((unsigned *)p.tileReady + blockIdx.y) = 0u;
            *((unsigned *)p.tileConsumed + blockIdx.y) = 0u;
        }
    }
    __syncthreads();
}

// MARK: resident kernel (decode-size tiles)

/// A resident ring slot is MI × [4 × 512 B codes | 512 B scales]; a bulk kernel copies the 128 scale bytes once, into
/// the first 128 B of row group 0's scale area, and keeps the slot's mbarrier right after them.
MOE_DEVICE u32 resident_slot_barrier(u32 slot) { return slot + 4 * 512 + 128; }

/// Issues this lane's cp.async copies of one 4-chunk group for MI row groups into its ring slot: 16 code bytes
/// per chunk (exactly the bytes this lane later reads) and its row pair's 16 scale bytes.
template <int MI>
MOE_DEVICE void copy_weight_group(
    const MoEGemmParams &p, long long expertGroup, int firstGroup, int g, int lane, u32 slot) {
    const unsigned char *codes = (const unsigned char *)p.codes;
    const unsigned char *scales = (const unsigned char *)p.scales;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        if (firstGroup + mi >= p.groups) continue;
        const long long group = expertGroup + firstGroup + mi;
#pragma unroll
        for (int ci = 0; ci < 4; ++ci) {
            const int c = 4 * g + ci;
            if (c < p.chunks) copy_async_16(slot + (mi * 5 + ci) * 512 + lane * 16, codes + ((group * p.chunks + c) * 32 + lane) * 16, 16);
        }
        copy_async_16(slot + (mi * 5 + 4) * 512 + lane * 16, scales + ((group * p.scaleGroups + g) * 8 + (lane >> 2)) * 16, 16);
    }
}

/// Bulk kernels: lane 0's copies of one 4-chunk group for MI row groups into its ring slot, by the copy engine:
/// per row group its chunks' codes (contiguous in the repacked layout: 512 B a chunk, in lane order) and the group's
/// 128 scale bytes (8 row pairs × 16 B) at the slot's scale offset, all counted on the slot's mbarrier.
template <int MI>
MOE_DEVICE void bulk_copy_weight_group(const MoEGemmParams &p, long long expertGroup, int firstGroup, int g, u32 slot) {
    const unsigned char *codes = (const unsigned char *)p.codes;
    const unsigned char *scales = (const unsigned char *)p.scales;
    const u32 codeBytes = (u32)min(4, p.chunks - 4 * g) * 512u;
    const u32 barrier = resident_slot_barrier(slot);
    u32 bytes = 0;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
        if (firstGroup + mi < p.groups) bytes += codeBytes + 128u;
    mbarrier_arrive_expect_bytes(barrier, bytes);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        if (firstGroup + mi >= p.groups) continue;
        const long long group = expertGroup + firstGroup + mi;
        bulk_copy_to_shared(slot + mi * 5 * 512, codes + (group * p.chunks + 4 * g) * 512, codeBytes, barrier);
        bulk_copy_to_shared(slot + (mi * 5 + 4) * 512, scales + (group * p.scaleGroups + g) * 128, 128u, barrier);
    }
}

/// Split K: partial sums through shared memory, added in K order by the wk = 0 warps. Returns false for the other
/// warps when no fused sum or tile signal follows (they have nothing left to do); with one, every warp must reach its
/// barrier.
template <int MI, int NJ, int WN, int WK>
MOE_DEVICE bool split_k_epilogue(
    const MoEGemmParams &p, const MoETile &tile, const float (&acc)[MI][NJ][4], float *partials, int wn, int wk,
    int firstGroup, int lane) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj)
#pragma unroll
            for (int q = 0; q < 4; ++q)
                partials[((((wk * WN + wn) * MI + mi) * NJ + nj) * 32 + lane) * 4 + q] = acc[mi][nj][q];
    __syncthreads();
    if (wk != 0) return p.reduceOutput != 0 || p.tileRole == 1;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj) {
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int k = 0; k < WK; ++k)
#pragma unroll
                for (int q = 0; q < 4; ++q) c[q] += partials[((((k * WN + wn) * MI + mi) * NJ + nj) * 32 + lane) * 4 + q];
            if (firstGroup + mi < p.groups) gemm_epilogue(p, tile, firstGroup + mi, nj, c, lane);
        }
    }
    return true;
}

/// Block: WN·WK warps; warp w owns row groups (blockIdx.x·WN + w % WN)·MI … +MI−1 and K share w / WN.
/// Weights stream through a per-warp ring of S slots in shared memory, S−1 groups ahead, with no registers holding
/// data in flight: each lane cp.asyncs the fragment bytes it will itself read (so no barrier is needed), or, BULK,
/// lane 0 has the copy engine fill the slot and the lanes wait on the slot's mbarrier.
/// Dynamic shared memory: residentRows × (64·C + 8) bf16 activations | WK·WN·MI·NJ·32·4 floats (split K) |
/// WN·WK warps × S slots × MI × 5 × 512 B.
template <int MI, int NJ, int WN, int WK, int S, bool BULK>
MOE_DEVICE void gemm_resident(const MoEGemmParams &p) {
#if __CUDA_ARCH__ >= 900
    constexpr bool bulk = BULK || MOE_RESIDENT_BULK;
#else
    constexpr bool bulk = false;  // the copy engine's bulk copies are sm_90's; elsewhere every lane copies its bytes
#endif
    extern __shared__ __align__(16) unsigned char sharedBytes[];
    if (!p.prefetchBeforeWait) {
        wait_for_previous_kernel();
        MOE_TRACE_MARK(p, MOE_MARK_GEMM_WAITED);
    }
    // GEMM 2 may launch once every block of this grid is past its wait, so the routing output GEMM 2 reads before its
    // own wait is complete: it then fills this grid's last wave, tile by tile.
    if (p.tileRole == 1) allow_next_kernel();
    if ((int)blockIdx.y >= *(const int *)p.tileCount) return;
    const MoETile tile = ((const MoETile *)p.tiles)[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wn = warp % WN, wk = warp / WN;
    const int firstGroup = (blockIdx.x * WN + wn) * MI;
    const long long expertGroup = MOE_ALIAS_EXPERTS ? 0 : (long long)tile.expert * p.groups;
    const int kPadded = p.chunks * 64, rowStride = kPadded + 8;
    const int activationBytes = p.residentRows * rowStride * 2;
    constexpr int PARTIAL_BYTES = WK > 1 ? WK * WN * MI * NJ * 32 * 4 * 4 : 0;
    constexpr int SLOT_BYTES = MI * 5 * 512;
    bf16_t *xs = (bf16_t *)sharedBytes;
    float *partials = (float *)(sharedBytes + activationBytes);
    const u32 ring = shared_address(sharedBytes + activationBytes + PARTIAL_BYTES) + warp * S * SLOT_BYTES;
    const unsigned char *ringPointer = sharedBytes + activationBytes + PARTIAL_BYTES + warp * S * SLOT_BYTES;

    // Activation rows of the tile (zero past K), one cp.async group.
    auto copy_activations = [&] {
        const int rows = min(tile.rowCount, p.residentRows);
        const int segmentsPerRow = kPadded / 8;
        const bf16_t *input = (const bf16_t *)p.input;
        for (int j = warp; j < rows; j += WN * WK) {
            const bf16_t *row = input + gemm_input_row(p, tile.rowStart + j) * p.inputStride;
            for (int segment = lane; segment < segmentsPerRow; segment += 32) {
                const int k0 = segment * 8;
                copy_async_16(shared_address(xs + j * rowStride + k0), row + min(k0, p.k - 8), k0 < p.k ? 16 : 0);
            }
        }
        copy_async_commit();
    };
    // A GEMM 1 whose ring its lanes fill copies the activations before the ring's first S − 1 groups, so the block starts
    // on its first group instead of waiting for all of them: at 1 token the blocks' first groups are ~15 MB asked for at
    // once (2880 warps × 2 groups × 2560 B; run 110: −1.4 / −2.9% at 1 token and −0.4 to −2.5% at 8–192 on 120b, −3.9 /
    // −5.8% at 1 on 20b). GEMM 2 fills its ring before its wait, and the bulk kernels' rings are no cp.async groups:
    // they copy after.
    const bool activationsFirst = !bulk && !p.prefetchBeforeWait && p.tileRole != 2;
    if (activationsFirst) copy_activations();

    // The weight ring starts filling before anything else (but a GEMM 1's activations, above).
    const int begin = (p.scaleGroups * wk) / WK, end = (p.scaleGroups * (wk + 1)) / WK;
    // Whole (MOE_RING_WHOLE): a K share of at most S groups (GEMM 2's resident_1_1_2_4_3 at 1 token: 3) is asked for
    // whole before the wait, each group in its own slot, and the loop copies nothing; otherwise S − 1 groups ahead.
    const bool whole = MOE_RING_WHOLE && end - begin <= S;
    const int ahead = whole ? S : S - 1;  // groups asked for before the wait
    u32 phases = 0;  // bulk: bit s is the parity of slot s's next completion
    if constexpr (bulk) {
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < S; ++i) mbarrier_init(resident_slot_barrier(ring + i * SLOT_BYTES), 1);
            fence_mbarrier_init();
#pragma unroll
            for (int i = 0; i < S; ++i)
                if (i < ahead && begin + i < end) bulk_copy_weight_group<MI>(p, expertGroup, firstGroup, begin + i, ring + i * SLOT_BYTES);
        }
        __syncwarp();
    } else {
#pragma unroll
        for (int i = 0; i < S; ++i) {
            if (i == ahead) break;
            if (begin + i < end) copy_weight_group<MI>(p, expertGroup, firstGroup, begin + i, lane, ring + i * SLOT_BYTES);
            copy_async_commit();  // whole: S groups committed, so each iteration's wait leaves S − 1 pending
        }
    }
    // The activations come from the previous kernel (GEMM 1 for GEMM 2): all of it, or this tile's blocks of it.
    if (p.tileRole == 2) {
        wait_for_tile(p);
        MOE_TRACE_MARK(p, MOE_MARK_GEMM_WAITED);
    } else if (p.prefetchBeforeWait) {
        wait_for_previous_kernel();
        MOE_TRACE_MARK(p, MOE_MARK_GEMM_WAITED);
    }

    if (activationsFirst) {
        copy_async_wait<S - 1>();  // the activations; the ring's groups may still be in flight
    } else {
        copy_activations();
        copy_async_wait<0>();
    }
    __syncthreads();
    const int rows = min(tile.rowCount, p.residentRows);
    MOE_TRACE_MARK(p, MOE_MARK_GEMM_STAGED);

    float chains[4][MI][NJ][4];  // one MMA chain per chunk of a group: four independent dependency chains
#pragma unroll
    for (int c = 0; c < 4; ++c) zero_accumulators<MI, NJ>(chains[c]);
    u32 rowAddress[NJ];
#pragma unroll
    for (int nj = 0; nj < NJ; ++nj) {
        const int row = min(8 * nj + (lane & 7), rows - 1);
        rowAddress[nj] = shared_address(xs + row * rowStride + 8 * (lane >> 3));
    }

    // bulk: the group's 128 scale bytes once, lane l reads row pair l / 4's 16 B; else each lane's own copy of them
    const int scaleLane = bulk ? (lane >> 2) * 16 : lane * 16;
    int slot = 0;
#pragma unroll 1
    for (int g = begin; g < end; ++g) {
        const int next = g + S - 1, nextSlot = slot == 0 ? S - 1 : slot - 1;
        if constexpr (bulk) {
            mbarrier_wait_parity(resident_slot_barrier(ring + slot * SLOT_BYTES), (phases >> slot) & 1u);  // group g landed
            phases ^= 1u << slot;
            __syncwarp();  // every lane has read nextSlot's previous group (iteration g − 1) before it is overwritten
            if (lane == 0 && !whole && next < end)
                bulk_copy_weight_group<MI>(p, expertGroup, firstGroup, next, ring + nextSlot * SLOT_BYTES);
        } else {
            if (whole) {
                copy_async_wait<S - 1>();  // group g has landed (S + g − begin groups committed)
            } else {
                copy_async_wait<S - 2>();  // this lane's copies of group g have landed
                if (next < end) copy_weight_group<MI>(p, expertGroup, firstGroup, next, lane, ring + nextSlot * SLOT_BYTES);
            }
            copy_async_commit();
        }
        const unsigned char *current = ringPointer + slot * SLOT_BYTES;
        uint4 codes[4][MI];
        u32 words[4][MI];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
            const uint4 scales = *(const uint4 *)(current + (mi * 5 + 4) * 512 + scaleLane);
#pragma unroll
            for (int ci = 0; ci < 4; ++ci) {
                codes[ci][mi] = *(const uint4 *)(current + (mi * 5 + ci) * 512 + lane * 16);
                words[ci][mi] = uint4_component(scales, ci);
            }
        }
        mma_group<MI, NJ, 4>(chains, codes, words, min(4, p.chunks - 4 * g), rowAddress, g * 512);
        slot = slot + 1 == S ? 0 : slot + 1;
    }
    MOE_TRACE_MARK(p, MOE_MARK_GEMM_LOOPED);
    copy_async_wait<0>();
    allow_next_kernel();
    float acc[MI][NJ][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[mi][nj][q] = (chains[0][mi][nj][q] + chains[1][mi][nj][q]) + (chains[2][mi][nj][q] + chains[3][mi][nj][q]);

    if constexpr (WK == 1) {
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int nj = 0; nj < NJ; ++nj)
                if (firstGroup + mi < p.groups) gemm_epilogue(p, tile, firstGroup + mi, nj, acc[mi][nj], lane);
    } else if (!split_k_epilogue<MI, NJ, WN, WK>(p, tile, acc, partials, wn, wk, firstGroup, lane)) {
        return;
    }
    if (p.reduceOutput) fused_reduce_tail(p, blockIdx.x * WN * MI * 16, WN * MI * 16);
    if (p.tileRole == 1) signal_tile_ready(p);
}

// MARK: staged kernel (larger tiles)

/// Block: WN warps × MI row groups = 16·MI·WN weight rows; a tile of ≤ 8·NJ rows. Dynamic shared memory:
/// STAGES (2 or 3) stages of [activations 8·NJ × (256 + 8) bf16 | codes WN·MI × 4 chunks × 512 B | scales WN·MI × 128 B].
template <int MI, int NJ, int WN, int STAGES>
MOE_DEVICE void gemm_staged(const MoEGemmParams &p) {
    constexpr int BM = 8 * NJ, STAGE_K = 256, ROW = STAGE_K + 8, GROUPS = WN * MI;
    constexpr int ACT_BYTES = BM * ROW * 2, CODE_BYTES = GROUPS * 4 * 512, SCALE_BYTES = GROUPS * 128;
    constexpr int STAGE_BYTES = ACT_BYTES + CODE_BYTES + SCALE_BYTES;
    constexpr int THREADS = 32 * WN;
    extern __shared__ __align__(16) unsigned char sharedBytes[];
    wait_for_previous_kernel();
    if ((int)blockIdx.y >= *(const int *)p.tileCount) return;
    const MoETile tile = ((const MoETile *)p.tiles)[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int blockGroup = blockIdx.x * GROUPS;
    const long long expertGroup = (long long)tile.expert * p.groups;
    const bf16_t *input = (const bf16_t *)p.input;
    const unsigned char *codes = (const unsigned char *)p.codes;
    const unsigned char *scales = (const unsigned char *)p.scales;
    const int rows = tile.rowCount;
    const u32 sharedBase = shared_address(sharedBytes);

    // Activation copies: BM rows × 32 segments of 16 B per stage.
    constexpr int ACT_PER_THREAD = BM * 32 / THREADS;
    const bf16_t *actSource[ACT_PER_THREAD];
    u32 actTarget[ACT_PER_THREAD];
    int actK[ACT_PER_THREAD];
    bool actLive[ACT_PER_THREAD];
#pragma unroll
    for (int i = 0; i < ACT_PER_THREAD; ++i) {
        const int idx = threadIdx.x + i * THREADS, j = idx >> 5, segment = idx & 31;
        actLive[i] = j < rows;
        actSource[i] = input + gemm_input_row(p, tile.rowStart + min(j, rows - 1)) * p.inputStride;
        actTarget[i] = sharedBase + (j * ROW + segment * 8) * 2;
        actK[i] = segment * 8;
    }
    // Code copies: GROUPS × 4 chunks × 32 segments per stage.
    constexpr int CODE_PER_THREAD = GROUPS * 4 * 32 / THREADS;
    auto issue = [&](int g) {
        if (g < p.scaleGroups) {
            const u32 stage = sharedBase + (g % STAGES) * STAGE_BYTES;
#pragma unroll
            for (int i = 0; i < ACT_PER_THREAD; ++i) {
                const int k = g * STAGE_K + actK[i];
                if (actLive[i]) copy_async_16(stage + actTarget[i] - sharedBase, actSource[i] + min(k, p.k - 8), k < p.k ? 16 : 0);
            }
#pragma unroll
            for (int i = 0; i < CODE_PER_THREAD; ++i) {
                const int idx = threadIdx.x + i * THREADS, gi = idx >> 7, ci = (idx >> 5) & 3, segment = idx & 31;
                const int group = blockGroup + gi, chunk = 4 * g + ci;
                const bool valid = group < p.groups && chunk < p.chunks;
                const unsigned char *src =
                    codes + ((expertGroup + min(group, p.groups - 1)) * p.chunks + min(chunk, p.chunks - 1)) * 512 + segment * 16;
                copy_async_16(stage + ACT_BYTES + (gi * 4 + ci) * 512 + segment * 16, src, valid ? 16 : 0);
            }
            for (int idx = threadIdx.x; idx < GROUPS * 8; idx += THREADS) {
                const int gi = idx >> 3, segment = idx & 7, group = blockGroup + gi;
                const unsigned char *src =
                    scales + ((expertGroup + min(group, p.groups - 1)) * p.scaleGroups + g) * 128 + segment * 16;
                copy_async_16(stage + ACT_BYTES + CODE_BYTES + gi * 128 + segment * 16, src, group < p.groups ? 16 : 0);
            }
        }
        copy_async_commit();
    };

    float chains[1][MI][NJ][4];
    zero_accumulators<MI, NJ>(chains[0]);
    u32 rowOffset[NJ];
#pragma unroll
    for (int nj = 0; nj < NJ; ++nj) {
        const int row = min(8 * nj + (lane & 7), rows - 1);
        rowOffset[nj] = (row * ROW + 8 * (lane >> 3)) * 2;
    }

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue(s);
    for (int g = 0; g < p.scaleGroups; ++g) {
        copy_async_wait<STAGES - 2>();
        __syncthreads();
        issue(g + STAGES - 1);
        const u32 stage = sharedBase + (g % STAGES) * STAGE_BYTES;
        const unsigned char *stagePointer = sharedBytes + (g % STAGES) * STAGE_BYTES;
        u32 rowAddress[NJ];
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj) rowAddress[nj] = stage + rowOffset[nj];
        uint4 codes[4][MI];
        u32 words[4][MI];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
            const int gi = warp * MI + mi;
            const uint4 scales = *(const uint4 *)(stagePointer + ACT_BYTES + CODE_BYTES + gi * 128 + (lane >> 2) * 16);
#pragma unroll
            for (int ci = 0; ci < 4; ++ci) {
                codes[ci][mi] = *(const uint4 *)(stagePointer + ACT_BYTES + (gi * 4 + ci) * 512 + lane * 16);
                words[ci][mi] = uint4_component(scales, ci);
            }
        }
        mma_group<MI, NJ, 1>(chains, codes, words, min(4, p.chunks - 4 * g), rowAddress, 0);
    }
    copy_async_wait<0>();
    allow_next_kernel();
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const int group = blockGroup + warp * MI + mi;
#pragma unroll
        for (int nj = 0; nj < NJ; ++nj)
            if (group < p.groups) gemm_epilogue(p, tile, group, nj, chains[0][mi][nj], lane);
    }
}

/// Writes a warpgroup's wgmma accumulators through the epilogue: acc[mi] is the m64nN tile whose 16-row group for
/// warp w of the warpgroup is firstGroup + 4·mi + w (the m16n8 C layout per 8-token column j: acc[mi][4j…4j+3]).
template <int MI, int N>
MOE_DEVICE void warpgroup_epilogue(
    const MoEGemmParams &p, const MoETile &tile, const float (&acc)[MI][N / 2], int firstGroup, int warpInGroup, int lane) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        const int group = firstGroup + 4 * mi + warpInGroup;
        if (group >= p.groups) continue;
#pragma unroll
        for (int j = 0; j < N / 8; ++j) {
            const float c[4] = {acc[mi][4 * j], acc[mi][4 * j + 1], acc[mi][4 * j + 2], acc[mi][4 * j + 3]};
            gemm_epilogue(p, tile, group, j, c, lane);
        }
    }
}

// MARK: warpgroup kernel (large batches, sm_90a)

/// Block: WG warpgroups × MI × 64 weight rows, TOKENS (64 or 128) tokens. Warp w of warpgroup wg owns the 16-row groups
/// ((blockIdx.x·WG + wg)·MI + mi)·4 + w. Per 4-chunk group: each lane's weight bytes arrive through its own
/// 3-slot cp.async ring (as in the resident kernel); the tile's activations for the group go through a 3-stage
/// ring (STAGES deep) in the core-matrix layout wgmma reads ([k/8][token/8][8 tokens][16 B]). Each 64-k
/// chunk is decoded into registers while the previous chunk's wgmma instructions run (two register buffers).
/// Decode work per flop falls as 1/TOKENS. Dynamic shared memory: STAGES × TOKENS × 256 × 2 B activations |
/// warps × STAGES slots × MI × 2560 B.
template <int MI, int WG, int TOKENS, int STAGES>
MOE_DEVICE void gemm_warpgroup(const MoEGemmParams &p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int STAGE_K = 256, TILES = TOKENS / 8;
    constexpr int STAGE_BYTES = TOKENS * STAGE_K * 2, SLOT_BYTES = MI * 5 * 512, WARPS = 4 * WG;
    extern __shared__ __align__(1024) unsigned char sharedBytes[];
    wait_for_previous_kernel();
    if ((int)blockIdx.y >= *(const int *)p.tileCount) return;
    const MoETile tile = ((const MoETile *)p.tiles)[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wg = warp >> 2, warpInGroup = warp & 3;
    const long long expertGroup = (long long)tile.expert * p.groups;
    const u32 activationBase = shared_address(sharedBytes);
    const u32 ring = shared_address(sharedBytes + STAGES * STAGE_BYTES) + warp * STAGES * SLOT_BYTES;
    const unsigned char *ringPointer = sharedBytes + STAGES * STAGE_BYTES + warp * STAGES * SLOT_BYTES;
    const int rows = tile.rowCount;
    const bf16_t *input = (const bf16_t *)p.input;
    int groupOf[MI];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) groupOf[mi] = ((blockIdx.x * WG + wg) * MI + mi) * 4 + warpInGroup;

    // Activation copies: TOKENS × 32 segments of 8 k per stage; 16-byte segment (token j, segment s) lands
    // at core matrix (s, j / 8), row j % 8.
    constexpr int PER_THREAD = TOKENS * 32 / (32 * WARPS);
    const bf16_t *source[PER_THREAD];
    u32 target[PER_THREAD];
    int segmentK[PER_THREAD];
    bool live[PER_THREAD];
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) {
        const int idx = threadIdx.x + i * 32 * WARPS, j = idx % TOKENS, segment = idx / TOKENS;
        live[i] = j < rows;
        source[i] = input + gemm_input_row(p, tile.rowStart + min(j, rows - 1)) * p.inputStride;
        target[i] = ((segment * TILES + (j >> 3)) * 8 + (j & 7)) * 16;
        segmentK[i] = segment * 8;
    }
    const unsigned char *codes = (const unsigned char *)p.codes;
    const unsigned char *scales = (const unsigned char *)p.scales;
    auto issue = [&](int g) {
        if (g < p.scaleGroups) {
            const int slot = g % STAGES;
            const u32 stage = activationBase + slot * STAGE_BYTES;
#pragma unroll
            for (int i = 0; i < PER_THREAD; ++i) {
                const int k = g * STAGE_K + segmentK[i];
                if (live[i]) copy_async_16(stage + target[i], source[i] + min(k, p.k - 8), k < p.k ? 16 : 0);
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                if (groupOf[mi] >= p.groups) continue;
                const long long group = expertGroup + groupOf[mi];
                const u32 slotAddress = ring + slot * SLOT_BYTES + mi * 5 * 512 + lane * 16;
#pragma unroll
                for (int ci = 0; ci < 4; ++ci) {
                    const int c = 4 * g + ci;
                    if (c < p.chunks) copy_async_16(slotAddress + ci * 512, codes + ((group * p.chunks + c) * 32 + lane) * 16, 16);
                }
                copy_async_16(slotAddress + 4 * 512, scales + ((group * p.scaleGroups + g) * 8 + (lane >> 2)) * 16, 16);
            }
        }
        copy_async_commit();
    };

    float acc[MI][TOKENS / 2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int i = 0; i < TOKENS / 2; ++i) acc[mi][i] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue(s);
    for (int g = 0; g < p.scaleGroups; ++g) {
        copy_async_wait<STAGES - 2>();  // this thread's copies for group g have landed
        fence_proxy_async_shared();      // make them visible to the tensor cores' (async proxy) reads
        __syncthreads();                 // everyone's; and every wgmma of group g-1 has completed (see below)
        issue(g + STAGES - 1);
        const int slot = g % STAGES;
        const unsigned char *weights = ringPointer + slot * SLOT_BYTES;
        const u32 stage = activationBase + slot * STAGE_BYTES;
        const int chunksValid = min(4, p.chunks - 4 * g);
        u32 a[2][MI][4][4];  // [buffer][mi][k16 step][register]
        auto decode = [&](int ci, int buffer) {
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const uint4 code = *(const uint4 *)(weights + (mi * 5 + ci) * 512 + lane * 16);
                const u32 word = *(const u32 *)(weights + (mi * 5 + 4) * 512 + lane * 16 + ci * 4);
                const bool slow = mxfp4_needs_slow_path(word);
#pragma unroll
                for (int sp = 0; sp < 2; ++sp) {
                    u32 low[4], high[4];
                    if (slow) {
                        mxfp4_decode_word<true>(uint4_component(code, 2 * sp), word, 2 * sp, low);
                        mxfp4_decode_word<true>(uint4_component(code, 2 * sp + 1), word, 2 * sp + 1, high);
                    } else {
                        mxfp4_decode_word<false>(uint4_component(code, 2 * sp), word, 2 * sp, low);
                        mxfp4_decode_word<false>(uint4_component(code, 2 * sp + 1), word, 2 * sp + 1, high);
                    }
                    a[buffer][mi][2 * sp][0] = low[0];
                    a[buffer][mi][2 * sp][1] = high[0];
                    a[buffer][mi][2 * sp][2] = low[1];
                    a[buffer][mi][2 * sp][3] = high[1];
                    a[buffer][mi][2 * sp + 1][0] = low[2];
                    a[buffer][mi][2 * sp + 1][1] = high[2];
                    a[buffer][mi][2 * sp + 1][2] = low[3];
                    a[buffer][mi][2 * sp + 1][3] = high[3];
                }
            }
        };
        if (chunksValid > 0) decode(0, 0);
#pragma unroll
        for (int ci = 0; ci < 4; ++ci) {
            if (ci < chunksValid) {
                const int buffer = ci & 1;
                wgmma_fence();
#pragma unroll
                for (int ks = 0; ks < 4; ++ks) {
                    // k16 step 4·ci + ks of the stage: core matrices (2·(4ci+ks), 0…7) and the next K column.
                    const unsigned long long descriptor =
                        wgmma_descriptor(stage + (4 * ci + ks) * 2 * TILES * 128, TILES * 128, 128);
#pragma unroll
                    for (int mi = 0; mi < MI; ++mi)
                        warpgroup_mma<TOKENS>(acc[mi], a[buffer][mi][ks][0], a[buffer][mi][ks][1],
                                              a[buffer][mi][ks][2], a[buffer][mi][ks][3], descriptor);
                }
                wgmma_commit();
                if (ci + 1 < chunksValid) {
                    wgmma_wait<1>();  // chunk ci-1's instructions are done: its register buffer is free
                    decode(ci + 1, buffer ^ 1);
                }
            }
        }
        wgmma_wait<0>();  // the stage and the weight slot of group g may be refilled after the next barrier
    }
    copy_async_wait<0>();
    allow_next_kernel();
    warpgroup_epilogue<MI, TOKENS>(p, tile, acc, (blockIdx.x * WG + wg) * MI * 4, warpInGroup, lane);
#else
    asm volatile("trap;");  // built without sm_90a features: the host never launches this kernel there
#endif
}

// MARK: decoded kernel (large batches, sm_90a)

/// Reads this lane's code bytes and scale word of G row groups (group warp + WARPS·i) of 64-k chunk g from a slot
/// laid out [GROUPS × 512 B codes | GROUPS × 128 B scales of the chunk's 256-k group]; returns the warp's vote for
/// the rare decode path (some scale byte > 128).
template <int G, int WARPS, int CODE_BYTES>
MOE_DEVICE bool load_chunk_codes(const unsigned char *slot, int g, int warp, int lane, uint4 (&code)[G], u32 (&word)[G]) {
    bool slow = false;
#pragma unroll
    for (int i = 0; i < G; ++i) {
        const int gi = warp + WARPS * i;
        code[i] = *(const uint4 *)(slot + gi * 512 + lane * 16);
        word[i] = *(const u32 *)(slot + CODE_BYTES + gi * 128 + (lane >> 2) * 16 + (g & 3) * 4);
        slow |= mxfp4_needs_slow_path(word[i]);
    }
    return __any_sync(0xffffffffu, slow);
}

/// Decodes one 64-k chunk of MI row groups (this lane's code words and scale words) into bf16 in shared memory,
/// core-matrix layout [k/8][row/8][8 rows][16 B]: group gi = warp + i·WARPS. The decoded registers are in the mma
/// fragment layout, so stmatrix writes four core matrices per instruction. `at` is this lane's stmatrix row
/// address for group `warp`, sp = 0: core matrix (k8 = lane/8, rows 0..7 of the group), row lane%8.
template <int MI, int WARPS, int ROW_MATRICES, bool Slow>
MOE_DEVICE void decode_to_shared(const uint4 (&code)[MI], const u32 (&word)[MI], u32 at) {
#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
        for (int sp = 0; sp < 2; ++sp) {
            u32 low[4], high[4];
            mxfp4_decode_word<Slow>(uint4_component(code[i], 2 * sp), word[i], 2 * sp, low);
            mxfp4_decode_word<Slow>(uint4_component(code[i], 2 * sp + 1), word[i], 2 * sp + 1, high);
            const u32 offset = (4 * sp * ROW_MATRICES + 2 * i * WARPS) * 128;
            store_matrix_x4(at + offset, low[0], low[1], low[2], low[3]);
            store_matrix_x4(at + offset + 128, high[0], high[1], high[2], high[3]);
        }
    }
}

/// Block: WG warpgroups × MI × 64 weight rows (GROUPS 16-row groups), N tokens; both wgmma operands in shared memory.
/// Each 64-k chunk of weights is decoded ONCE per block, by all warps, from the MXFP4 codes into bf16 in shared
/// memory (the K-major core-matrix layout [k/8][row/8][8 rows][16 B]), then every warpgroup's wgmma reads it:
/// decode work per flop is 1/N, and no weight registers are held across the MMAs. Pipeline per chunk g:
///   cp.async of activations, codes and scales runs AHEAD = STAGES−2 chunks ahead in a ring of STAGES slots;
///   the decode of chunk g (CUDA cores) overlaps the wgmma of chunk g−1 (tensor cores, asynchronous);
///   A is double-buffered; `wgmma.wait_group 1` after each commit keeps one chunk of MMAs in flight.
/// Dynamic shared memory: STAGES × [N × 64 bf16 activations | GROUPS × 512 B codes | GROUPS × 128 B scales]
/// | 2 × GROUPS × 16 rows × 64 bf16 decoded weights.
template <int MI, int WG, int N, int STAGES>
MOE_DEVICE void gemm_decoded(const MoEGemmParams &p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int GROUPS = MI * 4 * WG, ROW_MATRICES = 2 * GROUPS, WARPS = 4 * WG, THREADS = 32 * WARPS;
    constexpr int B_BYTES = N * 64 * 2, CODE_BYTES = GROUPS * 512, SCALE_BYTES = GROUPS * 128;
    constexpr int SLOT_BYTES = B_BYTES + CODE_BYTES + SCALE_BYTES, A_BYTES = GROUPS * 16 * 64 * 2;
    constexpr int AHEAD = STAGES - 2;  // the slot refilled at chunk g held chunk g−2, whose wgmma has completed
    static_assert(AHEAD >= 1 && (N * 8) % THREADS == 0 && GROUPS * 8 <= THREADS, "tile shape");
    extern __shared__ __align__(1024) unsigned char sharedBytes[];
    wait_for_previous_kernel();
    if ((int)blockIdx.y >= *(const int *)p.tileCount) return;
    const MoETile tile = ((const MoETile *)p.tiles)[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wg = warp >> 2, warpInGroup = warp & 3;
    const int blockGroup = blockIdx.x * GROUPS;
    const long long expertGroup = (long long)tile.expert * p.groups;
    const int rows = tile.rowCount;
    const u32 sharedBase = shared_address(sharedBytes);
    const u32 decodedBase = sharedBase + STAGES * SLOT_BYTES;
    const bf16_t *input = (const bf16_t *)p.input;
    const unsigned char *codes = (const unsigned char *)p.codes;
    const unsigned char *scales = (const unsigned char *)p.scales;

    // Copy sources, computed once and advanced by one chunk per issue (the loop's address arithmetic stays small).
    // Activations: 8 segments (8 k each) × N tokens per chunk; eight consecutive threads take eight tokens of one
    // segment (one 128-byte shared-memory row, conflict-free); a warp reads 64 contiguous bytes per token.
    constexpr int ACT_PER_THREAD = N * 8 / THREADS;
    const bf16_t *actSource[ACT_PER_THREAD];
    u32 actTarget[ACT_PER_THREAD];
    int actK[ACT_PER_THREAD];
    bool live[ACT_PER_THREAD];
#pragma unroll
    for (int i = 0; i < ACT_PER_THREAD; ++i) {
        const int idx = threadIdx.x + i * THREADS;
        const int j = (idx >> 6) * 8 + (idx & 7), segment = (idx >> 3) & 7;
        live[i] = j < rows;
        actK[i] = segment * 8;
        actSource[i] = input + gemm_input_row(p, tile.rowStart + min(j, rows - 1)) * p.inputStride + actK[i];
        actTarget[i] = ((segment * (N / 8) + (j >> 3)) * 8 + (j & 7)) * 16;
    }
    // Codes: GROUPS × 32 segments of 16 B per chunk, MI per thread; scales: the 128-byte block of each group's
    // 256-k scale group, one thread per 16 B (rows past the matrix read a valid row and land as zeros).
    const unsigned char *codeSource[MI];
    int codeBytes[MI];
#pragma unroll
    for (int i = 0; i < MI; ++i) {
        const int idx = threadIdx.x + i * THREADS, gi = idx >> 5, segment = idx & 31, group = blockGroup + gi;
        codeSource[i] = codes + (expertGroup + min(group, p.groups - 1)) * p.chunks * 512 + segment * 16;
        codeBytes[i] = group < p.groups ? 16 : 0;
    }
    const bool copiesScales = threadIdx.x < GROUPS * 8;
    const int scaleGroupIndex = min(blockGroup + (int)(threadIdx.x >> 3), p.groups - 1);
    const unsigned char *scaleSource = scales + (expertGroup + scaleGroupIndex) * p.scaleGroups * 128 + (threadIdx.x & 7) * 16;
    const int scaleBytes = blockGroup + (int)(threadIdx.x >> 3) < p.groups ? 16 : 0;
    const u32 codeTarget = B_BYTES + threadIdx.x * 16, scaleTarget = B_BYTES + CODE_BYTES + threadIdx.x * 16;
    auto issue = [&](int c) {
        if (c < p.chunks) {
            const u32 slot = sharedBase + (c % STAGES) * SLOT_BYTES;
#pragma unroll
            for (int i = 0; i < ACT_PER_THREAD; ++i) {
                const bool inside = c * 64 + actK[i] < p.k;  // zeros past K
                if (live[i]) copy_async_16(slot + actTarget[i], inside ? actSource[i] + c * 64 : actSource[i], inside ? 16 : 0);
            }
#pragma unroll
            for (int i = 0; i < MI; ++i) copy_async_16(slot + codeTarget + i * THREADS * 16, codeSource[i] + c * 512, codeBytes[i]);
            if (copiesScales) copy_async_16(slot + scaleTarget, scaleSource + (c >> 2) * 128, scaleBytes);
        }
        copy_async_commit();
    };

    float acc[MI][N / 2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int i = 0; i < N / 2; ++i) acc[mi][i] = 0.0f;

#pragma unroll
    for (int s = 0; s < AHEAD; ++s) issue(s);
#pragma unroll 1
    for (int g = 0; g < p.chunks; ++g) {
        copy_async_wait<AHEAD - 1>();  // this thread's copies of chunk g have landed
        __syncthreads();                // everyone's; and every warp is past iteration g−1's wait: wgmma g−2 is done
        issue(g + AHEAD);
        const unsigned char *slot = sharedBytes + (g % STAGES) * SLOT_BYTES;
        // Decode: warp w takes groups w, w + WARPS, …; lane (gid, tig) holds rows gid and gid+8 of the group at
        // k = 32·sp + 8·q + 2·tig (+1), which land in core matrices (k/8, 2·group) and (k/8, 2·group + 1).
        uint4 code[MI];
        u32 word[MI];
        const bool slow = load_chunk_codes<MI, WARPS, CODE_BYTES>(slot + B_BYTES, g, warp, lane, code, word);
        const u32 decoded = decodedBase + (g & 1) * A_BYTES + ((lane >> 3) * ROW_MATRICES + 2 * warp) * 128 + (lane & 7) * 16;
        if (slow) {
            decode_to_shared<MI, WARPS, ROW_MATRICES, true>(code, word, decoded);
        } else {
            decode_to_shared<MI, WARPS, ROW_MATRICES, false>(code, word, decoded);
        }
        fence_proxy_async_shared();  // this thread's decoded stores and landed copies, visible to the tensor cores
        __syncthreads();
        wgmma_fence();
        const u32 activations = sharedBase + (g % STAGES) * SLOT_BYTES;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
            const unsigned long long descriptorB = wgmma_descriptor(activations + 2 * ks * (N / 8) * 128, (N / 8) * 128, 128);
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const unsigned long long descriptorA = wgmma_descriptor(
                    decodedBase + (g & 1) * A_BYTES + (2 * ks * ROW_MATRICES + 8 * (wg * MI + mi)) * 128, ROW_MATRICES * 128, 128);
                WarpgroupMMAShared<N>::run(acc[mi], descriptorA, descriptorB);
            }
        }
        wgmma_commit();
        wgmma_wait<1>();
    }
    wgmma_wait<0>();
    copy_async_wait<0>();
    allow_next_kernel();
    warpgroup_epilogue<MI, N>(p, tile, acc, blockGroup + wg * MI * 4, warpInGroup, lane);
#else
    asm volatile("trap;");  // built without sm_90a features: the host never launches this kernel there
#endif
}

// MARK: registered kernel (large batches, sm_90a)

/// Copies of one 64-k chunk into a load slot [activations N × 64 (128-byte swizzle) | codes GROUPS × 512 B | scales
/// GROUPS × 128 B of the chunk's 256-k group], FULL an mbarrier a slot (issue_tensor). The copy engine brings the codes
/// and scales, and the activations where they are in sorted order (GEMM 2; GEMM 1 after the gather); otherwise every
/// producer thread copies its activation rows by cp.async (copy_rows: the 8 lanes of a token read its 128 contiguous
/// bytes and write one swizzled row; rows past the tile's, up to its width, rows rounded up to BOX, copy its last row:
/// finite values in columns never stored). Sessions 13–15's cp.async producers (all copies by the producer threads,
/// FULL a named barrier) lost to these and are in git history.
template <int N, int GROUPS, int THREADS>
struct ChunkCopies {
    // Activation rows come in boxes of BOX rows (the input tensor map's; 32- and 96-token tiles: 32, 48-token: 16): a
    // tile's width is its rows rounded up to BOX.
    static constexpr int BOX = N % 64 == 0 ? 64 : (N % 32 == 0 ? 32 : 16);
    static constexpr int B_BYTES = N * 64 * 2, CODE_BYTES = GROUPS * 512, SCALE_BYTES = GROUPS * 128;
    // Slots start on 1 KB (the activations' swizzle atoms): 12 groups' codes and scales leave a 512-byte pad.
    static constexpr int LOAD_BYTES = (B_BYTES + CODE_BYTES + SCALE_BYTES + 1023) / 1024 * 1024;
    static constexpr int ACT_COPIES = 8 * N / THREADS;
    static_assert((8 * N) % THREADS == 0 && N % BOX == 0 && LOAD_BYTES % 1024 == 0, "shape");
    u32 actTarget[ACT_COPIES];
    int segment;
    int width;  // the tile's rows rounded up to BOX
    const unsigned char *rowPointer[ACT_COPIES];  // each copy's source at chunk 0
    // The block's first row group in the weights' tensors (E·G rows), the tile's first row, and whether the activations
    // come by tensor copies too (rows in sorted order, inputIndex 0).
    int mapRow, firstRow;
    bool tensorInput;

    MOE_DEVICE ChunkCopies(const MoEGemmParams &p, const MoETile &tile, int blockGroup, int t) {
        segment = t & 7;
        const bf16_t *input = (const bf16_t *)p.input + segment * 8;
#pragma unroll
        for (int i = 0; i < ACT_COPIES; ++i) {
            const int token = (t + THREADS * i) >> 3;
            // elements (< 2^31: T·H and T·k·I are), then bytes (< 2^32)
            const int rowOffset = (int)(gemm_input_row(p, tile.rowStart + min(token, tile.rowCount - 1)) * p.inputStride);
            actTarget[i] = swizzled_offset(token, segment);
            rowPointer[i] = (const unsigned char *)input + (u32)rowOffset * 2u;
        }
        width = (tile.rowCount + BOX - 1) & ~(BOX - 1);
        mapRow = tile.expert * p.groups + blockGroup;
        firstRow = tile.rowStart;
        tensorInput = p.inputIndex == 0;
    }

    /// Chunk c into `slot`, `full` its FULL mbarrier (nothing past the last chunk). Thread 0 arrives with the chunk's
    /// bytes and has the copy engine bring the codes and scales of the block's row groups, one 2D box each (groups past
    /// the last are the next expert's or zeros: their rows are never stored), and with tensorInput the activations, a
    /// BOX-row box per BOX rows of the tile's width (128-byte swizzle, as swizzled_offset). Otherwise every producer thread
    /// copies its activation rows (copy_rows) and arrives once they have landed.
    MOE_DEVICE void issue_tensor(const MoEGemmParams &p, int c, u32 slot, u32 full, int t) const {
        if (c >= p.chunks) return;
        if (t == 0) {
            const MoEGemmTensorMaps *maps = (const MoEGemmTensorMaps *)p.tensorMaps;
            const int boxes = tensorInput ? width / BOX : 0;
            mbarrier_arrive_expect_bytes(full, GROUPS * (512 + 128) + boxes * BOX * 128);
            // The codes and the scales of the row groups from mapRow (the scales box is a 4-chunk group's), then the
            // activation boxes of BOX rows from firstRow.
            tensor_copy_2d(slot + B_BYTES, &maps->codes, c * 64, mapRow, full);
            tensor_copy_2d(slot + B_BYTES + CODE_BYTES, &maps->scales, (c >> 2) * 16, mapRow, full);
            for (int j = 0; j < boxes; ++j) tensor_copy_2d(slot + j * BOX * 128, &maps->input, c * 64, firstRow + BOX * j, full);
        }
        if (!tensorInput) {
            copy_activation_rows(p, c, slot);
            copy_async_arrive_noinc(full);
        }
    }

    /// This thread's activation copies of chunk c; a chunk wholly before K has one offset for every thread.
    MOE_DEVICE void copy_activation_rows(const MoEGemmParams &p, int c, u32 slot) const {
        if (c * 64 + 64 <= p.k) {
            copy_rows(slot, c * 128, 16);
        } else {
            const bool inside = c * 64 + segment * 8 < p.k;  // zeros past K
            copy_rows(slot, inside ? c * 128 : 0, inside ? 16 : 0);
        }
    }
    /// This thread's activation copies of a chunk, `offset` bytes into each row, rows up to the tile's width.
    MOE_DEVICE void copy_rows(u32 slot, u32 offset, int bytes) const {
        constexpr int STEP = BOX / (THREADS / 8);  // copies a BOX-row step
        const u32 target = slot + actTarget[0];   // copy i: THREADS / 8 · i rows further (the same swizzle phase)
#pragma unroll
        for (int q = 0; q < ACT_COPIES / STEP; ++q) {
            if (q > 0 && width <= BOX * q) break;
#pragma unroll
            for (int i = q * STEP; i < (q + 1) * STEP; ++i)
                copy_async_16(target + i * (THREADS / 8) * 128, rowPointer[i] + offset, bytes);
        }
    }
};

/// The registered kernel's barriers: FULL[s], an mbarrier a slot at fullBarriers + 8·s, and EMPTY[s], the mbarrier
/// empty_mbarrier(fullBarriers, s) after the FULL ones (registered_chunk says what an arrival on it means). EPILOGUE is
/// the consumers' named barrier. Until session 22 EMPTY was a named barrier a slot (E = 0): the consumers worked out its
/// id and thread count each chunk, and it lost to the mbarrier by 0.3–3.1% (run 76).
template <int LOADS> struct RegisteredBarriers {
    static constexpr int EPILOGUE = 1;  // 0 is __syncthreads
    static MOE_DEVICE u32 empty_mbarrier(u32 fullBarriers, int slot) { return fullBarriers + 8 * (LOADS + slot); }
};

/// Thread 0 prefetches the tensor maps' first and initialises the LOADS FULL mbarriers at fullBarriers (one arrival,
/// thread 0's with the bytes, when the copy engine brings everything; else one more a producer thread) and the LOADS
/// EMPTY ones after them (one arrival a consumer warp), then the block syncs.
template <int LOADS, int PRODUCER_THREADS, int CONSUMERS>
MOE_DEVICE void init_registered_barriers(const MoEGemmParams &p, u32 fullBarriers, bool tensorInput) {
    if (threadIdx.x == 0) {
        prefetch_tensor_map(&((const MoEGemmTensorMaps *)p.tensorMaps)->codes);
        for (int s = 0; s < LOADS; ++s) mbarrier_init(fullBarriers + 8 * s, tensorInput ? 1 : PRODUCER_THREADS + 1);
        for (int s = 0; s < LOADS; ++s) mbarrier_init(RegisteredBarriers<LOADS>::empty_mbarrier(fullBarriers, s), 4 * CONSUMERS);
        fence_mbarrier_init();
    }
    __syncthreads();
}

/// The wgmma A fragments of one 32-k half (MXFP4 block sp of a chunk) for a consumer warp: its MI code word pairs
/// decoded into rows gid and gid + 8 of each 16-row group, as the decode-size kernels' mma.sync fragments.
template <int MI, bool Slow>
MOE_DEVICE void registered_fragments(u32 (&a)[MI][2][4], const uint4 (&code)[MI], const u32 (&word)[MI], int sp) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
        u32 low[4], high[4];
        mxfp4_decode_word<Slow>(uint4_component(code[mi], 2 * sp), word[mi], 2 * sp, low);
        mxfp4_decode_word<Slow>(uint4_component(code[mi], 2 * sp + 1), word[mi], 2 * sp + 1, high);
        a[mi][0][0] = low[0];
        a[mi][0][1] = high[0];
        a[mi][0][2] = low[1];
        a[mi][0][3] = high[1];
        a[mi][1][0] = low[2];
        a[mi][1][1] = high[2];
        a[mi][1][2] = low[3];
        a[mi][1][3] = high[3];
    }
}

/// The half's two k16 steps of register-A wgmma m64nWk16 per mi (W ≤ N: a prefix of the m64nN accumulators), one
/// commit group. Kept outside any branch: ptxas serialises wgmma pipelines that cross divergent code. `slot` is the
/// slot's activation descriptor: its k16 steps are +2 in the address field, which holds shared addresses < 256 KB
/// without a carry, so one add a step instead of rebuilding the descriptor (run 69: 1–3% faster with four consumer
/// warpgroups a block).
template <int W, int MI, int N>
MOE_DEVICE void registered_multiply(float (&acc)[MI][N / 2], const u32 (&a)[MI][2][4], int sp, unsigned long long slot) {
    wgmma_fence();
#pragma unroll
    for (int step = 0; step < 2; ++step) {
        const unsigned long long descriptorB = slot + 2 * (2 * sp + step);
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
            warpgroup_mma<W>(*reinterpret_cast<float(*)[W / 2]>(&acc[mi][0]), a[mi][step][0], a[mi][step][1],
                             a[mi][step][2], a[mi][step][3], descriptorB);
    }
    wgmma_commit();
}

/// One chunk of the registered kernel's consumer loop with wgmma width W ≤ N (a prefix of the m64nN accumulators, so
/// tokens ≥ W are neither multiplied nor written): chunk g in slot `slot` (g % LOADS).
/// Wait FULL[slot], read this lane's code words and scale word of its MI row groups, then per half: wait until the wgmma
/// FRAGMENTS halves back has completed (its fragment buffer is free; at the second half chunk g − 1 has completed, so its
/// slot is released to the producers: EMPTY[(g − 1) % L]), decode, issue. With one buffer (FRAGMENTS = 1) the decode of
/// a half waits for the previous half's wgmma, which other warps must cover: it frees 8 registers a thread. The slot's
/// wgmma descriptor by adds from the first slot's (registered_multiply). FULL[s] is the mbarrier at fullBarriers + 8·s
/// (phase g / L). Lane 0 of each consumer warp arrives once a chunk on the EMPTY mbarrier after the current chunk's FULL
/// (fullBarriers + 8·(L + slot), the FULL wait's address plus a constant): "the slot before mine is free". The producers'
/// wait is on the mbarrier after the slot they refill, phase (ahead / L − 1) & 1 (gemm_registered).
template <int W, int MI, int N, int LOADS, int FRAGMENTS, class Copies>
MOE_DEVICE void registered_chunk(
    const MoEGemmParams &p, float (&acc)[MI][N / 2], u32 (&a)[FRAGMENTS][MI][2][4], int g, int slot, u32 sharedBase,
    unsigned long long descriptorHigh, u32 descriptorLow, int lane, u32 fullBarriers) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    mbarrier_wait_parity(fullBarriers + 8 * slot, (g / LOADS) & 1);
    if (p.inputIndex != 0) fence_proxy_async_shared();  // the producers' cp.async activations, to the tensor cores
    const unsigned long long activations = descriptorHigh | (descriptorLow + slot * (Copies::LOAD_BYTES >> 4));
    uint4 code[MI];
    u32 word[MI];
    // One row group a warp (MI = 1): this lane's row group is consumer · 4 + warpInGroup = its warp − 4, so its codes
    // sit at group · 512 + lane · 16 = t · 16 and its scale word at group · 128 + (lane / 4) · 16 = (t · 4) & ~15, with t
    // its index among the consumer threads (128: the producer warpgroup comes first). One register, where ptxas rebuilt
    // both from consumer, warpInGroup and lane every chunk in the loops nearest the register limit: 3–6 instructions a
    // chunk fewer there (wgmma_loops.py, NVRTC 13.0), −0.3 to −1.5% at 512–2560 tokens (run 95, H100).
    static_assert(MI == 1, "registered_chunk addresses one row group a warp");
    const u32 codeOffset = (threadIdx.x - 128u) * 16u;
    // Through the slot's shared address (uniform) plus this thread's offsets, not a generic pointer, from which ptxas
    // moved the slot's address out of the generic window and back every chunk: 1–11 issued instructions a chunk fewer
    // (11 in the 64-token kernel's n40 loop), −0.8 to −1.9% at 1088–1407 tokens, −0.2 / −0.3% at 512 (run 99, H100).
    const u32 slotCodes = sharedBase + slot * Copies::LOAD_BYTES + Copies::B_BYTES;
    code[0] = load_shared_16(slotCodes + codeOffset);
    word[0] = load_shared_4(slotCodes + Copies::CODE_BYTES + (g & 3) * 4 + ((codeOffset >> 2) & ~15u));
    const bool slow = __any_sync(0xffffffffu, mxfp4_needs_slow_path(word[0]));
#pragma unroll
    for (int sp = 0; sp < 2; ++sp) {
        wgmma_wait<FRAGMENTS - 1>();
        // Every warp of the warpgroup read its codes of chunk g − 1 before issuing that chunk's wgmma, and the second
        // half's wait has seen them complete: one arrival a warp. Arrivals past the producers' last wait are never
        // awaited.
        if (sp == 1 && g > 0 && lane == 0) mbarrier_arrive(RegisteredBarriers<LOADS>::empty_mbarrier(fullBarriers, slot));
        if (slow) {
            registered_fragments<MI, true>(a[sp % FRAGMENTS], code, word, sp);
        } else {
            registered_fragments<MI, false>(a[sp % FRAGMENTS], code, word, sp);
        }
        registered_multiply<W, MI, N>(acc, a[sp % FRAGMENTS], sp, activations);
    }
#endif
}

/// The registered kernel's consumer loop: registered_chunk for every chunk. Unrolled by the ring depth (constant slots
/// and descriptor offsets), ptxas serialises the wgmma of any kernel with two widths, and with one width it lost 3–11%
/// at 768–2048 tokens (sessions 20–21, runs 70–71).
/// The slot and its phase as counters rather than g % L and (g / L) & 1 took 2–3 instructions a loop fewer and lost
/// (+0.9 / +0.8% at 2048 tokens; session 26, run 92).
template <int W, int MI, int N, int LOADS, int FRAGMENTS, class Copies>
MOE_DEVICE void registered_consume(
    const MoEGemmParams &p, float (&acc)[MI][N / 2], u32 sharedBase, int lane, u32 fullBarriers) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    u32 a[FRAGMENTS][MI][2][4];  // [buffer][mi][k16 step][register]
    // The descriptor's high word is the same for every slot; the low word's address field takes the offsets.
    const unsigned long long descriptorHigh = wgmma_descriptor_swizzled(0) & ~0xFFFFFFFFull;
    const u32 descriptorLow = (u32)wgmma_descriptor_swizzled(sharedBase);
#pragma unroll 1
    for (int g = 0; g < p.chunks; ++g)
        registered_chunk<W, MI, N, LOADS, FRAGMENTS, Copies>(
            p, acc, a, g, g % LOADS, sharedBase, descriptorHigh, descriptorLow, lane, fullBarriers);
#endif
}

/// Rounded widths (W ≥ 16 in the name): the narrowest of WIDTHS (ascending, the last N) that holds the tile's rows, each
/// width its own consumer loop (a chain of uniform branches, as the two- and three-width kernels), so a tile of 70 rows
/// multiplies at n80, not n96.
template <int MI, int N, int LOADS, int FRAGMENTS, class Copies, int WIDTH, int... WIDER>
MOE_DEVICE void registered_consume_rounded(
    int rows, const MoEGemmParams &p, float (&acc)[MI][N / 2], u32 sharedBase, int lane, u32 fullBarriers) {
    if constexpr (sizeof...(WIDER) > 0) {
        if (rows > WIDTH) {
            registered_consume_rounded<MI, N, LOADS, FRAGMENTS, Copies, WIDER...>(
                rows, p, acc, sharedBase, lane, fullBarriers);
            return;
        }
    }
    registered_consume<WIDTH, MI, N, LOADS, FRAGMENTS, Copies>(p, acc, sharedBase, lane, fullBarriers);
}

/// The registered kernels' epilogue through shared memory (after every consumer's last wgmma, so the load slots are free):
/// each warp rounds its results with gemm_epilogue's arithmetic and writes them with stmatrix.trans into a [token][column]
/// tile (rows padded by 16 B: conflict-free), then the consumers store whole 16-byte pieces of rows. Against the direct
/// epilogue: 8 or 16 stmatrix and a rolled copy loop instead of 64–128 two-byte global stores a thread, and a fraction
/// of the code (the direct one is fully unrolled and runs once a block, from a cold instruction cache).
/// The tile's output rows wait in a table after it: GEMM 2's are an index in global memory, and read in the store loop
/// each cost a global round trip an iteration (run 66's source counters: 16% of GEMM 2's stall samples at 32768 tokens,
/// in a loop that ran once a block with nothing to overlap it). Each consumer thread now reads its row before the
/// first epilogue barrier, so the load passes under stage().
template <int MI, int N, int GROUPS>
struct StagedEpilogue {
    static constexpr int SWIGLU_ROW = GROUPS * 16 + 16, PLAIN_ROW = GROUPS * 32 + 16;  // bytes a token row, padded
    static constexpr int ROWS_OFFSET = N * PLAIN_ROW, BYTES = ROWS_OFFSET + N * 4;      // the row table: an int a row
    static_assert(128 % (8 * MI) == 0, "a row's 16-byte pieces divide a warpgroup's threads (store)");
    static_assert(N <= 128 * (GROUPS / (4 * MI)), "a consumer thread a row of the row table");

    /// Consumer thread t's output row (t < N; 0 past the tile), read before the first epilogue barrier.
    static MOE_DEVICE int output_row(const MoEGemmParams &p, const MoETile &tile, int t) {
        return t < tile.rowCount ? (int)gemm_output_row(p, tile.rowStart + t) : 0;
    }
    /// Puts it in the row table (between stage() and the barrier before store()).
    static MOE_DEVICE void keep_output_row(unsigned char *tilePointer, int t, int row) {
        if (t < N) ((int *)(tilePointer + ROWS_OFFSET))[t] = row;
    }

    /// Rounds this warp's accumulators (row group `localGroup` + 4·mi of the block) into the tile at `tileAddress`.
    static MOE_DEVICE void stage(const MoEGemmParams &p, const MoETile &tile, const float (&acc)[MI][N / 2], int blockGroup,
                                 int localGroup, int lane, u32 tileAddress) {
        const int gid = lane >> 2, tig = lane & 3;
        const float *bias = (const float *)p.bias + (long long)tile.expert * p.n;
        if (p.epilogue == MOE_EPILOGUE_SWIGLU) {
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int local = localGroup + 4 * mi, pair = 8 * (blockGroup + local) + gid;
                const bool valid = blockGroup + local < p.groups;
                const float gateBias = valid ? bias[2 * pair] : 0.0f, upBias = valid ? bias[2 * pair + 1] : 0.0f;
                // x4: 8-token columns 4q … 4q + 3 of the 8 pairs; lanes 8m … 8m + 7 address column 4q + m's tokens. A
                // 48-token tile's last 16 tokens take an x2 (lanes 0–15's addresses).
                const u32 at = tileAddress + (8 * (lane >> 3) + (lane & 7)) * SWIGLU_ROW + local * 16;
#pragma unroll
                for (int q = 0; q < (N + 31) / 32; ++q) {
                    if (32 * q >= tile.rowCount) break;
                    u32 r[4] = {0u, 0u, 0u, 0u};
#pragma unroll
                    for (int m = 0; m < 4; ++m) {
                        const int j = 4 * q + m;
                        if (8 * j >= N) break;
                        float a[2];
#pragma unroll
                        for (int tok = 0; tok < 2; ++tok)
                            a[tok] = swiglu_output(p, acc[mi][4 * j + tok] + gateBias, acc[mi][4 * j + 2 + tok] + upBias);
                        r[m] = pack_bf16x2(a[0], a[1]);
                    }
                    if (32 * q + 32 <= N) {
                        store_matrix_x4_transposed(at + 32 * q * SWIGLU_ROW, r[0], r[1], r[2], r[3]);
                    } else {
                        store_matrix_x2_transposed(at + 32 * q * SWIGLU_ROW, r[0], r[1]);
                    }
                }
            }
        } else {
            const float *rowWeights = (const float *)p.rowWeights;
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int local = localGroup + 4 * mi, h0 = 16 * (blockGroup + local) + gid;
                const bool valid = blockGroup + local < p.groups;
                const float b0 = valid ? bias[h0] : 0.0f, b1 = valid ? bias[h0 + 8] : 0.0f;
                // x4: rows 0–7 and 8–15 of 8-token columns 2q and 2q + 1; lanes 8m … 8m + 7 address matrix m's tokens.
                const u32 at = tileAddress + (8 * (lane >> 4) + (lane & 7)) * PLAIN_ROW + local * 32 + ((lane >> 3) & 1) * 16;
#pragma unroll
                for (int q = 0; q < N / 16; ++q) {
                    if (16 * q >= tile.rowCount) break;
                    u32 r[4];
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int j = 2 * q + half, token = 8 * j + 2 * tig;
                        const float w0 = token < tile.rowCount ? rowWeights[tile.rowStart + token] : 0.0f;
                        const float w1 = token + 1 < tile.rowCount ? rowWeights[tile.rowStart + token + 1] : 0.0f;
                        r[2 * half] = pack_bf16x2(w0 * (acc[mi][4 * j] + b0), w1 * (acc[mi][4 * j + 1] + b0));
                        r[2 * half + 1] = pack_bf16x2(w0 * (acc[mi][4 * j + 2] + b1), w1 * (acc[mi][4 * j + 3] + b1));
                    }
                    store_matrix_x4_transposed(at + 16 * q * PLAIN_ROW, r[0], r[1], r[2], r[3]);
                }
            }
        }
    }

    /// The tile's rows to the output, 16 bytes a store, by the `threads` threads numbered `t` (a multiple of 128, so of
    /// a row's pieces: each thread keeps one piece of every threads / pieces-th row, with no division in the loop).
    /// Outputs are allocation starts with strides I or H (multiples of 32), so every piece is 16-byte aligned.
    static MOE_DEVICE void store(const MoEGemmParams &p, const MoETile &tile, int blockGroup, const unsigned char *tilePointer,
                                 int t, int threads) {
        const bool swiglu = p.epilogue == MOE_EPILOGUE_SWIGLU;
        const int pieces = swiglu ? GROUPS : 2 * GROUPS, rowBytes = swiglu ? SWIGLU_ROW : PLAIN_ROW;  // 16-byte pieces a row
        const int validPieces = swiglu ? min(GROUPS, p.groups - blockGroup) : 2 * min(GROUPS, p.groups - blockGroup);
        const int piece = t % pieces, step = threads / pieces;
        if (piece >= validPieces) return;
        const int *rows = (const int *)(tilePointer + ROWS_OFFSET);
        bf16_t *out = (bf16_t *)p.output + (swiglu ? 8 : 16) * blockGroup + piece * 8;
#pragma unroll 4
        for (int row = t / pieces; row < tile.rowCount; row += step)
            *(uint4 *)(out + (long long)rows[row] * p.outputStride) = *(const uint4 *)(tilePointer + row * rowBytes + piece * 16);
    }
};

/// The large-batch kernel: MXFP4 decoded in the consumers' registers (Hopper's mixed-input GEMM scheme), warp-specialised.
/// Block: one producer warpgroup and CONSUMERS consumer warpgroups; 64·MI·CONSUMERS weight rows × N tokens.
///   producer (few registers): only copies (ChunkCopies::issue_tensor), every one of the LOADS slots at once, then each
///     again once its chunk's wgmma have completed (EMPTY, an mbarrier); FULL[s] is an mbarrier the copies complete;
///   consumers: each 32-k half decoded into wgmma A fragments (FRAGMENTS buffers: with two, the next half is decoded
///     while the tensor cores run this one) and multiplied by register-A wgmma m64nWk16 with the activations from shared
///     memory;
///     then the epilogue staged through shared memory (StagedEpilogue).
/// No decoded weights pass through shared memory, unlike sessions 3–12's specialised kernel (producers decoded each
/// chunk into shared memory for both-operands-in-shared wgmma). What each choice gained (4 load slots, the staged
/// epilogue, copies from pointers, tensor copies, four consumer warpgroups, 64- and 256-token tiles, descriptors by adds)
/// is in docs/bench-cuda.md, sessions 13–20. (Protocol model: scripts/gpu/models/registered.py.)
template <int MI, int N, int LOADS, int PRODUCER_REGISTERS, int CONSUMER_REGISTERS, int CONSUMERS, int NARROW, int BLOCKS,
          int FRAGMENTS, bool HANDOVER>
MOE_DEVICE void gemm_registered(const MoEGemmParams &p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int GROUPS = MI * 4 * CONSUMERS, PRODUCER_THREADS = 128, THREADS = PRODUCER_THREADS + 128 * CONSUMERS;
    using Copies = ChunkCopies<N, GROUPS, PRODUCER_THREADS>;
    static_assert((N == 32 || N == 48 || N == 64 || N == 96 || N == 128 || N == 192) && LOADS >= 2, "shape");
    static_assert(setmaxnreg_fits(THREADS, PRODUCER_THREADS, PRODUCER_REGISTERS, CONSUMER_REGISTERS, BLOCKS), "registers");
    extern __shared__ __align__(1024) unsigned char sharedBytes[];
    if constexpr (HANDOVER) {
        // The tile hand-over (the `_handover` entry points, p.tileRole; LaunchPlan.tileHandOver): GEMM 1 lets GEMM 2
        // launch once every GEMM 1 block has started and counts its finished blocks a tile; GEMM 2 waits for its own
        // tile's GEMM 1 blocks instead of all of GEMM 1, so it takes the SMs GEMM 1's last wave leaves idle. The plan
        // GEMM 2 reads was complete before GEMM 1 started.
        if (p.tileRole != 2) wait_for_previous_kernel();
        if (p.tileRole == 1) allow_next_kernel();
    } else {
        wait_for_previous_kernel();
    }
    if ((int)blockIdx.y >= *(const int *)p.tileCount) return;
    if constexpr (HANDOVER) {
        if (p.tileRole == 2) {
            wait_for_tile(p);
            fence_proxy_async_global();  // GEMM 1's stores, before this block's tensor copies read them
        }
    }
    const MoETile tile = ((const MoETile *)p.tiles)[blockIdx.y];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int blockGroup = blockIdx.x * GROUPS;
    const u32 sharedBase = (shared_address(sharedBytes) + 1023u) & ~1023u;  // swizzle atoms need 1 KB alignment
    unsigned char *sharedPointer = sharedBytes + (sharedBase - shared_address(sharedBytes));
    // The FULL and EMPTY mbarriers after the slots (LaunchPlan's sharedBytes); thread 0 alone copies GEMM 2's chunks, so
    // only its warp of the producers waits on EMPTY.
    const u32 fullBarriers = sharedBase + LOADS * Copies::LOAD_BYTES;
    const bool tensorInput = p.inputIndex == 0;
    init_registered_barriers<LOADS, PRODUCER_THREADS, CONSUMERS>(p, fullBarriers, tensorInput);

    if (warp < PRODUCER_THREADS / 32) {
        registers_decrease<PRODUCER_REGISTERS>();
        const int t = threadIdx.x;
        if (tensorInput && warp != 0) return;
        const Copies copies(p, tile, blockGroup, t);
#pragma unroll
        for (int c = 0; c < LOADS; ++c) copies.issue_tensor(p, c, sharedBase + c * Copies::LOAD_BYTES, fullBarriers + 8 * c, t);
#pragma unroll 1
        for (int ahead = LOADS; ahead < p.chunks; ++ahead) {
            const int slot = ahead % LOADS;
            const u32 freed = RegisteredBarriers<LOADS>::empty_mbarrier(fullBarriers, (slot + 1) % LOADS);
            mbarrier_wait_parity(freed, (ahead / LOADS - 1) & 1);
            copies.issue_tensor(p, ahead, sharedBase + slot * Copies::LOAD_BYTES, fullBarriers + 8 * slot, t);
        }
        copy_async_wait<0>();
        return;
    }

    registers_increase<CONSUMER_REGISTERS>();
    const int consumer = (warp - PRODUCER_THREADS / 32) >> 2, warpInGroup = warp & 3;
    float acc[MI][N / 2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int i = 0; i < N / 2; ++i) acc[mi][i] = 0.0f;
    // Each tile multiplies at the narrowest wgmma width its rows allow (MOE_CUDA_HALF_TILES=0, p.fullWidthOnly: the full
    // width always). Rounded widths (NARROW = 16, 24 for the 32-token kernel's n16 / n24 / n32, 40 for the 64-token
    // kernel's n32 / n40 / n48 / n64; sessions 25 and 28): the narrowest of a list that holds the tile's rows, each
    // width its own consumer loop, as many loops as ptxas keeps pipelined (a loop more and it serialises every wgmma,
    // C7511, NVRTC 13.0). The plain 192-token kernel (NARROW = 0, from 5376 tokens, where an expert's last tile is often
    // short): the rows rounded up to 64.
    static_assert((NARROW == 0 && N == 192) || (NARROW == 16 && N != 32 && N != 64) || (NARROW == 24 && N == 32) ||
                      (NARROW == 40 && N == 64),
                  "the widths' form");
    if constexpr (NARROW >= 16) {
        const int rows = p.fullWidthOnly ? N : tile.rowCount;
#define MOE_ROUNDED(...) registered_consume_rounded<MI, N, LOADS, FRAGMENTS, Copies, __VA_ARGS__>(                          \
            rows, p, acc, sharedBase, lane, fullBarriers)
        if constexpr (N == 32) MOE_ROUNDED(16, 24, 32);
        if constexpr (N == 48) MOE_ROUNDED(32, 48);
        if constexpr (N == 64) MOE_ROUNDED(32, 40, 48, 64);
        if constexpr (N == 96) MOE_ROUNDED(48, 64, 80, 96);
        if constexpr (N == 128) MOE_ROUNDED(96, 128);
        if constexpr (N == 192) MOE_ROUNDED(128, 160, 192);
#undef MOE_ROUNDED
    } else {
        const int width = p.fullWidthOnly ? N : (tile.rowCount + 63) / 64 * 64;
        if (width <= 64) {
            registered_consume<64, MI, N, LOADS, FRAGMENTS, Copies>(p, acc, sharedBase, lane, fullBarriers);
        } else if (width == 128) {
            registered_consume<128, MI, N, LOADS, FRAGMENTS, Copies>(p, acc, sharedBase, lane, fullBarriers);
        } else {
            registered_consume<192, MI, N, LOADS, FRAGMENTS, Copies>(p, acc, sharedBase, lane, fullBarriers);
        }
    }
    wgmma_wait<0>();
    allow_next_kernel();
    using Epilogue = StagedEpilogue<MI, N, GROUPS>;
    static_assert(Epilogue::BYTES <= LOADS * Copies::LOAD_BYTES, "the staged epilogue reuses the load slots");
    constexpr int EPILOGUE = RegisteredBarriers<LOADS>::EPILOGUE, CONSUMER_THREADS = 128 * CONSUMERS;
    const int outputRow = Epilogue::output_row(p, tile, threadIdx.x - PRODUCER_THREADS);
    named_barrier_sync(EPILOGUE, CONSUMER_THREADS);  // every consumer's wgmma has completed: the slots are free
    Epilogue::stage(p, tile, acc, blockGroup, consumer * MI * 4 + warpInGroup, lane, sharedBase);
    Epilogue::keep_output_row(sharedPointer, threadIdx.x - PRODUCER_THREADS, outputRow);
    named_barrier_sync(EPILOGUE, CONSUMER_THREADS);
    Epilogue::store(p, tile, blockGroup, sharedPointer, threadIdx.x - PRODUCER_THREADS, CONSUMER_THREADS);
    if constexpr (HANDOVER) {
        if (p.tileRole == 1)
            signal_tile_ready(p, [] { named_barrier_sync(EPILOGUE, CONSUMER_THREADS); }, threadIdx.x == PRODUCER_THREADS);
    }
#else
    asm volatile("trap;");  // built without sm_90a features: the host never launches this kernel there
#endif
}

// MARK: instantiations (names are looked up by CUDABackend; keep in sync with LaunchPlan.swift)

// BULK: the weight rings are filled by the copy engine (bulk_copy_weight_group); MOE_RESIDENT_BULK=1 (the kernel build
// switch MOE_CUDA_RESIDENT_BULK, for A/B runs) makes every resident kernel do so. Bulk 8-warp kernels are bounded to the
// three blocks per SM the others get (unbounded, ptxas gives them 86 registers).
#define MOE_RESIDENT(MI, NJ, WN, WK, S, BULK)                                                          \
    extern "C" __global__ void MOE_RESIDENT_BOUNDS_##BULK(WN, WK)                                      \
        moe_gemm_resident_##MI##_##NJ##_##WN##_##WK##_##S(MoEGemmParams p) {                           \
        MOE_TRACE_KERNEL(p);                                                                           \
        gemm_resident<MI, NJ, WN, WK, S, BULK>(p);                                                     \
    }
#define MOE_RESIDENT_BOUNDS_1(WN, WK) __launch_bounds__(32 * WN * WK, WN * WK == 8 ? 3 : 1)
#if MOE_RESIDENT_BULK
#define MOE_RESIDENT_BOUNDS_0(WN, WK) MOE_RESIDENT_BOUNDS_1(WN, WK)
#else
#define MOE_RESIDENT_BOUNDS_0(WN, WK) __launch_bounds__(32 * WN * WK)
#endif

// B blocks per SM: two (at most 128 registers) lets one block's barrier stalls be covered by the other's work.
#define MOE_STAGED(MI, NJ, WN, S, B)                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * WN, B) moe_gemm_staged_##MI##_##NJ##_##WN##_##S(MoEGemmParams p) { \
        MOE_TRACE_KERNEL(p);                                                                           \
        gemm_staged<MI, NJ, WN, S>(p);                                                                 \
    }

MOE_RESIDENT(1, 1, 4, 1, 4, 1)
MOE_RESIDENT(1, 1, 2, 2, 4, 0)
MOE_RESIDENT(1, 1, 4, 2, 3, 0)
MOE_RESIDENT(1, 1, 2, 4, 3, 0)
MOE_RESIDENT(1, 1, 8, 1, 3, 0)
MOE_STAGED(2, 4, 8, 2, 2)
MOE_STAGED(2, 8, 8, 3, 1)
MOE_STAGED(1, 8, 8, 2, 2)

#define MOE_WARPGROUP(MI, WG, N, S)                                                                    \
    extern "C" __global__ void __launch_bounds__(128 * WG, 1)                                          \
        moe_gemm_warpgroup_##MI##_##WG##_##N##_##S(MoEGemmParams p) {                                  \
        MOE_TRACE_KERNEL(p);                                                                           \
        gemm_warpgroup<MI, WG, N, S>(p);                                                               \
    }

MOE_WARPGROUP(2, 2, 64, 3)

#define MOE_DECODED(MI, WG, N, S)                                                                      \
    extern "C" __global__ void __launch_bounds__(128 * WG, 1)                                          \
        moe_gemm_decoded_##MI##_##WG##_##N##_##S(MoEGemmParams p) {                                    \
        MOE_TRACE_KERNEL(p);                                                                           \
        gemm_decoded<MI, WG, N, S>(p);                                                                 \
    }

MOE_DECODED(2, 2, 128, 4)

// One producer warpgroup (copies only) and C consumer warpgroups that decode; PR, CR: the registers setmaxnreg gives
// each (the consumers take only what the producers free of the launch's 65536 / (K · threads): setmaxnreg_fits). The
// name's numbers (NAME spells them, as GemmVariant does; trailing defaults left out): MI, N (tile rows), L (load slots), C,
// B = 1 (the activations' wgmma descriptors by adds from the first slot's), S = 1 (the epilogue staged through shared
// memory), Q = 2 (copies from pointers), T = 1 (tensor copies), P = 0 (not persistent), W (the wgmma widths: 16 rounded,
// 24 the 32-token kernel's n16 / n24 / n32, 40 the 64-token kernel's n32 / n40 / n48 / n64, 0 the plain 192-token
// kernel's n64 / n128 / n192; gemm_registered), U = 0 (the consumer loop rolled), K (blocks an SM, the launch bounds'
// minimum), E = 1 (EMPTY an mbarrier a slot; registered_chunk), F (A-fragment buffers; 2 unless the name has a
// fourteenth number).
// Sessions 13–23 measured over 30 other forms (two to six consumer warpgroups, 6 slots, the lean producer, cp.async
// activations, a persistent kernel, three wgmma widths, unrolled loops, EMPTY a named barrier); each lost to these in an
// A/B on an H100 and was removed. Their names, figures and commands are in docs/bench-cuda.md and BENCHMARKS.md, their
// code in git history.
#define MOE_REGISTERED_KERNEL(NAME, MI, N, L, C, B, S, Q, T, P, W, U, K, E, F, PR, CR)                                 \
    static_assert(B == 1 && S == 1 && Q == 2 && T == 1 && P == 0 && U == 0 && E == 1, "the registered kernels' form"); \
    extern "C" __global__ void __launch_bounds__(128 * (C + 1), K) NAME(MoEGemmParams p) {                             \
        MOE_TRACE_KERNEL(p);                                                                                           \
        gemm_registered<MI, N, L, PR, CR, C, W, K, F, false>(p);                                                       \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(128 * (C + 1), K) NAME##_handover(MoEGemmParams p) {                  \
        MOE_TRACE_KERNEL(p);                                                                                           \
        gemm_registered<MI, N, L, PR, CR, C, W, K, F, true>(p);                                                        \
    }

// 64-token tiles (1088–1407 tokens; n32 up to 32 rows and n64 beyond until session 25), with six consumer warps a
// scheduler: three consumer warpgroups and two blocks an SM (K = 2) fit 64 registers only with one A-fragment buffer (F
// = 1; with two, ptxas serialises the wgmma, C7512). Runs 80–82: −5.2 / −5.0% at 1280 against two warpgroups and two
// buffers (gone); against the 48-token kernel −5.0 / −4.3% at 1152, level at 1024; against the five-warpgroup 96-token
// kernel +0.6 / +0.9% at 1408 and +3.1 / +3.2% at 1536, which was +2.8 / +2.1% against it at 1280.
// Five or six warpgroups a block with two buffers (88 and 80 registers) were level and +1.0 to +2.0% at 1280–1536 (run
// 81) and are gone.
// Rounded widths n32, n48, n64 (session 25): run 89, −4.9 / −4.0% at 1152, −4.4 / −4.9% at 1280, −2.8 / −2.6% at 1408
// against n32 / n64 (gone).
// n32, n40, n48, n64 (W = 40) since session 28, by tile_widths.py 1.11 of the rows at 1088–1407 against 1.16–1.23 for
// n32, n48, n64: run 93, −2.0 / −1.5% at 1088, −0.4 / −0.3% at 1280, −0.5 / −0.8% at 1407 against that form (gone);
// its n40 loop stage-checked at 300 and 2000 tokens of gpt-oss-20b (run 95).
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1, 1, 64, 4, 3, 1, 1, 2, 1, 0, 40, 0, 2, 1, 1, 24, 72)
// 32-token tiles (session 22; 200–735 tokens since run 90, against 8-token tiles −7.6 / −7.1% at 224, +2.1 / +1.9% at
// 192): six consumer warps a scheduler where the 64-token kernel had four, since run 75's stall samples say the
// mid-size GEMMs wait on their own instruction chains (wait 27%, selected 15%, 7.2 cycles an issue); 16 accumulators a
// thread. Two blocks an SM of three consumer warpgroups (64 registers): run 77, −5.1 to −9.1% at 256–512 and −1.4 to
// −2.7% at 768 against the defaults there. Three blocks of two (56 registers) got −6.4 to −8.7% at 384–512 against −7.5
// to −9.1% for these, and are gone; so are seven warpgroups and one block an SM (seven warps a scheduler in 64
// registers; GEMM 2's last 448-row block 8.9% past H): −0.6 to +3.3% at 256–768 (run 83). 48-token tiles in that form
// serialise their wgmma (C7512), 64-token ones with one buffer spill.
// Rounded widths n16, n24, n32 (session 25; W = 24): n16 / n32 got −5.3 / −5.5% at 512 and −3.3 / −2.8% at 768 against
// n32 alone (run 89), and n16 / n24 / n32 −0.8 to −1.9% at 384–768 against n16 / n32 (run 90). Both others are gone.
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_32_4_3_1_1_2_1_0_24_0_2_1, 1, 32, 4, 3, 1, 1, 2, 1, 0, 24, 0, 2, 1, 2, 24, 72)
// 48-token tiles (session 22; 736–1087 tokens since run 90, −6.7 / −4.0% at 768 and level at 704 against 32-token
// ones): the same six consumer warps a scheduler, 24 accumulators, so that experts of 33–48 rows take one tile where
// the 32-token kernel decodes their weights twice (run 77: +13.8 / +13.7% at 1024); activation boxes of 16 rows. 64
// registers, no spills, no serialised wgmma (NVRTC 13.0). Runs 78–79: −0.9 to −6.1% at 832–1152 against the 64-token
// kernel of the time.
// Rounded widths n32, n48 (session 25): run 89, −6.3 / −5.3% at 896, −3.9 / −3.9% at 1024 against n48 alone (gone); n16
// as a third width serialised the wgmma (C7511).
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_48_4_3_1_1_2_1_0_16_0_2_1, 1, 48, 4, 3, 1, 1, 2, 1, 0, 16, 0, 2, 1, 2, 24, 72)
// 96-token tiles (1408–2687 tokens, session 23; n64 up to 64 rows and n96 beyond until session 25): five consumer
// warpgroups and one
// block an SM, one A-fragment buffer. setmaxnreg hands the consumers more than the launch's 65536 / threads: ptxas
// compiles their code to CR (88) and checks each instruction against the launch's 80 (n96 needs 78); with two buffers
// it serialises the wgmma (C7512). Five consumer warps a scheduler where four warpgroups with two buffers had four: run
// 81, −6.2 / −6.1% at 1792, −4.7 / −4.8% at 2048, −5.3 / −5.5% at 2304 against them (gone), −2.5 / −2.3% at 1536
// against the 64-token kernel, +6.9 / +6.1% at 3072 against the 128-token one; run 82, against the 128-token kernel
// −2.6 / −1.8% at 2560 and +2.3 / +2.6% at 2816. 20 row groups a block: GEMM 2 of gpt-oss (H = 2880) takes 9 blocks
// across. Six warpgroups do not fit n96 (C7602 at the launch's 72).
// Six load slots (session 24): one block an SM, so the slots alone keep its copies in flight; run 85, two rounds against
// four: −1.2 / −1.1% at 1536, −0.4 / −1.3% at 2048, −0.1 / +0.3% at 2560 (run 76 had found six level with four
// warpgroups). With six at 192-token tiles: +0.6 / +0.2% at 4096, −0.0 / −2.6% at 6144, +1.3 / −1.2% at 8192 (gone).
// Each k16 step its own wgmma commit group (the decode of a step under the previous step's wgmma, where a half's waits for
// the previous half's) lost: +4.6 to +5.7% at 1536–2560, +4.3 to +4.8% on gpt-oss-20b at 384–640 (run 86); so did the
// 64-token kernel's, +4.8 to +7.0% at 1152–1408. Gone (git history: commit a7f5ccc).
// Rounded widths n48, n64, n80, n96 (session 25): run 89, −3.8 / −3.5% at 1536, −2.7 / −2.2% at 2048, −2.4 / −2.7% at 2560
// against n64 / n96 (gone); n32 as a fifth width serialised the wgmma (C7511).
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1, 1, 96, 6, 5, 1, 1, 2, 1, 0, 16, 0, 1, 1, 1, 24, 88)
// Persistent (session 32, P = 1: one block an SM taking the work items in turn, the ring running on across them, the
// epilogue through its own tile, one item loop a width): correct, and +15 to +19% at 1408–2687 tokens, +16 to +29% on
// gpt-oss-20b at 352–640 (run 108, H100; the 2048-token trace: GEMM 1 660 → 778 µs, GEMM 2 345 → 470). Not profiled:
// by balance its static order costs at most ~4 points (scripts/gpu/models/item_order.py); the suspect is its walk of
// the items once a width, which scatters a tile's row blocks in time, so their shared activations leave L2 between
// reads (docs/bench-cuda.md "Session 32"). Gone; its code is at 70ca1d4.
// Eight load slots (session 27; slot and phase by a mask and a shift, two chunks more in flight against the FULL
// waits): +0.1 to +0.9% at 1536–2560 in run 95 (gone).
// 128-token tiles (2688–3199 tokens; run 90 against 192-token ones −3.4 / −1.3% at 3072, +3.1 / +2.0% at 3328).
// n64 up to 64 rows and n128 beyond until session 25. The consumers need 112 registers (at 104 ptxas serialised the
// wgmma, C7512); the producers keep 32 (at 24 ptxas spilled 84 bytes in their loop). Five warpgroups do
// not fit n128 (C7602 at the launch's 80: 94 needed).
// Rounded widths n96, n128 (session 25): run 89, −3.6 / −4.5% at 2816 against n64 / n128 (gone); n64, n96, n128
// serialised the wgmma (C7511).
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_128_4_4_1_1_2_1_0_16_0_1_1, 1, 128, 4, 4, 1, 1, 2, 1, 0, 16, 0, 1, 1, 2, 32, 112)
// 192-token tiles (session 24; this plain form from 5376 tokens, the rounded one below before): three consumer
// warpgroups, three consumer warps a scheduler where the 256-token kernel (gone) had two; widths n64, n128 and n192 by
// the tile's rows. Two A-fragment buffers fit with the producers at 56 and the consumers at 152 (at 88 / 136 ptxas
// serialises the wgmma, C7511). Run 84, two rounds each against the 256-token kernel: −8.5 / −10.5% at 4096, −4.7 /
// −2.1% at 6144, −7.4 / −6.0% at 8192; one buffer (88 / 136) −7.4 / −7.5%, −1.0 / −1.4%, −6.1 / −5.4% (gone). Run 85:
// the 256-token kernel +4.0 to +5.3% at 12288–32768 (and +3.0 to +7.7% on gpt-oss-20b at 1024–8192), the 128-token one
// +9.1 / +8.8% at 4096; against the 128-token default +2.3 / +1.4% at 2816, −2.6 / −2.7% at 3328, −3.9 / −4.7% at 3584
// (run 84: −1.6 / −0.3% at 3072, where it starts). The 256-token kernel, the default from 4096 in sessions 21–23, is
// gone. 224-token tiles do not fit three warpgroups (C7602 at the launch's 128: 142 needed).
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_192_4_3_1_1_2_1_0_0_0_1_1, 1, 192, 4, 3, 1, 1, 2, 1, 0, 0, 0, 1, 1, 2, 56, 152)
// Rounded widths n128, n160, n192 (session 25): run 89, −3.1 / −3.3% at 4096, +3.9 / +1.7% at 8192 against the plain
// kernel above; run 90, the plain one forced +3.3 / +2.0% at 4608 and +1.6 / +1.1% at 5120, this one forced +2.1 / +2.1%
// at 5632 and +4.4 / +1.6% at 6144: 3200–5375 tokens. A fourth width serialised the wgmma (C7511).
MOE_REGISTERED_KERNEL(moe_gemm_registered_1_192_4_3_1_1_2_1_0_16_0_1_1, 1, 192, 4, 3, 1, 1, 2, 1, 0, 16, 0, 1, 1, 2, 56, 152)

// MARK: gather

/// gathered[slotToSorted[t·k + j], h…h+7] = x[t, h…h+7] for j < k: GEMM 1's activations in sorted order, so that a
/// registered kernel with tensor copies brings them by the copy engine too (T·k·H·2 bytes written). By token, so each
/// row of x is read once: by sorted row (session 18) each was read k times, which past L2 (32768 tokens: x is 189 MB)
/// is k times from DRAM (run 62: 503.5 µs at 32768 tokens, 3 TB/s for 1.5 GB; by token, run 63: 358.0 µs).
/// Run 87 (ncu, alone): 355 µs at 32768 tokens, DRAM 77.5%; with every row index read before the first store (each is
/// read after the previous store here) −0.7 to +0.6% at 2048–32768, and the reduce likewise −0.7 to +0.4% (89.5%).
/// grid: (T, ceil(H / 8 / 128)), 128 threads; a thread copies 16 B to each of the token's rows (H is a multiple of 32).
extern "C" __global__ void __launch_bounds__(128) moe_gather_rows(MoEGatherParams p) {
    MOE_TRACE_KERNEL(p);
    wait_for_previous_kernel();
    const int h = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
    if (h >= p.hidden) return;
    const long long token = blockIdx.x;
    const uint4 row = *(const uint4 *)((const bf16_t *)p.input + token * p.hidden + h);
    const int *sorted = (const int *)p.slotToSorted + token * p.topK;
    for (int j = 0; j < p.topK; ++j) {
        const long long r = sorted[j];
        if (r >= 0) *(uint4 *)((bf16_t *)p.output + r * p.hidden + h) = row;
    }
}

// MARK: reduce

/// out[t, h] = bf16(Σ_j combine[t·k + j, h]) over routed slots j in slot order, fp32.
/// grid: (T, ceil(H / 8 / 128)), 128 threads; a thread owns 8 consecutive h (16 B).
extern "C" __global__ void __launch_bounds__(128) moe_reduce(MoEReduceParams p) {
    MOE_TRACE_KERNEL(p);
    wait_for_previous_kernel();
    const int h = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
    if (h >= p.hidden) return;
    reduce_eight<false>((const bf16_t *)p.combine, (const int *)p.slotToSorted, (bf16_t *)p.output, blockIdx.x, h, p.topK, p.hidden);
}
