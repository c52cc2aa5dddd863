// Names shared by the ORT glue, the tests and docs/ops.md. Change them only together with the spec.
#pragma once

namespace mixattn::spec {

inline constexpr const char* kDomain = "com.mixattention";
inline constexpr int kOpsetVersion = 1;

inline constexpr const char* kWindowedAttention = "WindowedAttention";
inline constexpr const char* kSharedKvAttention = "SharedKvAttention";

// Attributes (both ops).
inline constexpr const char* kAttrNumHeads = "num_heads";
inline constexpr const char* kAttrKvNumHeads = "kv_num_heads";
inline constexpr const char* kAttrWindow = "window";    // 0 = global
inline constexpr const char* kAttrScale = "scale";      // 0 -> 1/sqrt(D)
inline constexpr const char* kAttrSoftcap = "softcap";  // 0 = none
inline constexpr const char* kAttrRotaryInterleaved = "rotary_interleaved";  // with cos/sin caches: 1 = pairs (2i, 2i+1)

// Session config entry: "1" makes WindowedAttention fail instead of copying past -> present
// when the caller did not bind present_* to the past_* buffer (guards the in-place contract).
inline constexpr const char* kConfigRequireInPlace = "mixattention.require_inplace";

// Session config entry: "1" makes the CUDA kernels copy past_lengths / new_lengths to the host and
// check the cache rules (one device->host copy and stream synchronisation per call; tests and
// debugging). Without it the CUDA ops keep the lengths on the device and only clamp them.
inline constexpr const char* kConfigCheckLengths = "mixattention.check_lengths";

// Quantized caches (docs/ops.md, "Quantized caches"): past_key/past_value/present_* (owner) and
// key_cache/value_cache (reader) may be int8 or float8e4m3fn while query/key/value/output stay T; then the
// fp32 scale inputs k_scale / v_scale are required (forbidden with T caches). Scale shapes: [1] per tensor,
// [1, Hkv, 1, 1] per KV head, [1, Hkv, 1, D] per channel. A uint8 cache holds float8e4m3fn bytes (ORT's C# API cannot
// type fp8 tensors), never integers. Quantize = saturate(round_half_even(x * (1/scale))),
// dequantize = q * scale, as ORT GroupQueryAttention's quantized caches (k_scale/v_scale, PER_TENSOR/PER_CHANNEL).
inline constexpr float kInt8Min = -128.f, kInt8Max = 127.f;
inline constexpr float kFloat8E4M3Max = 448.f;

// Paged caches (docs/ops.md, "Paged caches"): with the optional int32 input block_table [B, max_blocks_per_seq] (owner
// index kBlockTable, reader the same name), a global (window 0) owner's past_key/past_value/present_* and its readers'
// key_cache/value_cache are a block pool [num_blocks, kv_num_heads, block_size, D] instead of [B, kv_num_heads, C, D]:
// position p of sequence b lives in pool block block_table[b, p / block_size], row p % block_size. Sliding owners
// refuse it. CPU only for now (the CUDA ops fail with a clear error).

// WindowedAttention inputs / outputs.
namespace owner {
inline constexpr int kQuery = 0, kKey = 1, kValue = 2, kPastKey = 3, kPastValue = 4, kPastLengths = 5,
                     kNewLengths = 6, kCosCache = 7, kSinCache = 8, kKScale = 9, kVScale = 10, kBlockTable = 11,
                     kInputCount = 12;
inline constexpr int kOutput = 0, kPresentKey = 1, kPresentValue = 2, kOutputCount = 3;
inline constexpr const char* kInputNames[kInputCount] = {"query",       "key",        "value",        "past_key",
                                                         "past_value",  "past_lengths", "new_lengths", "cos_cache",
                                                         "sin_cache",   "k_scale",    "v_scale",      "block_table"};
inline constexpr const char* kOutputNames[kOutputCount] = {"output", "present_key", "present_value"};
}  // namespace owner

// SharedKvAttention inputs / outputs.
namespace reader {
inline constexpr int kQuery = 0, kKeyCache = 1, kValueCache = 2, kPastLengths = 3, kNewLengths = 4, kCosCache = 5,
                     kSinCache = 6, kKScale = 7, kVScale = 8, kBlockTable = 9, kInputCount = 10;
inline constexpr int kOutput = 0, kOutputCount = 1;
inline constexpr const char* kInputNames[kInputCount] = {"query",     "key_cache", "value_cache", "past_lengths", "new_lengths",
                                                         "cos_cache", "sin_cache", "k_scale",     "v_scale",      "block_table"};
inline constexpr const char* kOutputNames[kOutputCount] = {"output"};
}  // namespace reader

}  // namespace mixattn::spec
