namespace MixAttention.Onnx.Runtime;

/// <summary>
/// The block allocator of a session's paged global caches (docs/runtime.md, "Paged caches"): a free list of pool blocks
/// and, per batch slot, the blocks its sequence holds in order (its row of the <c>block_table</c> input). Every paged
/// cache of the model is a pool of the same number of blocks, and one table row addresses all of them, so one allocator
/// serves every paged cache whatever its dtype. Blocks are taken when a step needs them (a prefill chunk by its length,
/// decode one block at a time) and returned when the sequence is removed.
/// </summary>
internal sealed class KvBlockPool
{
    private readonly List<int> _free; // a stack: the next block taken is the last one
    private readonly List<int>[] _blocksOf;
    private readonly int[] _table; // [MaxBatch, MaxBlocksPerSequence], -1 past each slot's blocks

    public KvBlockPool(int totalBlocks, int blockSize, int maxBlocksPerSequence, int slots)
    {
        TotalBlocks = totalBlocks;
        BlockSize = blockSize;
        MaxBlocksPerSequence = maxBlocksPerSequence;
        _free = Enumerable.Range(0, totalBlocks).Reverse().ToList(); // block 0 first
        _blocksOf = Enumerable.Range(0, slots).Select(_ => new List<int>()).ToArray();
        _table = new int[(long)slots * maxBlocksPerSequence];
        Array.Fill(_table, -1);
    }

    /// <summary>Blocks of every paged cache.</summary>
    public int TotalBlocks { get; }
    /// <summary>Positions per block.</summary>
    public int BlockSize { get; }
    /// <summary>Columns of the block table: enough blocks for MaxLength positions.</summary>
    public int MaxBlocksPerSequence { get; }
    /// <summary>Blocks no sequence holds.</summary>
    public int FreeBlocks => _free.Count;
    /// <summary>Blocks held by sequences.</summary>
    public int UsedBlocks => TotalBlocks - _free.Count;

    /// <summary>Blocks that hold <paramref name="positions"/> positions.</summary>
    public int BlocksFor(long positions) => (int)((positions + BlockSize - 1) / BlockSize);

    /// <summary>Blocks the sequence in <paramref name="slot"/> holds.</summary>
    public int BlocksOf(int slot) => _blocksOf[slot].Count;

    /// <summary>More blocks <paramref name="slot"/> needs to hold <paramref name="positions"/> positions (0 when it has them).</summary>
    public int Missing(int slot, long positions) => Math.Max(0, BlocksFor(positions) - _blocksOf[slot].Count);

    /// <summary>Takes free blocks until <paramref name="slot"/> holds <paramref name="positions"/> positions; the caller checked <see cref="Missing"/> against <see cref="FreeBlocks"/>.</summary>
    public void Grow(int slot, long positions)
    {
        var blocks = _blocksOf[slot];
        int need = BlocksFor(positions);
        if (need > MaxBlocksPerSequence || need - blocks.Count > _free.Count)
            throw new InvalidOperationException($"slot {slot} needs {need} blocks; {blocks.Count} held, {_free.Count} free, at most {MaxBlocksPerSequence} per sequence");
        while (blocks.Count < need)
        {
            int block = _free[^1];
            _free.RemoveAt(_free.Count - 1);
            _table[(long)slot * MaxBlocksPerSequence + blocks.Count] = block;
            blocks.Add(block);
        }
    }

    /// <summary>Returns the blocks of <paramref name="slot"/> to the free list.</summary>
    public void Release(int slot)
    {
        var blocks = _blocksOf[slot];
        for (int i = blocks.Count - 1; i >= 0; i--) _free.Add(blocks[i]);
        Array.Fill(_table, -1, slot * MaxBlocksPerSequence, MaxBlocksPerSequence);
        blocks.Clear();
    }

    /// <summary>Rows <c>[first, first + rows)</c> of the block table, copied (int32 <c>[rows, MaxBlocksPerSequence]</c>).</summary>
    public int[] TableRows(int first, int rows) => _table.AsSpan(first * MaxBlocksPerSequence, rows * MaxBlocksPerSequence).ToArray();

    /// <summary>
    /// Puts the free blocks in a random order (tests: block tables then are scattered and non-contiguous, and sequences
    /// interleave in the pool, as they do after a server has run for a while).
    /// </summary>
    internal void ScatterFreeBlocks(int seed)
    {
        var rng = new Random(seed);
        for (int i = _free.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (_free[i], _free[j]) = (_free[j], _free[i]);
        }
    }
}
