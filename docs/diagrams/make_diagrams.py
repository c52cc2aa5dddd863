#!/usr/bin/env python3
"""Writes the per-layer cache layout diagrams (plain SVG, no dependencies): python3 docs/diagrams/make_diagrams.py"""
import os

# layout string per name: index of the layer whose KV the layer reads, 's' = sliding (compact layout syntax, docs/layouts.md)
LAYOUTS = {
    "native": ("native on a 12-layer Llama-style export (no windows): every layer owns a full cache", "_".join(str(i) for i in range(12))),
    "gemma3": ("gemma3 on 12 layers: 5 sliding : 1 global, no sharing", "0s_1s_2s_3s_4s_5_6s_7s_8s_9s_10s_11"),
    "cai": ("cai on 12 layers: 1 full cache (layer 0, read by 6) + 4 rings shared in pairs / triples", "0_1s_1s_3s_3s_3s_0_7s_7s_9s_9s_9s"),
}
W, ROW, TOP, LEFT = 900, 34, 70, 20
FULL, RING, READER = "#3b6fb6", "#e08a2c", "#9aa3ad"

def parse(spec):
    out = []
    for i, tok in enumerate(spec.split("_")):
        sliding = tok.endswith("s")
        out.append((i, int(tok.rstrip("s")), sliding))
    return out

def svg(name, title, spec):
    layers = parse(spec)
    h = TOP + ROW * len(layers) + 92
    e = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="Helvetica, Arial, sans-serif" font-size="13">',
         f'<rect width="{W}" height="{h}" fill="white"/>',
         f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{title}</text>',
         f'<text x="{LEFT}" y="46" fill="#444">layout {spec}</text>',
         '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
    own = [i for (i, s, _) in layers if s == i]
    lane = {o: 660 + 14 * k for k, o in enumerate(o for o in own if any(s == o and r != o for (r, s, _) in layers))}
    for (i, src, sliding) in layers:
        y = TOP + ROW * i
        e.append(f'<text x="{LEFT}" y="{y + 20}">layer {i}</text>')
        e.append(f'<text x="{LEFT + 70}" y="{y + 20}" fill="#444">{"sliding (W)" if sliding else "global"}</text>')
        if src == i:
            width, color = (270, RING) if sliding else (410, FULL)
            readers = [r for (r, s, _) in layers if s == i and r != i]
            label = ("ring, W rows" if sliding else "full cache, MaxLength rows") + (f" \u00b7 read by {', '.join(map(str, readers))}" if readers else "")
            e.append(f'<rect x="230" y="{y + 4}" width="{width}" height="22" rx="3" fill="{color}"/>')
            e.append(f'<text x="238" y="{y + 20}" fill="white">owner: {label}</text>')
            if readers:
                e.append(f'<path d="M{lane[i]},{y + 15} L{234 + width},{y + 15}" fill="none" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>')
        else:
            e.append(f'<rect x="230" y="{y + 4}" width="230" height="22" rx="3" fill="none" stroke="{READER}" stroke-dasharray="4 3"/>')
            e.append(f'<text x="238" y="{y + 20}" fill="#666">reader: no cache, reads layer {src}</text>')
            ys, yd = TOP + ROW * src + 15, y + 15
            e.append(f'<path d="M462,{yd} L{lane[src]},{yd} L{lane[src]},{ys}" fill="none" stroke="#555" stroke-width="1.2"/>')
    y = TOP + ROW * len(layers) + 18
    n_full = sum(1 for (i, s, sl) in layers if s == i and not sl)
    n_ring = sum(1 for (i, s, sl) in layers if s == i and sl)
    e.append(f'<rect x="{LEFT}" y="{y}" width="14" height="14" fill="{FULL}"/><text x="{LEFT + 20}" y="{y + 12}">full cache (global owner): MaxLength rows, never wraps</text>')
    e.append(f'<rect x="{LEFT}" y="{y + 22}" width="14" height="14" fill="{RING}"/><text x="{LEFT + 20}" y="{y + 34}">ring (sliding owner): W rows (+ PrefillChunk − 1 when read by others)</text>')
    e.append(f'<text x="{LEFT}" y="{y + 58}" fill="#444">{n_full} full + {n_ring} ring caches for {len(layers)} layers; dashed: a reader, which allocates nothing and attends over the owner\'s cache (arrow: reads).</text>')
    e.append('</svg>')
    return "\n".join(e) + "\n"

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for name, (title, spec) in LAYOUTS.items():
        with open(os.path.join(here, f"cache-layout-{name}.svg"), "w") as f:
            f.write(svg(name, title, spec))
        print(f"wrote cache-layout-{name}.svg")
