"""Where ONNX Runtime's CPU time goes in one model, and how fast its convolutions run (GMAC/s).

Runs the model with ORT's profiler (CPU provider, graph optimisation ALL, ``--threads`` intra-op
threads), then prints the kernel time per face by op type and, for every Conv / ConvTranspose / QLinearConv node, its
multiply-adds (output elements x weight elements per output channel, weights read from the model's
initializers, through a DequantizeLinear in a QDQ model) against its time. Together they say whether a
model is bound by its convolution kernels (and how close those run to the machine's limit) or by the
ops around them.

    python benchmarks/export_speed.py --configs 256 --batches 1 --paths original,ort-int8 --keep-onnx /tmp/es
    python benchmarks/ort_profile.py /tmp/es/256/int8/synthesis.int8.onnx --batch 4
    python benchmarks/ort_profile.py /tmp/es/256/encoder.onnx --batch 1 --json enc.json

Kernel times under the profiler are a little higher than unprofiled runs; read the GMAC/s as a rate,
and compare whole-model speed with ``export_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "FusedConv", "NhwcFusedConv")


def conv_weight_dims(model: onnx.ModelProto) -> dict[str, tuple[str, list[int]]]:
    """Conv / ConvTranspose node name -> (op type, weight dims), the weight found through Identity and
    DequantizeLinear nodes (QDQ models) or in a Constant node."""
    consts = {i.name: list(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = list(node.attribute[0].t.dims)
    producers = {o: n for n in model.graph.node for o in n.output}
    dims = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        w = node.input[1]
        while w not in consts and w in producers and producers[w].op_type in ("Identity", "DequantizeLinear"):
            w = producers[w].input[0]
        if w in consts:
            dims[node.name] = (node.op_type, consts[w])
    return dims


def profile(path: Path, batch: int, threads: int, runs: int) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        so.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {}
        rng = np.random.default_rng(0)
        for inp in sess.get_inputs():
            shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
            feeds[inp.name] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        for _ in range(runs + 1):  # the first run (allocations, prepacking) is dropped below
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    times: dict[str, list[float]] = defaultdict(list)
    args: dict[str, dict] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"]].append(e["dur"])
            args[e["name"]] = e["args"]
    weights = conv_weight_dims(onnx.load(str(path), load_external_data=False))
    by_op: dict[str, float] = defaultdict(float)
    convs = []
    for name, durs in times.items():
        ms = float(np.median(durs[1:] if len(durs) > 1 else durs)) / 1000.0 / batch
        op = args[name]["op_name"]
        by_op[op] += ms
        if op not in CONV_OPS:
            continue
        node = name[: -len("_kernel_time")]
        shapes = [list(t.values())[0] for t in args[name]["input_type_shape"]]
        if op != "QLinearConv" and len(shapes) > 1 and len(shapes[1]) == 4:  # float convs list their weight
            kind, w = ("ConvTranspose" if op == "ConvTranspose" else "Conv"), shapes[1]
        else:  # QLinearConv's weight is prepacked away: find it in the model by node name
            match = max((k for k in weights if node.startswith(k)), key=len, default=None)
            if match is None:
                continue
            kind, w = weights[match]
            node = match
        # Conv: each output element costs (I/group) x kh x kw; ConvTranspose: each input element (O/group) x kh x kw
        shape = args[name]["input_type_shape" if kind == "ConvTranspose" else "output_type_shape"][0]
        gmac = float(np.prod(list(shape.values())[0])) / batch * float(np.prod(w[1:])) / 1e9
        convs.append({"node": node, "ms_per_face": ms, "gmac_per_face": gmac})
    conv_ms = sum(c["ms_per_face"] for c in convs)
    conv_gmac = sum(c["gmac_per_face"] for c in convs)
    total = sum(by_op.values())
    return {"model": str(path), "batch": batch, "threads": threads, "runs": runs,
            "kernel_ms_per_face": round(total, 2),
            "ops_ms_per_face": {k: round(v, 2) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "conv_nodes_matched": len(convs),
            "conv_ms_per_face": round(conv_ms, 2), "conv_gmac_per_face": round(conv_gmac, 6),
            "conv_gmac_per_s": round(conv_gmac / conv_ms * 1000.0, 1) if conv_ms else None,
            "convs": sorted(({**c, "ms_per_face": round(c["ms_per_face"], 3),
                              "gmac_per_face": round(c["gmac_per_face"], 6),
                              "gmac_per_s": round(c["gmac_per_face"] / c["ms_per_face"] * 1000.0, 1)}
                             for c in convs), key=lambda c: -c["ms_per_face"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: a per-core rate)")
    p.add_argument("--runs", type=int, default=2, help="profiled runs after one warm-up run")
    p.add_argument("--top", type=int, default=12, help="slowest conv nodes to print")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if not a.model.is_file():
        p.error(f"{a.model}: no such ONNX file")
    r = profile(a.model, a.batch, a.threads, a.runs)
    print(f"{r['model']}  batch {r['batch']}, {r['threads']} thread(s): "
          f"{r['kernel_ms_per_face']} ms per face in kernels")
    for op, ms in list(r["ops_ms_per_face"].items())[:10]:
        print(f"  {op:26s} {ms:9.1f} ms  {100 * ms / r['kernel_ms_per_face']:5.1f} %")
    print(f"convolutions: {r['conv_nodes_matched']} nodes, {r['conv_gmac_per_face']} GMAC per face in "
          f"{r['conv_ms_per_face']} ms -> {r['conv_gmac_per_s']} GMAC/s")
    for c in r["convs"][: a.top]:
        print(f"  {c['ms_per_face']:8.1f} ms {c['gmac_per_face']:7.3f} GMAC {c['gmac_per_s']:6.1f} GMAC/s  {c['node']}")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
