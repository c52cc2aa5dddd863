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
    private readonly int[] _references; // per block: how many sequences hold it (shared prefixes: more than one)

    /// <param name="totalBlocks">Blocks sequences can hold.</param>
    /// <param name="blockSize">Positions per block.</param>
    /// <param name="maxBlocksPerSequence">Columns of the block table.</param>
    /// <param name="slots">Batch slots (rows of the block table).</param>
    /// <param name="scratch">
    /// Keep one more block, never handed out, that the block table names wherever a row holds no block
    /// (<see cref="ScratchBlock"/>): for models whose attention writes every row of a step.
    /// </param>
    public KvBlockPool(int totalBlocks, int blockSize, int maxBlocksPerSequence, int slots, bool scratch = false)
    {
        TotalBlocks = totalBlocks;
        ScratchBlock = scratch ? totalBlocks : null;
        BlockSize = blockSize;
        MaxBlocksPerSequence = maxBlocksPerSequence;
        _free = Enumerable.Range(0, totalBlocks).Reverse().ToList(); // block 0 first
        _blocksOf = Enumerable.Range(0, slots).Select(_ => new List<int>()).ToArray();
        _references = new int[totalBlocks];
        _table = new int[(long)slots * maxBlocksPerSequence];
        Array.Fill(_table, -1);
    }

    /// <summary>Blocks of every paged cache that sequences can hold.</summary>
    public int TotalBlocks { get; }
    /// <summary>
    /// The block past <see cref="TotalBlocks"/> that table rows name where a sequence holds no block, or null. A model
    /// without <c>new_lengths</c> (ORT's PagedAttention) writes a filler token for every row of a step, also rows that
    /// are free or not in the step (docs/runtime.md); at a position without a block it lands here, where nothing reads it.
    /// </summary>
    public int? ScratchBlock { get; }
    /// <summary>Blocks each pool tensor has: <see cref="TotalBlocks"/>, and the scratch block.</summary>
    public int PhysicalBlocks => TotalBlocks + (ScratchBlock is null ? 0 : 1);
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

    /// <summary>The pool blocks of the sequence in <paramref name="slot"/>, in position order.</summary>
    public IReadOnlyList<int> BlocksHeld(int slot) => _blocksOf[slot];

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
            _references[block] = 1;
        }
    }

    /// <summary>
    /// Gives the empty <paramref name="slot"/> the first <paramref name="positions"/> positions of <paramref name="source"/>:
    /// its full blocks are shared (one more reference each), and a partly filled last block — the first one both will
    /// append to — is copied into a fresh block (copy-on-write at the first block that can differ). Returns the
    /// (source block, copy) pair to copy, or null when the prefix ends on a block boundary. The caller checked that one
    /// block is free when a copy is needed.
    /// </summary>
    public (int From, int To)? Share(int source, int slot, long positions)
    {
        var from = _blocksOf[source];
        var to = _blocksOf[slot];
        if (to.Count != 0) throw new InvalidOperationException($"slot {slot} already holds blocks");
        int full = (int)(positions / BlockSize);
        for (int i = 0; i < full; i++)
        {
            _table[(long)slot * MaxBlocksPerSequence + i] = from[i];
            to.Add(from[i]);
            _references[from[i]]++;
        }
        if (positions % BlockSize == 0) return null;
        Grow(slot, positions);
        return (from[full], to[full]);
    }

    /// <summary>Blocks held by more than one sequence (a shared prefix is stored once).</summary>
    public int SharedBlocks => _references.Count(r => r > 1);

    /// <summary>Blocks of <paramref name="slot"/> that no other sequence holds (what <see cref="Release"/> would free).</summary>
    public int ExclusiveBlocks(int slot) => _blocksOf[slot].Count(b => _references[b] == 1);

    /// <summary>Returns the blocks of <paramref name="slot"/> to the free list.</summary>
    public void Release(int slot)
    {
        var blocks = _blocksOf[slot];
        for (int i = blocks.Count - 1; i >= 0; i--)
            if (--_references[blocks[i]] == 0) _free.Add(blocks[i]); // a shared block stays while another sequence holds it
        Array.Fill(_table, -1, slot * MaxBlocksPerSequence, MaxBlocksPerSequence);
        blocks.Clear();
    }

    /// <summary>
    /// Rows <c>[first, first + rows)</c> of the block table, copied (int32 <c>[rows, MaxBlocksPerSequence]</c>): <c>-1</c>
    /// past each sequence's blocks, or the <see cref="ScratchBlock"/> when there is one.
    /// </summary>
    public int[] TableRows(int first, int rows)
    {
        var copy = new int[rows * MaxBlocksPerSequence];
        CopyTableRows(first, rows, copy);
        return copy;
    }

    /// <summary>As <see cref="TableRows"/>, into <paramref name="destination"/> (<c>rows × MaxBlocksPerSequence</c> long).</summary>
    public void CopyTableRows(int first, int rows, Span<int> destination)
    {
        _table.AsSpan(first * MaxBlocksPerSequence, rows * MaxBlocksPerSequence).CopyTo(destination);
        if (ScratchBlock is { } scratch) destination[..(rows * MaxBlocksPerSequence)].Replace(-1, scratch);
    }

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
