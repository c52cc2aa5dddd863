// Device helpers shared by the CUDA kernels: storage types, 16-byte vector loads, conversions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "mixattention/attention_params.h"

namespace mixattn::cuda::dev {

// Paged pools [num_blocks, Hkv, block_size, D] (BlockTable, device memory): the pool block that holds position pos of
// sequence b, and the row (in units of D elements) of (that block, KV head kvh, pos). The position and the table's
// entry are clamped into the table and the pool: device data is never trusted for addressing (a broken table reads or
// writes wrong rows of the pool, never outside it; mixattention.check_lengths=1 validates tables on the host).
__device__ __forceinline__ int PagedBlock(const BlockTable& t, int b, int pos) {
  const int logical = min(max(pos, 0) / t.block_size, t.max_blocks - 1);
  return min(max(__ldg(t.table + static_cast<size_t>(b) * t.max_blocks + logical), 0), t.num_blocks - 1);
}
__device__ __forceinline__ size_t PagedRowIn(const BlockTable& t, int block, int kvh, int Hkv, int pos) {
  return (static_cast<size_t>(block) * Hkv + kvh) * t.block_size + max(pos, 0) % t.block_size;
}
__device__ __forceinline__ size_t PagedRow(const BlockTable& t, int b, int kvh, int Hkv, int pos) {
  return PagedRowIn(t, PagedBlock(t, b, pos), kvh, Hkv, pos);
}
// Row of position pos of (b, kvh) in a cache: contiguous [B, Hkv, C, D] (slot pos mod C) or a paged pool.
__device__ __forceinline__ size_t CacheRow(const BlockTable& t, int b, int kvh, int Hkv, int C, int pos) {
  if (t.table != nullptr) return PagedRow(t, b, kvh, Hkv, pos);
  return (static_cast<size_t>(b) * Hkv + kvh) * C + static_cast<size_t>(pos % C);
}

// kVec elements of T in one 16-byte vector.
template <typename T>
struct Traits;

template <>
struct Traits<float> {
  static constexpr int kVec = 4;
  __device__ static __forceinline__ void ToFloat(const uint4& u, float* f) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
  }
  __device__ static __forceinline__ float One(float x) { return x; }
  __device__ static __forceinline__ float From(float x) { return x; }
};

template <>
struct Traits<__half> {
  static constexpr int kVec = 8;
  __device__ static __forceinline__ void ToFloat(const uint4& u, float* f) {
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __half22float2(h[i]);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
  __device__ static __forceinline__ float One(__half x) { return __half2float(x); }
  __device__ static __forceinline__ float2 Two(uint32_t u) { return __half22float2(*reinterpret_cast<const __half2*>(&u)); }
  __device__ static __forceinline__ __half From(float x) { return __float2half_rn(x); }
};

template <>
struct Traits<__nv_bfloat16> {
  static constexpr int kVec = 8;
  __device__ static __forceinline__ void ToFloat(const uint4& u, float* f) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __bfloat1622float2(h[i]);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
  __device__ static __forceinline__ float One(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __forceinline__ float2 Two(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
  }
  __device__ static __forceinline__ __nv_bfloat16 From(float x) { return __float2bfloat16_rn(x); }
};

// Quantized cache codes (docs/ops.md, "Quantized caches"): TC = int8_t or __nv_fp8_e4m3, one byte each.
// Decode: the code's value (exact in fp32, fp16 and bf16); the scale is applied by the caller. Encode: x is already
// value * (1 / scale); int8 rounds half to even and saturates to [-128, 127]; fp8 E4M3FN rounds to nearest even and
// saturates to +-448 (__NV_SATFINITE); NaN gives the largest positive code (127 / 448).
template <typename TC>
struct Codes;
template <>
struct Codes<int8_t> {
  __device__ static __forceinline__ float Decode(uint32_t byte) { return static_cast<float>(static_cast<int8_t>(byte & 0xffu)); }
  __device__ static __forceinline__ uint32_t Encode(float x) {
    if (x != x) return 127u;
    const float r = fminf(fmaxf(rintf(x), -128.f), 127.f);
    return static_cast<uint32_t>(static_cast<int>(r)) & 0xffu;
  }
};
template <>
struct Codes<__nv_fp8_e4m3> {
  __device__ static __forceinline__ float Decode(uint32_t byte) {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(byte & 0xffu), __NV_E4M3)));
  }
  __device__ static __forceinline__ uint32_t Encode(float x) {
    if (x != x) return 0x7eu;
    return static_cast<uint32_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
  }
};

// Scale of (KV head h, channel d) in a k_scale / v_scale input (ScaleMode: 0 [1], 1 [1, Hkv, 1, 1], 2 [1, Hkv, 1, D]).
__device__ __forceinline__ float ScaleAt(const float* s, int mode, int h, int d, int D) {
  return s[mode == 0 ? 0 : mode == 1 ? h : h * D + d];
}
// The code of x under `scale`: x * (1 / scale) with both roundings explicit (no fused or approximate division), as the
// CPU op computes it.
template <typename TC>
__device__ __forceinline__ uint32_t QuantizeCode(float x, float scale) {
  return Codes<TC>::Encode(__fmul_rn(x, __frcp_rn(scale)));
}

// Two floats as one 32-bit pair of T (low half first).
template <typename T>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  if constexpr (sizeof(T) == 2) {
    const T a = Traits<T>::From(lo), b = Traits<T>::From(hi);
    return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&a)) |
           (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&b)) << 16);
  } else {
    return 0u;
  }
}

// 16 codes (one 16-byte vector) -> their 16 values as T, exactly (no scale): out[0..7] = two 16-byte vectors.
template <typename T, typename TC>
__device__ __forceinline__ void CodesToValues(const uint4& in, uint32_t (&out)[8]) {
  const uint32_t w[4] = {in.x, in.y, in.z, in.w};
  if constexpr (std::is_same_v<T, __half> && std::is_same_v<TC, __nv_fp8_e4m3>) {
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const __half2_raw h =
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>((w[k] >> (16 * j)) & 0xffffu), __NV_E4M3);
        out[2 * k + j] = static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
      }
  } else if constexpr (std::is_same_v<T, __half> && std::is_same_v<TC, int8_t>) {
    // Biased bytes (x + 128) under an fp16 exponent of 1024: the half 1024 + x + 128, minus 1152 (exact).
    const __half2 bias = __half2half2(__ushort_as_half(0x6480));  // 1152
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t u = w[k] ^ 0x80808080u;
      uint32_t lo = __byte_perm(u, 0x64646464u, 0x4140), hi = __byte_perm(u, 0x64646464u, 0x4342);
      __half2 a = __hsub2(*reinterpret_cast<__half2*>(&lo), bias), b = __hsub2(*reinterpret_cast<__half2*>(&hi), bias);
      out[2 * k] = *reinterpret_cast<uint32_t*>(&a);
      out[2 * k + 1] = *reinterpret_cast<uint32_t*>(&b);
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        out[2 * k + j] = PackPair<T>(Codes<TC>::Decode(w[k] >> (16 * j)), Codes<TC>::Decode(w[k] >> (16 * j + 8)));
  }
}

// Codes I and J (bytes) of a 32-bit register as a pair of T (code I low), exactly: the conversion of the quantized
// tensor-core decode's fragments. fp16: fp8 pairs by one cvt (sm_89+); int8 under an fp16 exponent of 1024 (biased byte,
// minus 1152). bf16 through fp32.
template <typename T, typename TC, int I, int J>
__device__ __forceinline__ uint32_t CodePair(uint32_t reg) {
  if constexpr (std::is_same_v<T, __half> && std::is_same_v<TC, __nv_fp8_e4m3>) {
    const uint32_t pair = I == 0 && J == 1 ? reg : I == 2 && J == 3 ? reg >> 16 : __byte_perm(reg, 0u, I | (J << 4));
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xffffu), __NV_E4M3);
    return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  } else if constexpr (std::is_same_v<T, __half> && std::is_same_v<TC, int8_t>) {
    uint32_t biased = __byte_perm(reg ^ 0x80808080u, 0x64646464u, I | (4 << 4) | (J << 8) | (4 << 12));
    const __half2 v = __hsub2(*reinterpret_cast<__half2*>(&biased), __half2half2(__ushort_as_half(0x6480)));  // 1152
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    return PackPair<T>(Codes<TC>::Decode(reg >> (8 * I)), Codes<TC>::Decode(reg >> (8 * J)));
  }
}

// Byte offset of 16-byte chunk c of row r in a shared-memory tile of D-byte rows (codes), XOR-swizzled so that the 8
// rows an ldmatrix reads at one logical chunk fall in 8 different bank groups: rows of >= 128 bytes c ^ (r & 7); 64-byte
// rows (two a 128-byte line) c ^ ((r >> 1) & 3).
template <int D>
__device__ __forceinline__ uint32_t SwizzledBytes(int r, int c) {
  const int f = D >= 128 ? (r & 7) : ((r >> 1) & 3);
  return static_cast<uint32_t>(r * D + ((c ^ f) << 4));
}

// 16-byte read-only load (K/V rows are read once per call: keep them out of L1).
__device__ __forceinline__ uint4 Load16(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ float Softcap(float s, float softcap) {
  return softcap > 0.f ? softcap * tanhf(s / softcap) : s;
}

// Clamped lengths of sequence b (the kernels never trust device data for addressing).
__device__ __forceinline__ int PastLength(const int32_t* past, int b) {
  const int p = past[b];
  return p < 0 ? 0 : p;
}
__device__ __forceinline__ int NewLength(const int32_t* newl, int b, int S) {
  if (newl == nullptr) return S;
  const int n = newl[b];
  return n < 0 ? 0 : (n > S ? S : n);
}

// Split-K completion in one launch (both tensor-core kernels): every block of a group calls this after writing its
// partials; it returns true in the one block that completes the group (the last of `splits` to arrive), which then
// merges the group's partials, and resets the group's counter to zero for the next launch or graph replay. The fences
// order each thread's partial writes before the count (release) and the count before the merge's reads (acquire;
// read them with ld.global.cg, never through a stale L1). `flag` is a word of shared memory the block may overwrite
// (no static __shared__ here: one moved the kernels' dynamic buffer off its 128-byte alignment). The threads that wrote
// partials take part: the whole block, or (the second form) those that sync() brings together, `leader` one of them.
template <typename Sync>
__device__ __forceinline__ bool ArriveLast(int* counter, int splits, int* flag, bool leader, Sync&& sync) {
  __threadfence();
  sync();  // every thread's partials are written and fenced
  if (leader) {
    *flag = atomicAdd(counter, 1) == splits - 1;
    if (*flag) *counter = 0;
  }
  sync();
  const bool last = *flag != 0;
  if (last) __threadfence();
  return last;
}
__device__ __forceinline__ bool ArriveLast(int* counter, int splits, int* flag) {
  return ArriveLast(counter, splits, flag, threadIdx.x == 0, [] { __syncthreads(); });
}

// Where one decode block sits and what it reads (both decode kernels). Grid: x = token z * splits + split, y = KV head
// * chunks + head chunk. The common decode case (seq == 1, one head chunk) skips those two divisions. (Moving the
// split to grid z, to skip the division by the split count too, changed the order blocks are dispatched in and made
// a short global call — B = 1, T = 2K, 17 splits, no rotary — 21% slower on an H200, while others gained 1-3%.) Token z = (sequence b, step s) queries at position pos = P + s and sees keys [lo, hi); this
// split takes [kb, ke): per = ceil((hi - lo) / splits) keys (at least min_per_split), rounded up to a multiple of
// `unit` (the keys a block consumes per step). cache_k / cache_v point at the rows of (b, KV head).
template <typename T, int D>
struct DecodeBlock {
  int z, split, kvh, chunk, b, s, P, pos, g_count, h0, lo, hi, per, kb, ke;
  bool active;
  const T* cache_k;
  const T* cache_v;

  template <typename Params>
  __device__ __forceinline__ DecodeBlock(const Params& p, int head_chunk, int unit) {
    z = blockIdx.x / p.splits;
    split = blockIdx.x % p.splits;
    kvh = p.chunks == 1 ? static_cast<int>(blockIdx.y) : static_cast<int>(blockIdx.y) / p.chunks;
    chunk = p.chunks == 1 ? 0 : static_cast<int>(blockIdx.y) % p.chunks;
    b = p.seq == 1 ? z : z / p.seq;
    s = p.seq == 1 ? 0 : z % p.seq;
    P = PastLength(p.past_lengths, b);
    active = s < NewLength(p.new_lengths, b, p.seq);
    g_count = min(head_chunk, p.group - chunk * head_chunk);
    h0 = kvh * p.group + chunk * head_chunk;
    const size_t rows = (static_cast<size_t>(b) * p.kv_num_heads + kvh) * p.capacity * D;
    cache_k = static_cast<const T*>(p.key_cache) + rows;
    cache_v = static_cast<const T*>(p.value_cache) + rows;
    pos = P + s;
    lo = active && p.window > 0 ? max(0, pos - p.window + 1) : 0;
    hi = active ? pos + 1 : 0;
    per = max((hi - lo + p.splits - 1) / p.splits, p.min_per_split);
    per = (per + unit - 1) / unit * unit;
    kb = min(hi, lo + split * per);
    ke = min(hi, kb + per);
  }
};

// Rotary (docs/ops.md, "Rotary"): for i < R/2 the pair (i, i + R/2), or (2i, 2i+1) when interleaved, is turned
// by cos / sin[pos, i]; dimensions >= R are unchanged. fp32, as the CPU op computes it (callers round to T).
struct RotaryPair {
  bool first;   // the pair's first element: x' = x cos - partner sin (else x' = x cos + partner sin)
  int i;        // angle index
  int partner;  // the other element of the pair
};
template <typename Rot>
__device__ __forceinline__ RotaryPair RotaryPairOf(int d, const Rot& r) {
  const int half = r.dim / 2;
  const bool first = r.interleaved ? (d & 1) == 0 : d < half;
  return {first, r.interleaved ? d / 2 : (first ? d : d - half),
          r.interleaved ? d ^ 1 : (first ? d + half : d - half)};
}
// x' from x, its partner and the angle's cos / sin. Explicit roundings (no fused multiply-add): bit-identical to the
// CPU op, so cached keys match bit for bit.
__device__ __forceinline__ float RotateValue(float x, float partner, float c, float s, bool first) {
  return first ? __fsub_rn(__fmul_rn(x, c), __fmul_rn(partner, s)) : __fadd_rn(__fmul_rn(x, c), __fmul_rn(partner, s));
}
// Row of the cos / sin caches for position pos, clamped to them (device lengths are never trusted for addressing).
template <typename Rot>
__device__ __forceinline__ size_t RotaryRow(int pos, const Rot& r) {
  return static_cast<size_t>(min(max(pos, 0), r.max_positions - 1)) * (r.dim / 2);
}
// Element d of a head row x (D elements, global memory) after rotary at position pos.
template <typename T, typename Rot>
__device__ __forceinline__ float RotatedElement(const T* x, int d, int pos, const Rot& r) {
  const float v = Traits<T>::One(x[d]);
  if (d >= r.dim) return v;
  const RotaryPair pr = RotaryPairOf(d, r);
  const size_t row = RotaryRow(pos, r) + pr.i;
  return RotateValue(v, Traits<T>::One(x[pr.partner]), Traits<T>::One(static_cast<const T*>(r.cos)[row]),
                     Traits<T>::One(static_cast<const T*>(r.sin)[row]), pr.first);
}

// N pairs of elements (d[k], d[k] + 1), d[k] even, of a 16-bit head row after rotary at position pos; same values as
// RotatedElement. Every load is issued before any arithmetic: with a branch per element (RotatedElement) the compiler
// issues them one L2 round trip at a time, which cost 2-4 us per decode call (kbench). Paired 4-byte loads where the
// layout allows (interleaved pairs, or R/2 even: both elements on one side, partners and angles adjacent).
template <typename T, int N, typename Rot>
__device__ __forceinline__ void RotatePairs(const T* x, const int (&d)[N], int pos, const Rot& r, float2 (&out)[N]) {
  const int half = r.dim / 2;
  const T* cs = static_cast<const T*>(r.cos) + RotaryRow(pos, r);
  const T* sn = static_cast<const T*>(r.sin) + RotaryRow(pos, r);
  float2 v[N], pv[N], c[N], s[N];
  if (r.interleaved) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const int i = (d[k] < r.dim ? d[k] : 0) / 2;
      v[k] = Traits<T>::Two(*reinterpret_cast<const uint32_t*>(x + d[k]));
      pv[k] = make_float2(v[k].y, v[k].x);
      c[k].x = c[k].y = Traits<T>::One(cs[i]);
      s[k].x = s[k].y = Traits<T>::One(sn[i]);
    }
  } else if (half % 2 == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const int dk = d[k] < r.dim ? d[k] : 0;
      const bool first = dk < half;
      const int i = first ? dk : dk - half;
      v[k] = Traits<T>::Two(*reinterpret_cast<const uint32_t*>(x + d[k]));
      pv[k] = Traits<T>::Two(*reinterpret_cast<const uint32_t*>(x + (first ? dk + half : dk - half)));
      c[k] = Traits<T>::Two(*reinterpret_cast<const uint32_t*>(cs + i));
      s[k] = Traits<T>::Two(*reinterpret_cast<const uint32_t*>(sn + i));
    }
  } else {  // an odd R/2: a pair may straddle the halves (rare): element by element
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = make_float2(RotatedElement(x, d[k], pos, r), RotatedElement(x, d[k] + 1, pos, r));
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) {
    // first element of the rotation pair: interleaved -> the even one (.x); half-split -> both, when d < R/2.
    const bool fx = r.interleaved ? true : d[k] < half, fy = r.interleaved ? false : d[k] < half;
    out[k] = d[k] < r.dim ? make_float2(RotateValue(v[k].x, pv[k].x, c[k].x, s[k].x, fx),
                                        RotateValue(v[k].y, pv[k].y, c[k].y, s[k].y, fy))
                          : v[k];
  }
}

// 16 bytes (vector v) of a new key row, rotated, stored at dst: the 16-bit types through RotatePairs; fp32 (whose
// kernels get pre-rotated keys and never call this with rotary on) element by element.
template <typename T, typename Rot>
__device__ __forceinline__ void RotateNewKey(const T* row, int v, int pos, const Rot& r, uint4* dst) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  uint4 packed;
  T* e = reinterpret_cast<T*>(&packed);
  if constexpr (sizeof(T) == 2) {
    int d[kVec / 2];
    float2 o[kVec / 2];
#pragma unroll
    for (int k = 0; k < kVec / 2; ++k) d[k] = v * kVec + 2 * k;
    RotatePairs(row, d, pos, r, o);
#pragma unroll
    for (int k = 0; k < kVec / 2; ++k) {
      e[2 * k] = Traits<T>::From(o[k].x);
      e[2 * k + 1] = Traits<T>::From(o[k].y);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k) e[k] = Traits<T>::From(RotatedElement(row, v * kVec + k, pos, r));
  }
  *dst = packed;
}

// The fused cache write of an S == 1 owner step (both decode kernels): token z's new K and V rows
// (D elements each, NV 16-byte vectors) go to cache row `row` (CacheRow: slot (P + s) mod C of (sequence b, KV head
// kvh), or position P + s of a paged pool), spread over the block's threads. No block of the launch reads that row:
// it holds position p - C, outside every window when C >= W, and is empty for a global cache (p < C).
// With rot.dim > 0 the key row is rotated at position pos on the way (the cache holds rotated keys).
template <typename T, int D, int kThreads, typename Rot>
__device__ __forceinline__ void WriteNewRow(const T* chunk_k, const T* chunk_v, void* cache_k, void* cache_v,
                                            int z, int kvh, int Hkv, size_t row, int pos, const Rot& rot) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int NV = D / kVec;
  const size_t src = (static_cast<size_t>(z) * Hkv + kvh) * D;
  const size_t dst = row * D;
  for (int i = threadIdx.x; i < 2 * NV; i += kThreads) {
    const int v = i % NV;
    if (i >= NV) {
      reinterpret_cast<uint4*>(static_cast<T*>(cache_v) + dst)[v] = reinterpret_cast<const uint4*>(chunk_v + src)[v];
    } else if (rot.dim == 0) {
      reinterpret_cast<uint4*>(static_cast<T*>(cache_k) + dst)[v] = reinterpret_cast<const uint4*>(chunk_k + src)[v];
    } else {
      RotateNewKey(chunk_k + src, v, pos, rot, reinterpret_cast<uint4*>(static_cast<T*>(cache_k) + dst) + v);
    }
  }
}

// WriteNewRow for a quantized cache (TC = int8_t / __nv_fp8_e4m3): each element of the new K / V rows (the key rotated
// at pos first and rounded to T, as the CPU op rotates it) quantized with its scale and stored as one byte.
template <typename T, typename TC, int D, int kThreads, typename Rot>
__device__ __forceinline__ void WriteNewRowQuantized(const T* chunk_k, const T* chunk_v, void* cache_k, void* cache_v,
                                                     int z, int kvh, int Hkv, size_t row, int pos, const Rot& rot,
                                                     const float* k_scale, int k_mode, const float* v_scale, int v_mode) {
  const size_t src = (static_cast<size_t>(z) * Hkv + kvh) * D;
  const size_t dst = row * D;
  // Every load of the thread's elements first (one round trip), then the codes and the stores.
  constexpr int kPer = (2 * D + kThreads - 1) / kThreads;
  float x[kPer], sc[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = min(static_cast<int>(threadIdx.x) + k * kThreads, 2 * D - 1);
    const bool is_v = i >= D;
    const int d = is_v ? i - D : i;
    if (is_v) x[k] = Traits<T>::One(chunk_v[src + d]);
    else if (rot.dim > 0) x[k] = Traits<T>::One(Traits<T>::From(RotatedElement(chunk_k + src, d, pos, rot)));
    else x[k] = Traits<T>::One(chunk_k[src + d]);
    sc[k] = is_v ? ScaleAt(v_scale, v_mode, kvh, d, D) : ScaleAt(k_scale, k_mode, kvh, d, D);
  }
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * kThreads;
    if (i >= 2 * D) break;
    const bool is_v = i >= D;
    static_cast<uint8_t*>(is_v ? cache_v : cache_k)[dst + (is_v ? i - D : i)] = static_cast<uint8_t>(QuantizeCode<TC>(x[k], sc[k]));
  }
}

}  // namespace mixattn::cuda::dev
