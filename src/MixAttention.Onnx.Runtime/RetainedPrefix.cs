namespace MixAttention.Onnx.Runtime;

/// <summary>
/// A parked sequence of a paged session that holds exactly the first <see cref="Tokens"/> of some prompt — a whole
/// number of blocks — and nothing after them: its blocks are the prefix's, and its sliding rings are the prefix's
/// last-window snapshot at that length, so a fork of it continues as a prefill of the prefix would (<see cref="BlockScheduler"/>).
/// </summary>
internal sealed record RetainedPrefix(int Sequence, long[] Tokens);
