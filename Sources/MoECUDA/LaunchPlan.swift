import CCUDA
import MoECore

/// The grouped-GEMM kernels built into moe_experts.cu (names must match its MOE_RESIDENT / MOE_STAGED lines).
public enum GemmVariant: String, CaseIterable, Sendable, Equatable {
    /// Decode: 64 weight rows × 8 tokens per block (4 warps × 16 rows, whole K each), activation tile in shared
    /// memory, a 4-slot weight ring per warp filled by the copy engine (`cp.async.bulk`, an mbarrier per slot).
    case resident_1_1_4_1_4
    /// Decode: 32 rows × 8 tokens (2 warps × 16 rows, K split over 2), 4-slot rings.
    case resident_1_1_2_2_4
    /// Decode: 64 rows × 8 tokens, 8 warps (K split over 2), 3-slot rings.
    case resident_1_1_4_2_3
    /// Decode: 32 rows × 8 tokens, 8 warps (K split over 4), 3-slot rings.
    case resident_1_1_2_4_3
    /// 128 rows × 8 tokens (8 warps × 16 rows, whole K each), 3-slot rings.
    case resident_1_1_8_1_3
    /// 256 weight rows × 32 tokens per block (8 warps × 32 rows), codes and activations staged through a
    /// 2-stage shared-memory ring (two blocks per SM).
    case staged_2_4_8_2
    /// 256 rows × 64 tokens, 3 stages.
    case staged_2_8_8_3
    /// 128 rows × 64 tokens (8 warps × 16 rows), 2 stages.
    case staged_1_8_8_2
    /// sm_90a: 256 weight rows × 64 tokens per block, two warpgroups issuing wgmma m64n64k16 with the decoded
    /// weights as the register operand and the activations read by the tensor cores from shared memory; 3 stages.
    case warpgroup_2_2_64_3
    /// sm_90a: 256 weight rows × 128 tokens; each 64-k chunk of weights decoded once per block into bf16 in shared
    /// memory and read by wgmma with the activations (both operands in shared memory); 4-slot copy ring.
    case decoded_2_2_128_4
    /// sm_90a, warp-specialised with the decode in the consumers' registers (registered_MI_N_L_C_B_S_Q_T_P_W_U_K_E[_F]):
    /// one producer warpgroup only copies, by the copy engine (tensor copies: each chunk's codes and scales one 2D box
    /// each, sorted activations in boxes of activationBoxRows; GEMM 1's gathered rows too, TokenBucket.gatherRowsSwitch), into L (4;
    /// 6 for the 96-token kernel) load slots whose FULL is an mbarrier; C consumer warpgroups of 64 weight rows (MI = 1) decode each 32-k half
    /// into wgmma A fragments and issue register-A wgmma m64nWk16 with the activations from shared memory, their
    /// descriptors by adds from the first slot's (B = 1); the epilogue is staged through shared memory (S = 1). K (a
    /// twelfth number) is the blocks an SM; E = 1 (a thirteenth): EMPTY is an mbarrier a slot with one arrival a consumer
    /// warp, where until session 22 a named barrier a slot had each consumer thread work out its id and thread count
    /// every chunk (run 75: 8 instructions a chunk, 9.3–9.6% of the stall samples). The mbarrier was faster or level in
    /// each of the four forms, two rounds each in run 76 (H100): −0.3 / −1.1% at 512, −1.2 / −1.0% at 1024 (64-token tiles);
    /// −0.2 / +0.6% at 1536, +0.2 / −0.1% at 2048 (96); −2.5 / −3.1% at 3072 (128); −0.4 / −0.2% at 8192, +0.4 / −0.1% at
    /// 32768 (256). Sessions 13–21 measured 30 other forms (two or three consumer warpgroups, 6 slots, cp.async producers,
    /// a persistent kernel, three wgmma widths, unrolled loops); each lost to these on an H100 and was removed (their
    /// figures: docs/bench-cuda.md, BENCHMARKS.md). Six load slots were level in run 76 (−0.8 / +0.3% at 2048 with
    /// 96-token tiles of four warpgroups, +0.3 / −0.5% at 1024 with 64) and about 1% ahead with five warpgroups (run 85).
    ///
    /// K (a twelfth number) = 2: two blocks an SM, so that one block's prologue and epilogue run under the other's wgmma;
    /// F (a fourteenth, 2 when absent) = 1: one A-fragment buffer a consumer warp, so that 64-token tiles fit three
    /// consumer warpgroups and two blocks an SM in 64 registers (six consumer warps a scheduler, as the 32- and 48-token
    /// kernels; with two buffers ptxas serialises the wgmma, C7512); the decode of a half then waits for the previous
    /// half's wgmma, which the other warps cover. 1088–1407 tokens. Two rounds each
    /// (H100): against two consumer warpgroups with two buffers (the default at 1184–1280 since session 21, gone) −5.2 /
    /// −5.0% at 1280 (run 80); against the 48-token kernel −0.1 / −0.9% at 1024 (run 80), −5.0 / −4.3% at 1152 (run 81);
    /// against the 96-token kernels −2.8 / −2.6% at 1536 (four warpgroups, run 80), +3.7 to +11.6% at 1792–2304 (run 81);
    /// run 82, against the defaults of runs 80–81: −0.3 / −0.5% at 1024 (48-token), and the 48-token kernel forced
    /// +3.3 / +2.9% at 1088.
    /// Five or six consumer warpgroups a block with two buffers (88 and 80 registers) were level and +1.0 to +2.0% at
    /// 1280–1536 (run 81) and are gone.
    /// Rounded widths n32, n48, n64 since session 25 (`roundedWidths`; n32 / n64 until then): run 89, −4.9 / −4.0% at
    /// 1152, −4.4 / −4.9% at 1280, −2.8 / −2.6% at 1408.
    /// n32, n40, n48 and n64 since session 28 (a tenth number, 40; by `tile_widths.py` 1.11 of the rows at 1088–1407
    /// against 1.16–1.23 for n32, n48, n64): run 93, two rounds against that form (gone), −2.0 / −1.5% at 1088, −0.4 /
    /// −0.3% at 1280, −0.5 / −0.8% at 1407; its n40 loop stage-checked on gpt-oss-20b at 300 and 2000 tokens (run 95).
    case registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1
    /// 32-token tiles (session 22), n32 only: six consumer warps a scheduler (three consumer warpgroups and two blocks an
    /// SM) where the 64-token kernel had four, for the mid-size GEMMs' instruction-latency stalls (run 75: wait 27%,
    /// selected 15%, 7.2 cycles an issue). Run 77, two rounds each: −5.1 / −5.6% at 256 against the
    /// resident kernel; against the 64-token kernel −7.5 / −8.8% at 384, −9.1 / −9.1% at 512, −2.7 / −1.4% at 768 and
    /// +13.8 / +13.7% at 1024 (where experts past 32 rows take two tiles, each decoding their weights).
    /// The same tiles as two consumer warpgroups and three blocks an SM (56 registers) got −4.7 to −8.7% at 256–512 in
    /// run 77 (−6.4 to −8.7% at 384–512, where this form got −7.5 to −9.1%): removed. So were seven consumer
    /// warpgroups and one block an SM (seven warps a scheduler, 64 registers, GEMM 2's last 448-row block 8.9% past H):
    /// −0.6 to +3.3% at 256–768 (run 83).
    /// Rounded widths n16, n24, n32 since session 25 (a tenth number, 24; n32 alone until then): n16 / n32 got −5.3 /
    /// −5.5% at 512 and −3.3 / −2.8% at 768 against n32 (run 89), n16 / n24 / n32 −0.8 to −1.9% at 384–768 against
    /// n16 / n32 (run 90). 200–735 tokens since run 90: against 8-token tiles −7.6 / −7.1% at 224, +2.1 / +1.9% at 192.
    case registered_1_32_4_3_1_1_2_1_0_24_0_2_1
    /// 48-token tiles (session 22), n48, the same six consumer warps a scheduler: experts of 33–48 rows take one tile
    /// where the 32-token kernel decodes their weights twice (run 77: +13.8 / +13.7% at 1024). Two
    /// rounds each against the 64-token kernel of the time (two consumer warpgroups, runs 78–79): −2.3 / −2.1% at 832,
    /// −3.5 / −3.1% at 896, −5.9 / −6.1% at 1024, −1.3 / −0.9% at 1152, +3.2 / +3.4% at 1280; against the 32-token
    /// kernel +0.6 / +1.2% at 768 (run 78, where the 32-token kernel against the 64-token one was +0.7 / +0.5% at 832 and
    /// +4.9 / +5.8% at 896).
    /// Rounded widths n32, n48 since session 25 (n48 alone until then): run 89, −6.3 / −5.3% at 896, −3.9 / −3.9% at
    /// 1024. 736–1087 tokens since run 90 (against the 32-token kernel −6.7 / −4.0% at 768, level at 704).
    case registered_1_48_4_3_1_1_2_1_0_16_0_2_1
    /// 96-token tiles (n64 up to 64 rows and n96 beyond until session 25, where the 128-token kernel multiplied
    /// 65–96-row tiles at n128); activation boxes of 32 rows: five consumer warpgroups and one block an SM with one
    /// A-fragment buffer (session 23).
    /// setmaxnreg gives the consumers 88 registers where the launch gives 80: more than 65536 / threads, so this tile
    /// fits five consumer warps a scheduler (four warpgroups with two buffers, session 21's form, had four). 1408–2687
    /// tokens. Run 81, two rounds each, against that form: −2.5 / −2.3% at 1536 (where the default was the 64-token
    /// kernel), −6.2 / −6.1% at 1792, −4.7 / −4.8% at 2048, −5.3 / −5.5% at 2304; against the 128-token kernel +6.9 /
    /// +6.1% at 3072; run 82: against the 64-token kernel +2.8 / +2.1% at 1280 (and that kernel forced against this one
    /// +0.6 / +0.9% at 1408, +3.1 / +3.2% at 1536), against the 128-token kernel −2.6 / −1.8% at 2560 and +2.3 / +2.6%
    /// at 2816 (2688, between them, is where it stops). Session 21's form had won −1.6 to −5.4% at 1536–2304 against the
    /// 128-token kernel (runs 70–71).
    /// Six load slots since session 24 (one block an SM, so its slots alone keep copies in flight): run 85, two rounds
    /// against four, −1.2 / −1.1% at 1536, −0.4 / −1.3% at 2048, −0.1 / +0.3% at 2560. Each k16 step its own wgmma
    /// commit group lost by 4.6–5.7% here and 4.8–7.0% with 64-token tiles (run 86) and is gone.
    /// Rounded widths n48, n64, n80, n96 since session 25 (n64 / n96 until then): run 89, −3.8 / −3.5% at 1536, −2.7 /
    /// −2.2% at 2048, −2.4 / −2.7% at 2560.
    case registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1
    /// Eight load slots (session 27; slot and phase by a mask and a shift) were +0.1 to +0.9% at 1536–2560 (run 95) and
    /// are gone.
    /// 128-token tiles, four consumer warpgroups.
    /// Rounded widths n96, n128 since session 25 (n64 / n128 until then): run 89, −3.6 / −4.5% at 2816. 2688–3199
    /// tokens since run 90 (against the 192-token kernel −3.4 / −1.3% at 3072, +3.1 / +2.0% at 3328).
    case registered_1_128_4_4_1_1_2_1_0_16_0_1_1
    /// 192-token tiles, three consumer warpgroups (session 23): three consumer warps a scheduler where the 256-token
    /// kernel (gone) had two; widths n64, n128, n192 by the tile's rows; two A-fragment buffers (producers 56
    /// registers, consumers 152). 5376 tokens and more since run 89 (3072 and more before). Run 84 (session 24, H100),
    /// two rounds each against the 256-token kernel (two consumer warpgroups, the default from 4096 in sessions 21–23):
    /// −8.5 / −10.5% at 4096, −4.7 / −2.1% at 6144, −7.4 / −6.0% at 8192; against the 128-token kernel −1.6 / −0.3% at
    /// 3072. One buffer (88 / 136) got −7.4 / −7.5%, −1.0 / −1.4% and −6.1 / −5.4% at 4096–8192 and is gone. Run 85:
    /// the 256-token kernel forced +4.0 to +5.3% at 12288–32768 and +3.0 to +7.7% on gpt-oss-20b at 1024–8192 (gone);
    /// the 128-token one +9.1 / +8.8% at 4096; this one against the 128-token default +2.3 / +1.4% at 2816, −2.6 /
    /// −2.7% at 3328, −3.9 / −4.7% at 3584. Six load slots: +0.6 / +0.2% at 4096, −0.0 / −2.6% at 6144, +1.3 / −1.2% at
    /// 8192 (gone). Chosen nowhere since session 26: the rounded form with fitted tiles beat it at 5376–32768 (run 91);
    /// kept for A/B runs (MOE_CUDA_GEMM).
    case registered_1_192_4_3_1_1_2_1_0_0_0_1_1
    /// The same with rounded widths (n128, n160, n192; `roundedWidths`), 3200 tokens and more: run 89, −3.1 / −3.3% at
    /// 4096, +3.9 / +1.7% at 8192 against the plain form; run 90, the plain form forced +3.3 / +2.0% at 4608, +1.6 /
    /// +1.1% at 5120, this one forced +2.1 / +2.1% at 5632, +4.4 / +1.6% at 6144 (plain tiles). With fitted tiles
    /// (LaunchPlan.tileWidths; run 91) against the plain form: −2.8 / −2.9% at 5376, −2.4 / −2.0% at 8192, −3.4 / −0.6%
    /// at 16384, −1.0 / −0.1% at 32768.
    case registered_1_192_4_3_1_1_2_1_0_16_0_1_1

    public enum Kind: String, Sendable { case resident, staged, warpgroup, decoded, registered }

    public var kernelName: String { "moe_gemm_" + rawValue }
    /// Registered kernels: the entry point with the tile hand-over (gemm_registered's HANDOVER).
    public var handOverKernelName: String { kernelName + "_handover" }
    private var numbers: [Int] { rawValue.split(separator: "_").dropFirst().map { Int($0)! } }
    public var kind: Kind { Kind(rawValue: String(rawValue.split(separator: "_")[0]))! }
    public var isResident: Bool { kind == .resident }
    /// 16-row groups per warp.
    public var rowGroupsPerWarp: Int { numbers[0] }
    /// Warpgroup kernels (wgmma).
    public var usesWarpgroups: Bool { kind == .warpgroup || kind == .decoded || kind == .registered }
    /// Tokens per tile: 8 per n8 fragment (warpgroup kernels: the wgmma N).
    public var tileRows: Int {
        switch kind {
        case .registered: numbers[1]
        case .warpgroup, .decoded: numbers[2]
        default: 8 * numbers[1]
        }
    }
    /// Warps along the output rows (registered kernels: the consumer warpgroups).
    public var warpsAcrossRows: Int {
        switch kind {
        case .registered: 4 * consumerWarpgroups
        case .warpgroup, .decoded: 4 * numbers[1]
        default: numbers[2]
        }
    }
    /// Registered kernels: consumer warpgroups (a fourth number, default 2).
    public var consumerWarpgroups: Int { kind == .registered && numbers.count > 3 ? numbers[3] : 2 }
    /// Warps splitting K (resident kernels).
    public var warpsAcrossK: Int { kind == .resident ? numbers[3] : 1 }
    public var warps: Int {
        switch kind {
        case .registered: 4 * (1 + consumerWarpgroups)
        default: warpsAcrossRows * warpsAcrossK
        }
    }
    /// Slots of the per-lane weight ring (resident and warpgroup kernels).
    public var ringSlots: Int {
        kind == .resident ? numbers[4] : (kind == .warpgroup ? numbers[3] : 0)
    }
    /// Stages of the shared-memory ring (staged and decoded kernels; registered kernels: load slots).
    public var stages: Int {
        switch kind {
        case .staged, .decoded: numbers[3]
        case .registered: numbers[2]
        default: 0
        }
    }
    /// Weight row groups (16 rows) one block covers.
    public var rowGroupsPerBlock: Int { rowGroupsPerWarp * warpsAcrossRows }
    /// Needs sm_90a (wgmma).
    public var needsHopper: Bool { usesWarpgroups }
    /// The rows of a tensor copy's activation box: 64, 32 for tiles of 32 or 96 rows, 16 for 48 (ChunkCopies::BOX).
    public var activationBoxRows: Int { tileRows % 64 == 0 ? 64 : (tileRows % 32 == 0 ? 32 : 16) }
    /// Registered kernels with tensor copies (an eighth number, 1): their launches need tensor maps (GemmTensorMaps).
    public var usesTensorCopies: Bool { kind == .registered && numbers.count > 7 && numbers[7] == 1 }
    /// Rounded widths (a tenth number: 16, or 24 for the 32-token kernel's n16 / n24 / n32 and 40 for the 64-token
    /// kernel's n32 / n40 / n48 / n64; session 25): each tile multiplies at the narrowest of the kernel's wgmma widths
    /// that holds its rows (n80 for a 70-row tile where the plain 96-token kernel ran n96), each width its own consumer
    /// loop. How many loops a kernel takes before ptxas serialises every wgmma (C7511, NVRTC 13.0) varies: two in the
    /// 48- and 128-token kernels, three in the 32- and 192-token ones, four in the one-buffer 64- and 96-token ones.
    public var roundedWidths: Bool { kind == .registered && numbers.count > 9 && numbers[9] >= 16 }
    /// The wgmma widths a registered kernel multiplies a tile at, ascending (gemm_registered: the narrowest that holds the
    /// tile's rows; the plain 192-token kernel rounds up to 64); none for the others.
    public var wgmmaWidths: [Int] {
        guard kind == .registered, numbers.count > 9 else { return [] }
        switch (tileRows, numbers[9]) {
        case (32, 24): return [16, 24, 32]
        case (48, 16): return [32, 48]
        case (64, 40): return [32, 40, 48, 64]
        case (96, 16): return [48, 64, 80, 96]
        case (128, 16): return [96, 128]
        case (192, 16): return [128, 160, 192]
        case (192, 0): return [64, 128, 192]
        default: return []
        }
    }
    /// Registered kernels: blocks resident on an SM (a twelfth number, default 1): the launch bounds' minimum, which
    /// caps ptxas at 65536 / (blocks · threads) registers a thread.
    public var blocksPerSM: Int { kind == .registered && numbers.count > 11 ? numbers[11] : 1 }
    /// Registered kernels: A-fragment buffers a consumer warp (a fourteenth number, default 2).
    public var fragmentBuffers: Int { kind == .registered && numbers.count > 13 ? numbers[13] : 2 }

    /// The default choice for a token count, per GEMM (both must share tile rows): decode sizes stream
    /// weights straight into registers with 8-token tiles; mid-size batches stage codes and activations through
    /// shared memory with 32-token tiles (mma.sync); large batches on sm_90a decode each weight chunk into wgmma
    /// A fragments in the consumers' registers (a copy-only producer warpgroup), elsewhere 64-token staged tiles.
    /// GEMM 2 at decode sizes splits K so that its grid (half GEMM 1's rows) still fills the GPU in one wave; at 2–4
    /// tokens on sm_90 both GEMMs take 4-warp whole-K blocks whose rings the copy engine fills (H100, session 12's run
    /// 45, two rounds: 63.5 / 65.2 against 70.2 / 69.3 µs at 2 tokens, 100.1 / 100.0 against 118.1 / 119.3 at 4; not at
    /// 1 token, 52.9 against 43.5 in session 11, nor at 8–16).
    /// Large batches take the registered kernel (the decode in the consumers' registers). With 6 load slots it was
    /// 4.0 / 7.8 / 7.2 / 6.4% faster than sessions 3–12's specialised kernel at 2048 / 4096 / 8192 / 32768 tokens
    /// (4.0 / 6.9 / 6.4 / 6.1 in a second round; 29% slower at 1024, where the staged kernel runs), and 4 slots are
    /// faster again by 6.6–7.2 / 3.7–3.8 / 3.1–3.4 / 4.3–4.7% (H100, session 13's runs 52 and 54, two rounds each;
    /// 5 slots in between, 7 behind). Its epilogue staged through shared memory (registered_2_128_4_2_0_1: stmatrix,
    /// then 16-byte row stores) is faster again by 8.9 / 10.9% at 2048 tokens, 5.3 / 8.4% at 8192 and 5.4 / 5.4% at 32768
    /// (H100, session 14's run 57, two rounds), and its lean producer (registered_2_128_4_2_0_1_1) again by 6.7 / 7.8% at
    /// 2048, 6.1 / 3.9% at 8192 and 4.4 / 4.6% at 32768 (run 58, two rounds). The 256-token lean kernel
    /// (registered_1_256_4_2_0_1_1) was 0.7 / 1.4% slower than the staged one at 8192 and 4.4 / 5.3% and 7.8 / 6.8% faster at
    /// 16384 and 32768 (run 58): at 32768 about 2.7% ahead of the lean 128-token kernel (other rounds of the same call), not
    /// yet the default (its full-width tiles unchecked on a GPU in the lean form).
    /// Session 18 (H100, runs 59–60, two rounds against the lean default): four consumer warpgroups of 64 rows with tensor
    /// copies (registered_1_128_4_4_0_1_2_1), GEMM 1's rows gathered first (TokenBucket.gatherRowsSwitch), are faster by
    /// 6.7 / 5.9% at 2048 tokens, 6.3 / 6.9% at 8192 and 6.0 / 5.2% at 32768 (gpt-oss-20b: 6.5% at 2048, 7.3% at 8192, one
    /// round); its narrow-tile form (wgmma m64n32 for tiles of ≤ 32 rows) replaces the staged kernel at 1024: 18.8 / 18.0%
    /// faster (19.9% with the gather), but not at 768 (+1.8%) or 512 (+16.0%). Three persistent consumer warpgroups were
    /// within a point of it at 32768 (−7.2 / −6.5%) and are not the default.
    /// Session 19 (H100, runs 61–62, one round each, against that default with the gather): the 256-token kernel with
    /// tensor copies (registered_1_256_4_2_0_1_2_1) is faster by 2.1 / 4.0% at 16384 and 2.9 / 3.4% at 32768, level at
    /// 8192 (−0.5%): it takes 16384 tokens and beyond (by rows an expert: 512 and more).
    /// Session 20 (H100, run 67, two rounds against the defaults): 64-token tiles with n32 or n64, pipelined
    /// (registered_1_64_4_4_0_1_2_1_0_2), are faster than the staged kernel by 0.8 / 2.0% at 640 tokens and 9.4 / 9.4%
    /// at 768, than the serialised narrow kernel by 2.4 / 3.1% at 1024 and than the wide one by 2.6 / 2.6% at 1280: they
    /// take 577–1280 (18–40 rows an expert). The 128-token two-width form lost at 512 (+1.5 / +1.6%, run 66), where all
    /// tiles take n32 as in the 64-token kernel, so the staged kernel keeps 257–576. Each of the three large-batch kernels
    /// then builds its wgmma descriptors by adds from the first slot's (B = 1; run 69, two rounds against the B = 0 forms):
    /// −2.5 / −2.5% at 768, −2.8 / −2.4% at 1024, −1.9 / −2.0% at 2048, −1.3 / −2.7% at 8192, −0.2 / −1.1% at 32768.
    /// Session 21 (H100, runs 70–74, two rounds each): 96-token tiles take 1281–2304 tokens, the 256-token kernel 4096 and
    /// beyond, and the 64-token kernel runs as two blocks an SM from 288 (figures at each case above). The 256-token
    /// kernel lost at 2048–3584 (run 73: +3.6 to +22%).
    /// Session 22 (H100, runs 76–79, two rounds each): EMPTY an mbarrier in every registered kernel, and 32-token tiles
    /// with six consumer warps a scheduler at 256–799 tokens and 48-token ones at 800–1183 (figures at their cases). Run
    /// 77's crossovers of the E = 1 kernels stayed: 96-token tiles +3.2 to +8.0% at 1024–1280, 128 +1.7 to +3.7% at
    /// 2048–2304, 256 +5.2 to +11.3% at 3072–3584.
    /// Session 23 (H100, runs 80–81, two rounds each): 64-token tiles with one A-fragment buffer and six consumer warps a
    /// scheduler, and 96-token tiles with five (one block of five consumer warpgroups), replace the four-warp forms
    /// (figures at their cases).
    /// Session 24 (H100, runs 84–85, two rounds each): 192-token tiles with three consumer warpgroups replace the
    /// 256-token kernel and take 3072 tokens and more; the 96-token kernel has six load slots (figures at their cases).
    /// Session 25 (H100, runs 89–90, two rounds each): every registered kernel with rounded wgmma widths, and the
    /// crossovers tried again (figures at their cases).
    ///
    /// Past 4 tokens the kernel follows the rows an expert gets: gpt-oss-120b's crossovers (tuned by A/B on it; on
    /// sm_90 8-token tiles up to 199 tokens, 32-token registered tiles to 735, 48-token to 1087, 64-token to 1407,
    /// 96-token to 2687, 128-token to 3199, 192-token with rounded widths to 5375, plain beyond; elsewhere 8-token
    /// tiles to 256, 32-token staged tiles to 2048), and `byRows` places them at the same rows an expert for any E and
    /// k (gpt-oss-20b on sm_90: at 50, 184, 272, 352, 672, 800 and 1344 tokens). By token count
    /// (`MOE_CUDA_POLICY_ROWS=0`) gpt-oss-20b's 16 rows an expert at 128 tokens took two or three 8-row tiles, each
    /// decoding the expert's weights again: by rows it is 13.9 / 27.0 / 37.4 / 8.7 / 20.4% faster at 96 / 128 / 256 /
    /// 512 / 1024 tokens and the same at 64 (H100, session 13's run 50, two rounds); gpt-oss-120b's choice is the same
    /// either way.
    public static func choose(
        tokens: Int, experts: Int = 128, topK: Int = 4, hopper: Bool = true, byRows: Bool = rowsPolicy
    ) -> (gemm1: GemmVariant, gemm2: GemmVariant) {
        // Slots against 120b's (k = 4 of E = 128): tokens·k·128 / (4·E) is the token count 120b would need for as many
        // rows an expert.
        let equivalent = byRows ? (tokens * topK * 128 + 4 * experts - 1) / (4 * experts) : tokens
        switch tokens {
        case ...1: return (.resident_1_1_4_2_3, .resident_1_1_2_4_3)
        case ...4 where hopper: return (.resident_1_1_4_1_4, .resident_1_1_4_1_4)
        case ...4: return (.resident_1_1_4_2_3, .resident_1_1_2_4_3)
        default: break
        }
        switch equivalent {
        case 200...735 where hopper: return (.registered_1_32_4_3_1_1_2_1_0_24_0_2_1, .registered_1_32_4_3_1_1_2_1_0_24_0_2_1)
        case 736...1087 where hopper: return (.registered_1_48_4_3_1_1_2_1_0_16_0_2_1, .registered_1_48_4_3_1_1_2_1_0_16_0_2_1)
        case ...256: return (.resident_1_1_8_1_3, .resident_1_1_8_1_3)
        case ...1407 where hopper:
            return (.registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1, .registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1)
        case ...2687 where hopper:
            return (.registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1, .registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1)
        case ...2048: return (.staged_2_4_8_2, .staged_2_4_8_2)
        // 192-token tiles at rounded widths (n128, n160, n192). Past ~168 rows an expert (5376 tokens of 120b) its
        // second tile was short and the plain kernel's n64 paid (runs 89–90); with fitted tiles (LaunchPlan.tileWidths)
        // the rounded kernel beats the plain one there too (run 91), so the plain kernel is chosen nowhere.
        case 3200... where hopper:
            return (.registered_1_192_4_3_1_1_2_1_0_16_0_1_1, .registered_1_192_4_3_1_1_2_1_0_16_0_1_1)
        default:
            return hopper
                ? (.registered_1_128_4_4_1_1_2_1_0_16_0_1_1, .registered_1_128_4_4_1_1_2_1_0_16_0_1_1) : (.staged_1_8_8_2, .staged_1_8_8_2)
        }
    }

    /// Choose by rows an expert (see `choose`) unless `MOE_CUDA_POLICY_ROWS=0` asks for 120b's token counts.
    public static let rowsPolicy = currentEnvironment("MOE_CUDA_POLICY_ROWS") != "0"

    /// Dynamic shared memory for a GEMM with reduction width `k` and at most `residentRows` rows per tile.
    public func sharedBytes(k: Int, residentRows: Int) -> Int {
        let chunks = (k + 63) / 64
        if kind == .warpgroup {
            return ringSlots * tileRows * 256 * 2 + warps * ringSlots * rowGroupsPerWarp * 5 * 512
        }
        if kind == .decoded {  // slots of [activations N × 64 | codes | scales], then two decoded weight chunks
            let groups = rowGroupsPerBlock
            return stages * (tileRows * 64 * 2 + groups * 512 + groups * 128) + 2 * groups * 16 * 64 * 2
        }
        if kind == .registered {  // 1 KB alignment slack, load slots [activations N × 64 | codes | scales] on 1 KB
            let slots = stages * ((tileRows * 64 * 2 + rowGroupsPerBlock * 640 + 1023) / 1024 * 1024)
            return 1024 + slots + 16 * stages  // a FULL mbarrier a slot after them, then an EMPTY one a slot
        }
        if kind != .staged {
            let partials = warpsAcrossK > 1 ? warps * rowGroupsPerWarp * (tileRows / 8) * 32 * 4 * 4 : 0
            let rings = warps * ringSlots * rowGroupsPerWarp * 5 * 512
            return residentRows * (64 * chunks + 8) * 2 + partials + rings
        }
        let groups = rowGroupsPerBlock
        return stages * (tileRows * (256 + 8) * 2 + groups * 4 * 512 + groups * 128)
    }
}

/// Static sizes of one token-count bucket: buffer sizes, the tile bound, grids. Pure arithmetic (tested on CPU).
public struct LaunchPlan: Sendable, Equatable {
    public let tokens: Int
    public let config: MoEConfig
    public let gemm1Variant: GemmVariant
    public let gemm2Variant: GemmVariant
    /// Both GEMMs run over the same tile schedule.
    public var tileRows: Int { gemm1Variant.tileRows }
    /// Decode batches (≤ MOE_FUSED_ROUTING_MAX_TOKENS) route in one launch: fp32 FMA router, top-k and plan
    /// (moe_route_small); larger ones use the tensor-core router.
    public var fusedRouting: Bool {
        tokens <= Int(MOE_FUSED_ROUTING_MAX_TOKENS) && smallRoutingPlanBytes <= 160 * 1024
    }
    /// Slices of H in the fused router (each ≤ 128 segments of 8 values: 4 per lane).
    public var fusedRouterSlices: Int {
        (config.hidden / 8 + Int(MOE_FUSED_ROUTING_SEGMENTS) - 1) / Int(MOE_FUSED_ROUTING_SEGMENTS)
    }
    /// The fused router instantiated for the smallest power of two ≥ T.
    public var routeSmallKernel: String {
        var bound = 1
        while bound < tokens { bound *= 2 }
        return "moe_route_small_\(bound)"
    }
    public var routeSmallShape: LaunchShape {
        let warps = Int(MOE_FUSED_ROUTING_WARPS)
        let sliceBytes = tokens * ((config.hidden / 8 + fusedRouterSlices - 1) / fusedRouterSlices) * 16
        return LaunchShape(
            grid: ((config.experts + warps - 1) / warps, fusedRouterSlices, 1), block: 32 * warps,
            sharedBytes: max(sliceBytes, smallRoutingPlanBytes))
    }
    /// Floats of partial logits either router writes.
    public var partialLogitFloats: Int {
        max(routerPartialFloats, fusedRouting ? fusedRouterSlices * tokens * config.experts : 0)
    }

    /// Batches of at most MOE_SMALL_ROUTING_MAX_TOKENS tokens build the plan in one block (moe_route_finish).
    public var smallRouting: Bool {
        tokens <= Int(MOE_SMALL_ROUTING_MAX_TOKENS) && slots <= LaunchPlan.blockPlanMaxSlots && finishPlanBytes <= 200 * 1024
    }
    /// Shared memory of moe_route_finish: the logits, then plan_in_block's.
    var finishPlanBytes: Int { 4 * tokens * config.experts + LaunchPlan.blockPlanBytes(slots: slots, experts: config.experts) }
    /// The most slots plan_in_block places (MOE_FINISH_SLOTS_PER_LANE for each of its 1024 threads).
    static let blockPlanMaxSlots = 1024 * Int(MOE_FINISH_SLOTS_PER_LANE)
    /// Shared memory of plan_in_block (moe_route_finish, moe_ep_plan_small): ids, weights, counts, offsets, and the
    /// rows of every expert per chunk of 32 slots.
    static func blockPlanBytes(slots: Int, experts: Int) -> Int {
        4 * (2 * slots + 2 * experts + 1) + 4 * ((slots + 31) / 32) * experts
    }
    /// Slices of K in the router: enough for about routerBlockTarget blocks, each keeping ≥ 8 steps of 32
    /// (fewer slices: less for the tile's last block to add up).
    /// Expert parallelism launches the router with the S of the single-rank plan for the global batch (the logits
    /// depend on S), so it chooses the same experts bit for bit.
    public var routerSplits: Int { LaunchPlan.routerSplits(tokens: tokens, config: config) }

    public static func routerSplits(tokens: Int, config: MoEConfig, target: Int = routerBlockTarget) -> Int {
        let tiles = routerExpertTiles(config) * ((tokens + 63) / 64)
        // A split grid adds its partials through an arrival counter a tile.
        guard tiles <= Int(MOE_ROUTER_TILE_COUNTERS) else { return 1 }
        return max(1, min(config.hidden / 32 / 8, target / tiles))
    }
    static func routerExpertTiles(_ config: MoEConfig) -> Int { (config.experts + 31) / 32 }
    /// The router's block target: MOE_ROUTER_BLOCK_TARGET, or `MOE_CUDA_ROUTER_BLOCKS=N` (64–1024; session 29, for A/B
    /// runs: the router ends 12–22 µs into the layer at 256–2048 tokens, run 99's trace, and at 2048 its then 256 blocks
    /// each walk 45 of H's 90 steps). It changes S, so the logits' last bits; expert parallelism takes the same S.
    public static let routerBlocksSwitch = currentEnvironment("MOE_CUDA_ROUTER_BLOCKS")
    public static let routerBlockTarget = parsedRouterBlockTarget(routerBlocksSwitch) ?? Int(MOE_ROUTER_BLOCK_TARGET)
    public static func parsedRouterBlockTarget(_ value: String?) -> Int? {
        guard let value, let target = Int(value), (64...1024).contains(target) else { return nil }
        return target
    }
    /// Throws for a plan-shaping environment switch set to something it cannot take (so an A/B never runs the default
    /// under the variant's name).
    public static func validateSwitches(
        routerBlocks: String? = routerBlocksSwitch, fusedPlan: String? = planBuildSwitch, inPlaceCounts: String? = inPlaceCountsSwitch
    ) throws(CUDAError) {
        if let routerBlocks, parsedRouterBlockTarget(routerBlocks) == nil {
            throw .invalidArgument(
                "MOE_CUDA_ROUTER_BLOCKS=\(routerBlocks): expected a block count from 64 to 1024 (unset it for the default, \(MOE_ROUTER_BLOCK_TARGET))")
        }
        if let fusedPlan, !["0", "1"].contains(fusedPlan) {
            throw .invalidArgument(
                "MOE_CUDA_FUSED_PLAN=\(fusedPlan): expected 0 (the plan in four launches) or 1 (the default, placement in place; or unset it)")
        }
        if let inPlaceCounts, parsedInPlaceCounts(inPlaceCounts) == nil {
            throw .invalidArgument(
                "MOE_CUDA_PLAN_IN_PLACE_COUNTS=\(inPlaceCounts): expected a count of histogram ints from 1024 to 16384 (unset it for the default, \(MOE_PLAN_IN_PLACE_COUNTS))")
        }
    }
    /// Floats of partial logits a split router writes (S·T·E; none when S = 1). With S > 1, S·tiles ≤ the block
    /// target, so S·T ≤ 64·target / expert tiles: `routerPartialCapacity` bounds every batch size.
    public var routerPartialFloats: Int { routerSplits > 1 ? routerSplits * tokens * config.experts : 0 }
    public static func routerPartialCapacity(_ config: MoEConfig, target: Int = routerBlockTarget) -> Int {
        64 * target / routerExpertTiles(config) * config.experts
    }
    /// Shared memory of moe_route_small's plan: logits, ids, weights, counts, offsets.
    var smallRoutingPlanBytes: Int { 4 * (tokens * config.experts + 2 * slots + 2 * config.experts + 1) }
    public var slots: Int { tokens * config.topK }
    /// Rows any tile can hold: an expert gets at most T rows (a token's k experts are distinct).
    public var residentRows: Int { min(tileRows, tokens) }
    public var tokenBlocks: Int { LaunchPlan.tokenBlocks(tokens: tokens) }
    /// The top-k and plan kernels' blocks for `tokens` rows: MOE_TOKENS_PER_BLOCK tokens each.
    static func tokenBlocks(tokens: Int) -> Int { (tokens + Int(MOE_TOKENS_PER_BLOCK) - 1) / Int(MOE_TOKENS_PER_BLOCK) }

    /// Upper bound on Σ_e ceil(count_e / tileRows): each non-empty expert adds at most one partial tile.
    public var maxTiles: Int { LaunchPlan.tileBound(slots: slots, experts: config.experts, tileRows: tileRows) }

    public static func tileBound(slots: Int, experts: Int, tileRows: Int) -> Int {
        min(experts, slots) + slots / tileRows
    }

    /// `variant` forces one kernel for both GEMMs, `gemm2` one for GEMM 2 alone (ignored unless its tile rows are GEMM
    /// 1's); `hopper`: the device has sm_90a (wgmma) kernels.
    /// The device's SMs (132 on the H100 and H200): how many blocks a wave holds (gemm1Waves).
    public let multiprocessors: Int

    public init(
        tokens: Int, config: MoEConfig, variant: GemmVariant? = nil, gemm2: GemmVariant? = nil, hopper: Bool = true,
        multiprocessors: Int = 132
    ) {
        self.tokens = tokens
        self.config = config
        self.multiprocessors = max(1, multiprocessors)
        let chosen = GemmVariant.choose(tokens: tokens, experts: config.experts, topK: config.topK, hopper: hopper)
        let first = variant ?? chosen.gemm1
        gemm1Variant = first
        gemm2Variant = gemm2.flatMap { $0.tileRows == first.tileRows ? $0 : nil } ?? variant ?? chosen.gemm2
        precondition(gemm1Variant.tileRows == gemm2Variant.tileRows, "both GEMMs must share the tile schedule")
    }

    public var variantDescription: String {
        gemm1Variant == gemm2Variant ? gemm1Variant.rawValue : "\(gemm1Variant.rawValue)+\(gemm2Variant.rawValue)"
    }

    /// GEMM 1 writes a [slots, I]; GEMM 2 reads it and writes combine [slots, H].
    public func gemmShape(_ variant: GemmVariant, outputRows n: Int, reduction k: Int, tiles: Int? = nil) -> LaunchShape {
        let groups = n / 16
        let rowBlocks = (groups + variant.rowGroupsPerBlock - 1) / variant.rowGroupsPerBlock
        return LaunchShape(grid: (rowBlocks, tiles ?? maxTiles, 1), block: 32 * variant.warps,
                           sharedBytes: variant.sharedBytes(k: k, residentRows: residentRows))
    }

    public var gemm1Shape: LaunchShape { gemmShape(gemm1Variant, outputRows: 2 * config.intermediate, reduction: config.hidden) }
    public var gemm2Shape: LaunchShape { gemmShape(gemm2Variant, outputRows: config.hidden, reduction: config.intermediate) }

    /// The router for `tokens` rows with K split `splits` ways (expert parallelism: a rank's rows, the global S):
    /// moe_router_mma (32 experts a block) or, where routerIsWide, moe_router_mma_wide (128). Both give the same bits.
    /// `halfBlocks` (MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1): the wide router's warps take 32 tokens, so a block has half the
    /// threads (the kernel's launch bounds say which).
    public static func routerShape(
        tokens: Int, splits: Int, config: MoEConfig, halfBlocks: Bool = KernelBuildSwitches.wideRouterHalfBlocks
    ) -> LaunchShape {
        let wide = routerIsWide(tokens: tokens, splits: splits, config: config)
        let experts = Int(wide ? MOE_ROUTER_WIDE_EXPERTS : MOE_ROUTER_EXPERTS), rows = Int(MOE_ROUTER_TOKENS)
        let stages = Int(wide ? MOE_ROUTER_WIDE_STAGES : MOE_ROUTER_STAGES)
        return LaunchShape(grid: ((config.experts + experts - 1) / experts, (tokens + rows - 1) / rows, splits),
                           block: (wide && halfBlocks ? 2 : 4) * experts,
                           sharedBytes: stages * (rows + experts) * Int(MOE_ROUTER_ROW_ELEMENTS) * 2)
    }
    /// The wide router reads each token's row once instead of once per 32 experts; it pays where the batch alone fills
    /// the GPU with 64-token tiles (at least routerWideMinTiles of them, K not split) and E > 32: run 62 (H100) timed it
    /// 21–22% faster at 8192 and 32768 tokens of 120b and 31–33% slower at 2048 and 4096.
    /// `MOE_CUDA_ROUTER=wide` or `=narrow` forces either (A/B runs and checks).
    public static func routerIsWide(tokens: Int, splits: Int, config: MoEConfig, forced: String? = routerSwitch) -> Bool {
        switch forced {
        case "wide": return true
        case "narrow": return false
        default: return splits == 1 && config.experts > Int(MOE_ROUTER_EXPERTS) && (tokens + Int(MOE_ROUTER_TOKENS) - 1) / Int(MOE_ROUTER_TOKENS) >= routerWideMinTiles
        }
    }
    static let routerWideMinTiles = 128
    public static let routerSwitch = currentEnvironment("MOE_CUDA_ROUTER")
    public var routerShape: LaunchShape { LaunchPlan.routerShape(tokens: tokens, splits: routerSplits, config: config) }
    /// Whether the router kernel over `tokens` rows with K split `splits` ways does moe_topk's work itself
    /// (MOE_CUDA_ROUTER_TOPK=1): the wide router unsplit with every expert in its block, as router_mma's TOPK tests it.
    /// Where it does, no moe_topk is launched after it (the single-rank path, and expert parallelism's local routing).
    public static func routerTakesTopK(
        tokens: Int, splits: Int, config: MoEConfig, switchOn: Bool = KernelBuildSwitches.routerTopK,
        forced: String? = routerSwitch
    ) -> Bool {
        switchOn && splits == 1 && routerIsWide(tokens: tokens, splits: splits, config: config, forced: forced)
            && config.experts <= Int(MOE_ROUTER_WIDE_EXPERTS)
    }
    /// routerTakesTopK on the path that launches moe_topk (past 128 tokens; the decode paths route in their own kernels).
    public func routerFusesTopK(switchOn: Bool = KernelBuildSwitches.routerTopK, forced: String? = LaunchPlan.routerSwitch) -> Bool {
        !fusedRouting && !smallRouting
            && LaunchPlan.routerTakesTopK(tokens: tokens, splits: routerSplits, config: config, switchOn: switchOn, forced: forced)
    }
    public var finishShape: LaunchShape { LaunchShape(grid: (1, 1, 1), block: 1024, sharedBytes: finishPlanBytes) }
    /// Each warp's logits staged in shared memory (when E ≤ 1024) and the block's histogram.
    public var topkShape: LaunchShape {
        let staged = config.experts <= Int(MOE_TOPK_SHARED_EXPERTS) ? 32 * config.experts * 4 : 0
        return LaunchShape(grid: (tokenBlocks, 1, 1), block: 1024, sharedBytes: staged + config.experts * 4)
    }
    public var scanShape: LaunchShape { LaunchShape(grid: (1, 1, 1), block: 1024) }
    public var scatterShape: LaunchShape {
        LaunchShape(grid: (tokenBlocks, 1, 1), block: 256, sharedBytes: 32 * config.topK * 8)
    }
    /// moe_plan_place: a block a token block, and with `gathers` one a slice of 32 · 8 columns of H too (each copies its
    /// tokens' slice of x to their sorted rows). Shared memory: ids, weights and sorted rows of 32·k slots, the top-k
    /// histograms (B·E ints) and four ints an expert.
    public func placeShape(gathers: Bool) -> LaunchShape {
        let slices = gathers ? (config.hidden / 8 + 31) / 32 : 1
        let planInts = tokenBlocks * config.experts + 4 * config.experts
        return LaunchShape(grid: (tokenBlocks, slices, 1), block: 256, sharedBytes: 4 * (3 * 32 * config.topK + planInts))
    }

    /// How a plan past the one-block plan is built (nil: T ≤ 128, moe_route_small or moe_route_finish builds it).
    /// `.inPlace` (session 30) while the top-k histograms are at most MOE_PLAN_IN_PLACE_COUNTS ints: moe_topk, then
    /// moe_plan_place derives offsets, prefixes and tiles from them in every block and gathers GEMM 1's rows (run 104:
    /// 0.0–0.5% faster than the four launches at 256–1024 tokens of 120b, and run 105 0.3–0.6% at 512–1024).
    /// `.fourLaunches`: moe_topk, moe_plan_scan, moe_plan_scatter, moe_gather_rows; `MOE_CUDA_FUSED_PLAN=0` forces it.
    public enum PlanBuild: String, Sendable { case inPlace = "in place", fourLaunches = "four launches" }
    public static let planBuildSwitch = currentEnvironment("MOE_CUDA_FUSED_PLAN")
    public func planBuild(switchValue: String? = LaunchPlan.planBuildSwitch, inPlaceCounts: Int = LaunchPlan.inPlaceCounts) -> PlanBuild? {
        guard !fusedRouting && !smallRouting else { return nil }
        let fits = tokenBlocks * config.experts <= inPlaceCounts
        return fits && switchValue != "0" ? .inPlace : .fourLaunches
    }
    /// The in-place plan's bound on B·E: MOE_PLAN_IN_PLACE_COUNTS, or `MOE_CUDA_PLAN_IN_PLACE_COUNTS=N` (1024–16384; for
    /// A/B runs: unmeasured past 4096, where each placement block copies more than 16 KB of histograms, 2048 tokens of
    /// 120b at 8192). Shared memory follows it (placeShape).
    public static let inPlaceCountsSwitch = currentEnvironment("MOE_CUDA_PLAN_IN_PLACE_COUNTS")
    public static let inPlaceCounts = parsedInPlaceCounts(inPlaceCountsSwitch) ?? Int(MOE_PLAN_IN_PLACE_COUNTS)
    public static func parsedInPlaceCounts(_ value: String?) -> Int? {
        guard let value, let counts = Int(value), (1024...16384).contains(counts) else { return nil }
        return counts
    }

    /// Throws when a launch needs more shared memory than the device offers (only for extreme E or k).
    public func validate(maxSharedPerBlock: Int) throws(CUDAError) {
        try LaunchPlan.validateSwitches()
        let shapes: [(String, LaunchShape)] = [
            ("GEMM 1 (\(gemm1Variant.rawValue))", gemm1Shape), ("GEMM 2 (\(gemm2Variant.rawValue))", gemm2Shape),
            ("router", routerShape), ("top-k", topkShape), ("plan scatter", scatterShape),
        ] + (fusedRouting ? [("decode routing", routeSmallShape)] : smallRouting ? [("small-batch plan", finishShape)] : [])
            + (planBuild() == .inPlace ? [("plan placement", placeShape(gathers: true))] : [])
        for (name, shape) in shapes where shape.sharedBytes > maxSharedPerBlock {
            throw .invalidArgument(
                "the CUDA backend cannot run \(config) at T=\(tokens): \(name) needs \(shape.sharedBytes) bytes of shared memory, the device allows \(maxSharedPerBlock)")
        }
    }
    /// With resident kernels for both GEMMs, GEMM 2 starts each tile as soon as GEMM 1's blocks of that tile are done
    /// (per-tile counters) instead of after all of GEMM 1, filling GEMM 1's last wave. Measured (H200, gpt-oss-120b,
    /// BENCHMARKS.md session 4): −2.7% at 8 tokens (GEMM 1 in 5.1 waves), +0.8…+1.4% at 32–256 (14+ waves, where
    /// the last wave matters less than the per-block signal and wait), so only up to tileHandOverMaxTokens.
    /// The registered kernels hand over too (their `_handover` entry points) where GEMM 1 runs at most
    /// registeredHandOverMaxWaves waves (`gemm1Waves`). Session 26 (runs 91–92, H100, two rounds, forced on):
    /// gpt-oss-20b −3.5 / −3.5% at 256 tokens, −2.1 / −1.8% at 512, −2.2 / −1.7% at 1024 (GEMM 1 in 3.6 / 4.4 / 7.3
    /// waves); gpt-oss-120b +1.4 / +2.1% at 512, +4.6 / +4.5% at 2048, +1.4 / −0.1% at 8192 (14.5 waves and more).
    /// Session 27 (run 93, forced off on gpt-oss-20b): +1.9 / +2.5% at 64 tokens and +3.0 / +3.4% at 200 (3.6 waves), but
    /// −0.8 / −1.1% at 700 (the 128-token kernel, 5.6 waves) and −0.4 / −1.1% at 1280 (the 192-token kernel, 7.3 waves,
    /// as 1024, which gained): on at five of seven measured sizes, and waves do not separate the two it loses.
    /// Session 28 (run 96, forced off on gpt-oss-20b, two rounds): +2.8 / +2.7% at 384 tokens (48 rows an expert, the
    /// 96-token kernel at n48), +2.4 / +2.1% at 512 (64 rows, n64) and +1.8 / +1.6% at 1024 (128 rows, the 192-token
    /// kernel at n128) — the hand-over wins — but −2.5 / −3.4% at 640 (80 rows, n80), −1.5 / −1.2% at 700 (88 rows, the
    /// 128-token kernel at n96), −2.7 / −1.6% at 768 (96 rows, n96) and −1.7 / +0.3% at 1280 (160 rows, n160). All
    /// 4.4–7.3 waves (gemm1Waves): within the same waves it loses where an expert's rows are 80–96 (700 lost in runs 93
    /// and 96 alike). Session 29 (run 99, the edges, two rounds): forced on at 544 / 576 / 608 tokens (68 / 72 / 76 rows)
    /// −1.7 / −1.8%, −1.2 / −0.9%, +0.3 / −0.2%; forced off at 800 / 896 / 960 (100 / 112 / 120 rows) +2.7 / +1.9%,
    /// +1.7 / +2.5%, +1.0 / +1.0%. So it is off at 77–96 rows (`registeredHandOverOffRows`), on either side.
    /// `MOE_CUDA_HANDOVER_REGISTERED=1` / `=0` forces it on / off.
    public var tileHandOver: Bool {
        if registeredKernels {
            return LaunchPlan.registeredHandOverSwitch.map { $0 == "1" }
                ?? (gemm1Waves <= LaunchPlan.registeredHandOverMaxWaves
                    && !LaunchPlan.registeredHandOverOffRows.contains(rowsPerExpert))
        }
        return gemm1Variant.isResident && gemm2Variant.isResident && tokens <= LaunchPlan.tileHandOverMaxTokens
    }
    /// GEMM 1's waves by arithmetic: its row blocks times the tiles routing spread evenly would give (every expert
    /// ceil(slots / E) rows, in ceil(rows / tile rows) tiles), over the blocks the device holds at once
    /// (multiprocessors × the kernel's blocks an SM).
    public var gemm1Waves: Double {
        let tiles = min(config.experts, slots) * max(1, (rowsPerExpert + tileRows - 1) / tileRows)
        let resident = multiprocessors * gemm1Variant.blocksPerSM  // 1 for every kernel but the registered two-block ones
        return Double(gemm1Shape.grid.x * tiles) / Double(resident)
    }
    /// An expert's rows if routing spread the slots evenly, rounded up.
    public var rowsPerExpert: Int { (slots + config.experts - 1) / config.experts }
    /// The widths GEMM 1's tiles are fitted to (RoutingPlan.tileSizes; both GEMMs share the schedule): an expert's
    /// tiles keep their count but take the widths that sum least while holding its rows (260 rows in 192-row tiles:
    /// 128 + 132 at n128 + n160, not 192 + 68 at n192 + n128). With the rounded 192-token kernel against the plain one,
    /// two rounds (session 26, run 91, H100): gpt-oss-120b −2.8 / −2.9% at 5376 tokens, −2.4 / −2.0% at 8192, −3.4 /
    /// −0.6% at 16384, −1.0 / −0.1% at 32768; gpt-oss-20b −3.2 / −0.8% at 1344, −0.2 / −0.8% at 2048, −2.9 / −2.1% at
    /// 4096, −1.2 / −1.0% at 8192. `MOE_CUDA_FIT_TILES=0` turns it off (plain tiles: tileRows each, the last short).
    public var tileWidths: [Int] { LaunchPlan.fitTilesSwitch ? gemm1Variant.wgmmaWidths : [] }
    static let fitTilesSwitch = currentEnvironment("MOE_CUDA_FIT_TILES") != "0"
    /// Both GEMMs are registered kernels, so a hand-over launches their `_handover` entry points.
    public var registeredHandOver: Bool { registeredKernels && tileHandOver }
    private var registeredKernels: Bool { gemm1Variant.kind == .registered && gemm2Variant.kind == .registered }
    static let tileHandOverMaxTokens = 8
    static let registeredHandOverSwitch = currentEnvironment("MOE_CUDA_HANDOVER_REGISTERED")
    /// Between the measured wins (7.3 waves) and losses (14.5).
    static let registeredHandOverMaxWaves = 8.0
    /// Rows an expert where the hand-over lost within those waves (runs 93 and 96: 80, 88 and 96 rows on gpt-oss-20b;
    /// run 99: it won at 68 and 72 and was level at 76).
    static let registeredHandOverOffRows = 77...96

    /// Decode sizes sum the k expert rows of each token in GEMM 2's last block per column range instead of a separate
    /// reduce launch (resident kernels; the last blocks' extra work grows with T).
    public var fusedReduce: Bool { gemm2Variant.isResident && tokens <= LaunchPlan.fusedReduceMaxTokens }
    static let fusedReduceMaxTokens = 64
    public var reduceShape: LaunchShape {
        LaunchShape(grid: (tokens, (config.hidden / 8 + 127) / 128, 1), block: 128)
    }
}
