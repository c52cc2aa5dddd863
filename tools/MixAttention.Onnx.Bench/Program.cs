using MixAttention.Onnx.Bench;

return args.Length > 0 && args[0] == "cpu-ops"
    ? CpuOpsBenchmark.Run(args[1..])
    : Usage();

static int Usage()
{
    Console.Error.WriteLine("usage: mixattn-bench cpu-ops [--quick] [--threads N] [--heads 32] [--kv-heads 8] [--head-dim 128] [--window 1024] [--no-full-cache]");
    return 2;
}
