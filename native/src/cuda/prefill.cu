// Prefill (S > 1, fp16 / bf16) on tensor cores in the flash-attention-2 manner: mma.sync m16n8k16 with fp32
// accumulation, scores and probabilities kept in registers, K / V tiles streamed by cp.async into a double buffer.
//
// Grid: x = (tile of 64 query tokens) x splits (the last tile first: under the causal mask later tokens see more
// keys, so the longest blocks start first and the short ones fill the tail), y = query head, z = sequence; 4 warps,
// each owning 16 query rows of the tile. With splits > 1 (Plan: a grid too small to fill the GPU against a long
// cache) each block takes an equal share of the tile's key range and the group's last block merges the partials. The key range of the tile is [max(0, p_first - W + 1), p_last] (p = P + s), walked in
// tiles of BN keys: tiles wholly before the window of the tile's first query are never loaded, a warp skips the
// math of tiles none of its rows can see, and the window / causal mask is applied per element only in tiles that
// straddle a boundary of the warp's rows. Keys at positions < P come from cache slot pos mod C, keys >= P from the
// chunk (owner) or the cache (reader) — the addressing of the decode kernels. Paged pools (p.paged, global layers,
// block size a multiple of the key tile) are read in place: a tile's rows are consecutive rows of one pool block, whose
// index is loaded one tile ahead.
//
// Per key tile and warp (16 rows x BN keys):
//   S  = Q K^T     A = Q (ldmatrix; kept in registers for D <= 128), B = K (ldmatrix)
//   online softmax in fp32, base 2, rows reduced over the 4 lanes that share them
//   O += P V       A = P (the S accumulators packed to 16 bits: no shared-memory round trip), B = V (ldmatrix.trans)
// Shared-memory rows are XOR-swizzled by 16-byte chunk (dev::Swizzled): ldmatrix and cp.async are conflict-free.
#include <climits>

#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"
#include "cuda/prefill_common.cuh"

namespace mixattn::cuda {
namespace {

using dev::CpAsync16;
using dev::CpAsyncCommit;
using dev::CpAsyncWait;
using dev::LdMatrixX4;
using dev::LdMatrixX4Trans;
using dev::MmaOp;
using dev::SmemAddr;
using dev::Swizzled;
using dev::Traits;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

template <int D>
struct PrefillGeometry {
  static constexpr int kBM = kPrefillRows;          // query rows per block: 16 per warp
  static_assert(kBM == 16 * kWarps, "one 16-row MMA tile per warp");
  static constexpr int kBN = PrefillKeysPerTile(D);  // keys per tile
  static constexpr bool kQInRegisters = D <= 128;    // D = 256 re-reads Q's fragments from shared memory per tile
  static constexpr int kTileElems = kBN * D;         // one K (or V) tile
  template <typename T>
  static constexpr size_t SmemBytes() {              // Q, then 2 stages of (K tile, V tile)
    return (size_t{kBM} * D + 2 * 2 * size_t{kTileElems}) * sizeof(T);
  }
};

// The general path of a K / V tile copy (rows that wrap around the ring, straddle the past and the chunk, or run past
// the range, zero-filled): per row a modulo and a branch. Kept out of line because it is rare and the main loop
// should stay small: with it and the softcap instantiation moved out, Nsight Compute's instruction-fetch stalls fell
// from 0.67 to 0.04 per issued instruction (H200, 16 x 256 tokens at 32K cached).
// Paged (paged.table set): cache_k / cache_v are the pools' bases and a past row is found through the table.
template <typename T, int D, int BN>
__device__ __noinline__ void CopyTileRows(uint32_t sk, uint32_t sv, int kt, int kend, int P, int C, int S, int Hkv,
                                          int b, int kvh, const T* chunk_k, const T* chunk_v, const T* cache_k,
                                          const T* cache_v, const BlockTable paged) {
  constexpr int NV = D / 8, RS = kThreads / NV;
  const int c_own = threadIdx.x % NV, r_own = threadIdx.x / NV;
#pragma unroll
  for (int i = 0; i < BN / RS; ++i) {
    const int r = r_own + i * RS;
    const T* kr;
    const T* vr;
    const bool valid = dev::KeyRows<T, D>(kt + r, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v, paged, kr, vr);
    const uint32_t o = Swizzled<D>(r, c_own) * sizeof(T);
    CpAsync16(sk + o, kr + (valid ? c_own * 8 : 0), valid ? 16 : 0);
    CpAsync16(sv + o, vr + (valid ? c_own * 8 : 0), valid ? 16 : 0);
  }
}

template <typename T, int D, bool kSoftcap>
__global__ void __launch_bounds__(kThreads) PrefillTcKernel(const __grid_constant__ PrefillParams p) {
  using G = PrefillGeometry<D>;
  constexpr int BM = G::kBM, BN = G::kBN;
  constexpr int NV = D / 8;   // 16-byte chunks per row
  constexpr int KC = D / 16;  // k-steps of Q K^T
  constexpr int NT = BN / 8;  // n-tiles of S (8 keys each)
  constexpr int DT = D / 8;   // n-tiles of O (8 dims each)
  static_assert(sizeof(T) == 2 && NV % 8 == 0 && kThreads % NV == 0 && (BN * NV) % kThreads == 0 && NT % 2 == 0, "unsupported head size");
  extern __shared__ __align__(128) uint4 smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  const uint32_t q_addr = SmemAddr(sQ);
  const uint32_t kv_addr = SmemAddr(sQ + BM * D);  // stage st: K tile at + st * 2 * tile, V tile after it

  const int splits = p.splits, tiles = gridDim.x / splits;
  const int tile = tiles - 1 - static_cast<int>(blockIdx.x) / splits, split = blockIdx.x % splits;
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

  const T* chunk_k = static_cast<const T*>(p.chunk_key);
  const T* chunk_v = static_cast<const T*>(p.chunk_value);
  // Paged: the pools' bases (rows found through the table); else this (sequence, KV head)'s [C, D] rows.
  const bool paged = p.paged.table != nullptr;
  const size_t cache_base = paged ? 0 : (static_cast<size_t>(b) * Hkv + kvh) * C * D;
  const T* cache_k = static_cast<const T*>(p.key_cache) + cache_base;
  const T* cache_v = static_cast<const T*>(p.value_cache) + cache_base;
  const bool owner = chunk_k != nullptr;

  const int p_first = P + s0, p_last = P + s0 + nq - 1;
  const int kend = p_last + 1;
  // The key tiles from the window's start (out-of-window tiles are never loaded), this split's share of them.
  int kstart = W > 0 ? max(0, p_first - W + 1) : 0;
  int ntiles = (kend - kstart + BN - 1) / BN;
  dev::SplitKeyTiles(split, splits, BN, kstart, ntiles);

  // A thread copies the same 16-byte chunk c of rows r0 + i * RS of every tile (NV divides the block).
  constexpr int RS = kThreads / NV;
  const int c_own = tid % NV, r_own = tid / NV;
  // Paged: the pool block of the next tile to issue (tiles are issued in order), loaded one tile ahead.
  int next_block = paged && ntiles > 0 ? dev::PagedBlock(p.paged, b, kstart) : 0;

  // Q tile (rows past nq zero-filled), committed together with the first K / V tile.
  {
    const T* query = static_cast<const T*>(p.query) + ((static_cast<size_t>(b) * S + s0) * Hq + h) * D;
#pragma unroll
    for (int i = 0; i < BM / RS; ++i) {
      const int r = r_own + i * RS;
      const bool valid = r < nq;
      CpAsync16(q_addr + Swizzled<D>(r, c_own) * sizeof(T),
                valid ? static_cast<const void*>(query + static_cast<size_t>(r) * Hq * D + c_own * 8) : p.query,
                valid ? 16 : 0);
    }
  }
  // K / V tile t into stage st; rows past the range zero-filled. Always commits a group (possibly empty), so that
  // "all groups but the newest" is always "everything up to the tile about to be used".
  auto issue = [&](int t, int st) {
    if (t < ntiles) {
      const int kt = kstart + t * BN;
      const uint32_t sk = kv_addr + static_cast<uint32_t>(st * 2 * G::kTileElems * sizeof(T));
      const uint32_t sv = sk + static_cast<uint32_t>(G::kTileElems * sizeof(T));
      // Common cases (block-uniform): every row of the tile in consecutive cache slots, or every row from the chunk;
      // then each copy is a fixed offset from one pointer (the per-row path below costs a modulo and a branch a row).
      const int slot = kt % C;
      const bool in_cache = (!owner || kt + BN <= P) && slot + BN <= C;
      const bool in_chunk = owner && kt >= P;
      // Paged: the tile's first cache row in its pool block (a tile never straddles two: Plan's paged_tiles rule).
      size_t cache_row = static_cast<size_t>(slot);
      if (paged) {
        cache_row = dev::PagedRowIn(p.paged, next_block, kvh, Hkv, kt);
        if (t + 1 < ntiles) next_block = dev::PagedBlock(p.paged, b, kt + BN);
      }
      if (kt + BN <= kend && (in_cache || in_chunk)) {
        const size_t stride = in_cache ? D : static_cast<size_t>(Hkv) * D;
        const size_t first = in_cache ? cache_row * D
                                      : ((static_cast<size_t>(b) * S + (kt - P)) * Hkv + kvh) * D;
        const T* kr = (in_cache ? cache_k : chunk_k) + first + c_own * 8;
        const T* vr = (in_cache ? cache_v : chunk_v) + first + c_own * 8;
#pragma unroll
        for (int i = 0; i < BN / RS; ++i) {
          const int r = r_own + i * RS;
          const uint32_t o = Swizzled<D>(r, c_own) * sizeof(T);
          CpAsync16(sk + o, kr + r * stride, 16);
          CpAsync16(sv + o, vr + r * stride, 16);
        }
        CpAsyncCommit();
        return;
      }
      CopyTileRows<T, D, BN>(sk, sv, kt, kend, P, C, S, Hkv, b, kvh, chunk_k, chunk_v, cache_k, cache_v, p.paged);
    }
    CpAsyncCommit();
  };
  issue(0, 0);

  // The warp's rows: tokens s0 + 16 warp + {g, g + 8} (g = lane / 4) at positions pr0, pr1.
  const int wrow = warp * 16;
  const int g = lane / 4, t4 = lane % 4;
  const int pr0 = p_first + wrow + g, pr1 = pr0 + 8;
  const bool warp_live = wrow < nq;
  const int pw_first = p_first + wrow, pw_last = min(p_first + wrow + 15, p_last);

  const float log2e = 1.4426950408889634f;
  // Softcap must see the scaled score: applied first, it leaves base-2 units (exponent multiplier 1). Without it the
  // raw scores go into the max (scale > 0, checked by the op) and one FFMA a score applies scale * log2(e) inside the
  // exponent. The split-K partials keep their maxima in these base-2 units (max * mul).
  const float mul = kSoftcap ? 1.f : p.scale * log2e;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float o[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;

  // ldmatrix lane addressing. A (Q, rows of the warp): matrix lane / 8 = (row half, chunk half).
  const int qa_row = wrow + (lane / 8 % 2) * 8 + lane % 8, qa_chunk = lane / 16;
  // B of S (K rows, not transposed): matrix = (n-tile half, chunk half).
  const int kb_row = (lane / 16) * 8 + lane % 8, kb_chunk = lane / 8 % 2;
  // B of O (V rows, transposed): matrix = (chunk half, key half).
  const int vb_row = (lane / 8 % 2) * 8 + lane % 8, vb_chunk = lane / 16;
  uint32_t qf[G::kQInRegisters ? KC : 1][4];

  for (int t = 0; t < ntiles; ++t) {
    issue(t + 1, (t + 1) & 1);
    CpAsyncWait<1>();
    __syncthreads();
    const int st = t & 1;
    const uint32_t sk = kv_addr + static_cast<uint32_t>(st * 2 * G::kTileElems * sizeof(T));
    const uint32_t sv = sk + static_cast<uint32_t>(G::kTileElems * sizeof(T));
    if constexpr (G::kQInRegisters) {
      if (t == 0) {
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) LdMatrixX4(qf[kc], q_addr + Swizzled<D>(qa_row, 2 * kc + qa_chunk) * sizeof(T));
      }
    }
    const int kt = kstart + t * BN;
    // Can any row of the warp see a key of this tile? (causal: kt <= last row; window: last key > first row - W)
    const bool any = warp_live && kt <= pw_last && (W == 0 || kt + BN - 1 > pw_first - W);
    if (any) {
      float s[NT * 4];
#pragma unroll
      for (int i = 0; i < NT * 4; ++i) s[i] = 0.f;
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        uint32_t a_local[4];
        const uint32_t* a = a_local;
        if constexpr (G::kQInRegisters) {
          a = qf[kc];
        } else {
          LdMatrixX4(a_local, q_addr + Swizzled<D>(qa_row, 2 * kc + qa_chunk) * sizeof(T));
        }
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
          uint32_t kf[4];
          LdMatrixX4(kf, sk + Swizzled<D>(n * 8 + kb_row, 2 * kc + kb_chunk) * sizeof(T));
          MmaOp<T>::Run(s + 4 * n, a, kf[0], kf[1]);
          MmaOp<T>::Run(s + 4 * n + 4, a, kf[2], kf[3]);
        }
      }
      if constexpr (kSoftcap) {
#pragma unroll
        for (int i = 0; i < NT * 4; ++i) s[i] = dev::Softcap(s[i] * p.scale, p.softcap) * log2e;
      }
      float al0, al1;
      uint32_t pf[NT / 2][4];  // A fragments of P, one per 16-key k-step
      dev::SoftmaxTile<NT>(s, kt, t4, pr0, pr1, pw_first, pw_last, W, mul, m0, m1, l0, l1, al0, al1,
                           [&](int n, float p0, float p1, float p2, float p3) {
                             dev::PackProbabilities<T, NT>(pf, n, p0, p1, p2, p3);
                           });
      if (__any_sync(0xffffffffu, al0 != 1.f || al1 != 1.f)) {  // skipped once the row maxima settle
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          o[dt][0] *= al0;
          o[dt][1] *= al0;
          o[dt][2] *= al1;
          o[dt][3] *= al1;
        }
      }
      // O += P V: for each 16-key k-step, V's B fragments of two 8-dim n-tiles per ldmatrix.x4.trans.
#pragma unroll
      for (int kk = 0; kk < NT / 2; ++kk)
#pragma unroll
        for (int dt = 0; dt < DT; dt += 2) {
          uint32_t vf[4];
          LdMatrixX4Trans(vf, sv + Swizzled<D>(kk * 16 + vb_row, dt + vb_chunk) * sizeof(T));
          MmaOp<T>::Run(o[dt], pf[kk], vf[0], vf[1]);
          MmaOp<T>::Run(o[dt + 1], pf[kk], vf[2], vf[3]);
        }
    }
    __syncthreads();  // every warp is done with stage st before the next iteration's issue() refills it
  }
  CpAsyncWait<0>();

  // Row sums over the 4 lanes of each row.
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const int r0 = wrow + g, r1 = r0 + 8;
  if (splits > 1) {
    // Unnormalised partial (O, max in base-2 units, sum) of each real row; the group's last block merges them.
    dev::PublishPartialRow<D>(p, S, Hq, splits, b, s0, h, split, r0, nq, t4, m0, l0, mul,
                              [&](int dt) { return make_float2(o[dt][0], o[dt][1]); });
    dev::PublishPartialRow<D>(p, S, Hq, splits, b, s0, h, split, r1, nq, t4, m1, l1, mul,
                              [&](int dt) { return make_float2(o[dt][2], o[dt][3]); });
    // The Q tile's shared memory is free once the loop is done: the flag reuses it.
    dev::MergePrefillSplitsIfLast<T, D>(p, b, tile, tiles, h, s0, nq, rows_here, tid, kThreads,
                                        reinterpret_cast<int*>(smem_raw), [] { __syncthreads(); });
    return;
  }
  // O / l (padding rows and rows that saw nothing: zeros).
  const float inv0 = r0 < nq && l0 > 0.f ? 1.f / l0 : 0.f;
  const float inv1 = r1 < nq && l1 > 0.f ? 1.f / l1 : 0.f;
  T* out0 = out + ((static_cast<size_t>(b) * S + s0 + r0) * Hq + h) * D + 2 * t4;
  T* out1 = out + ((static_cast<size_t>(b) * S + s0 + r1) * Hq + h) * D + 2 * t4;
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) {
    if (r0 < rows_here) *reinterpret_cast<uint32_t*>(out0 + dt * 8) = MmaOp<T>::Pack(o[dt][0] * inv0, o[dt][1] * inv0);
    if (r1 < rows_here) *reinterpret_cast<uint32_t*>(out1 + dt * 8) = MmaOp<T>::Pack(o[dt][2] * inv1, o[dt][3] * inv1);
  }
}

template <typename T, int D>
cudaError_t LaunchPrefill(const PrefillParams& p, cudaStream_t stream) {
  using G = PrefillGeometry<D>;
  constexpr size_t bytes = G::template SmemBytes<T>();
  // The softcap variant is a separate instantiation: the common kernel carries none of its code.
  const auto kernel = p.softcap > 0.f ? PrefillTcKernel<T, D, true> : PrefillTcKernel<T, D, false>;
  // Per device and cheap (no synchronisation, allowed while a stream is captured), so simply set before every launch.
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)))
    return e;
  const dim3 grid((p.seq + G::kBM - 1) / G::kBM * p.splits, p.num_heads, p.batch);
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
PrefillLauncher ForHeadDim(int head_dim) {
  switch (head_dim) {
    case 64: return &LaunchPrefill<T, 64>;
    case 128: return &LaunchPrefill<T, 128>;
    case 256: return &LaunchPrefill<T, 256>;
    default: return nullptr;
  }
}

}  // namespace

PrefillLauncher GetPrefillLauncher(DType dtype, int head_dim) {
  switch (dtype) {
    case DType::kFloat16: return ForHeadDim<__half>(head_dim);
    case DType::kBFloat16: return ForHeadDim<__nv_bfloat16>(head_dim);
    case DType::kFloat32: return nullptr;
  }
  return nullptr;
}

}  // namespace mixattn::cuda
