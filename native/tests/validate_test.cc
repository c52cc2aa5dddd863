// ValidateLengths: the per-sequence cache rules of docs/ops.md and their messages.
#include <gtest/gtest.h>

#include "mixattention/attention_params.h"

namespace mixattn {
namespace {

AttentionShape Shape(int window, int capacity, int seq) {
  AttentionShape sh;
  sh.batch = 2;
  sh.seq = seq;
  sh.num_heads = 4;
  sh.kv_num_heads = 2;
  sh.head_dim = 8;
  sh.window = window;
  sh.capacity = capacity;
  sh.scale = 1.f;
  return sh;
}

TEST(ValidateLengths, AcceptsValidSteps) {
  const int32_t past[2] = {0, 1000};
  EXPECT_EQ(ValidateLengths(OpKind::kOwner, Shape(16, 16, 40), past, nullptr), "");
  const int32_t newl[2] = {3, 0};
  EXPECT_EQ(ValidateLengths(OpKind::kReader, Shape(16, 18, 3), past, newl), "");
}

TEST(ValidateLengths, NegativePastLength) {
  const int32_t past[2] = {0, -1};
  const std::string e = ValidateLengths(OpKind::kOwner, Shape(16, 16, 1), past, nullptr);
  EXPECT_NE(e.find("'past_lengths'[1] = -1"), std::string::npos) << e;
  EXPECT_NE(e.find("WindowedAttention"), std::string::npos) << e;
}

TEST(ValidateLengths, NewLengthsOutOfRange) {
  const int32_t past[2] = {0, 0};
  const int32_t newl[2] = {5, 1};
  const std::string e = ValidateLengths(OpKind::kOwner, Shape(16, 16, 4), past, newl);
  EXPECT_NE(e.find("'new_lengths'[0] = 5"), std::string::npos) << e;
  const int32_t neg[2] = {0, -2};
  EXPECT_NE(ValidateLengths(OpKind::kReader, Shape(16, 16, 4), past, neg).find("'new_lengths'[1]"), std::string::npos);
}

TEST(ValidateLengths, GlobalCacheOverflow) {
  const int32_t past[2] = {10, 30};
  const std::string e = ValidateLengths(OpKind::kOwner, Shape(0, 32, 4), past, nullptr);
  EXPECT_NE(e.find("global cache 'past_key' capacity C=32"), std::string::npos) << e;
  EXPECT_NE(e.find("past_lengths[1]=30"), std::string::npos) << e;
  const int32_t fits[2] = {10, 28};
  EXPECT_EQ(ValidateLengths(OpKind::kOwner, Shape(0, 32, 4), fits, nullptr), "");
}

TEST(ValidateLengths, ReaderNeedsWindowPlusChunk) {
  const int32_t past[2] = {40, 40};
  // W = 16, S = 4: needs C >= 19.
  EXPECT_EQ(ValidateLengths(OpKind::kReader, Shape(16, 19, 4), past, nullptr), "");
  const std::string e = ValidateLengths(OpKind::kReader, Shape(16, 18, 4), past, nullptr);
  EXPECT_NE(e.find("SharedKvAttention: 'key_cache' capacity C=18"), std::string::npos) << e;
  EXPECT_NE(e.find("C >= W + new tokens - 1"), std::string::npos) << e;
  // Early in the sequence everything still fits.
  const int32_t early[2] = {2, 3};
  EXPECT_EQ(ValidateLengths(OpKind::kReader, Shape(16, 16, 4), early, nullptr), "");
  // Global reader over a too-small cache.
  EXPECT_NE(ValidateLengths(OpKind::kReader, Shape(0, 43, 4), past, nullptr).find("global reader"), std::string::npos);
}

}  // namespace
}  // namespace mixattn
