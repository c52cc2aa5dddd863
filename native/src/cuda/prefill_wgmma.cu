// Prefill (S > 1, fp16 / bf16, D = 64 / 128 / 256) on Hopper's warpgroup MMA (sm_90a): the same attention as
// PrefillTcKernel (prefill.cu; masks, key sources, the online softmax and the output are that kernel's), with the two
// products issued as wgmma over shared-memory descriptors and the tile loads taken off the computing warps.
//
// Block: 128 query tokens of one head; warps 0-3 and 4-7 are two computing warpgroups of 64 rows each, warps 8-11
// load (and hand their registers to the computing ones: setmaxnreg).
//   loader:   streams K / V tiles of 128 keys (64 at D = 256) by cp.async or TMA into a ring of kStages stages of
//             128-byte swizzled panels (wgmma.cuh), and marks a stage full (mbarrier) once its copies have landed and
//             are made visible to the async proxy; it refills a stage when both warpgroups have marked it empty.
//   compute:  S = Q K^T as D / 16 wgmma (A = the warpgroup's Q panels, B = the K tile, both K-major); mask and online
//             softmax in registers (fp32, base 2); P packed to 16 bits in registers is the A operand of
//             O += P V (128 / 16 wgmma, B = the V tile N-major). A warpgroup skips the products of tiles none of its
//             rows can see, and masks per element only in tiles that straddle a boundary of its rows. kOverlap: tile
//             t's S is issued with tile t - 1's P V, so that t's softmax runs under that product.
// Variants (PlanTuning::prefill_kernel; Plan runs 5, 1 at D = 256): 1 two stages in order, 2 three stages in order,
// 3 three stages overlapped, 4 as 3 with whole tiles loaded by the tensor memory accelerator (TMA: one thread issues a
// tile's copies, the barrier completes on their bytes), 5 as 4 with the two warpgroups taking turns at the tensor
// cores (ping-pong), 6 as 5 with each stage's K and V on barriers of their own (two stages at D = 256).
// Grid: x = query tiles (the last first: under the causal mask later tokens see more keys) x splits, y = query head,
// z = sequence. With splits > 1 (Plan: short chunks after long pasts) each block takes an equal share of its tile's key
// tiles and publishes unnormalised partials; the group's last block merges them (prefill_common.cuh, as
// PrefillTcKernel). Softcap and paged pools whose blocks split a 128-key tile stay on PrefillTcKernel (Plan).
#include <cuda.h>  // CUtensorMap (the encoder comes through the runtime's driver entry point: no libcuda link)

#include <atomic>
#include <climits>
#include <type_traits>

#include "cuda/attention_cuda.h"
#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"
#include "cuda/prefill_common.cuh"
#include "cuda/wgmma.cuh"

namespace mixattn::cuda {
namespace {

using dev::CpAsync16;
using dev::CpAsyncCommit;
using dev::CpAsyncWait;
using dev::MmaOp;
using dev::PanelOffset;
using dev::SmemAddr;
using dev::SmemDesc;
using dev::Traits;

constexpr int kComputeThreads = 256;                    // two computing warpgroups
constexpr int kLoaderThreads = 128;                     // and a loading one
constexpr int kThreads = kComputeThreads + kLoaderThreads;
// Registers a thread after the block starts (setmaxnreg): the loaders give theirs to the computing warpgroups, whose
// S, P and O tiles need more than the 168 an even split of the register file leaves (ptxas serializes wgmma or
// spills below that). 128 x 40 + 256 x 232 = 64,512 of the 65,536.
[[maybe_unused]] constexpr int kLoaderRegisters = 40, kComputeRegisters = 232;

// Tensor maps of the call's K / V (variant 4), encoded on the host per launch: the cache ([B * Hkv, C, D] rows, or a
// paged pool [num_blocks, Hkv, block_size, D]) and the owner's chunk ([B, S, Hkv, D]); boxes of 64 elements (128
// bytes, swizzled as the panels) by 128 keys. A map that could not be encoded is left out (its tiles take cp.async).
struct TmaMaps {
  CUtensorMap key_cache, value_cache, key_chunk, value_chunk;
  bool cache = false, chunk = false;
};

template <int D, int kStages>
struct WgmmaGeometry {
  static constexpr int kBM = kPrefillWgmmaRows;          // query rows per block: 64 per warpgroup
  // Keys per tile: 128; 64 at D = 256, where O alone takes 128 registers a thread.
  static constexpr int kBN = D <= 128 ? kPrefillWgmmaKeysPerTile : kPrefillWgmmaKeysPerTile / 2;
  static constexpr uint32_t kQBytes = 64 * D * 2;        // one warpgroup's Q panels
  static constexpr uint32_t kTileBytes = kBN * D * 2;    // one K (or V) tile
  // Byte offset of the barriers full[stages], empty[stages] (and, with separate V barriers, full_v[stages],
  // empty_v[stages]), after Q and the stages.
  static constexpr uint32_t kBarrierOffset = 2 * kQBytes + kStages * 2 * kTileBytes;
  // 1024 bytes of slack: the dynamic buffer is aligned up to the swizzle atom in the kernel.
  static constexpr size_t kSmemBytes = kBarrierOffset + 4 * kStages * 8 + 1024;
};

// Where a whole tile of BN keys from kt comes from: every row from the owner's chunk, every row from consecutive rows
// of the cache (a paged pool's tile never straddles two blocks: Plan's rule), or neither (across the past / chunk
// boundary or a ring's end, or past the last key: copied row by row, with zero fill).
enum class TileSource { kRows, kCache, kChunk };
template <int BN>
__device__ __forceinline__ TileSource SourceOf(int kt, int kend, int P, int C, bool owner, bool paged) {
  if (kt + BN > kend) return TileSource::kRows;
  if (owner && kt >= P) return TileSource::kChunk;
  if ((!owner || kt + BN <= P) && (paged || kt % C + BN <= C)) return TileSource::kCache;
  return TileSource::kRows;
}

// One K / V tile of BN rows (keys kt ...) into panels, by the 128 threads of the loading warpgroup (ltid: the thread's
// index among them); rows past kend are zero-filled. Fast paths as PrefillTcKernel's: every row in consecutive cache
// rows, or every row from the chunk.
template <typename T, int D, int BN, bool kKeys = true, bool kValues = true>
__device__ __forceinline__ void LoadTile(uint32_t sk, uint32_t sv, int kt, int kend, int P, int C, int S, int Hkv, int b,
                                         int kvh, const T* chunk_k, const T* chunk_v, const T* cache_k, const T* cache_v,
                                         const BlockTable& paged, int block, int ltid) {
  constexpr int NV = D / 8, RPP = kLoaderThreads / NV;  // 16-byte chunks per row, rows per pass
  const int c = ltid % NV, r0 = ltid / NV;
  const TileSource source = SourceOf<BN>(kt, kend, P, C, chunk_k != nullptr, paged.table != nullptr);
  if (source != TileSource::kRows) {
    const bool in_cache = source == TileSource::kCache;
    const size_t stride = in_cache ? D : static_cast<size_t>(Hkv) * D;
    const size_t first = in_cache ? (paged.table != nullptr ? dev::PagedRowIn(paged, block, kvh, Hkv, kt) : kt % C) * D
                                   : ((static_cast<size_t>(b) * S + (kt - P)) * Hkv + kvh) * D;
    const T* kr = (in_cache ? cache_k : chunk_k) + first + c * 8;
    const T* vr = (in_cache ? cache_v : chunk_v) + first + c * 8;
#pragma unroll
    for (int i = 0; i < BN / RPP; ++i) {
      const int r = r0 + i * RPP;
      const uint32_t o = PanelOffset(BN, r, c);
      if constexpr (kKeys) CpAsync16(sk + o, kr + r * stride, 16);
      if constexpr (kValues) CpAsync16(sv + o, vr + r * stride, 16);
    }
    return;
  }
  for (int i = 0; i < BN / RPP; ++i) {
    const int r = r0 + i * RPP;
    const T* kr;
    const T* vr;
    const bool valid = dev::KeyRows<T, D>(kt + r, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v, paged, kr, vr);
    const uint32_t o = PanelOffset(BN, r, c);
    if constexpr (kKeys) CpAsync16(sk + o, kr + (valid ? c * 8 : 0), valid ? 16 : 0);
    if constexpr (kValues) CpAsync16(sv + o, vr + (valid ? c * 8 : 0), valid ? 16 : 0);
  }
}

template <typename T, int D, int kStages, bool kOverlap, bool kTma, bool kPingPong, bool kSplitKV>
__global__ void __launch_bounds__(kThreads, 1) PrefillWgmmaKernel(const __grid_constant__ PrefillParams p,
                                                                  const __grid_constant__ TmaMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using G = WgmmaGeometry<D, kStages>;
  constexpr int BM = G::kBM, BN = G::kBN;
  constexpr int NV = D / 8;   // 16-byte chunks per row
  constexpr int KC = D / 16;  // k-steps of Q K^T
  constexpr int NT = BN / 8;  // 8-key column blocks of S
  constexpr int DT = D / 8;   // 8-dim column blocks of O
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t base = (SmemAddr(smem_raw) + 1023u) & ~1023u;
  const uint32_t q_addr = base, kv_addr = base + 2 * G::kQBytes;
  const uint32_t full_bar = base + G::kBarrierOffset, empty_bar = full_bar + 8 * kStages;
  // kSplitKV: a stage's K and V tiles have barriers of their own (full_bar / empty_bar then speak of K only), so that
  // K is refilled once QK^T has read it, before the P V that reads the V beside it.
  const uint32_t full_v_bar = empty_bar + 8 * kStages, empty_v_bar = full_v_bar + 8 * kStages;
  static_assert(!kSplitKV || (kOverlap && kTma), "separate V barriers are a variant of the overlapped TMA schedule");

  // The block's query tile, as PrefillTcKernel finds it (kept inline there: its D = 64 instantiation needs 29 more
  // registers when this part comes from a shared helper).
  const int splits = p.splits, tiles = static_cast<int>(gridDim.x) / splits;
  const int tile = tiles - 1 - static_cast<int>(blockIdx.x) / splits, split = static_cast<int>(blockIdx.x) % splits;
  const int h = blockIdx.y, b = blockIdx.z;
  const int S = p.seq, Hq = p.num_heads, Hkv = p.kv_num_heads, C = p.capacity, W = p.window;
  const int kvh = h / p.group;
  const int P = dev::PastLength(p.past_lengths, b);
  const int N = dev::NewLength(p.new_lengths, b, S);
  const int s0 = tile * BM;
  const int nq = max(0, min(BM, N - s0));  // real (non-padding) rows of the tile
  const int rows_here = min(BM, S - s0);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  T* out = static_cast<T*>(p.output);

  if (nq == 0) {  // padding tokens only: zero rows
    for (int idx = tid; idx < rows_here * D; idx += kThreads) {
      const int r = idx / D, c = idx % D;
      out[((static_cast<size_t>(b) * S + s0 + r) * Hq + h) * D + c] = Traits<T>::From(0.f);
    }
    return;
  }

  const int p_first = P + s0, p_last = P + s0 + nq - 1;
  const int kend = p_last + 1;
  // The key tiles from the window's start (out-of-window tiles are never loaded), this split's share of them.
  int kstart = W > 0 ? max(0, p_first - W + 1) : 0;
  int ntiles = (kend - kstart + BN - 1) / BN;
  dev::SplitKeyTiles(split, splits, BN, kstart, ntiles);

  if (tid == 0) {
    for (int st = 0; st < kStages; ++st) {
      dev::MbarInit(full_bar + 8 * st, kLoaderThreads);         // every loading thread
      dev::MbarInit(empty_bar + 8 * st, kComputeThreads / 32);  // every computing warp
      if constexpr (kSplitKV) {
        dev::MbarInit(full_v_bar + 8 * st, kLoaderThreads);
        dev::MbarInit(empty_v_bar + 8 * st, kComputeThreads / 32);
      }
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (tid >= kComputeThreads) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kLoaderRegisters));
    const int ltid = tid - kComputeThreads;
    const bool paged = p.paged.table != nullptr;
    const size_t cache_base = paged ? 0 : (static_cast<size_t>(b) * Hkv + kvh) * C * D;
    const T* cache_k = static_cast<const T*>(p.key_cache) + cache_base;
    const T* cache_v = static_cast<const T*>(p.value_cache) + cache_base;
    const T* chunk_k = static_cast<const T*>(p.chunk_key);
    const T* chunk_v = static_cast<const T*>(p.chunk_value);
    if constexpr (kSplitKV) {
      // As below, K and V of a tile each on their own barriers: K(t) waits only for K(t - kStages) to be read.
      const bool owner = chunk_k != nullptr;
      for (int t = 0; t < ntiles; ++t) {
        const int st = t % kStages, kt = kstart + t * BN;
        const uint32_t sk = kv_addr + st * 2 * G::kTileBytes, sv = sk + G::kTileBytes;
        const int block = paged ? dev::PagedBlock(p.paged, b, kt) : 0;
        const TileSource source = SourceOf<BN>(kt, kend, P, C, owner, paged);
        const bool from_chunk = maps.chunk && source == TileSource::kChunk;
        const bool from_cache = maps.cache && source == TileSource::kCache;
        // One operand's tile into dst, completing barrier full.
        auto load = [&](bool values, uint32_t dst, uint32_t full) {
          if (from_chunk || from_cache) {
            if (ltid == 0) {
              dev::MbarArriveExpectTx(full, G::kTileBytes);
              const CUtensorMap* map = from_chunk ? (values ? &maps.value_chunk : &maps.key_chunk)
                                                  : (values ? &maps.value_cache : &maps.key_cache);
#pragma unroll
              for (int panel = 0; panel < D / 64; ++panel) {
                const uint32_t at = dst + panel * BN * 128;
                if (from_chunk)
                  dev::TmaLoad4(at, map, 64 * panel, kvh, kt - P, b, full);
                else if (paged)
                  dev::TmaLoad4(at, map, 64 * panel, kt % p.paged.block_size, kvh, block, full);
                else
                  dev::TmaLoad3(at, map, 64 * panel, kt % C, b * Hkv + kvh, full);
              }
            } else {
              dev::MbarArrive(full);
            }
            return;
          }
          if (values)
            LoadTile<T, D, BN, false, true>(sk, sv, kt, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v,
                                            p.paged, block, ltid);
          else
            LoadTile<T, D, BN, true, false>(sk, sv, kt, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v,
                                            p.paged, block, ltid);
          CpAsyncCommit();
          CpAsyncWait<0>();
          dev::FenceProxyAsync();
          dev::MbarArrive(full);
        };
        if (t >= kStages) dev::MbarWait(empty_bar + 8 * st, (t / kStages + 1) & 1);
        load(false, sk, full_bar + 8 * st);
        if (t >= kStages) dev::MbarWait(empty_v_bar + 8 * st, (t / kStages + 1) & 1);
        load(true, sv, full_v_bar + 8 * st);
      }
    } else if constexpr (kTma) {
      // Whole tiles from the chunk or from consecutive cache rows (SourceOf): one thread issues the tensor copies and
      // the barrier completes on their bytes; other tiles, and those of a map that could not be encoded, take
      // cp.async, waited for here.
      const bool owner = chunk_k != nullptr;
      for (int t = 0; t < ntiles; ++t) {
        const int st = t % kStages;
        if (t >= kStages) dev::MbarWait(empty_bar + 8 * st, (t / kStages + 1) & 1);
        const int kt = kstart + t * BN;
        const uint32_t sk = kv_addr + st * 2 * G::kTileBytes, sv = sk + G::kTileBytes, full = full_bar + 8 * st;
        const int block = paged ? dev::PagedBlock(p.paged, b, kt) : 0;
        const TileSource source = SourceOf<BN>(kt, kend, P, C, owner, paged);
        const bool from_chunk = maps.chunk && source == TileSource::kChunk;
        const bool from_cache = maps.cache && source == TileSource::kCache;
        if (from_chunk || from_cache) {
          if (ltid == 0) {
            dev::MbarArriveExpectTx(full, 2 * G::kTileBytes);
#pragma unroll
            for (int panel = 0; panel < D / 64; ++panel) {
              const uint32_t at = panel * BN * 128;
              if (from_chunk) {
                dev::TmaLoad4(sk + at, &maps.key_chunk, 64 * panel, kvh, kt - P, b, full);
                dev::TmaLoad4(sv + at, &maps.value_chunk, 64 * panel, kvh, kt - P, b, full);
              } else if (paged) {
                dev::TmaLoad4(sk + at, &maps.key_cache, 64 * panel, kt % p.paged.block_size, kvh, block, full);
                dev::TmaLoad4(sv + at, &maps.value_cache, 64 * panel, kt % p.paged.block_size, kvh, block, full);
              } else {
                dev::TmaLoad3(sk + at, &maps.key_cache, 64 * panel, kt % C, b * Hkv + kvh, full);
                dev::TmaLoad3(sv + at, &maps.value_cache, 64 * panel, kt % C, b * Hkv + kvh, full);
              }
            }
          } else {
            dev::MbarArrive(full);
          }
        } else {
          LoadTile<T, D, BN>(sk, sv, kt, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v, p.paged, block,
                             ltid);
          CpAsyncCommit();
          CpAsyncWait<0>();
          dev::FenceProxyAsync();
          dev::MbarArrive(full);
        }
      }
    } else {
      for (int t = 0; t < ntiles; ++t) {
        const int st = t % kStages;
        if (t >= kStages) dev::MbarWait(empty_bar + 8 * st, (t / kStages + 1) & 1);
        const int kt = kstart + t * BN;
        const uint32_t sk = kv_addr + st * 2 * G::kTileBytes, sv = sk + G::kTileBytes;
        const int block = paged ? dev::PagedBlock(p.paged, b, kt) : 0;
        LoadTile<T, D, BN>(sk, sv, kt, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v, p.paged, block,
                           ltid);
        CpAsyncCommit();
        if (t >= 1) {  // the previous tile has landed: visible to wgmma, then full
          CpAsyncWait<1>();
          dev::FenceProxyAsync();
          dev::MbarArrive(full_bar + 8 * ((t - 1) % kStages));
        }
      }
      if (ntiles > 0) {
        CpAsyncWait<0>();
        dev::FenceProxyAsync();
        dev::MbarArrive(full_bar + 8 * ((ntiles - 1) % kStages));
      }
    }
    return;
  }

  // Computing warpgroup wg: rows 64 wg ... 64 wg + 63 of the tile. Its Q panels first (rows past nq zero-filled).
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kComputeRegisters));
  const int wg = warp / 4, wwarp = warp % 4, wtid = tid % 128;
  const uint32_t q_wg = q_addr + wg * G::kQBytes;
  {
    const T* query = static_cast<const T*>(p.query) + ((static_cast<size_t>(b) * S + s0 + 64 * wg) * Hq + h) * D;
    for (int i = wtid; i < 64 * NV; i += 128) {
      const int r = i / NV, c = i % NV;
      const bool valid = 64 * wg + r < nq;
      CpAsync16(q_wg + PanelOffset(64, r, c), valid ? static_cast<const void*>(query + static_cast<size_t>(r) * Hq * D + c * 8) : p.query,
                valid ? 16 : 0);
    }
    CpAsyncCommit();
    CpAsyncWait<0>();
    dev::FenceProxyAsync();
    dev::NamedBarrier(1 + wg, 128);
  }

  // The thread's rows: tokens s0 + 64 wg + 16 wwarp + {g, g + 8} (g = lane / 4) at positions pr0, pr1.
  const int g = lane / 4, t4 = lane % 4;
  const int wrow = 64 * wg + 16 * wwarp;
  const int pr0 = p_first + wrow + g, pr1 = pr0 + 8;
  const bool wg_live = 64 * wg < nq;
  const int pg_first = p_first + 64 * wg, pg_last = min(p_first + 64 * wg + 63, p_last);

  const float log2e = 1.4426950408889634f;
  const float mul = p.scale * log2e;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float o[DT * 4];
#pragma unroll
  for (int i = 0; i < DT * 4; ++i) o[i] = 0.f;

  // S = Q K^T of the tile in stage st (issued, not waited for).
  auto issue_s = [&](float (&s)[NT * 4], int st) {
    const uint32_t sk = kv_addr + st * 2 * G::kTileBytes;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      const uint32_t panel = kc / 4, within = (kc % 4) * 32;
      dev::Wgmma<T, BN>::SS(s, SmemDesc(q_wg + panel * 64 * 128 + within, 16, 1024),
                            SmemDesc(sk + panel * BN * 128 + within, 16, 1024), kc > 0);
    }
    dev::WgmmaCommit();
  };
  // O += P V of the tile in stage st (issued, not waited for).
  auto issue_pv = [&](uint32_t (&pf)[NT / 2][4], int st) {
    const uint32_t sv = kv_addr + st * 2 * G::kTileBytes + G::kTileBytes;
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) dev::Wgmma<T, D>::RS(o, pf[kk], SmemDesc(sv + kk * 16 * 128, BN * 128, 1024), 1);
    dev::WgmmaCommit();
  };
  // The tile's online softmax (prefill_common.cuh), the probabilities written over the scores.
  const int pw_first = p_first + wrow, pw_last = min(p_first + wrow + 15, p_last);
  auto softmax = [&](float (&s)[NT * 4], int kt, float& al0, float& al1) {
    dev::SoftmaxTile<NT>(s, kt, t4, pr0, pr1, pw_first, pw_last, W, mul, m0, m1, l0, l1, al0, al1,
                         [&](int n, float p0, float p1, float p2, float p3) {
                           s[4 * n] = p0;
                           s[4 * n + 1] = p1;
                           s[4 * n + 2] = p2;
                           s[4 * n + 3] = p3;
                         });
  };
  // P as the A fragments of P V, one per 16-key k-step.
  auto pack = [&](const float (&e)[NT * 4], uint32_t (&pf)[NT / 2][4]) {
#pragma unroll
    for (int n = 0; n < NT; ++n) dev::PackProbabilities<T, NT>(pf, n, e[4 * n], e[4 * n + 1], e[4 * n + 2], e[4 * n + 3]);
  };
  auto rescale = [&](float al0, float al1) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      o[4 * dt] *= al0;
      o[4 * dt + 1] *= al0;
      o[4 * dt + 2] *= al1;
      o[4 * dt + 3] *= al1;
    }
  };
  auto release = [&](int st) {  // this warp is done reading the stage (kSplitKV: its K tile)
    __syncwarp();
    if (lane == 0) dev::MbarArrive(empty_bar + 8 * st);
  };
  // The overlapped schedule's hand-offs by operand. Without separate V barriers a stage is one unit: waiting for
  // tile t's K waits for the whole stage, and the stage is released once its V has been read.
  auto wait_keys = [&](int t) { dev::MbarWait(full_bar + 8 * (t % kStages), (t / kStages) & 1); };
  auto wait_values = [&](int t) {
    if constexpr (kSplitKV) dev::MbarWait(full_v_bar + 8 * (t % kStages), (t / kStages) & 1);
  };
  auto keys_read = [&](int t) {
    if constexpr (kSplitKV) release(t % kStages);
  };
  auto values_read = [&](int t) {
    if constexpr (kSplitKV) {
      __syncwarp();
      if (lane == 0) dev::MbarArrive(empty_v_bar + 8 * (t % kStages));
    } else {
      release(t % kStages);
    }
  };

  if constexpr (!kOverlap) {
    // In order per tile: S, softmax, O += P V, each product waited for before the next step.
    for (int t = 0; t < ntiles; ++t) {
      const int st = t % kStages, kt = kstart + t * BN;
      // Can any row of the warpgroup see a key of this tile? (causal: kt <= last row; window: last key > first row - W)
      const bool any = wg_live && kt <= pg_last && (W == 0 || kt + BN - 1 > pg_first - W);
      dev::MbarWait(full_bar + 8 * st, (t / kStages) & 1);
      if (any) {
        float s[NT * 4];
        dev::WgmmaFence();
        issue_s(s, st);
        dev::WgmmaWait<0>();
        dev::FenceRegisters(s);
        float al0, al1;
        softmax(s, kt, al0, al1);
        uint32_t pf[NT / 2][4];
        pack(s, pf);
        rescale(al0, al1);
        dev::FenceRegisters(o);
        dev::FenceRegisters(pf);
        dev::WgmmaFence();
        issue_pv(pf, st);
        dev::WgmmaWait<0>();
        dev::FenceRegisters(o);
      }
      release(st);
    }
  } else {
    // Overlapped (FlashAttention-3's intra-warpgroup pipelining): tile t's S is issued together with the previous
    // tile's O += P V, so the softmax of t runs while the tensor cores add P V of t - 1; O is rescaled by t's factors
    // once that product is done. The stage of t - 1 stays held until then (hence three stages), or with separate V
    // barriers only its V tile (two stages suffice: K of t + 1 loads while t - 1's V is read).
    static_assert(kStages >= 3 || kSplitKV, "the overlapped schedule holds two stages while the loader fills a third");
    // The warpgroup's visible tiles form one range [first, last] (the causal bound cuts the end, the window the
    // start); the tiles around it are only waited for and released, in order, and the range runs without branches
    // around the products, so that ptxas can follow the asynchronous ones (it serializes them when it cannot).
    auto visible = [&](int t) {
      const int kt = kstart + t * BN;
      return wg_live && kt <= pg_last && (W == 0 || kt + BN - 1 > pg_first - W);
    };
    int first = 0;
    while (first < ntiles && !visible(first)) ++first;
    int last = first;
    while (last + 1 < ntiles && visible(last + 1)) ++last;
    // kPingPong (FlashAttention-3's inter-warpgroup schedule): the two warpgroups take turns at issuing their products,
    // so that one's softmax runs while the other's products occupy the tensor cores. Named barriers 3 (warpgroup 0's
    // turn) and 4 (warpgroup 1's): a turn waits for its own barrier and, once issued, arrives at the other's. Both
    // warpgroups take ntiles + 1 turns whatever they see (a tile's products, or none, plus the last P V), so the
    // hand-offs balance: warpgroup 1 arrives first for warpgroup 0's first turn and not after its own last one.
    int turn = 0;
    auto turn_begin = [&] {
      if constexpr (kPingPong) dev::NamedBarrier(3 + wg, 256);
    };
    auto turn_end = [&] {
      if constexpr (kPingPong) {
        if (wg == 0 || turn < ntiles) dev::NamedBarrierArrive(3 + (1 - wg), 256);
      }
      ++turn;
    };
    if constexpr (kPingPong) {
      if (wg == 1) dev::NamedBarrierArrive(3, 256);
    }
    auto skip = [&](int t) {
      turn_begin();
      turn_end();
      wait_keys(t);
      wait_values(t);
      keys_read(t);
      values_read(t);
    };
    for (int t = 0; t < min(first, ntiles); ++t) skip(t);
    if (first >= ntiles) {  // nothing visible: the turn of the last P V, empty
      turn_begin();
      turn_end();
    } else {
      uint32_t pending[NT / 2][4];  // P of the previous tile, whose P V is issued with the next tile's S
      {
        const int st = first % kStages;
        wait_keys(first);
        float s[NT * 4];
        turn_begin();
        dev::WgmmaFence();
        issue_s(s, st);
        turn_end();
        dev::WgmmaWait<0>();
        dev::FenceRegisters(s);
        keys_read(first);
        float al0, al1;
        softmax(s, kstart + first * BN, al0, al1);
        pack(s, pending);
        rescale(al0, al1);
      }
      for (int t = first + 1; t <= last; ++t) {
        const int st = t % kStages, prev = (t - 1) % kStages;
        wait_keys(t);
        wait_values(t - 1);
        float s[NT * 4];
        dev::FenceRegisters(o);
        dev::FenceRegisters(pending);
        turn_begin();
        dev::WgmmaFence();
        issue_s(s, st);
        issue_pv(pending, prev);
        turn_end();
        dev::WgmmaWait<1>();
        dev::FenceRegisters(s);
        keys_read(t);
        float al0, al1;
        softmax(s, kstart + t * BN, al0, al1);
        dev::WgmmaWait<0>();
        dev::FenceRegisters(o);
        dev::FenceRegisters(pending);
        values_read(t - 1);
        rescale(al0, al1);
        pack(s, pending);
      }
      wait_values(last);
      dev::FenceRegisters(o);
      dev::FenceRegisters(pending);
      turn_begin();
      dev::WgmmaFence();
      issue_pv(pending, last % kStages);
      turn_end();
      dev::WgmmaWait<0>();
      dev::FenceRegisters(o);
      values_read(last);
      for (int t = last + 1; t < ntiles; ++t) skip(t);
    }
  }

  // Row sums over the 4 lanes of each row, then O / l (padding rows and rows that saw nothing: zeros).
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const int r0 = wrow + g, r1 = r0 + 8;
  if (splits > 1) {
    // Unnormalised partial (O, max in base-2 units, sum) of each real row; the group's last block merges them, its
    // two computing warpgroups together (named barrier 5: the loading warpgroup has left).
    dev::PublishPartialRow<D>(p, S, Hq, splits, b, s0, h, split, r0, nq, t4, m0, l0, mul,
                              [&](int dt) { return make_float2(o[4 * dt], o[4 * dt + 1]); });
    dev::PublishPartialRow<D>(p, S, Hq, splits, b, s0, h, split, r1, nq, t4, m1, l1, mul,
                              [&](int dt) { return make_float2(o[4 * dt + 2], o[4 * dt + 3]); });
    // The flag in warpgroup 0's Q panels, which no product reads any more.
    int* flag = reinterpret_cast<int*>(smem_raw + (q_addr - SmemAddr(smem_raw)));
    dev::MergePrefillSplitsIfLast<T, D>(p, b, tile, tiles, h, s0, nq, rows_here, tid, kComputeThreads, flag,
                                        [] { dev::NamedBarrier(5, kComputeThreads); });
    return;
  }
  const float inv0 = r0 < nq && l0 > 0.f ? 1.f / l0 : 0.f;
  const float inv1 = r1 < nq && l1 > 0.f ? 1.f / l1 : 0.f;
  T* out0 = out + ((static_cast<size_t>(b) * S + s0 + r0) * Hq + h) * D + 2 * t4;
  T* out1 = out + ((static_cast<size_t>(b) * S + s0 + r1) * Hq + h) * D + 2 * t4;
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) {
    if (r0 < rows_here) *reinterpret_cast<uint32_t*>(out0 + dt * 8) = MmaOp<T>::Pack(o[4 * dt] * inv0, o[4 * dt + 1] * inv0);
    if (r1 < rows_here) *reinterpret_cast<uint32_t*>(out1 + dt * 8) = MmaOp<T>::Pack(o[4 * dt + 2] * inv1, o[4 * dt + 3] * inv1);
  }
#else
  __trap();  // launched only on sm_90 (PrefillWgmmaAvailable)
#endif
}

// cuTensorMapEncodeTiled through the runtime (the driver's entry point, ABI of CUDA 12.0); nullptr when unavailable.
using TensorMapEncode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                     const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                     CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
TensorMapEncode TensorMapEncoder() {
  static const TensorMapEncode encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    if (e != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<TensorMapEncode>(nullptr);
    }
    return reinterpret_cast<TensorMapEncode>(fn);
  }();
  return encoder;
}

// A map of 16-bit elements over `rank` dimensions (dims innermost first, strides in bytes of dimensions 1...), boxes of
// 64 x `keys` x 1 ... with the 128-byte swizzle; false when it cannot be encoded.
template <typename T>
bool EncodeMap(CUtensorMap* map, const void* base, int rank, const cuuint64_t* dims, const cuuint64_t* strides, int keys_dim,
               int keys) {
  const TensorMapEncode encode = TensorMapEncoder();
  if (encode == nullptr || base == nullptr) return false;
  cuuint32_t box[5] = {64, 1, 1, 1, 1}, unit[5] = {1, 1, 1, 1, 1};
  box[keys_dim] = static_cast<cuuint32_t>(keys);
  const CUtensorMapDataType type = std::is_same<T, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  return encode(map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), dims, strides, box, unit,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename T, int D, int BN>
TmaMaps EncodeMaps(const PrefillParams& p) {
  constexpr cuuint64_t E = sizeof(T);
  TmaMaps m{};
  const cuuint64_t Hkv = p.kv_num_heads;
  if (p.paged.table != nullptr) {  // [num_blocks, Hkv, block_size, D]
    const cuuint64_t bs = p.paged.block_size;
    const cuuint64_t dims[4] = {D, bs, Hkv, static_cast<cuuint64_t>(p.paged.num_blocks)};
    const cuuint64_t strides[3] = {D * E, bs * D * E, Hkv * bs * D * E};
    m.cache = EncodeMap<T>(&m.key_cache, p.key_cache, 4, dims, strides, 1, BN) &&
              EncodeMap<T>(&m.value_cache, p.value_cache, 4, dims, strides, 1, BN);
  } else {  // [B * Hkv, C, D]
    const cuuint64_t C = p.capacity;
    const cuuint64_t dims[3] = {D, C, static_cast<cuuint64_t>(p.batch) * Hkv};
    const cuuint64_t strides[2] = {D * E, C * D * E};
    m.cache = EncodeMap<T>(&m.key_cache, p.key_cache, 3, dims, strides, 1, BN) &&
              EncodeMap<T>(&m.value_cache, p.value_cache, 3, dims, strides, 1, BN);
  }
  if (p.chunk_key != nullptr) {  // [B, S, Hkv, D]
    const cuuint64_t S = p.seq;
    const cuuint64_t dims[4] = {D, Hkv, S, static_cast<cuuint64_t>(p.batch)};
    const cuuint64_t strides[3] = {D * E, Hkv * D * E, S * Hkv * D * E};
    m.chunk = EncodeMap<T>(&m.key_chunk, p.chunk_key, 4, dims, strides, 2, BN) &&
              EncodeMap<T>(&m.value_chunk, p.chunk_value, 4, dims, strides, 2, BN);
  }
  return m;
}

template <typename T, int D, int kStages, bool kOverlap, bool kTma, bool kPingPong = false, bool kSplitKV = false>
cudaError_t LaunchPrefillWgmma(const PrefillParams& p, cudaStream_t stream) {
  using G = WgmmaGeometry<D, kStages>;
  constexpr size_t bytes = G::kSmemBytes;
  static_assert(bytes <= 227 * 1024, "shared memory per block on sm_90");
  const auto kernel = PrefillWgmmaKernel<T, D, kStages, kOverlap, kTma, kPingPong, kSplitKV>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)))
    return e;
  TmaMaps maps{};
  if constexpr (kTma) maps = EncodeMaps<T, D, G::kBN>(p);
  const dim3 grid((p.seq + G::kBM - 1) / G::kBM * p.splits, p.num_heads, p.batch);
  kernel<<<grid, kThreads, bytes, stream>>>(p, maps);
  return cudaGetLastError();
}

template <typename T, int D>
PrefillLauncher WgmmaVariant(int variant) {
  if constexpr (D == 256) {
    // Two stages: a third does not fit beside Q in shared memory. In order (1), or overlapped with separate V
    // barriers (6), which needs no third stage.
    return variant == 1 ? &LaunchPrefillWgmma<T, D, 2, false, false>
           : variant == 6 ? &LaunchPrefillWgmma<T, D, 2, true, true, true, true>
                          : nullptr;
  } else {
    switch (variant) {
      case 1: return &LaunchPrefillWgmma<T, D, 2, false, false>;
      case 2: return &LaunchPrefillWgmma<T, D, 3, false, false>;
      case 3: return &LaunchPrefillWgmma<T, D, 3, true, false>;
      case 4: return &LaunchPrefillWgmma<T, D, 3, true, true>;
      case 5: return &LaunchPrefillWgmma<T, D, 3, true, true, true>;
      case 6: return &LaunchPrefillWgmma<T, D, 3, true, true, true, true>;
      default: return nullptr;
    }
  }
}

template <typename T>
PrefillLauncher WgmmaForHeadDim(int head_dim, int variant) {
  switch (head_dim) {
    case 64: return WgmmaVariant<T, 64>(variant);
    case 128: return WgmmaVariant<T, 128>(variant);
    case 256: return WgmmaVariant<T, 256>(variant);
    default: return nullptr;
  }
}

}  // namespace

bool PrefillWgmmaAvailable() {
  // Per device (up to 64): 0 not asked yet, 1 no, 2 yes. The library carries sm_90a machine code for this kernel
  // only; other GPUs run the portable mma.sync kernel.
  static std::atomic<int> cache[64] = {};
  const int device = CurrentDevice() & 63;
  if (int v = cache[device].load(std::memory_order_relaxed)) return v == 2;
  int major = 0, minor = 0;
  const bool yes = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, CurrentDevice()) == cudaSuccess &&
                   cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, CurrentDevice()) == cudaSuccess &&
                   major == 9 && minor == 0;
  cache[device].store(yes ? 2 : 1, std::memory_order_relaxed);
  return yes;
}

PrefillLauncher GetPrefillWgmmaLauncher(DType dtype, int head_dim, int variant) {
  if (!PrefillWgmmaAvailable()) return nullptr;
  switch (dtype) {
    case DType::kFloat16: return WgmmaForHeadDim<__half>(head_dim, variant);
    case DType::kBFloat16: return WgmmaForHeadDim<__nv_bfloat16>(head_dim, variant);
    case DType::kFloat32: return nullptr;
  }
  return nullptr;
}

}  // namespace mixattn::cuda
