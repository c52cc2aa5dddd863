// Device code both prefill kernels share (prefill.cu: mma.sync; prefill_wgmma.cu: warpgroup MMA): where a key row
// comes from, the online softmax of one tile of scores held as m16n8 accumulator fragments, and the split-K merge.
#pragma once

#include <climits>

#include "cuda/kernel_common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"

namespace mixattn::cuda::dev {

// The K / V rows of key j of (sequence b, KV head kvh): the owner's chunk row for j >= P, else the cache row (slot
// j mod C, or through the block table of a paged pool). False (rows left at the caches' bases) for j >= kend, a row
// the caller zero-fills.
template <typename T, int D>
__device__ __forceinline__ bool KeyRows(int j, int kend, int P, int C, int S, int Hkv, int b, int kvh, const T* chunk_k,
                                        const T* chunk_v, const T* cache_k, const T* cache_v, const BlockTable& paged,
                                        const T*& kr, const T*& vr) {
  kr = cache_k;
  vr = cache_v;
  if (j >= kend) return false;
  if (chunk_k != nullptr && j >= P) {
    const size_t off = ((static_cast<size_t>(b) * S + (j - P)) * Hkv + kvh) * D;
    kr = chunk_k + off;
    vr = chunk_v + off;
  } else {
    const size_t off = (paged.table != nullptr ? PagedRow(paged, b, kvh, Hkv, j) : static_cast<size_t>(j % C)) * D;
    kr = cache_k + off;
    vr = cache_v + off;
  }
  return true;
}

// 2^x by the special-function unit alone (ex2.approx.ftz): exp2f adds a range test and two multiplies per call to
// keep results below 2^-126 exact, which probabilities that small do not need (they are zero next to the row's
// maximum, 2^0) and which cost the softmax, 64 exponentials a thread per tile, a third of its instructions.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Folds two arrays of N values to their first elements in log2(N) halving steps (t[n] = op(t[n], t[n + W]) for
// W = N / 2, N / 4, ..., 1). A recursion on W rather than a loop: nvcc does not unroll `for (w = N / 2; w > 0; w /= 2)`
// at N = 16 (the wgmma kernel's 128-key tiles), which put both arrays in local memory and cost every tile a round trip
// through L1 per step.
template <int W, int N, typename Op>
__device__ __forceinline__ void FoldTree(float (&t0)[N], float (&t1)[N], Op op) {
  if constexpr (W > 0) {
#pragma unroll
    for (int n = 0; n < W; ++n) {
      t0[n] = op(t0[n], t0[n + W]);
      t1[n] = op(t1[n], t1[n + W]);
    }
    FoldTree<W / 2>(t0, t1, op);
  }
}

// One tile of scores of keys kt ... kt + 8 NT - 1 for a warp's 16 rows, as m16n8 accumulator fragments: s[4 n + e]
// is row g (e = 0, 1) or g + 8 (e = 2, 3), key kt + 8 n + 2 t4 + e % 2 (g = lane / 4, t4 = lane % 4). Masks, only
// when the tile straddles a boundary of the warp's rows (positions pw_first ... pw_last; row r sees keys
// (pr - W, pr]), then hands the probabilities exp2(s mul - max mul) of n-tile n to emit(n, p0, p1, p2, p3) as they
// are computed, updates the row maxima m (raw units; -inf before any key) and the partial sums l (this lane's share),
// and returns the factors al by which the output accumulated so far must be scaled. Maxima and sums as trees over
// the n-tiles (a chain of NT dependent steps would be latency on every tile); the 4 lanes of a row share its max.
template <int NT, typename Emit>
__device__ __forceinline__ void SoftmaxTile(float (&s)[NT * 4], int kt, int t4, int pr0, int pr1, int pw_first, int pw_last,
                                            int W, float mul, float& m0, float& m1, float& l0, float& l1, float& al0,
                                            float& al1, Emit&& emit) {
  if (!(kt + 8 * NT - 1 <= pw_first && (W == 0 || kt > pw_last - W))) {
    const int lo0 = W > 0 ? pr0 - W : INT_MIN, lo1 = W > 0 ? pr1 - W : INT_MIN;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = kt + n * 8 + 2 * t4 + (e & 1);
        if (e < 2 ? (j > pr0 || j <= lo0) : (j > pr1 || j <= lo1)) s[4 * n + e] = -INFINITY;
      }
  }
  float t0[NT], t1[NT];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    t0[n] = fmaxf(s[4 * n], s[4 * n + 1]);
    t1[n] = fmaxf(s[4 * n + 2], s[4 * n + 3]);
  }
  FoldTree<NT / 2>(t0, t1, [](float a, float b) { return fmaxf(a, b); });
  float mx0 = fmaxf(m0, t0[0]), mx1 = fmaxf(m1, t1[0]);
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
  }
  // A row that has seen nothing yet keeps -inf, and its exponent base is 0 so that exp2(-inf) = 0 and never
  // exp2(-inf + inf).
  const float b0 = mx0 == -INFINITY ? 0.f : mx0 * mul, b1 = mx1 == -INFINITY ? 0.f : mx1 * mul;
  al0 = FastExp2(fmaf(m0, mul, -b0));  // m = -inf: 0 (l and the output are 0)
  al1 = FastExp2(fmaf(m1, mul, -b1));
  m0 = mx0;
  m1 = mx1;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const float e0 = FastExp2(fmaf(s[4 * n], mul, -b0)), e1 = FastExp2(fmaf(s[4 * n + 1], mul, -b0));
    const float e2 = FastExp2(fmaf(s[4 * n + 2], mul, -b1)), e3 = FastExp2(fmaf(s[4 * n + 3], mul, -b1));
    t0[n] = e0 + e1;
    t1[n] = e2 + e3;
    emit(n, e0, e1, e2, e3);
  }
  FoldTree<NT / 2>(t0, t1, [](float a, float b) { return a + b; });
  l0 = l0 * al0 + t0[0];
  l1 = l1 * al1 + t1[0];
}

// Probabilities of n-tile n into the A fragments of P V (the m16n8k16 A fragment, one per 16-key k-step), 16 bits.
template <typename T, int NT>
__device__ __forceinline__ void PackProbabilities(uint32_t (&pf)[NT / 2][4], int n, float p0, float p1, float p2, float p3) {
  pf[n / 2][(n % 2) * 2 + 0] = MmaOp<T>::Pack(p0, p1);
  pf[n / 2][(n % 2) * 2 + 1] = MmaOp<T>::Pack(p2, p3);
}

// Split-K: this split's share of the block's key tiles [kstart, kstart + ntiles * BN), equal shares in order; the
// last splits may get none (ntiles = 0).
__device__ __forceinline__ void SplitKeyTiles(int split, int splits, int BN, int& kstart, int& ntiles) {
  const int per = (ntiles + splits - 1) / splits;
  const int first = min(ntiles, split * per);
  ntiles = min(ntiles, first + per) - first;
  kstart += first * BN;
}

// Split-K: row r of the block's query tile (sequence b, first token s0, head h) publishes this split's unnormalised
// partial — O of the thread's column pairs (pair(dt): columns 8 dt + 2 t4 and the next) and, from lane t4 = 0, the
// row's (max in base-2 units, sum) — for MergePrefillSplitsIfLast; padding rows (r >= nq) publish nothing.
template <int D, typename Pair>
__device__ __forceinline__ void PublishPartialRow(const PrefillParams& p, int S, int Hq, int splits, int b, int s0, int h,
                                                  int split, int r, int nq, int t4, float m, float l, float mul, Pair&& pair) {
  if (r >= nq) return;
  const size_t row = ((static_cast<size_t>(b) * S + s0 + r) * Hq + h) * splits + split;
  float* po = p.part_o + row * D + 2 * t4;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) *reinterpret_cast<float2*>(po + dt * 8) = pair(dt);
  if (t4 == 0) p.part_ml[row] = make_float2(m == -INFINITY ? m : m * mul, l);
}

// Split-K merge in the same launch (as the decode kernel's MergeSplitsIfLast): every block of a (sequence, query
// tile, head) group publishes its partials and counts itself done on the group's counter (ArriveLast); the block
// that completes the group merges out = sum_i 2^(m_i - M) O_i / sum_i 2^(m_i - M) l_i for each real row (padding
// rows: zeros), reading the partials with ld.global.cg (L2). Run by the `threads` threads of the block that wrote
// partials (tid: this one's index among them), which sync() brings together (the whole block, or the computing
// warpgroups where the loading one has left); flag: an int of shared memory that nothing else uses by then.
template <typename T, int D, typename Sync>
__device__ __forceinline__ void MergePrefillSplitsIfLast(const PrefillParams& p, int b, int tile, int tiles, int h,
                                                         int s0, int nq, int rows_here, int tid, int threads, int* flag,
                                                         Sync&& sync) {
  int* counter = p.counters + (static_cast<size_t>(b) * tiles + tile) * p.num_heads + h;
  if (!ArriveLast(counter, p.splits, flag, tid == 0, sync)) return;
  const int S = p.seq, Hq = p.num_heads, splits = p.splits;
  constexpr int D4 = D / 4;
  T* out = static_cast<T*>(p.output);
  for (int idx = tid; idx < rows_here * D4; idx += threads) {
    const int r = idx / D4, d4 = idx % D4;
    const size_t row = (static_cast<size_t>(b) * S + s0 + r) * Hq + h;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    float sum = 0.f;
    if (r < nq) {
      float mx = -INFINITY;
      for (int i = 0; i < splits; ++i) mx = fmaxf(mx, __ldcg(&p.part_ml[row * splits + i]).x);
      for (int i = 0; i < splits && mx != -INFINITY; ++i) {
        const float2 ml = __ldcg(&p.part_ml[row * splits + i]);
        if (ml.x == -INFINITY) continue;  // a split that saw no key of this row (its O is zeros)
        const float w = exp2f(ml.x - mx);
        const float4 v = __ldcg(reinterpret_cast<const float4*>(p.part_o + (row * splits + i) * D) + d4);
        sum += w * ml.y;
        a.x += w * v.x;
        a.y += w * v.y;
        a.z += w * v.z;
        a.w += w * v.w;
      }
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    T* o = out + row * D + d4 * 4;
    o[0] = Traits<T>::From(a.x * inv);
    o[1] = Traits<T>::From(a.y * inv);
    o[2] = Traits<T>::From(a.z * inv);
    o[3] = Traits<T>::From(a.w * inv);
  }
}

}  // namespace mixattn::cuda::dev
