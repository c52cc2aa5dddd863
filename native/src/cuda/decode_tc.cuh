// Bandwidth-oriented decode kernel for S == 1, fp16 / bf16 ("tc": tensor cores, cp.async pipeline).
//
// Grid and split-K contract are those of DecodeKernel (decode.cu): x = token z * splits + split,
// y = KV head * chunks + head chunk; partials (max, sum, acc) go to the same scratch layout and are
// merged by the last block of each group (MergeSplitsIfLast, when DecodeParams::counters is set) or
// by the same CombineKernel, and the owner's new K/V row is written by the same fused write.
//
// Block = 4 warps. The block's key range [kb, ke) is read as tiles of 16 keys; by default
// (DecodeParams::tc_flags bit 0) warp w takes tiles w, w + 4, w + 8, ... so the block streams one
// contiguous region; with the bit clear each warp takes a contiguous quarter. Each warp streams its
// tiles through its own shared-memory ring of kStages tiles (K tile and V tile, 16 x D each) with
// cp.async (16-byte copies, L1 bypassed, zero-filled past the end), so kStages - 1 tiles per warp
// are in flight while it computes on the oldest one. No block barrier inside the loop: a warp only
// waits for its own copies (cp.async.wait_group + __syncwarp). (L2 prefetch / evict-first copy hints were
// tried and lost 1-8% on H200; removed with their code, which cost instruction-cache misses.)
//
// Math per tile on tensor cores (mma.sync m16n8k16, fp32 accumulation), with the up-to-8 query
// heads of the chunk as the n = 8 side:
//   S^T[16 keys x 8 heads]  = K[16 x D] . Q^T[D x 8]       A = K (ldmatrix), B = Q (registers)
//   O^T[D x 8 heads]       += V^T[D x 16] . P^T[16 x 8]     A = V (ldmatrix.trans), B = P
// P^T's B fragment is the transpose of S^T's accumulator fragment: one movmatrix per 8x8 half.
// Online softmax in fp32 (base 2): each lane holds 2 heads x 2 keys of a tile; the tile max of a
// head is reduced over the 8 lanes that share it. Shared-memory rows are XOR-swizzled by 16-byte
// chunk (dev::Swizzled: chunk ^ (row & 7)) so ldmatrix reads are conflict-free.
#pragma once
// Included by decode_tc.cu (caches of T), decode_tc_i8.cu (int8 codes) and decode_tc_f8.cu (fp8 E4M3 codes): one
// kernel template, its instantiations compiled in three translation units in parallel.
#include <atomic>
#include <type_traits>

#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"

namespace mixattn::cuda {
namespace {

using dev::CpAsync16;
using dev::CpAsyncCommit;
using dev::CpAsyncWait;
using dev::LdMatrixX4;
using dev::LdMatrixX4Trans;
using dev::MmaOp;
using dev::MovMatrixTrans;
using dev::SmemAddr;
using dev::Swizzled;
using dev::Traits;

constexpr int kWarps = kDecodeTcThreads / 32;
constexpr int kKeys = kDecodeTcKeysPerTile;  // keys per warp tile

// kCodes: the caches hold 1-byte codes (int8 / fp8). Their ring holds codes, with more stages for the same bytes in
// flight (D = 128: 4 tiles of 2 KB a warp ahead instead of 2 of 4 KB); the fragments are loaded from the codes with
// ldmatrix and converted to T in registers (dev::CodePair), so shared memory carries one byte per element each way.
template <int D, bool kCodes = false>
struct TcGeometry {
  // Tried for D = 64 and not kept (H200 kbench, W = 1024): a 7-stage ring (2 blocks/SM) made sliding calls at
  // B = 8 / 16 11-16% slower; 32-key stages (8 KB like D = 128, 3 stages) 3-9% slower; long calls moved 0-2%.
  static constexpr int kStages = kCodes ? (D <= 64 ? 7 : D <= 128 ? 5 : 4) : (D <= 64 ? 4 : 3);
  static constexpr int kTileElems = kKeys * D;                       // one K (or V) tile
  // Rotary: the block's (up to 8) query rows, rotated, staged in warp 0's last ring stage, which no copy fills before
  // the key loop (the prologue issues stages 0 .. kStages - 2); rows padded by 16 bytes so the fragment reads of the 8
  // heads fall in different banks. No extra shared memory: 16 more bytes a row had moved the D = 64 / 128 blocks to
  // the next shared-memory carveout (less L1) and cost short non-rotary calls 2-6% (H200 kbench A/B).
  static constexpr int kQueryStride = D + 8;
  static_assert(8 * kQueryStride * 2 <= 2 * kTileElems * (kCodes ? 1 : 2), "the staged query rows must fit one stage");
  template <typename T>
  __host__ __device__ static constexpr size_t ElemBytes() { return kCodes ? 1 : sizeof(T); }
  template <typename T>
  __host__ __device__ static constexpr size_t RingBytes() { return size_t{kStages} * 2 * kTileElems * ElemBytes<T>(); }
  template <typename T>
  __host__ __device__ static constexpr size_t WarpBytes() { return RingBytes<T>(); }
  template <typename T>
  __host__ __device__ static constexpr size_t QueryByteOffset() {  // within warp 0's region: its last stage
    return size_t{kStages - 1} * 2 * kTileElems * ElemBytes<T>();
  }
  template <typename T>
  static constexpr size_t SmemBytes() {
    const size_t ring = size_t{kWarps} * WarpBytes<T>();
    // The 4 warps' merge, then (cluster merge) the block's partial: [8][D] accumulators and 8 (max, sum) pairs.
    const size_t merge = (size_t{kWarps} * 8 * D + 2 * kWarps * 8 + 8 * D + 2 * 8) * sizeof(float);
    const size_t splits = 16 + (8 * 256 + 8) * sizeof(float);  // MergeSplitsIfLast: flag, weights of 8 heads x 256 splits
    return ring > merge ? (ring > splits ? ring : splits) : (merge > splits ? merge : splits);
  }
};

// Split-K merge without a second launch: every block publishes its partials (max, sum, acc), then counts
// itself done on its group's counter (dev::ArriveLast); the block that completes the group merges all
// partials of the group's heads exactly as CombineKernel does, reading them with ld.global.cg (L2).
//
// No static __shared__ variable here or in the kernel: one (the "last" flag, 16 bytes) moved the dynamic
// buffer off its 128-byte alignment, so every cp.async / ldmatrix row straddled two shared-memory
// wavefronts: -20% bandwidth at 0.5-17 GB per call on H200 (kbench A/B). The flag lives in the
// dynamic buffer, whose rings are free once the partials are written.
template <typename T, int D>
__device__ __forceinline__ void MergeSplitsIfLast(const DecodeParams& p, int z, int h0, int g_count, size_t group,
                                                  uint4* smem_raw) {
  // The shared rings are free once the partials are written: the flag and the merge's weights reuse them.
  if (!dev::ArriveLast(p.counters + group, p.splits, reinterpret_cast<int*>(smem_raw))) return;
  const int splits = p.splits, Hq = p.num_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int D4 = D / 4;
  // Up to kEarly splits with one (head, 4 dims) entry per thread: the accumulators are loaded now, so their L2 round
  // trip overlaps the one of the (max, sum) pairs instead of following it (both sit on the launch's critical path).
  constexpr int kEarly = 16;
  const bool early = splits <= kEarly && g_count * D4 <= kDecodeTcThreads;
  float4 acc_early[kEarly];
  if (early && static_cast<int>(threadIdx.x) < g_count * D4) {
    const size_t zh = static_cast<size_t>(z) * Hq + h0 + threadIdx.x / D4;
    const float4* acc = reinterpret_cast<const float4*>(p.part_acc + zh * splits * D) + threadIdx.x % D4;
#pragma unroll
    for (int i = 0; i < kEarly; ++i)
      if (i < splits) acc_early[i] = __ldcg(acc + static_cast<size_t>(i) * D4);
  }
  float* weights = reinterpret_cast<float*>(smem_raw + 1);  // [g_count][splits], after the flag's 16 bytes
  float* inv_sum = weights + 8 * splits;                    // [g_count]
  for (int g = warp; g < g_count; g += kWarps) {
    // One read of the (max, sum) pairs into registers: splits <= 256 = 8 per lane.
    const float2* ml = p.part_ml + (static_cast<size_t>(z) * Hq + h0 + g) * splits;
    float2 v[8];
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int i = lane + 32 * k;
      v[k] = i < splits ? __ldcg(&ml[i]) : make_float2(-INFINITY, 0.f);
      mx = fmaxf(mx, v[k].x);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int i = lane + 32 * k;
      const float w = (v[k].x == -INFINITY || mx == -INFINITY) ? 0.f : __expf(v[k].x - mx);
      if (i < splits) weights[g * splits + i] = w;
      sum += w * v[k].y;
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) inv_sum[g] = sum > 0.f ? 1.f / sum : 0.f;
  }
  __syncthreads();
  // One block merges what CombineKernel spreads over g_count * D threads (4 dims per thread):
  // out[g, 4 dims] = sum_i w[g, i] acc_i / sum; acc_i from the early registers or, for more splits, 16-byte L2
  // loads with 16 in flight (a merge of 33 splits is 3 round trips, not 9). The registers this takes are mostly
  // those the streaming loop no longer holds.
  for (int idx = threadIdx.x; idx < g_count * D4; idx += kDecodeTcThreads) {
    const int g = idx / D4, d4 = idx % D4;
    const size_t zh = static_cast<size_t>(z) * Hq + h0 + g;
    const float* w = weights + g * splits;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    auto add = [&](float wi, const float4& v) {
      a.x = fmaf(wi, v.x, a.x);
      a.y = fmaf(wi, v.y, a.y);
      a.z = fmaf(wi, v.z, a.z);
      a.w = fmaf(wi, v.w, a.w);
    };
    if (early) {
#pragma unroll
      for (int i = 0; i < kEarly; ++i)
        if (i < splits) add(w[i], acc_early[i]);
    } else {
      const float4* acc = reinterpret_cast<const float4*>(p.part_acc + zh * splits * D) + d4;
#pragma unroll 16
      for (int i = 0; i < splits; ++i) add(w[i], __ldcg(acc + static_cast<size_t>(i) * D4));
    }
    const float inv = inv_sum[g];
    T* out = static_cast<T*>(p.output) + zh * D + d4 * 4;
    out[0] = Traits<T>::From(a.x * inv);
    out[1] = Traits<T>::From(a.y * inv);
    out[2] = Traits<T>::From(a.z * inv);
    out[3] = Traits<T>::From(a.w * inv);
  }
}

// Split-K merge inside a thread-block cluster (sm_90; the group's splits are the cluster's blocks, rank = split): each
// block has left its partial — accumulators cl_acc[g][D] and (max in base-2 units, sum) cl_ml[g] — in its own shared
// memory; after a cluster barrier every block merges a slice of the group's (head, 4 dims) outputs, loading that slice
// of every block's partial straight from the other blocks' shared memory (all loads issued before the arithmetic: one
// round trip), and a second barrier keeps each block's shared memory alive until the others have read it. Replaces the
// global partials, the fence, the split counter and the last block's L2 round trips of MergeSplitsIfLast.
template <typename T, int D>
__device__ __forceinline__ void ClusterMergeSplits(const DecodeParams& p, int z, int h0, int g_count, const float* cl_acc,
                                                   const float2* cl_ml) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  dev::ClusterSync();  // every block's partial is in its shared memory
  constexpr int D4 = D / 4;
  const int splits = p.splits;
  const int entries = g_count * D4, per_rank = (entries + splits - 1) / splits;
  const int first = static_cast<int>(dev::ClusterRank()) * per_rank, last = min(entries, first + per_rank);
  const uint32_t acc_base = SmemAddr(cl_acc), ml_base = SmemAddr(cl_ml);
  for (int e = first + static_cast<int>(threadIdx.x); e < last; e += kDecodeTcThreads) {
    const int g = e / D4, d4 = e % D4;
    float2 ml[kMaxClusterSplits];
    float4 acc[kMaxClusterSplits];
#pragma unroll
    for (int r = 0; r < kMaxClusterSplits; ++r)
      if (r < splits) {
        ml[r] = dev::ClusterLoad2(dev::ClusterMap(ml_base + g * sizeof(float2), r));
        acc[r] = dev::ClusterLoad4(dev::ClusterMap(acc_base + (g * D + d4 * 4) * sizeof(float), r));
      }
    float mx = -INFINITY;
#pragma unroll
    for (int r = 0; r < kMaxClusterSplits; ++r)
      if (r < splits) mx = fmaxf(mx, ml[r].x);
    float sum = 0.f;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int r = 0; r < kMaxClusterSplits; ++r)
      if (r < splits && ml[r].x != -INFINITY) {
        const float w = exp2f(ml[r].x - mx);
        sum = fmaf(w, ml[r].y, sum);
        a.x = fmaf(w, acc[r].x, a.x);
        a.y = fmaf(w, acc[r].y, a.y);
        a.z = fmaf(w, acc[r].z, a.z);
        a.w = fmaf(w, acc[r].w, a.w);
      }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    T* out = static_cast<T*>(p.output) + (static_cast<size_t>(z) * p.num_heads + h0 + g) * D + d4 * 4;
    out[0] = Traits<T>::From(a.x * inv);
    out[1] = Traits<T>::From(a.y * inv);
    out[2] = Traits<T>::From(a.z * inv);
    out[3] = Traits<T>::From(a.w * inv);
  }
  dev::ClusterSync();  // no block leaves (freeing its shared memory) while another may still read it
#endif
}

// The block's g_count query rows (global memory, [g][D]) rotated at position pos into qs ([8][kQueryStride] in shared
// memory), one rotation pair per thread and pass: every load of a pass (the pair, its angle) is issued before any
// arithmetic. Replaces per-lane RotatePairs of the fragments, which loaded each row ~8 times over and cost ~550
// instructions a warp (ncu, H200, B = 16, W = 1024, D = 64: the rotary call 20.3 us against 18.2 us at ncu's clocks).
// Same arithmetic (dev::RotateValue) and rounding to T as RotatePairs, so the fragments are bit-identical.
template <typename T, int D, int kStride, typename Rot>
__device__ __forceinline__ void StageRotatedQuery(const T* q, int g_count, int pos, const Rot& r, T* qs) {
  constexpr int kPairs = 8 * D / 2;
  constexpr int kPasses = (kPairs + kDecodeTcThreads - 1) / kDecodeTcThreads;
  const int half = r.dim / 2, pairs = g_count * (D / 2);
  const T* cs = static_cast<const T*>(r.cos) + dev::RotaryRow(pos, r);
  const T* sn = static_cast<const T*>(r.sin) + dev::RotaryRow(pos, r);
  float x0[kPasses], x1[kPasses], c[kPasses], sv[kPasses];
  int at0[kPasses], at1[kPasses];
  bool turn[kPasses];
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * kDecodeTcThreads;
    const int g = min(i, pairs - 1) / (D / 2), j = min(i, pairs - 1) % (D / 2);
    int d0, d1, angle = j;
    if (r.interleaved) {
      d0 = 2 * j;
      d1 = d0 + 1;
      turn[k] = d0 < r.dim;
      if (!turn[k]) angle = 0;  // past the rotary dimensions: no angle (j would index past the cos / sin row)
    } else if (j < half) {
      d0 = j;
      d1 = j + half;
      turn[k] = true;
    } else {  // dimensions past the rotary ones: copied
      d0 = r.dim + 2 * (j - half);
      d1 = d0 + 1;
      turn[k] = false;
      angle = 0;
    }
    at0[k] = g * kStride + d0;
    at1[k] = g * kStride + d1;
    x0[k] = Traits<T>::One(q[g * D + d0]);
    x1[k] = Traits<T>::One(q[g * D + d1]);
    c[k] = Traits<T>::One(cs[angle]);
    sv[k] = Traits<T>::One(sn[angle]);
  }
#pragma unroll
  for (int k = 0; k < kPasses; ++k) {
    if (static_cast<int>(threadIdx.x) + k * kDecodeTcThreads >= pairs) break;
    const float y0 = turn[k] ? dev::RotateValue(x0[k], x1[k], c[k], sv[k], true) : x0[k];
    const float y1 = turn[k] ? dev::RotateValue(x1[k], x0[k], c[k], sv[k], false) : x1[k];
    qs[at0[k]] = Traits<T>::From(y0);
    qs[at1[k]] = Traits<T>::From(y1);
  }
}

// kRotary: rotary inside the op (p.rotary.dim > 0), a separate instantiation — with the rotary code compiled into the
// one kernel, its register budget shaped the schedule of the plain path too (H200 kbench A/B: short D = 128 calls
// without rotary 2-6% slower after the staged rotation replaced RotatePairs, until the two were split).
// kCluster: launched as clusters of p.splits blocks (one group each); the splits merge in distributed shared memory
// (ClusterMergeSplits) instead of through global partials (MergeSplitsIfLast / CombineKernel).
// kPaged: the caches are pools [num_blocks, Hkv, block_size, D] read through p.paged's block table (window 0 and
// block_size a multiple of the 16-key tile, so that a tile's rows are consecutive rows of one pool block: every tile
// starts at a multiple of 16). A tile's pool block is loaded one tile ahead (its load overlaps a tile's math instead of
// delaying the copies that depend on it). Its own instantiation: the contiguous kernel's code is unchanged.
// TC: the caches' element type — T, or 1-byte codes (int8_t / __nv_fp8_e4m3; kCodes) that are copied to the ring as
// codes (16-byte copies of 16 codes), loaded into fragments by ldmatrix on the codes and converted to T in registers
// (exact), and scaled outside the loop: the K scale folds into the query (per channel, rounded to T) or into the score
// scale (per tensor / head, fp32), the V scale multiplies the block's accumulators before its partial or output is
// written. A b16 ldmatrix over byte rows hands a lane 4 consecutive codes of a row (bytes 4t..4t+3), and its .trans form
// 2 codes of each of 2 consecutive rows; the fragments take them in a permuted order that both sides of each product
// share — K: the k index pairs (2t, 2t+1) / (2t+8, 2t+9) of a 16-dimension step are dimensions 4t, 4t+1 / 4t+2, 4t+3,
// so the query fragments are loaded in that order; V: the output rows g / g+8 of a 16-dimension tile are dimensions
// 2g / 2g+1, undone when the accumulators are written out.
template <typename T, typename TC, int D, bool kRotary, bool kCluster, bool kPaged = false>
__global__ void __launch_bounds__(kDecodeTcThreads) DecodeTcKernel(const __grid_constant__ DecodeParams p) {
  constexpr bool kCodes = !std::is_same_v<T, TC>;
  using G = TcGeometry<D, kCodes>;
  constexpr int EPC = 16 / static_cast<int>(sizeof(TC));  // cache elements per 16-byte chunk
  constexpr int NV = D / EPC;            // 16-byte chunks per cache row
  constexpr int KC = D / 16;             // k-steps of QK^T, m-tiles of PV
  constexpr int CPL = kKeys * NV / 32;   // chunks per lane per K (or V) tile
  constexpr int NS = G::kStages;
  static_assert(NV % 4 == 0 && (kKeys * NV) % 32 == 0, "head size must be a multiple of 64");
  static_assert(sizeof(T) == 2, "tensor-core decode is for 16-bit types");
  static_assert(sizeof(TC) == sizeof(T) || sizeof(TC) == 1, "caches of T or of 1-byte codes");
  // 128-byte aligned: the swizzled rows assume it (see MergeSplitsIfLast on static shared variables).
  extern __shared__ __align__(128) uint4 smem_raw[];
  char* smem_bytes = reinterpret_cast<char*>(smem_raw);

  constexpr int kBlockKeys = kWarps * kKeys;
  const dev::DecodeBlock<TC, D> blk(p, p.head_chunk, kBlockKeys);
  const int z = blk.z, split = blk.split, kvh = blk.kvh, chunk = blk.chunk, b = blk.b, s = blk.s, P = blk.P;
  const int g_count = blk.g_count, h0 = blk.h0, pos = blk.pos, per = blk.per, kb = blk.kb, ke = blk.ke;
  const bool active = blk.active;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int S = p.seq, splits = p.splits, Hq = p.num_heads, Hkv = p.kv_num_heads, C = p.capacity;
  const T* chunk_k = static_cast<const T*>(p.chunk_key);
  const T* chunk_v = static_cast<const T*>(p.chunk_value);
  // Paged: the pools' base (DecodeBlock's contiguous row offset does not apply).
  const TC* cache_k = kPaged ? static_cast<const TC*>(p.key_cache) : blk.cache_k;
  const TC* cache_v = kPaged ? static_cast<const TC*>(p.value_cache) : blk.cache_v;

  // Tiles of this warp: a contiguous quarter of [kb, ke) (flag bit 0 clear), or every 4th tile of
  // [kb, ke) so that the block streams one contiguous region (bit 0 set).
  const bool interleave = (p.tc_flags & 1) != 0;
  const int wper = per / kWarps;
  const int tbase = interleave ? min(ke, kb + warp * kKeys) : min(ke, kb + warp * wper);
  const int tend = interleave ? ke : min(ke, tbase + wper);
  const int tstride = interleave ? kWarps * kKeys : kKeys;
  // Constant divisors on either side of the (warp-uniform) choice.
  const int ntiles = interleave ? (tend - tbase + kWarps * kKeys - 1) / (kWarps * kKeys) : (tend - tbase + kKeys - 1) / kKeys;

  T* ring = reinterpret_cast<T*>(smem_bytes + static_cast<size_t>(warp) * G::template WarpBytes<T>());  // kCodes: codes
  const uint32_t ring_addr = SmemAddr(ring);
  constexpr uint32_t kTileBytes = static_cast<uint32_t>(G::kTileElems * G::template ElemBytes<T>());
  const bool owner = chunk_k != nullptr;
  const size_t chunk_row = (static_cast<size_t>(b) * S * Hkv + kvh) * D;  // chunk row of position P (s = 0)

  int next_slot = tbase < C ? tbase : (C > 0 ? tbase % C : 0);  // cache slot of the next tile's first key (a global cache never wraps)
  // A lane copies the same 16-byte chunk c of rows lane / NV + i * RS (i < CPL) of every tile: NV divides 32.
  constexpr int RS = 32 / NV;
  const int c_lane = lane % NV, r_lane = lane / NV;
  uint32_t soff[CPL];  // swizzled shared-memory byte offset of the lane's i-th chunk within a tile
#pragma unroll
  for (int i = 0; i < CPL; ++i) {
    const int r = r_lane + i * RS;
    soff[i] = kCodes ? dev::SwizzledBytes<D>(r, c_lane) : static_cast<uint32_t>(Swizzled<D>(r, c_lane) * sizeof(T));
  }
  // Paged: the pool blocks of the warp's tiles, loaded 32 at a time (lane i: tile 32j + i) and handed out by shuffle,
  // one batch ahead (tiles are issued in order, t = 0, 1, ...). One load per lane instead of a dependent round trip per
  // tile: a short call's prologue waited for each tile's block before its copies (H200: B = 1, T = 4K at 0.93x).
  int blocks_now = 0, blocks_next = 0;
  if constexpr (kPaged) {
    blocks_now = dev::PagedBlock(p.paged, b, tbase + lane * tstride);
    if (ntiles > 32) blocks_next = dev::PagedBlock(p.paged, b, tbase + (32 + lane) * tstride);
  }
  // Issues the copies of tile t into stage st (always commits a group, possibly empty).
  auto issue = [&](int t, int st) {
    if (t < ntiles) {
      const int k0 = tbase + t * tstride;
      const uint32_t sk = ring_addr + static_cast<uint32_t>(st) * 2 * kTileBytes;
      const uint32_t sv = sk + kTileBytes;
      // Row of the tile's first key: its cache slot, or (paged) its row in its pool block.
      size_t tile_row = static_cast<size_t>(next_slot);
      if constexpr (kPaged) {
        if (t > 0 && (t & 31) == 0) {  // warp-uniform: the next batch, and the one after it starts loading
          blocks_now = blocks_next;
          if (t + 32 < ntiles) blocks_next = dev::PagedBlock(p.paged, b, tbase + (t + 32 + lane) * tstride);
        }
        tile_row = dev::PagedRowIn(p.paged, __shfl_sync(0xffffffffu, blocks_now, t & 31), kvh, Hkv, k0);
      }
      if (k0 + kKeys <= tend && (!owner || k0 + kKeys <= P) && next_slot + kKeys <= C) {
        // Common case (warp-uniform): 16 full rows of past keys in consecutive cache slots, so every copy
        // is a fixed offset from one row pointer. Keeps the issue cost per tile to the copies themselves;
        // the general path below costs ~10x the instructions, which bound short (sliding-window) calls.
        const size_t row = tile_row * D + static_cast<size_t>(r_lane) * D + c_lane * EPC;
#pragma unroll
        for (int i = 0; i < CPL; ++i) {
          CpAsync16(sk + soff[i], cache_k + row + i * RS * D, 16);
          CpAsync16(sv + soff[i], cache_v + row + i * RS * D, 16);
        }
      } else {
#pragma unroll
        for (int i = 0; i < CPL; ++i) {
          const int r = r_lane + i * RS;
          const int j = k0 + r;
          const bool valid = j < tend;
          int slot = next_slot + r;
          if constexpr (!kPaged)
            while (slot >= C) slot -= C;
          const void* kr;
          const void* vr;
          bool copy = valid;
          if (owner && j >= P) {
            // The chunk's row (T); with codes it is quantized into the staging tiles after the conversion instead.
            const size_t off = chunk_row + static_cast<size_t>(j - P) * Hkv * D;
            kr = chunk_k + off + c_lane * 8;
            vr = chunk_v + off + c_lane * 8;
            if (kCodes) copy = false;
          } else {
            // Paged: the tile's rows are consecutive rows of its pool block.
            const size_t at = (kPaged ? tile_row + r : static_cast<size_t>(slot)) * D + c_lane * EPC;
            kr = cache_k + at;
            vr = cache_v + at;
          }
          const int bytes = copy ? 16 : 0;
          CpAsync16(sk + soff[i], copy ? kr : static_cast<const void*>(cache_k), bytes);
          CpAsync16(sv + soff[i], copy ? vr : static_cast<const void*>(cache_v), bytes);
        }
      }
      next_slot += tstride;
      while (next_slot >= C) next_slot -= C;
    }
    CpAsyncCommit();
  };

  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float acc[KC][4];
#pragma unroll
  for (int dt = 0; dt < KC; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.f;
  const float log2e = 1.4426950408889634f;
  float qk_scale = p.softcap > 0.f ? p.scale : p.scale * log2e;
  // Codes: a per-tensor / per-head K scale multiplies the scores (fp32); a per-channel one the query (below).
  if constexpr (kCodes)
    if (p.k_scale_mode != 2) qk_scale *= dev::ScaleAt(p.k_scale, p.k_scale_mode, kvh, 0, D);

  // Not unrolled: issue() is inlined at each call site, and instruction-cache misses are a large part of a short
  // (sliding-window) call, so the kernel keeps two copies of it, not NS.
#pragma unroll 1
  for (int t = 0; t < NS - 1; ++t) issue(t, t);

  // Q^T B-fragments: lane holds head lane/4, dims kc*16 + 2*(lane%4) + {0,1} (b0) and + 8 (b1).
  const int qh = lane / 4, qd = 2 * (lane % 4);
  uint32_t qf[KC][2];
  {
    const bool real = qh < g_count;
    // The lane's head row: in global memory, or (rotary inside the op) rotated at this token's position once per block
    // in shared memory (warp 0's last ring stage, G::kQueryOffset), rounded to T as the CPU op and the pre-pass round it.
    const T* qrow;
    if constexpr (kRotary) {
      T* qs = reinterpret_cast<T*>(smem_bytes + G::template QueryByteOffset<T>());
      StageRotatedQuery<T, D, G::kQueryStride>(static_cast<const T*>(p.query) + (static_cast<size_t>(z) * Hq + h0) * D,
                                               g_count, pos, p.rotary, qs);
      __syncthreads();
      qrow = qs + min(qh, g_count - 1) * G::kQueryStride;
    } else {
      qrow = static_cast<const T*>(p.query) + (static_cast<size_t>(z) * Hq + h0 + min(qh, g_count - 1)) * D;
    }
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      // Codes: dimensions 4t, 4t+1 (b0) and 4t+2, 4t+3 (b1) of the step, the K fragments' order.
      const int d0 = kCodes ? kc * 16 + 2 * qd : kc * 16 + qd, d1 = kCodes ? d0 + 2 : d0 + 8;
      qf[kc][0] = real ? *reinterpret_cast<const uint32_t*>(qrow + d0) : 0u;
      qf[kc][1] = real ? *reinterpret_cast<const uint32_t*>(qrow + d1) : 0u;
      if constexpr (kCodes) {
        if (p.k_scale_mode == 2) {  // per channel: q[d] * k_scale[d], rounded to T
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int d = h == 0 ? d0 : d1;
            const float2 x = Traits<T>::Two(qf[kc][h]);
            qf[kc][h] = real ? dev::PackPair<T>(x.x * dev::ScaleAt(p.k_scale, 2, kvh, d, D),
                                                x.y * dev::ScaleAt(p.k_scale, 2, kvh, d + 1, D))
                             : 0u;
          }
        }
      }
    }
    if constexpr (kRotary) __syncthreads();  // every warp holds its fragments before warp 0's first loop copy refills that stage
  }


  // Fused cache write (owner, S == 1), as in DecodeKernel; with rotary the cached key is the rotated one. Issued
  // after the first tiles' copies, so its loads overlap them instead of delaying the stream.
  if (p.write_key != nullptr && active && split == 0 && chunk == 0) {
    const size_t row = kPaged ? dev::PagedRow(p.paged, b, kvh, Hkv, P + s)
                              : (static_cast<size_t>(b) * Hkv + kvh) * C + static_cast<size_t>((P + s) % C);
    if constexpr (kCodes)
      dev::WriteNewRowQuantized<T, TC, D, kDecodeTcThreads>(chunk_k, chunk_v, p.write_key, p.write_value, z, kvh, Hkv,
                                                            row, P + s, p.rotary, p.k_scale, p.k_scale_mode, p.v_scale,
                                                            p.v_scale_mode);
    else
      dev::WriteNewRow<T, D, kDecodeTcThreads>(chunk_k, chunk_v, p.write_key, p.write_value, z, kvh, Hkv, row, P + s,
                                               p.rotary);
  }

  // The new key's rotation (below, in shared memory) needs the angles of position pos: loaded now, off the path of the
  // tile that holds the key.
  constexpr int kPerLane = (D + 31) / 32;
  float fix_c[kPerLane], fix_s[kPerLane];
  if (kRotary && owner && !kCodes) {
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < p.rotary.dim) {
        const size_t row = dev::RotaryRow(pos, p.rotary) + dev::RotaryPairOf(d, p.rotary).i;
        fix_c[e] = Traits<T>::One(static_cast<const T*>(p.rotary.cos)[row]);
        fix_s[e] = Traits<T>::One(static_cast<const T*>(p.rotary.sin)[row]);
      }
    }
  }

  // Codes: the new key / value (position P + s, from the chunk, never copied: its rows are zero-filled) as the codes the
  // cache write stores, computed by the warp whose tiles hold pos before the loop (every load issued first, overlapping
  // the first tiles' copies), then stored into that tile's stage: the key rotated at pos first (and rounded to T).
  uint32_t new_k[kPerLane], new_v[kPerLane];
  bool has_new = false;
  if constexpr (kCodes) {
    const int rel = pos - tbase;
    has_new = owner && pos < tend && rel >= 0 && rel % tstride < kKeys;
    if (has_new) {
      const T* kr = chunk_k + chunk_row + static_cast<size_t>(pos - P) * Hkv * D;
      const T* vr = chunk_v + chunk_row + static_cast<size_t>(pos - P) * Hkv * D;
      float kx[kPerLane], vx[kPerLane], ks[kPerLane], vs[kPerLane];
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) {
        const int d = min(lane + 32 * e, D - 1);
        kx[e] = kRotary ? Traits<T>::One(Traits<T>::From(dev::RotatedElement(kr, d, pos, p.rotary))) : Traits<T>::One(kr[d]);
        vx[e] = Traits<T>::One(vr[d]);
        ks[e] = dev::ScaleAt(p.k_scale, p.k_scale_mode, kvh, d, D);
        vs[e] = dev::ScaleAt(p.v_scale, p.v_scale_mode, kvh, d, D);
      }
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) {
        new_k[e] = dev::QuantizeCode<TC>(kx[e], ks[e]);
        new_v[e] = dev::QuantizeCode<TC>(vx[e], vs[e]);
      }
    }
  }

  // Codes: the V scales of the dimensions this thread writes below (d = idx % D; two for D = 256), loaded before the loop (the
  // merge at the end multiplies by them).
  float v_sc[2] = {1.f, 1.f};
  if constexpr (kCodes) {
    v_sc[0] = dev::ScaleAt(p.v_scale, p.v_scale_mode, kvh, static_cast<int>(threadIdx.x) % D, D);
    v_sc[1] = dev::ScaleAt(p.v_scale, p.v_scale_mode, kvh, static_cast<int>(threadIdx.x + kDecodeTcThreads) % D, D);
  }

  // ldmatrix lane addressing (row = key within the tile).
  const int a_row = lane & 15, a_chunk = lane >> 4;               // K: non-transposed A
  const int v_row = ((lane >> 4) << 3) + (lane & 7), v_chunk = (lane >> 3) & 1;  // V: transposed A
  // Codes (K and V alike): matrices (keys 0-7, chunk c), (keys 8-15, c), (keys 0-7, c+1), (keys 8-15, c+1).
  const int c_row = (lane & 7) + ((lane >> 3) & 1) * 8, c_half = lane >> 4;

  for (int t = 0; t < ntiles; ++t) {
    issue(t + NS - 1, (t + NS - 1) % NS);
    CpAsyncWait<NS - 1>();
    __syncwarp();
    const int st = t % NS;
    uint32_t sk = ring_addr + static_cast<uint32_t>(st) * 2 * kTileBytes;
    uint32_t sv = sk + kTileBytes;
    if constexpr (kCodes) {
      const int r = pos - (tbase + t * tstride);
      if (has_new && r >= 0 && r < kKeys) {  // the tile that holds the new row: its codes into the stage
        char* codes = reinterpret_cast<char*>(ring) + st * 2 * kTileBytes;
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) {
          const int d = lane + 32 * e;
          if (d < D) {
            const uint32_t at = dev::SwizzledBytes<D>(r, d / 16) + d % 16;
            codes[at] = static_cast<char>(new_k[e]);
            codes[kTileBytes + at] = static_cast<char>(new_v[e]);
          }
        }
        __syncwarp();
      }
    }
    if (kRotary && owner && !kCodes) {
      // The new key (position P + s, read from the chunk) is rotated in shared memory before it is scored:
      // every lane reads its elements and their partners first, then writes (pairs cross lanes).
      const int r = pos - (tbase + t * tstride);
      if (r >= 0 && r < kKeys && pos < tend) {
        T* row = ring + st * 2 * G::kTileElems + r * D;
        auto at = [&](int d) -> T& { return row[((d / 8) ^ (r & 7)) * 8 + d % 8]; };  // element d of swizzled row r
        float rotated[kPerLane];
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) {
          const int d = lane + 32 * e;
          if (d < p.rotary.dim) {
            const dev::RotaryPair pr = dev::RotaryPairOf(d, p.rotary);
            rotated[e] = dev::RotateValue(Traits<T>::One(at(d)), Traits<T>::One(at(pr.partner)), fix_c[e], fix_s[e], pr.first);
          }
        }
        __syncwarp();
#pragma unroll
        for (int e = 0; e < kPerLane; ++e)
          if (lane + 32 * e < p.rotary.dim) at(lane + 32 * e) = Traits<T>::From(rotated[e]);
        __syncwarp();
      }
    }

    // S^T = K Q^T (two accumulator chains).
    float sa[4] = {0.f, 0.f, 0.f, 0.f}, sb[4] = {0.f, 0.f, 0.f, 0.f};
    if constexpr (kCodes) {
      // One ldmatrix.x4 over codes: keys g / g+8 x two 16-byte chunks (two k-steps); bytes 4t..4t+3 of each.
#pragma unroll
      for (int kk = 0; kk < KC / 2; ++kk) {
        uint32_t r[4];
        LdMatrixX4(r, sk + dev::SwizzledBytes<D>(c_row, 2 * kk + c_half));
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t lo = r[2 * h], hi = r[2 * h + 1];  // key g, key g + 8
          uint32_t a[4] = {dev::CodePair<T, TC, 0, 1>(lo), dev::CodePair<T, TC, 0, 1>(hi), dev::CodePair<T, TC, 2, 3>(lo),
                           dev::CodePair<T, TC, 2, 3>(hi)};
          MmaOp<T>::Run(h == 0 ? sa : sb, a, qf[2 * kk + h][0], qf[2 * kk + h][1]);
        }
      }
    } else {
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        uint32_t a[4];
        const int ch = kc * 2 + a_chunk;
        LdMatrixX4(a, sk + static_cast<uint32_t>(Swizzled<D>(a_row, ch) * sizeof(T)));
        MmaOp<T>::Run(kc % 2 == 0 ? sa : sb, a, qf[kc][0], qf[kc][1]);
      }
    }
    float sc[4];
    const int key0 = tbase + t * tstride + lane / 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float x = (sa[i] + sb[i]) * qk_scale;
      if (p.softcap > 0.f) x = dev::Softcap(x, p.softcap) * log2e;
      sc[i] = (key0 + (i >= 2 ? 8 : 0)) < tend ? x : -INFINITY;
    }
    // Online softmax (base 2); lane's heads: 2*(lane%4) (c0, c2) and +1 (c1, c3).
    float mx0 = fmaxf(sc[0], sc[2]), mx1 = fmaxf(sc[1], sc[3]);
#pragma unroll
    for (int off = 4; off < 32; off *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float al0 = n0 == -INFINITY ? 1.f : exp2f(m0 - n0);
    const float al1 = n1 == -INFINITY ? 1.f : exp2f(m1 - n1);
    const float p0 = n0 == -INFINITY ? 0.f : exp2f(sc[0] - n0);
    const float p1 = n1 == -INFINITY ? 0.f : exp2f(sc[1] - n1);
    const float p2 = n0 == -INFINITY ? 0.f : exp2f(sc[2] - n0);
    const float p3 = n1 == -INFINITY ? 0.f : exp2f(sc[3] - n1);
    m0 = n0;
    m1 = n1;
    l0 = l0 * al0 + p0 + p2;
    l1 = l1 * al1 + p1 + p3;
    const uint32_t pb0 = MovMatrixTrans(MmaOp<T>::Pack(p0, p1));  // keys 0-7
    const uint32_t pb1 = MovMatrixTrans(MmaOp<T>::Pack(p2, p3));  // keys 8-15

    // O^T += V^T P^T. The rescale is skipped when no head of the warp has a new maximum (most tiles once
    // the maxima settle): one vote instead of 4 * KC multiplies.
    if (__any_sync(0xffffffffu, al0 != 1.f || al1 != 1.f)) {
#pragma unroll
      for (int dt = 0; dt < KC; ++dt) {
        acc[dt][0] *= al0;
        acc[dt][1] *= al1;
        acc[dt][2] *= al0;
        acc[dt][3] *= al1;
      }
    }
    if constexpr (kCodes) {
      // ldmatrix.x4.trans over codes: keys 0-7 / 8-15 x two 16-byte chunks (two 16-dimension tiles); a lane gets codes
      // (key 2t, dims 2g, 2g+1) and (key 2t+1, the same dims): row g of the tile is dimension 2g, row g+8 is 2g+1.
#pragma unroll
      for (int mm = 0; mm < KC / 2; ++mm) {
        uint32_t r[4];
        LdMatrixX4Trans(r, sv + dev::SwizzledBytes<D>(c_row, 2 * mm + c_half));
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t k0 = r[2 * h], k8 = r[2 * h + 1];  // keys 0-7, keys 8-15
          uint32_t a[4] = {dev::CodePair<T, TC, 0, 2>(k0), dev::CodePair<T, TC, 1, 3>(k0), dev::CodePair<T, TC, 0, 2>(k8),
                           dev::CodePair<T, TC, 1, 3>(k8)};
          MmaOp<T>::Run(acc[2 * mm + h], a, pb0, pb1);
        }
      }
    } else {
#pragma unroll
      for (int dt = 0; dt < KC; ++dt) {
        uint32_t a[4];
        const int ch = dt * 2 + v_chunk;
        LdMatrixX4Trans(a, sv + static_cast<uint32_t>(Swizzled<D>(v_row, ch) * sizeof(T)));
        MmaOp<T>::Run(acc[dt], a, pb0, pb1);
      }
    }
    __syncwarp();  // every lane is done with stage st before a later issue() overwrites it
  }
  CpAsyncWait<0>();

  // Row sums: each lane summed its own 2 keys per tile; add the 8 lanes of each head.
#pragma unroll
  for (int off = 4; off < 32; off *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }

  // Merge the 4 warps in shared memory (the rings are no longer used).
  __syncthreads();
  float* sm_acc = reinterpret_cast<float*>(smem_raw);  // [kWarps][8][D]
  float* sm_m = sm_acc + kWarps * 8 * D;               // [kWarps][8]
  float* sm_l = sm_m + kWarps * 8;
  float* cl_acc = sm_l + kWarps * 8;                                // [8][D]: the block's partial (cluster merge)
  float2* cl_ml = reinterpret_cast<float2*>(cl_acc + 8 * D);        // [8]
  const int hA = 2 * (lane % 4), hB = hA + 1, dA = lane / 4;
  if (lane < 4) {
    sm_m[warp * 8 + hA] = m0;
    sm_m[warp * 8 + hB] = m1;
    sm_l[warp * 8 + hA] = l0;
    sm_l[warp * 8 + hB] = l1;
  }
#pragma unroll
  for (int dt = 0; dt < KC; ++dt) {
    // Codes: rows g / g+8 of a tile are dimensions 2g / 2g+1 (see the kernel's comment).
    float* w = sm_acc + warp * 8 * D + dt * 16 + (kCodes ? 2 * dA : dA);
    constexpr int kSecond = kCodes ? 1 : 8;
    w[hA * D] = acc[dt][0];
    w[hB * D] = acc[dt][1];
    w[hA * D + kSecond] = acc[dt][2];
    w[hB * D + kSecond] = acc[dt][3];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < 8 * D; idx += kDecodeTcThreads) {
    const int g = idx / D, d = idx % D;
    if (g >= g_count) break;
    float mx = -INFINITY;
#pragma unroll
    for (int r = 0; r < kWarps; ++r) mx = fmaxf(mx, sm_m[r * 8 + g]);
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int r = 0; r < kWarps; ++r) {
        const float mr = sm_m[r * 8 + g];
        if (mr == -INFINITY) continue;
        const float w = exp2f(mr - mx);
        sum += w * sm_l[r * 8 + g];
        a += w * sm_acc[(r * 8 + g) * D + d];
      }
    }
    const int h = h0 + g;
    if constexpr (kCodes) a *= v_sc[(idx / kDecodeTcThreads) & 1];  // sum(p v) of codes -> of values (d = idx % D)
    if (splits == 1) {
      static_cast<T*>(p.output)[(static_cast<size_t>(z) * Hq + h) * D + d] = Traits<T>::From(sum > 0.f ? a / sum : 0.f);
    } else if constexpr (kCluster) {
      cl_acc[g * D + d] = a;
      if (d == 0) cl_ml[g] = make_float2(mx, sum);
    } else {
      // CombineKernel works in natural-log units: convert the base-2 maximum.
      const size_t part = (static_cast<size_t>(z) * Hq + h) * splits + split;
      p.part_acc[part * D + d] = a;
      if (d == 0) p.part_ml[part] = make_float2(mx == -INFINITY ? mx : mx * 0.6931471805599453f, sum);
    }
  }
  if constexpr (kCluster) {
    if (splits > 1) ClusterMergeSplits<T, D>(p, z, h0, g_count, cl_acc, cl_ml);
  } else if (splits > 1 && p.counters != nullptr) {
    MergeSplitsIfLast<T, D>(p, z, h0, g_count, static_cast<size_t>(z) * gridDim.y + blockIdx.y, smem_raw);
  }
}

// Dynamic shared memory above 48 KB must be allowed per function (and device) before a launch or an
// occupancy query.
template <typename T, typename TC, int D>
constexpr size_t TcSmemBytes() {
  return TcGeometry<D, !std::is_same_v<T, TC>>::template SmemBytes<T>();
}

template <typename T, typename TC, int D>
bool EnsureSmem() {
  static std::atomic<unsigned long long> done{0};
  const int dev = CurrentDevice();
  const unsigned long long bit = 1ull << (dev & 63);
  if (done.load(std::memory_order_relaxed) & bit) return true;
  const int bytes = static_cast<int>(TcSmemBytes<T, TC, D>());
  for (auto kernel : {DecodeTcKernel<T, TC, D, false, false>, DecodeTcKernel<T, TC, D, true, false>,
                      DecodeTcKernel<T, TC, D, false, true>, DecodeTcKernel<T, TC, D, true, true>,
                      DecodeTcKernel<T, TC, D, false, false, true>, DecodeTcKernel<T, TC, D, true, false, true>})
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) return false;
  // Clusters of up to 16 blocks (above 8 is "non-portable"; Hopper allows it). Not an error where unsupported: the
  // cluster kernels are then never chosen (DecodeTcClusterFits).
  for (auto kernel : {DecodeTcKernel<T, TC, D, false, true>, DecodeTcKernel<T, TC, D, true, true>})
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) (void)cudaGetLastError();
  done.fetch_or(bit, std::memory_order_relaxed);
  return true;
}

// A launch of `grid` blocks in clusters of `cluster` blocks along x; `attribute` must outlive the config.
inline cudaLaunchConfig_t ClusterLaunchConfig(dim3 grid, size_t smem, cudaStream_t stream, int cluster,
                                              cudaLaunchAttribute& attribute) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(kDecodeTcThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = static_cast<unsigned>(cluster);
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return config;
}

template <typename T, typename TC, int D>
cudaError_t LaunchDecodeTc(const DecodeParams& p, cudaStream_t stream) {
  if (!EnsureSmem<T, TC, D>()) return cudaGetLastError();
  const dim3 grid(static_cast<unsigned>(p.batch) * p.seq * p.splits, static_cast<unsigned>(p.kv_num_heads) * p.chunks);
  const size_t smem = TcSmemBytes<T, TC, D>();
  if (p.paged.table != nullptr) {  // paged: never in clusters (Plan)
    if (p.rotary.dim > 0)
      DecodeTcKernel<T, TC, D, true, false, true><<<grid, kDecodeTcThreads, smem, stream>>>(p);
    else
      DecodeTcKernel<T, TC, D, false, false, true><<<grid, kDecodeTcThreads, smem, stream>>>(p);
    return cudaGetLastError();
  }
  if (p.cluster_merge != 0 && p.splits > 1) {
    // One cluster per group: the group's splits are consecutive in grid x, which the cluster size divides.
    cudaLaunchAttribute attribute;
    const cudaLaunchConfig_t config = ClusterLaunchConfig(grid, smem, stream, p.splits, attribute);
    return p.rotary.dim > 0 ? cudaLaunchKernelEx(&config, DecodeTcKernel<T, TC, D, true, true>, p)
                            : cudaLaunchKernelEx(&config, DecodeTcKernel<T, TC, D, false, true>, p);
  }
  if (p.rotary.dim > 0)
    DecodeTcKernel<T, TC, D, true, false><<<grid, kDecodeTcThreads, smem, stream>>>(p);
  else
    DecodeTcKernel<T, TC, D, false, false><<<grid, kDecodeTcThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, typename TC, int D>
int OccupancyTc() {
  // The fewer of the two instantiations' resident blocks (shared memory bounds both alike; registers may differ).
  int plain = 0, rotary = 0;
  if (!EnsureSmem<T, TC, D>()) return 1;
  const size_t smem = TcSmemBytes<T, TC, D>();
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&plain, DecodeTcKernel<T, TC, D, false, false>, kDecodeTcThreads, smem) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&rotary, DecodeTcKernel<T, TC, D, true, false>, kDecodeTcThreads, smem) != cudaSuccess)
    return 1;
  const int blocks = plain < rotary ? plain : rotary;
  return blocks > 0 ? blocks : 1;
}

// Bit s of the result: a cluster of s blocks fits (cudaOccupancyMaxActiveClusters >= 1 for both instantiations).
template <typename T, typename TC, int D>
unsigned ClusterSizesThatFit() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      major < 9 || !EnsureSmem<T, TC, D>()) {
    (void)cudaGetLastError();
    return 0;
  }
  unsigned fits = 0;
  for (int size = 2; size <= kMaxClusterSplits; ++size) {
    cudaLaunchAttribute attribute;
    const cudaLaunchConfig_t config =
        ClusterLaunchConfig(dim3(static_cast<unsigned>(size)), TcSmemBytes<T, TC, D>(), nullptr, size, attribute);
    int plain = 0, rotary = 0;
    if (cudaOccupancyMaxActiveClusters(&plain, DecodeTcKernel<T, TC, D, false, true>, &config) != cudaSuccess ||
        cudaOccupancyMaxActiveClusters(&rotary, DecodeTcKernel<T, TC, D, true, true>, &config) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    if (plain >= 1 && rotary >= 1) fits |= 1u << size;
  }
  return fits;
}

// f(std::integral_constant<int, D>) for a supported head size D (64, 128, else 256).
template <typename F>
auto WithHeadDim(int head_dim, F&& f) {
  switch (head_dim) {
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: return f(std::integral_constant<int, 256>{});
  }
}

template <typename T, typename TC>
DecodeLauncher TcForHeadDim(int head_dim) {
  switch (head_dim) {
    case 64: return &LaunchDecodeTc<T, TC, 64>;
    case 128: return &LaunchDecodeTc<T, TC, 128>;
    case 256: return &LaunchDecodeTc<T, TC, 256>;
    default: return nullptr;
  }
}

}  // namespace

// The instantiations for one cache type TC (T itself: TC = void), explicitly instantiated in that type's translation unit.
namespace tc {
template <typename TC>
DecodeLauncher LauncherFor(DType dtype, int head_dim) {
  const bool half = dtype == DType::kFloat16;
  if constexpr (std::is_void_v<TC>)
    return half ? TcForHeadDim<__half, __half>(head_dim) : TcForHeadDim<__nv_bfloat16, __nv_bfloat16>(head_dim);
  else
    return half ? TcForHeadDim<__half, TC>(head_dim) : TcForHeadDim<__nv_bfloat16, TC>(head_dim);
}
template <typename TC>
unsigned ClusterBitsFor(DType dtype, int head_dim) {
  return WithHeadDim(head_dim, [&](auto dd) {
    constexpr int D = decltype(dd)::value;
    if constexpr (std::is_void_v<TC>)
      return dtype == DType::kFloat16 ? ClusterSizesThatFit<__half, __half, D>()
                                      : ClusterSizesThatFit<__nv_bfloat16, __nv_bfloat16, D>();
    else
      return dtype == DType::kFloat16 ? ClusterSizesThatFit<__half, TC, D>() : ClusterSizesThatFit<__nv_bfloat16, TC, D>();
  });
}
template <typename TC>
int OccupancyFor(DType dtype, int head_dim) {
  return WithHeadDim(head_dim, [&](auto dd) {
    constexpr int D = decltype(dd)::value;
    if constexpr (std::is_void_v<TC>)
      return dtype == DType::kFloat16 ? OccupancyTc<__half, __half, D>() : OccupancyTc<__nv_bfloat16, __nv_bfloat16, D>();
    else
      return dtype == DType::kFloat16 ? OccupancyTc<__half, TC, D>() : OccupancyTc<__nv_bfloat16, TC, D>();
  });
}
}  // namespace tc

}  // namespace mixattn::cuda
