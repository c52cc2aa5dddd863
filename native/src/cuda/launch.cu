// Host side of the CUDA kernels: support check, plan (path, splits, head chunks, scratch), and the
// launch sequence on ORT's stream. No allocation and no synchronisation here.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/kernels.cuh"

namespace mixattn::cuda {
namespace {

std::string CudaError(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

int ElementBytes(DType t) { return t == DType::kFloat32 ? 4 : 2; }
int CacheElementBytes(DType t, CacheDType cache) { return cache == CacheDType::kSameAsQuery ? ElementBytes(t) : 1; }

constexpr size_t kScratchAlign = 256;

// Visible ranges up to this many keys count as short for the split choice (Plan).
constexpr long long kShortRange = 2048;
// Short decode calls with up to this many splits merge them in a thread-block cluster where one fits (Plan): every
// count measured from 2 to 9 gained, 16 lost (H200 kbench A/B; the numbers at the rule in Plan).
constexpr int kAutoClusterSplits = 9;

// Prefill split-K (Plan): only when the grid fills at most half the resident slots (2 blocks an SM) and the key range
// can exceed kPrefillSplitFrom keys; at least kPrefillMinSplitKeys keys a split, at most kPrefillMaxSplits splits.
constexpr long long kPrefillSplitFrom = 4096, kPrefillMinSplitKeys = 2048;
constexpr int kPrefillMaxSplits = 8;

#ifdef MIXATTN_TUNING
// Tuning build (CMake option MIXATTN_TUNING, for benches and A/B checks): environment knobs over the automatic plan.
// Waves of resident decode blocks that the split heuristic aims for (MIXATTN_CUDA_DECODE_WAVES
// overrides, for tuning runs).
int TargetWaves() {
  static const int v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_DECODE_WAVES");
    const int x = e ? std::atoi(e) : 0;
    return x > 0 ? x : 2;
  }();
  return v;
}

// MIXATTN_CUDA_DECODE_KERNEL=simt|tc (tuning and A/B runs): -1 when unset.
int EnvKernel() {
  static const int v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_DECODE_KERNEL");
    if (e == nullptr) return -1;
    const std::string s(e);
    return s == "simt" ? 0 : s == "tc" ? 1 : -1;
  }();
  return v;
}

// MIXATTN_CUDA_DECODE_SPLITS=n forces the split count (tuning runs): 0 when unset.
int EnvSplits() {
  static const int v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_DECODE_SPLITS");
    const int x = e ? std::atoi(e) : 0;
    return x > 0 ? x : 0;
  }();
  return v;
}

// MIXATTN_CUDA_DECODE_TC_FLAGS=n (tuning runs): -1 when unset.
int EnvTcFlags() {
  static const int v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_DECODE_TC_FLAGS");
    return e ? std::atoi(e) : -1;
  }();
  return v;
}
// MIXATTN_CUDA_FUSED_COMBINE=0 (A/B runs): the separate CombineKernel instead of the in-kernel merge.
bool EnvFusedCombine() {
  static const bool v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_FUSED_COMBINE");
    return e == nullptr || std::atoi(e) != 0;
  }();
  return v;
}
// MIXATTN_CUDA_CLUSTER_MERGE=0 (A/B runs): split-K merged through global memory even where a cluster would do.
bool EnvClusterMerge() {
  static const bool v = [] {
    const char* e = std::getenv("MIXATTN_CUDA_CLUSTER_MERGE");
    return e == nullptr || std::atoi(e) != 0;
  }();
  return v;
}

#else
// Release build: no environment knobs and no overrides, the automatic plan only (the values the tuning build uses
// when nothing is set). Tuning and A/B runs build with the CMake option MIXATTN_TUNING.
struct PlanTuning {
  static constexpr int decode_kernel = -1, splits = 0, tc_flags = -1, fused_combine = -1, cluster_merge = -1,
                       prefill_kernel = -1;
};
constexpr int TargetWaves() { return 2; }
constexpr int EnvKernel() { return -1; }
constexpr int EnvSplits() { return 0; }
constexpr int EnvTcFlags() { return -1; }
constexpr bool EnvFusedCombine() { return true; }
constexpr bool EnvClusterMerge() { return true; }
#endif  // MIXATTN_TUNING

// Default: interleaved warp tiles (each block streams one contiguous region; +6-11% at 256-512 MB per
// call on H200 vs contiguous quarters), plain cp.async (the L2 prefetch / evict-first hints lost 1-8%).
constexpr int kDefaultTcFlags = 1;

// The fields PrefillParams and DecodeParams share, from one call's arguments (a reader passes no chunk).
template <typename Params>
Params SharedParams(const CudaAttendArgs& a, bool owner) {
  const AttentionShape& sh = a.shape;
  Params p{};
  p.query = a.query;
  p.chunk_key = owner ? a.chunk_key : nullptr;
  p.chunk_value = owner ? a.chunk_value : nullptr;
  p.key_cache = a.key_cache;
  p.value_cache = a.value_cache;
  p.past_lengths = a.past_lengths;
  p.new_lengths = a.new_lengths;
  p.output = a.output;
  p.batch = sh.batch;
  p.seq = sh.seq;
  p.num_heads = sh.num_heads;
  p.kv_num_heads = sh.kv_num_heads;
  p.capacity = sh.capacity;
  p.window = sh.window;
  p.group = sh.group();
  p.scale = sh.scale;
  p.softcap = sh.softcap;
  p.paged = a.paged;  // the kernels' view: cleared when the pools are staged, so set exactly when they read in place
  return p;
}


int MinPerSplit(DType dtype, int head_dim, const LaunchPlan& pl) {
  return pl.tensor_core ? kDecodeTcMinPerSplit : DecodeRowsPerStep(dtype, head_dim) * DecodeUnroll(pl.head_chunk) * 2;
}

size_t AlignScratch(size_t bytes) { return (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

// Split-K (pl.splits > 1): room for the partials of every (token, query head, split) — (max, sum) pairs at offset 0,
// accumulators of D floats at partials_acc_offset — and the number of merge groups (split-completion counters).
LaunchPlan WithPartials(const AttentionShape& sh, size_t groups, LaunchPlan pl) {
  if (pl.splits <= 1) return pl;
  const size_t parts = static_cast<size_t>(sh.batch) * sh.seq * sh.num_heads * pl.splits;
  pl.split_groups = groups;
  pl.partials_acc_offset = AlignScratch(parts * sizeof(float2));
  pl.scratch_bytes = pl.partials_acc_offset + parts * sh.head_dim * sizeof(float);
  return pl;
}

// Whether the chosen kernels need the caches staged (LaunchPlan::staged_caches): quantized caches without the
// tensor-core decode's quantized tiles, or paged pools without its block-table tiles.
bool StagesCaches(const CudaAttendArgs& a, const LaunchPlan& pl) {
  const bool quantized_tiles = pl.path == Path::kDecode && pl.tensor_core;
  return (a.cache != CacheDType::kSameAsQuery && !quantized_tiles) || (a.paged.table != nullptr && !pl.paged_tiles);
}

// Room for the staged caches and a quantized owner's dequantize(quantize(chunk)) after everything else in the scratch
// buffer.
LaunchPlan WithStagedCaches(const CudaAttendArgs& a, LaunchPlan pl) {
  if (!StagesCaches(a, pl)) return pl;
  const AttentionShape& sh = a.shape;
  const size_t cache = static_cast<size_t>(sh.batch) * sh.kv_num_heads * sh.capacity * sh.head_dim * ElementBytes(a.dtype);
  const size_t chunk = static_cast<size_t>(sh.batch) * sh.seq * sh.kv_num_heads * sh.head_dim * ElementBytes(a.dtype);
  const bool fake_chunk = a.chunk_key != nullptr && a.cache != CacheDType::kSameAsQuery;
  pl.staged_caches = true;
  pl.staged_offset = AlignScratch(pl.scratch_bytes);
  pl.fake_chunk_offset = pl.staged_offset + 2 * AlignScratch(cache);
  pl.scratch_bytes = pl.fake_chunk_offset + (fake_chunk ? 2 * AlignScratch(chunk) : 0);
  return pl;
}

// Bytes of one K (or V) cache: [B, Hkv, C, D], or a paged pool [num_blocks, Hkv, block_size, D].
size_t CacheBytes(const CudaAttendArgs& a) {
  const AttentionShape& sh = a.shape;
  const size_t rows = a.paged.table != nullptr ? static_cast<size_t>(a.paged.num_blocks) * a.paged.block_size
                                               : static_cast<size_t>(sh.batch) * sh.capacity;
  return rows * sh.kv_num_heads * sh.head_dim * CacheElementBytes(a.dtype, a.cache);
}

// Rotary inputs: the tensor-core decode kernel rotates in place of the loads (kFused) when it also writes the cache;
// every other path (staged caches too: the cache-write kernel stores the owner's keys as given) gets rotated copies of
// the queries and the owner's keys, placed after the split-K partials in the scratch buffer.
LaunchPlan WithRotary(const CudaAttendArgs& a, LaunchPlan pl) {
  if (a.rotary_dim <= 0) return pl;
  if (pl.path == Path::kDecode && pl.tensor_core && !StagesCaches(a, pl)) {
    pl.rotary = RotaryPath::kFused;
    return pl;
  }
  const AttentionShape& sh = a.shape;
  const size_t row = static_cast<size_t>(sh.batch) * sh.seq * sh.head_dim * ElementBytes(a.dtype);
  pl.rotary = RotaryPath::kPrepass;
  pl.rotary_offset = AlignScratch(pl.scratch_bytes);
  pl.rotary_key_offset = pl.rotary_offset + AlignScratch(row * sh.num_heads);
  pl.scratch_bytes = pl.rotary_key_offset + (a.chunk_key != nullptr ? row * sh.kv_num_heads : 0);
  return pl;
}

}  // namespace

std::string CheckSupported(const AttentionShape& sh, DType dtype, CacheDType cache) {
  (void)cache;  // every query type takes every cache type (fp32 through the dequantizing pre-pass)
  if (sh.head_dim != 64 && sh.head_dim != 128 && sh.head_dim != 256)
    return "the CUDA kernels support head size D = 64, 128 or 256, got D = " + std::to_string(sh.head_dim);
  if (sh.capacity <= 0) return "the CUDA kernels need a cache capacity C > 0";
  (void)dtype;
  return {};
}

#ifdef MIXATTN_TUNING
LaunchPlan Plan(const CudaAttendArgs& a, int num_sms, const PlanTuning& tuning) {
#else
LaunchPlan Plan(const CudaAttendArgs& a, int num_sms) {
  constexpr PlanTuning tuning{};
#endif
  const AttentionShape& sh = a.shape;
  LaunchPlan pl;
  pl.copy_cache = a.present_key != nullptr && (a.present_key != a.key_cache || a.present_value != a.value_cache);
  if (sh.seq == 1)
    pl.path = Path::kDecode;
  else
    pl.path = a.dtype == DType::kFloat32 ? Path::kPerToken : Path::kPrefill;
  if (pl.path == Path::kPrefill) {
    // One block per (64 query tokens, head, sequence). A chunk that gives fewer blocks than half the resident slots
    // (one sequence's short chunk against a long cache) splits the key range so that the blocks fill them; the
    // group's last block merges. The kernel re-splits by the real range.
    const long long blocks = (static_cast<long long>(sh.seq) + kPrefillRows - 1) / kPrefillRows * sh.num_heads * sh.batch;
    const long long resident = 2LL * std::max(num_sms, 1);
    const long long longest = sh.window > 0 ? std::min<long long>(sh.window + kPrefillRows - 1, sh.capacity + sh.seq)
                                            : static_cast<long long>(sh.capacity) + sh.seq;
    // Paged pools are read in place when a key tile never straddles two pool blocks: tiles start at multiples of the
    // tile from position 0 (a global layer) and the block size is a multiple of the tile. Codes, and sliding readers
    // of a paged owner, are staged (the kernel reads T rows from a range that starts at p - W + 1).
    pl.paged_tiles = a.paged.table != nullptr && a.cache == CacheDType::kSameAsQuery && sh.window == 0 &&
                     a.paged.block_size % PrefillKeysPerTile(sh.head_dim) == 0;
    pl.splits = 1;
    if (tuning.splits > 0)
      pl.splits = std::clamp(tuning.splits, 1, kPrefillMaxSplits);
    else if (blocks > 0 && 2 * blocks <= resident && longest >= kPrefillSplitFrom)
      pl.splits = static_cast<int>(std::clamp<long long>(
          std::min(resident / blocks, longest / kPrefillMinSplitKeys), 1, kPrefillMaxSplits));
    // Hopper's warpgroup-MMA kernel (sm_90), without softcap; its 128-key tiles read paged pools in place only when
    // the block size holds whole tiles (else the mma.sync kernel keeps reading them in place). It runs one block an SM
    // (three warpgroups, all of its registers), so a grid of fewer blocks than SMs against a long range splits it to
    // fill them. H200 kbench, variant 5 against mma.sync as planned: whole prompts 16K D = 128 4106 against 7058 us,
    // D = 64 2749 / 4451, 4K D = 128 319 / 514, D = 256 (variant 1) 2787 / 5363; a 256-token chunk after 32K keys in
    // 2 splits 267 us (unsplit 430, 4 splits 295) against 463; a 64-token one in 4 splits 102 us (2: 178, 8: 129)
    // against 157. Variant 5 at D <= 128, 1 at 256; PlanTuning may name the variant and the splits.
    const int variant = tuning.prefill_kernel >= 0 ? tuning.prefill_kernel
                        : GetPrefillWgmmaLauncher(a.dtype, sh.head_dim, kPrefillWgmmaPlanned) != nullptr ? kPrefillWgmmaPlanned
                                                                                                       : 1;
    const bool wgmma = variant >= 1 && sh.softcap <= 0.f && GetPrefillWgmmaLauncher(a.dtype, sh.head_dim, variant) != nullptr &&
                       (!pl.paged_tiles || a.paged.block_size % kPrefillWgmmaKeysPerTile == 0);
    if (wgmma && tuning.splits <= 0) {
      const long long wgmma_blocks =
          (static_cast<long long>(sh.seq) + kPrefillWgmmaRows - 1) / kPrefillWgmmaRows * sh.num_heads * sh.batch;
      const long long sms = std::max(num_sms, 1);
      pl.splits = wgmma_blocks < sms && longest >= kPrefillSplitFrom
                      ? static_cast<int>(std::clamp<long long>(std::min(sms / wgmma_blocks, longest / kPrefillMinSplitKeys),
                                                               1, kPrefillMaxSplits))
                      : 1;
    }
    pl.wgmma_prefill = wgmma ? variant : 0;
    return WithStagedCaches(a, WithRotary(a, WithPartials(sh, blocks, pl)));  // a group: one (query tile, head, sequence)
  }

  const int G = sh.group();
  pl.head_chunk = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
  pl.chunks = (G + pl.head_chunk - 1) / pl.head_chunk;
  const int kernel = tuning.decode_kernel >= 0 ? tuning.decode_kernel : EnvKernel();
  pl.tensor_core = pl.path == Path::kDecode && kernel != 0 && GetDecodeTcLauncher(a.dtype, sh.head_dim, a.cache) != nullptr;
  pl.tc_flags = tuning.tc_flags >= 0 ? tuning.tc_flags : EnvTcFlags() >= 0 ? EnvTcFlags() : kDefaultTcFlags;
  // Paged pools: the tensor-core kernel reads them through the block table when a 16-key tile never straddles two
  // pool blocks — tiles start at multiples of 16 from position 0 (a global layer) and the block size is a multiple of
  // 16; otherwise (a sliding reader of a paged owner starts at p - W + 1) they are staged (gathered) first.
  pl.paged_tiles = a.paged.table != nullptr && pl.tensor_core && sh.window == 0 &&
                   a.paged.block_size % kDecodeTcKeysPerTile == 0;
  // Split count from (B, heads, the longest possible visible length): enough blocks to fill the
  // GPU, but at least min_per_split keys per split. The kernel re-splits by the real length.
  const long long base = static_cast<long long>(sh.batch) * sh.seq * sh.kv_num_heads * pl.chunks;
  const long long longest = sh.window > 0 ? std::min(sh.window, sh.capacity + sh.seq) : sh.capacity;
  const int min_per = MinPerSplit(a.dtype, sh.head_dim, pl);
  const long long max_splits = std::clamp<long long>((longest + min_per - 1) / min_per, 1, 256);
  const int forced = tuning.splits > 0 ? tuning.splits : EnvSplits();
  if (forced > 0) {
    pl.splits = static_cast<int>(std::clamp<long long>(forced, 1, 256));
  } else if (pl.tensor_core) {
    // Blocks of one launch do equal work, so the time goes with the number of waves of resident
    // blocks per split: pick the split count with the least ceil(blocks / resident) / splits (a
    // larger count only when it gains 5%), i.e. whole waves and no tail.
    //
    // Short ranges (a sliding window, a short global cache: longest visible <= kShortRange keys) are bound by
    // latency, not bandwidth: there the fewest splits that fill half the resident slots win, since each more
    // block per SM and the split merge cost more than the shorter streams save (H200 kbench, B = 16, W = 1024,
    // D = 64: 2 splits 14.5 us, 3 splits 15.7 us; B = 1 still takes its 16).
    const long long sms = std::max(num_sms, 1);
    // Quantized caches below D = 128 plan with the fp kernel's resident blocks (3 an SM at D = 64), for which these rules
    // were tuned: the fp8 / int8 D = 64 kernels fit 4 (128 registers), and counting those made the rules pick more
    // splits, slower (H200 kbench, fp8, in-run A/B: sliding B = 32 2 -> 1 splits 26.1 -> 17.9 us; global B = 1,
    // T = 64K 65 -> 48 splits 31.2 -> 30.4 us; B = 8, T = 32K 8 -> 6 splits 80.8 -> 78.1 us; B = 32, T = 16K 2 -> 3
    // splits 170.4 -> 157.6 us).
    const CacheDType plan_cache = sh.head_dim < 128 ? CacheDType::kSameAsQuery : a.cache;
    const long long cap_full = sms * DecodeTcBlocksPerSm(a.dtype, sh.head_dim, plan_cache);
    // Resident blocks the wave model counts. For D >= 128 (long ranges; the short-range rule below is tuned on all
    // resident slots) one block per SM already keeps >= 64 KB of K / V in flight
    // (4 warps x 2 tiles of 16 rows ahead), and more resident blocks only add splits to merge (H200 kbench, global,
    // D = 128, B = 1: 16 splits 2-10% faster than 33 from T = 4K to 64K; B = 8: 2 and 4 splits equal). D = 64 keeps
    // 48 KB a block in flight and gains from more (B = 1, T = 64K: 48 splits 40.6 us, 16 splits 43.4 us).
    // Quantized caches: every resident block (dequantizing adds latency to each tile, which more warps an SM hide).
    const long long cap = sh.head_dim >= 128 && longest > kShortRange && a.cache == CacheDType::kSameAsQuery ? sms : cap_full;
    long long best = 1;
    double best_cost = 1e30;
    for (long long s = 1; s <= max_splits && base > 0; ++s) {
      const double cost = static_cast<double>((base * s + cap - 1) / cap) / static_cast<double>(s);
      if (cost < best_cost * 0.95) {
        best_cost = cost;
        best = s;
      }
    }
    if (longest <= kShortRange && base > 0) best = std::min(best, std::max<long long>(1, (cap_full / 2 + base - 1) / base));
    // Short ranges: the kernel rounds a split's keys up to whole block steps (kDecodeTcMinPerSplit), so a count that
    // does not divide the range into such steps leaves the last splits empty — 17 splits of 2,048 keys are 16 of 128
    // and one of none, whose block still runs and whose partial the merge still reads (and 17 > 16 takes the merge
    // off its early-load path). Keep only the splits that get keys: H200 kbench, B = 1, global T = 2K, D = 128 17 -> 16
    // splits 10.7 -> 9.3 us (rotary 11.8 -> 10.6), D = 64 25 -> 16 splits 10.3 -> 7.3 us, T = 1.5K 17 -> 12 splits 9.6
    // -> 8.8 us. Not on long ranges, where the block order matters more than one idle block: B = 1, T = 64K, D = 64
    // as 47 splits instead of 48 (the 48th empty either way) took 43.3 us against 40.6.
    if (longest <= kShortRange) {
      const long long per = ((longest + best - 1) / best + kDecodeTcMinPerSplit - 1) / kDecodeTcMinPerSplit * kDecodeTcMinPerSplit;
      best = std::max<long long>(1, (longest + per - 1) / per);
    }
    pl.splits = static_cast<int>(best);
  } else {
    const long long target = static_cast<long long>(std::max(num_sms, 1)) *
                             DecodeBlocksPerSm(a.dtype, sh.head_dim, pl.head_chunk) * TargetWaves();
    const long long want = base > 0 ? (target + base - 1) / base : 1;
    pl.splits = static_cast<int>(std::clamp<long long>(want, 1, max_splits));
  }
  // Short ranges with a few splits, on sm_90: one thread-block cluster per group merges through distributed shared
  // memory, which takes the global partials, the fence, the split counter and the L2 round trips off the call's
  // critical path. H200 kbench, in-run A/B, W = 1024 unless global: without / with rotary inside the op, sliding
  // D = 128 B = 2 (9 splits) 9.9 -> 9.6 / 11.1 -> 11.0 us, B = 4 (5) 12.6 -> 11.8 / 13.5 -> 13.0, B = 8 (3) 16.1 -> 15.4
  // / 16.7 -> 16.1, B = 16 (2) 24.8 -> 23.7 / 25.1 -> 24.3; D = 64 B = 4 (7) 9.1 -> 8.5 / 10.3 -> 10.0, B = 8 (4)
  // 11.0 -> 10.9 / 12.3 -> 12.4, B = 16 (2) 14.3 -> 13.8 / 15.2 -> 15.0; global T = 2K B = 8 (3) 25.1 -> 24.1. Not for
  // long ranges or many splits: clusters constrain where blocks may run — 16-block clusters made B = 1 calls 3-6%
  // slower (sliding) and 12-26% slower (global, T = 4K-128K), 3-block clusters a global B = 16, T = 32K, D = 64 call
  // 14% slower. tuning.cluster_merge = 1 forces it wherever a cluster fits (A/B runs).
  // Also two splits on a long range (pairs of blocks), which gained 0.2-1.9% (H200 global B = 8, T = 4K 38.1 -> 37.4 us,
  // T = 8K 67.8 -> 67.1, T = 128K 933 -> 931), while 3 and 4 splits there lost 5-35%.
  const bool cluster_auto = pl.splits <= kAutoClusterSplits && (longest <= kShortRange || pl.splits == 2) && EnvClusterMerge();
  pl.cluster_merge = pl.tensor_core && !pl.paged_tiles && pl.splits > 1 &&
                     (tuning.cluster_merge >= 0 ? tuning.cluster_merge != 0 : cluster_auto) &&
                     DecodeTcClusterFits(a.dtype, sh.head_dim, pl.splits, a.cache);
  pl.fused_combine = pl.tensor_core && pl.splits > 1 && !pl.cluster_merge &&
                     (tuning.fused_combine >= 0 ? tuning.fused_combine != 0 : EnvFusedCombine());
  return WithStagedCaches(a, WithRotary(a, WithPartials(sh, base, pl)));  // a group: one (token, KV head, head chunk)
}

std::string Launch(const CudaAttendArgs& args, const LaunchPlan& pl, void* scratch, void* stream_ptr) {
  const AttentionShape& sh = args.shape;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (sh.batch == 0 || sh.seq == 0) return {};
  const bool owner = args.present_key != nullptr;
  CudaAttendArgs a = args;
  if (pl.rotary == RotaryPath::kPrepass) {  // the kernels below then see already rotated queries and keys
    if (scratch == nullptr) return "rotary pre-pass needs a scratch buffer";
    char* base = static_cast<char*>(scratch) + pl.rotary_offset;
    if (cudaError_t e = LaunchRotary(a.dtype, args, args.query, base, sh.num_heads, stream))
      return CudaError("rotary kernel launch (query)", e);
    a.query = base;
    if (owner) {
      void* keys = static_cast<char*>(scratch) + pl.rotary_key_offset;
      if (cudaError_t e = LaunchRotary(a.dtype, args, args.chunk_key, keys, sh.kv_num_heads, stream))
        return CudaError("rotary kernel launch (key)", e);
      a.chunk_key = keys;
    }
  }

  if (pl.copy_cache) {  // present not bound to past: whole-cache (whole-pool) copy, then write the new rows into present
    const size_t bytes = CacheBytes(a);
    if (a.present_key != a.key_cache)
      if (cudaError_t e = cudaMemcpyAsync(a.present_key, a.key_cache, bytes, cudaMemcpyDeviceToDevice, stream))
        return CudaError("copy past_key -> present_key", e);
    if (a.present_value != a.value_cache)
      if (cudaError_t e = cudaMemcpyAsync(a.present_value, a.value_cache, bytes, cudaMemcpyDeviceToDevice, stream))
        return CudaError("copy past_value -> present_value", e);
  }

  // The kernels' view: with staged caches, contiguous caches of the query type and a quantized owner's chunk as the
  // cache will hold it (the cache write below still quantizes, through the block table, from `a`).
  CudaAttendArgs k = a;
  if (pl.staged_caches) {
    if (scratch == nullptr) return "staged caches need a scratch buffer";
    char* base = static_cast<char*>(scratch);
    const size_t cache = static_cast<size_t>(sh.batch) * sh.kv_num_heads * sh.capacity * sh.head_dim * ElementBytes(a.dtype);
    const size_t chunk = static_cast<size_t>(sh.batch) * sh.seq * sh.kv_num_heads * sh.head_dim * ElementBytes(a.dtype);
    const size_t cache_step = AlignScratch(cache), chunk_step = AlignScratch(chunk);
    void* dk = base + pl.staged_offset;
    void* dv = base + pl.staged_offset + cache_step;
    if (cudaError_t e = LaunchStageCaches(a.dtype, a, dk, dv, stream)) return CudaError("stage caches launch", e);
    k.key_cache = dk;
    k.value_cache = dv;
    k.cache = CacheDType::kSameAsQuery;
    k.paged = BlockTable{};
    if (owner && a.cache != CacheDType::kSameAsQuery) {
      void* fk = base + pl.fake_chunk_offset;
      void* fv = base + pl.fake_chunk_offset + chunk_step;
      if (cudaError_t e = LaunchFakeQuantChunk(a.dtype, a, fk, fv, stream)) return CudaError("quantize chunk launch", e);
      k.chunk_key = fk;
      k.chunk_value = fv;
    }
  }

  if (pl.path == Path::kPrefill) {
    PrefillLauncher launch = pl.wgmma_prefill > 0 ? GetPrefillWgmmaLauncher(a.dtype, sh.head_dim, pl.wgmma_prefill)
                                              : GetPrefillLauncher(a.dtype, sh.head_dim);
    if (launch == nullptr) return "no prefill kernel for this head size / element type";
    PrefillParams p = SharedParams<PrefillParams>(k, owner);
    p.splits = 1;
    if (pl.splits > 1) {
      if (scratch == nullptr) return "split-K prefill needs a scratch buffer";
      // Without counters (a first allocation while the stream is captured) the call runs unsplit: same result.
      p.counters = SplitCounters(stream, pl.split_groups);
      if (p.counters != nullptr) {
        p.splits = pl.splits;
        p.part_ml = static_cast<float2*>(scratch);
        p.part_o = reinterpret_cast<float*>(static_cast<char*>(scratch) + pl.partials_acc_offset);
      }
    }
    if (cudaError_t e = launch(p, stream)) return CudaError("prefill kernel launch", e);
  } else {
    DecodeLauncher launch = pl.tensor_core ? GetDecodeTcLauncher(a.dtype, sh.head_dim, k.cache)
                                           : GetDecodeLauncher(a.dtype, sh.head_dim, pl.head_chunk);
    if (launch == nullptr) return "no decode kernel for this head size / element type";
    DecodeParams p = SharedParams<DecodeParams>(k, owner);
    p.k_scale = a.k_scale;
    p.v_scale = a.v_scale;
    p.k_scale_mode = static_cast<int>(a.k_scale_mode);
    p.v_scale_mode = static_cast<int>(a.v_scale_mode);
    const bool fused_write = owner && pl.path == Path::kDecode && !pl.staged_caches;
    p.write_key = fused_write ? a.present_key : nullptr;
    p.write_value = fused_write ? a.present_value : nullptr;
    if (pl.splits > 1) {
      if (scratch == nullptr) return "split-K decode needs a scratch buffer";
      p.part_ml = static_cast<float2*>(scratch);
      p.part_acc = reinterpret_cast<float*>(static_cast<char*>(scratch) + pl.partials_acc_offset);
    }
    p.chunks = pl.chunks;
    p.splits = pl.splits;
    p.min_per_split = MinPerSplit(a.dtype, sh.head_dim, pl);
    p.head_chunk = pl.head_chunk;
    p.tc_flags = pl.tc_flags;
    if (pl.rotary == RotaryPath::kFused)
      p.rotary = {a.cos_cache, a.sin_cache, a.rotary_dim, a.max_positions, a.rotary_interleaved ? 1 : 0};
    p.cluster_merge = pl.cluster_merge ? 1 : 0;
    if (pl.fused_combine)
      p.counters = SplitCounters(stream, pl.split_groups);
    if (cudaError_t e = launch(p, stream)) return CudaError("decode kernel launch", e);
    if (pl.splits > 1 && !pl.cluster_merge && p.counters == nullptr)
      if (cudaError_t e = GetCombineLauncher(a.dtype)(p, sh.head_dim, stream))
        return CudaError("split-K combine kernel launch", e);
  }

  if (owner && (pl.path != Path::kDecode || pl.staged_caches))
    if (cudaError_t e = LaunchCacheWrite(a.dtype, a, stream)) return CudaError("cache write kernel launch", e);
  return {};
}

int* SplitCounters(cudaStream_t stream, size_t count) {
  struct Entry {
    int device;
    cudaStream_t stream;
    int* counters;
    size_t count;
  };
  static std::mutex mu;
  static std::vector<Entry> pool;  // never freed: captured graphs and queued kernels keep the addresses
  const int device = CurrentDevice();
  std::lock_guard<std::mutex> lock(mu);
  Entry* entry = nullptr;
  for (Entry& e : pool)
    if (e.device == device && e.stream == stream) entry = &e;
  if (entry != nullptr && entry->count >= count) return entry->counters;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
    (void)cudaGetLastError();
    return nullptr;
  }
  const size_t n = std::max<size_t>(count, 4096);
  int* counters = nullptr;
  if (cudaMalloc(&counters, n * sizeof(int)) != cudaSuccess ||
      cudaMemsetAsync(counters, 0, n * sizeof(int), stream) != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so the launch that follows reports only its own errors
    if (counters != nullptr) cudaFree(counters);
    return nullptr;
  }
  // A smaller buffer of this stream is left allocated: kernels queued before may still use it.
  if (entry != nullptr) {
    entry->counters = counters;
    entry->count = n;
  } else {
    pool.push_back({device, stream, counters, n});
  }
  return counters;
}

int CurrentDevice() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  return device;
}

int CurrentDeviceSmCount() {
  static std::atomic<int> cache[64] = {};
  const int device = CurrentDevice();
  if (device >= 0 && device < 64) {
    if (int v = cache[device].load(std::memory_order_relaxed)) return v;
  }
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 1;
  if (device >= 0 && device < 64) cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

std::string CopyLengthsToHost(const int32_t* device, int32_t* host, int n, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (cudaError_t e = cudaMemcpyAsync(host, device, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                      stream))
    return CudaError("copy lengths to host", e);
  if (cudaError_t e = cudaStreamSynchronize(stream)) return CudaError("synchronise for lengths", e);
  return {};
}

}  // namespace mixattn::cuda
