// Paged global caches (docs/ops.md, "Paged caches"): the same calls on a contiguous [B, Hkv, C, D] cache and on a block
// pool [num_blocks, Hkv, bs, D] read through a scattered, non-contiguous block table give the same outputs and the same
// cached rows: owner prefill chunks and decode steps (padding rows, uneven lengths), readers (global and sliding) of
// the paged owner, in place and copying, fp32 and int8 / fp8 caches, both instruction sets. Then ValidateBlockTable's
// rules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "isa_paths.h"
#include "reference.h"

namespace mixattn::test {
namespace {

template <typename TC>
TC FromFloatCache(float x) {
  if constexpr (std::is_same_v<TC, float>) return x;
  else if constexpr (std::is_same_v<TC, int8_t>) return static_cast<int8_t>(std::lround(std::max(-100.f, std::min(100.f, x * 40.f))));
  else return Float8E4M3{static_cast<uint8_t>(static_cast<int>(std::fabs(x) * 30.f) % 0x7e)};
}

// One scenario: B sequences, a global owner stepped through `steps` (tokens per step for each sequence, S = the
// largest), readers after each step, contiguous vs paged.
struct Scenario {
  int batch = 3, kv_heads = 2, heads = 4, dim = 16, block_size = 5, max_blocks = 8;
  std::vector<std::vector<int>> steps;  // steps[i][b] = new tokens of sequence b in step i
  bool in_place = true;
  int reader_window = 3;  // the second reader is sliding over the paged global cache
  int key_splits = 0;     // > 0: force split-K (both layouts), so partial runs of blocks are merged too
};

template <typename TC>
void RunScenario(const Scenario& sc, Isa isa, uint32_t seed) {
  std::mt19937 rng(seed);
  const int B = sc.batch, Hkv = sc.kv_heads, Hq = sc.heads, D = sc.dim, bs = sc.block_size, MB = sc.max_blocks;
  const int C = MB * bs;
  const int num_blocks = B * MB + 7;  // spare blocks, never mapped
  // Scattered table: a random permutation of the pool, so neighbouring logical blocks are far apart and sequences
  // interleave; unused trailing entries are -1.
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(static_cast<size_t>(B) * MB, -1);
  int total = 0;
  std::vector<int> final_len(B, 0);
  for (const auto& st : sc.steps)
    for (int b = 0; b < B; ++b) final_len[b] += st[b];
  int next = 0;
  for (int b = 0; b < B; ++b) {
    const int used = (final_len[b] + bs - 1) / bs;
    ASSERT_LE(used, MB);
    for (int i = 0; i < used; ++i) table[static_cast<size_t>(b) * MB + i] = perm[next++];
    total += used;
  }
  ASSERT_GE(num_blocks, total);

  // Both caches start from the same arbitrary bytes (the contiguous one at the table's positions), so stale rows that
  // leaked into a result would differ.
  const size_t row = static_cast<size_t>(D);
  std::vector<TC> ck(static_cast<size_t>(B) * Hkv * C * D), cv(ck.size());
  std::vector<TC> pk(static_cast<size_t>(num_blocks) * Hkv * bs * D), pv(pk.size());
  for (auto& x : pk) x = FromFloatCache<TC>(std::normal_distribution<float>(0.f, 1.f)(rng));
  for (auto& x : pv) x = FromFloatCache<TC>(std::normal_distribution<float>(0.f, 1.f)(rng));
  const auto paged_off = [&](int b, int h, int64_t p) {
    const int64_t blk = table[static_cast<size_t>(b) * MB + p / bs];
    return ((blk * Hkv + h) * bs + p % bs) * static_cast<int64_t>(D);
  };
  const auto contig_off = [&](int b, int h, int64_t p) { return ((static_cast<int64_t>(b) * Hkv + h) * C + p) * D; };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h)
      for (int64_t p = 0; p < (final_len[b] + bs - 1) / bs * bs; ++p)
        for (size_t d = 0; d < row; ++d) {
          ck[contig_off(b, h, p) + d] = pk[paged_off(b, h, p) + d];
          cv[contig_off(b, h, p) + d] = pv[paged_off(b, h, p) + d];
        }

  std::vector<float> ks(static_cast<size_t>(Hkv) * D), vs(ks.size());
  for (auto& x : ks) x = 0.02f + 0.05f * std::uniform_real_distribution<float>(0.f, 1.f)(rng);
  for (auto& x : vs) x = 0.02f + 0.05f * std::uniform_real_distribution<float>(0.f, 1.f)(rng);
  KvQuant quant;
  quant.type = CacheTypeOf<TC>::value;
  quant.k = KvScale{ks.data(), ScaleGranularity::kPerChannel};
  quant.v = KvScale{vs.data(), ScaleGranularity::kPerChannel};
  BlockTable paged{table.data(), MB, bs, num_blocks};

  ThreadExecutor ex(3);
  std::vector<int32_t> past(B, 0);
  for (size_t step = 0; step < sc.steps.size(); ++step) {
    const std::vector<int32_t> newl(sc.steps[step].begin(), sc.steps[step].end());
    const int S = *std::max_element(newl.begin(), newl.end());
    AttentionShape sh;
    sh.batch = B, sh.seq = S, sh.num_heads = Hq, sh.kv_num_heads = Hkv, sh.head_dim = D, sh.capacity = C;
    sh.window = 0, sh.scale = 1.0f / std::sqrt(static_cast<float>(D));
    const auto q = RandomVector(rng, static_cast<size_t>(B) * S * Hq * D);
    const auto k = RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D);
    const auto v = RandomVector(rng, static_cast<size_t>(B) * S * Hkv * D);
    std::vector<float> out_c(q.size(), -1.f), out_p(q.size(), -2.f);

    AttentionShape psh = sh;  // the op's shape for a paged call: capacity = what a table row maps
    ASSERT_EQ(ValidateBlockTable(OpKind::kOwner, psh, paged, past.data(), newl.data()), "") << "step " << step;

    // Owner: attend, then append.
    AttendArgs<float, TC> ac{sh, q.data(), k.data(), v.data(), ck.data(), cv.data(), past.data(), newl.data(),
                             out_c.data(), quant, 0, {}};
    ac.key_splits = sc.key_splits;
    AttendArgs<float, TC> ap = ac;
    ap.shape = psh, ap.key_cache = pk.data(), ap.value_cache = pv.data(), ap.output = out_p.data(), ap.paged = paged;
    RunAttend(isa, ac, ex);
    RunAttend(isa, ap, ex);
    for (size_t i = 0; i < q.size(); ++i) ASSERT_NEAR(out_p[i], out_c[i], 2e-6f) << "owner step " << step << " i " << i;

    std::vector<TC> pk2, pv2;
    if (!sc.in_place) pk2.assign(pk.size(), TC{}), pv2.assign(pv.size(), TC{});
    CacheWriteArgs<float, TC> wc{sh, k.data(), v.data(), ck.data(), cv.data(), ck.data(), cv.data(), past.data(),
                                 newl.data(), quant, {}};
    CacheWriteArgs<float, TC> wp{psh, k.data(), v.data(), pk.data(), pv.data(),
                                 sc.in_place ? pk.data() : pk2.data(), sc.in_place ? pv.data() : pv2.data(),
                                 past.data(), newl.data(), quant, paged};
    RunWrite(isa, wc, ex);
    RunWrite(isa, wp, ex);
    if (!sc.in_place) {
      // Copying: every pool block (mapped or not) arrives in present, plus the appended rows.
      for (int blk = 0; blk < num_blocks; ++blk) {
        bool mapped = false;
        for (int32_t e : table) mapped = mapped || e == blk;
        if (mapped) continue;
        for (size_t i = 0; i < static_cast<size_t>(Hkv) * bs * D; ++i)
          ASSERT_TRUE(SameBytes(pk2[blk * Hkv * bs * D + i], pk[blk * Hkv * bs * D + i])) << "unmapped block " << blk;
      }
      pk.swap(pk2), pv.swap(pv2);
    }
    for (int b = 0; b < B; ++b) past[b] += newl[b];
    // Every position written so far holds the same bytes in both layouts.
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < Hkv; ++h)
        for (int64_t p = 0; p < past[b]; ++p)
          for (size_t d = 0; d < row; ++d) {
            ASSERT_TRUE(SameBytes(pk[paged_off(b, h, p) + d], ck[contig_off(b, h, p) + d]))
                << "key b " << b << " h " << h << " p " << p << " step " << step;
            ASSERT_TRUE(SameBytes(pv[paged_off(b, h, p) + d], cv[contig_off(b, h, p) + d]));
          }

    // Readers of the paged owner after its write (past_lengths = the owner's past, as in the graph): global and
    // sliding.
    for (int window : {0, sc.reader_window}) {
      std::vector<int32_t> rpast(B);
      for (int b = 0; b < B; ++b) rpast[b] = past[b] - newl[b];
      AttentionShape rsh = sh;
      rsh.window = window;
      ASSERT_EQ(ValidateBlockTable(OpKind::kReader, rsh, paged, rpast.data(), newl.data()), "");
      const auto rq = RandomVector(rng, static_cast<size_t>(B) * S * Hq * D);
      std::vector<float> rc(rq.size(), -1.f), rp(rq.size(), -2.f);
      AttendArgs<float, TC> rac{rsh, rq.data(), nullptr, nullptr, ck.data(), cv.data(), rpast.data(), newl.data(),
                                rc.data(), quant, 0, {}};
      rac.key_splits = sc.key_splits;
      AttendArgs<float, TC> rap = rac;
      rap.key_cache = pk.data(), rap.value_cache = pv.data(), rap.output = rp.data(), rap.paged = paged;
      RunAttend(isa, rac, ex);
      RunAttend(isa, rap, ex);
      for (size_t i = 0; i < rq.size(); ++i)
        ASSERT_NEAR(rp[i], rc[i], 2e-6f) << "reader window " << window << " step " << step << " i " << i;
    }
  }
}

class PagedCache : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (GetParam() == Isa::kV3 && !CpuHasV3()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
  }
};

// Prefill in uneven chunks (crossing block boundaries mid-chunk, one sequence idle in a step), then decode.
Scenario ChunksThenDecode() {
  Scenario sc;
  sc.steps = {{7, 3, 12}, {6, 0, 9}, {1, 1, 1}, {1, 1, 1}, {1, 1, 0}, {1, 1, 1}, {4, 2, 1}, {1, 1, 1}};
  return sc;
}

TEST_P(PagedCache, Fp32PrefillChunksDecodeAndReadersMatchContiguous) {
  for (uint32_t seed : {1u, 2u, 3u}) RunScenario<float>(ChunksThenDecode(), GetParam(), seed);
}

TEST_P(PagedCache, Fp32CopyingPresentMatchesContiguous) {
  Scenario sc = ChunksThenDecode();
  sc.in_place = false;
  RunScenario<float>(sc, GetParam(), 4);
}

TEST_P(PagedCache, BlocksLargerThanTheKernelsKeyBlock) {
  // 80-row blocks: one run per block spans two online-softmax blocks of 64 keys; D = 64 takes the AVX2 path.
  Scenario sc;
  sc.batch = 2, sc.kv_heads = 1, sc.heads = 8, sc.dim = 64, sc.block_size = 80, sc.max_blocks = 4;
  sc.steps = {{150, 97}, {1, 1}, {20, 1}, {1, 1}};
  RunScenario<float>(sc, GetParam(), 5);
}

TEST_P(PagedCache, KeySplitsOverScatteredBlocksMatchContiguous) {
  Scenario sc = ChunksThenDecode();
  sc.key_splits = 3;  // split ranges start and end inside blocks
  RunScenario<float>(sc, GetParam(), 8);
  RunScenario<int8_t>(sc, GetParam(), 9);
}

TEST_P(PagedCache, Int8PrefillChunksDecodeAndReadersMatchContiguous) {
  RunScenario<int8_t>(ChunksThenDecode(), GetParam(), 6);
}

TEST_P(PagedCache, Float8MatchesContiguousWhenCopying) {
  Scenario sc = ChunksThenDecode();
  sc.in_place = false;
  sc.block_size = 1;  // one row per block: the most scattered table
  sc.max_blocks = 40;
  RunScenario<Float8E4M3>(sc, GetParam(), 7);
}

INSTANTIATE_TEST_SUITE_P(Isas, PagedCache, ::testing::Values(Isa::kV3, Isa::kBase),
                         [](const auto& info) { return info.param == Isa::kV3 ? "v3" : "base"; });

// ---- ValidateBlockTable ----

struct TableCase {
  AttentionShape sh;
  std::vector<int32_t> table, past, newl;
  BlockTable t;
  TableCase(int batch, int max_blocks, int block_size, int num_blocks) {
    sh.batch = batch, sh.seq = 4, sh.num_heads = 2, sh.kv_num_heads = 1, sh.head_dim = 8;
    sh.capacity = max_blocks * block_size, sh.scale = 1.f;
    table.assign(static_cast<size_t>(batch) * max_blocks, -1);
    past.assign(batch, 0);
    newl.assign(batch, 0);
    t = BlockTable{table.data(), max_blocks, block_size, num_blocks};
  }
  std::string Check(OpKind kind) {
    t.table = table.data();
    return ValidateBlockTable(kind, sh, t, past.data(), newl.data());
  }
};

TEST(PagedCacheValidation, AcceptsScatteredTablesAndUnusedTrailingEntries) {
  TableCase c(2, 3, 4, 10);
  c.table = {9, 2, -1, 0, 7, 123};  // sequence 0 uses 2 blocks, sequence 1 uses 2; trailing entries are ignored
  c.past = {5, 4}, c.newl = {3, 4};
  EXPECT_EQ(c.Check(OpKind::kOwner), "");
  EXPECT_EQ(c.Check(OpKind::kReader), "");
}

TEST(PagedCacheValidation, NamesAnEntryOutsideThePool) {
  TableCase c(2, 3, 4, 10);
  c.table = {9, 2, -1, 0, 10, -1};
  c.past = {5, 4}, c.newl = {3, 1};
  const std::string e = c.Check(OpKind::kReader);
  EXPECT_NE(e.find("'block_table'[1, 1] = 10"), std::string::npos) << e;
  EXPECT_NE(e.find("num_blocks=10"), std::string::npos) << e;
  c.table[4] = -1;
  EXPECT_NE(c.Check(OpKind::kOwner).find("'block_table'[1, 1] = -1"), std::string::npos);
}

TEST(PagedCacheValidation, NeedsBlocksForPastPlusNew) {
  TableCase c(1, 2, 4, 10);
  c.table = {3, 4};
  c.past = {6}, c.newl = {3};
  const std::string e = c.Check(OpKind::kOwner);
  EXPECT_NE(e.find("sequence 0 needs 3 blocks"), std::string::npos) << e;
  EXPECT_NE(e.find("past_lengths[0]=6 + new tokens 3"), std::string::npos) << e;
}

TEST(PagedCacheValidation, RefusesASlidingOwner) {
  TableCase c(1, 2, 4, 10);
  c.table = {3, 4};
  c.sh.window = 4;
  EXPECT_NE(c.Check(OpKind::kOwner).find("only global (window 0) owner caches may be paged"), std::string::npos);
  EXPECT_EQ(c.Check(OpKind::kReader), "");  // a sliding reader of a paged global owner is fine
}

TEST(PagedCacheValidation, RefusesAppendingToABlockAnotherSequenceUses) {
  TableCase c(2, 2, 4, 10);
  // Sequence 1 shares sequence 0's first block (a shared prefix) and both append into it.
  c.table = {5, -1, 5, -1};
  c.past = {2, 2}, c.newl = {1, 1};
  std::string e = c.Check(OpKind::kOwner);
  EXPECT_NE(e.find("pool block 5 is written by sequence 0"), std::string::npos) << e;
  EXPECT_EQ(c.Check(OpKind::kReader), "");  // readers never write
  // Sharing a full prefix block while appending into private blocks is fine.
  c.table = {5, 6, 5, 7};
  c.past = {4, 4};
  EXPECT_EQ(c.Check(OpKind::kOwner), "");
  // Appending into a block that a later sequence only reads is not.
  c.table = {5, 6, 6, 7};
  c.past = {4, 4};
  e = c.Check(OpKind::kOwner);
  EXPECT_NE(e.find("pool block 6 is written by sequence 0"), std::string::npos) << e;
}

TEST(PagedCacheValidation, RefusesTheSameBlockTwiceInOneRow) {
  TableCase c(1, 3, 2, 10);
  c.table = {4, 1, 4};
  c.past = {3}, c.newl = {2};
  const std::string e = c.Check(OpKind::kReader);
  EXPECT_NE(e.find("maps two logical blocks (the second is 2) to pool block 4"), std::string::npos) << "[" << e << "]";
}

}  // namespace
}  // namespace mixattn::test
