using MixAttention.Onnx.Onnx;
using MixAttention.Onnx.Onnx.Proto;

namespace MixAttention.Onnx.Graph;

/// <summary>
/// A thin, honest view over a <see cref="GraphProto"/>: every value knows its producer and consumers,
/// initializers and graph inputs/outputs are looked up by name. Edits go through this class so the
/// links stay true; the protobuf remains the single copy of the graph.
/// </summary>
internal sealed class ModelGraph
{
    private readonly Dictionary<string, (NodeProto Node, int Index)> _producers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<ValueUse>> _consumers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorProto> _initializers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ValueInfoProto> _valueInfo = new(StringComparer.Ordinal);
    private readonly HashSet<string> _inputs = new(StringComparer.Ordinal);
    private readonly HashSet<string> _outputs = new(StringComparer.Ordinal);

    /// <summary>Indexes the main graph of <paramref name="model"/>.</summary>
    public ModelGraph(OnnxModel model)
    {
        Model = model;
        Proto = model.Proto.Graph ?? throw new OnnxFormatException("The model has no graph.");
        Reindex();
    }

    /// <summary>The model this graph belongs to.</summary>
    public OnnxModel Model { get; }
    /// <summary>The underlying graph message.</summary>
    public GraphProto Proto { get; }
    /// <summary>Nodes in file order.</summary>
    public IReadOnlyList<NodeProto> Nodes => Proto.Node;

    /// <summary>Rebuilds producer/consumer links after direct protobuf edits. Duplicate producers are a format error.</summary>
    public void Reindex()
    {
        _producers.Clear(); _consumers.Clear(); _initializers.Clear(); _valueInfo.Clear(); _inputs.Clear(); _outputs.Clear();
        foreach (var t in Proto.Initializer)
            _initializers[t.Name] = t;
        foreach (var v in Proto.Input) { _inputs.Add(v.Name); _valueInfo[v.Name] = v; }
        foreach (var v in Proto.Output) { _outputs.Add(v.Name); _valueInfo.TryAdd(v.Name, v); }
        foreach (var v in Proto.ValueInfo) _valueInfo.TryAdd(v.Name, v);
        foreach (var node in Proto.Node)
            Link(node);
    }

    private void Link(NodeProto node)
    {
        for (int i = 0; i < node.Output.Count; i++)
        {
            var name = node.Output[i];
            if (name.Length == 0) continue;
            if (_producers.TryGetValue(name, out var other))
                throw new OnnxFormatException($"Value '{name}' is produced twice: by node '{Describe(other.Node)}' and by node '{Describe(node)}'.");
            _producers[name] = (node, i);
        }
        for (int i = 0; i < node.Input.Count; i++)
        {
            var name = node.Input[i];
            if (name.Length == 0) continue;
            if (!_consumers.TryGetValue(name, out var list))
                _consumers[name] = list = new List<ValueUse>();
            list.Add(new ValueUse(node, i));
        }
    }

    private void Unlink(NodeProto node)
    {
        foreach (var name in node.Output)
            if (_producers.TryGetValue(name, out var p) && ReferenceEquals(p.Node, node))
                _producers.Remove(name);
        foreach (var name in node.Input)
            if (_consumers.TryGetValue(name, out var list))
                list.RemoveAll(u => ReferenceEquals(u.Node, node));
    }

    /// <summary>A readable name for a node: its name, else op type and first output.</summary>
    public static string Describe(NodeProto node) =>
        node.Name.Length > 0 ? node.Name : $"{node.OpType}->{(node.Output.Count > 0 ? node.Output[0] : "?")}";

    /// <summary>The node that computes <paramref name="value"/>, or null for graph inputs, initializers and unknown names.</summary>
    public NodeProto? Producer(string value) => _producers.TryGetValue(value, out var p) ? p.Node : null;

    /// <summary>Every use of <paramref name="value"/> as a node input (a snapshot: safe to edit while iterating).</summary>
    public IReadOnlyList<ValueUse> Uses(string value) => _consumers.TryGetValue(value, out var l) ? l.ToArray() : Array.Empty<ValueUse>();

    /// <summary>The distinct nodes consuming <paramref name="value"/>.</summary>
    public IReadOnlyList<NodeProto> Consumers(string value) => Uses(value).Select(u => u.Node).Distinct().ToArray();

    /// <summary>The initializer named <paramref name="value"/>, if any.</summary>
    public TensorProto? Initializer(string value) => _initializers.TryGetValue(value, out var t) ? t : null;

    /// <summary>All initializers by name.</summary>
    public IReadOnlyDictionary<string, TensorProto> Initializers => _initializers;

    /// <summary>True when <paramref name="value"/> is a graph input that is not an initializer.</summary>
    public bool IsGraphInput(string value) => _inputs.Contains(value) && !_initializers.ContainsKey(value);

    /// <summary>True when <paramref name="value"/> is a graph output.</summary>
    public bool IsGraphOutput(string value) => _outputs.Contains(value);

    /// <summary>Declared type info (graph input/output or value_info), if any.</summary>
    public ValueInfoProto? ValueInfo(string value) => _valueInfo.TryGetValue(value, out var v) ? v : null;

    /// <summary>Opset version the model imports for <paramref name="domain"/> ("" or "ai.onnx" = default), or null.</summary>
    public long? OpsetVersion(string domain)
    {
        foreach (var o in Model.Proto.OpsetImport)
        {
            var d = o.Domain == "ai.onnx" ? "" : o.Domain;
            if (d == (domain == "ai.onnx" ? "" : domain)) return o.Version;
        }
        return null;
    }

    /// <summary>
    /// Declared shape of a value: one entry per axis, the size or -1 for a symbolic/unknown axis; null when no rank is known.
    /// Initializers report their dims.
    /// </summary>
    public long[]? DeclaredShape(string value)
    {
        if (_initializers.TryGetValue(value, out var t))
            return t.Dims.ToArray();
        var info = ValueInfo(value);
        var shape = info?.Type?.TensorType?.Shape;
        if (shape is null) return null;
        return shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1L).ToArray();
    }

    /// <summary>Declared element type of a value (TensorProto.DataType), or 0 when unknown.</summary>
    public int DeclaredElementType(string value)
    {
        if (_initializers.TryGetValue(value, out var t)) return t.DataType;
        return ValueInfo(value)?.Type?.TensorType?.ElemType ?? 0;
    }

    /// <summary>Nodes in an order where every node comes after the producers of its inputs. A cycle is a format error naming a node on it.</summary>
    public IReadOnlyList<NodeProto> TopologicalOrder()
    {
        var indegree = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        foreach (var n in Proto.Node)
            indegree[n] = n.Input.Count(i => i.Length > 0 && _producers.ContainsKey(i));
        var ready = new Queue<NodeProto>(Proto.Node.Where(n => indegree[n] == 0));
        var order = new List<NodeProto>(Proto.Node.Count);
        while (ready.Count > 0)
        {
            var n = ready.Dequeue();
            order.Add(n);
            foreach (var o in n.Output)
                foreach (var use in Uses(o))
                    if (--indegree[use.Node] == 0)
                        ready.Enqueue(use.Node);
        }
        if (order.Count != Proto.Node.Count)
        {
            var stuck = Proto.Node.First(n => indegree[n] > 0);
            throw new OnnxFormatException($"The graph has a cycle: node '{Describe(stuck)}' ({stuck.OpType}) depends on its own output.");
        }
        return order;
    }

    /// <summary>Reorders the graph's nodes topologically (ONNX requires it; rewrites append nodes at the end).</summary>
    public void SortTopologically()
    {
        var order = TopologicalOrder().ToList();
        Proto.Node.Clear();
        Proto.Node.AddRange(order);
    }

    /// <summary>Renames a value everywhere: its producer's output, every consumer's input and graph outputs.</summary>
    public void RenameValue(string oldName, string newName)
    {
        if (_producers.ContainsKey(newName))
            throw new InvalidOperationException($"cannot rename '{oldName}' to '{newName}': that name is already produced.");
        if (_producers.TryGetValue(oldName, out var p))
        {
            p.Node.Output[p.Index] = newName;
            _producers.Remove(oldName);
            _producers[newName] = p;
        }
        foreach (var use in Uses(oldName))
            SetInput(use.Node, use.InputIndex, newName);
        foreach (var o in Proto.Output.Where(o => o.Name == oldName))
        {
            o.Name = newName;
            _outputs.Remove(oldName);
            _outputs.Add(newName);
        }
    }

    /// <summary>Adds a node (after the last node by default) and links it.</summary>
    public NodeProto AddNode(NodeProto node, int? index = null)
    {
        if (index is { } i) Proto.Node.Insert(i, node); else Proto.Node.Add(node);
        Link(node);
        return node;
    }

    /// <summary>Removes a node and its links. Its outputs lose their producer.</summary>
    public void RemoveNode(NodeProto node)
    {
        Unlink(node);
        Proto.Node.Remove(node);
    }

    /// <summary>Points every use of <paramref name="oldValue"/> (node inputs, and graph outputs when asked) at <paramref name="newValue"/>.</summary>
    public void ReplaceAllUses(string oldValue, string newValue)
    {
        foreach (var use in Uses(oldValue))
        {
            use.Node.Input[use.InputIndex] = newValue;
            _consumers[oldValue].RemoveAll(u => ReferenceEquals(u.Node, use.Node) && u.InputIndex == use.InputIndex);
            if (!_consumers.TryGetValue(newValue, out var list)) _consumers[newValue] = list = new List<ValueUse>();
            list.Add(use);
        }
    }

    /// <summary>Replaces input <paramref name="index"/> of <paramref name="node"/>.</summary>
    public void SetInput(NodeProto node, int index, string value)
    {
        var old = node.Input[index];
        if (_consumers.TryGetValue(old, out var l)) l.RemoveAll(u => ReferenceEquals(u.Node, node) && u.InputIndex == index);
        node.Input[index] = value;
        if (!_consumers.TryGetValue(value, out var list)) _consumers[value] = list = new List<ValueUse>();
        list.Add(new ValueUse(node, index));
    }

    /// <summary>Adds an initializer.</summary>
    public void AddInitializer(TensorProto tensor)
    {
        if (_initializers.ContainsKey(tensor.Name) || _producers.ContainsKey(tensor.Name))
            throw new InvalidOperationException($"A value named '{tensor.Name}' already exists.");
        Proto.Initializer.Add(tensor);
        _initializers[tensor.Name] = tensor;
    }

    /// <summary>Removes a graph input by name (and its value info).</summary>
    public void RemoveGraphInput(string name)
    {
        var v = Proto.Input.FirstOrDefault(i => i.Name == name);
        if (v is not null) Proto.Input.Remove(v);
        _inputs.Remove(name);
        _valueInfo.Remove(name);
    }

    /// <summary>Removes a graph output by name.</summary>
    public void RemoveGraphOutput(string name)
    {
        var v = Proto.Output.FirstOrDefault(i => i.Name == name);
        if (v is not null) Proto.Output.Remove(v);
        _outputs.Remove(name);
    }

    /// <summary>Adds a graph input.</summary>
    public void AddGraphInput(ValueInfoProto info)
    {
        Proto.Input.Add(info);
        _inputs.Add(info.Name);
        _valueInfo[info.Name] = info;
    }

    /// <summary>Adds a graph output.</summary>
    public void AddGraphOutput(ValueInfoProto info)
    {
        Proto.Output.Add(info);
        _outputs.Add(info.Name);
        _valueInfo.TryAdd(info.Name, info);
    }

    /// <summary>
    /// Removes nodes whose outputs reach no graph output, then initializers nothing uses, then — when
    /// <paramref name="pruneInputsExcept"/> is given — graph inputs nothing reads, except those it names.
    /// Returns what was removed.
    /// </summary>
    public DeadCodeReport RemoveDeadCode(IReadOnlyCollection<string>? pruneInputsExcept = null)
    {
        var live = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<string>(_outputs);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (!seen.Add(v)) continue;
            var p = Producer(v);
            if (p is null || !live.Add(p)) continue;
            foreach (var i in p.Input) if (i.Length > 0) stack.Push(i);
            foreach (var name in SubgraphOuterReferences(p)) stack.Push(name);
        }
        // One sweep: keep the live nodes in order and rebuild the links once. Removing node by node cost
        // O(nodes) per RepeatedField.Remove plus O(consumers) per unlinked input: 200,000 dead nodes reading
        // input_ids took 326 s.
        int deadNodes = Proto.Node.Count - live.Count;
        if (deadNodes > 0)
        {
            var keep = Proto.Node.Where(live.Contains).ToList();
            Proto.Node.Clear();
            Proto.Node.AddRange(keep);
        }

        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in Proto.Node)
        {
            foreach (var i in n.Input) used.Add(i);
            foreach (var name in SubgraphOuterReferences(n)) used.Add(name);
        }
        foreach (var o in _outputs) used.Add(o);
        var deadInits = Proto.Initializer.Where(t => !used.Contains(t.Name)).ToList();
        long bytes = 0, parameters = 0;
        foreach (var t in deadInits)
        {
            bytes += OnnxModel.TensorBytes(t) ?? t.RawData.Length;
            parameters += t.Dims.Aggregate(1L, (a, d) => a * Math.Max(d, 0));
        }
        var deadInitNames = new HashSet<string>(deadInits.Select(t => t.Name), StringComparer.Ordinal);
        var deadInputs = new List<string>();
        if (pruneInputsExcept is not null)
            deadInputs.AddRange(Proto.Input.Where(i => !used.Contains(i.Name) && !deadInitNames.Contains(i.Name) && !pruneInputsExcept.Contains(i.Name)).Select(i => i.Name));
        if (deadInits.Count > 0 || deadInputs.Count > 0)
        {
            var dropInputs = new HashSet<string>(deadInputs, StringComparer.Ordinal);
            dropInputs.UnionWith(deadInitNames);
            var inits = Proto.Initializer.Where(t => !deadInitNames.Contains(t.Name)).ToList();
            Proto.Initializer.Clear();
            Proto.Initializer.AddRange(inits);
            var inputs = Proto.Input.Where(i => !dropInputs.Contains(i.Name)).ToList();
            Proto.Input.Clear();
            Proto.Input.AddRange(inputs);
        }
        if (deadNodes > 0 || deadInits.Count > 0 || deadInputs.Count > 0)
        {
            Reindex();
            // Value info of removed graph inputs goes with them (as RemoveGraphInput does).
            foreach (var name in deadInputs) _valueInfo.Remove(name);
        }
        return new DeadCodeReport(deadNodes, deadInits.Count, bytes, parameters, deadInputs);
    }

    /// <summary>Names that nodes inside a node's subgraphs (If/Loop/Scan bodies) read from the enclosing graph.</summary>
    private static IEnumerable<string> SubgraphOuterReferences(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            var graphs = a.G is not null ? new[] { a.G }.Concat(a.Graphs) : a.Graphs;
            foreach (var g in graphs)
            {
                var local = new HashSet<string>(g.Input.Select(i => i.Name).Concat(g.Initializer.Select(i => i.Name)).Concat(g.Node.SelectMany(n => n.Output)), StringComparer.Ordinal);
                foreach (var n in g.Node)
                {
                    foreach (var i in n.Input)
                        if (i.Length > 0 && !local.Contains(i)) yield return i;
                    foreach (var inner in SubgraphOuterReferences(n))
                        if (!local.Contains(inner)) yield return inner;
                }
            }
        }
    }

    /// <summary>A value name not yet used in the graph, starting from <paramref name="stem"/>.</summary>
    public string UniqueName(string stem)
    {
        if (!Exists(stem)) return stem;
        for (int i = 1; ; i++)
            if (!Exists($"{stem}_{i}")) return $"{stem}_{i}";
    }

    private bool Exists(string name) =>
        _producers.ContainsKey(name) || _initializers.ContainsKey(name) || _inputs.Contains(name) || _outputs.Contains(name) || _consumers.ContainsKey(name);
}
