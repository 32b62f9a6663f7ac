#!/usr/bin/env python3
"""Export EfficientNet-Lite0 from the legacy PyTorch checkpoint to ONNX, without torch.

The weights reader (`load_pth`) and the network description (`STAGES`, `EPS`, TF "SAME" padding)
come from scripts/make-reference.py, the repo's independent numpy forward pass, so the exported
graph is the same network pixdex runs and the fixtures were made with.

Graph: input `input` float32 [N,3,224,224] (dynamic N, already normalized as (px-127)/128);
BatchNorm folded into Conv weight+bias; ReLU6 as Clip(0,6); depthwise as group=C; explicit pads
(TF SAME: the extra pixel goes bottom/right); residual Add; GlobalAveragePool -> Flatten gives
`pooled` [N,1280] (before L2 normalization); Gemm gives `logits` [N,1000].

After writing, the model is run with onnxruntime on tests/fixtures/effnet-input.bin and compared
with tests/fixtures/effnet-reference.json; exit 1 if any compared value is off by more than 1e-3
relative (to max(|ref|, 1)).

Usage: export_onnx.py WEIGHTS OUT.onnx
"""
import importlib.util
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = pathlib.Path(__file__).resolve().parents[2]
SIZE = 224
TOL = 1e-3


def load_reference_module():
    path = REPO / "scripts" / "make-reference.py"
    spec = importlib.util.spec_from_file_location("make_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def same_pads(n, k, s):
    """TF 'SAME' for a square n x n input: (lo, hi) per spatial axis, extra on bottom/right."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class Builder:
    def __init__(self, sd, eps):
        self.sd, self.eps = sd, eps
        self.nodes, self.inits = [], []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def conv_bn(self, x, hw, wkey, bnp, stride, depthwise=False, act=True):
        """Conv (SAME) with the BatchNorm `bnp` folded in, optionally followed by Clip(0,6)."""
        sd = self.sd
        w = sd[wkey]
        g, b, m, v = (sd[f"{bnp}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
        scale = g / np.sqrt(v + self.eps)
        wf = w * scale[:, None, None, None]
        bf = b - m * scale
        k = w.shape[-1]
        lo, hi = same_pads(hw, k, stride)
        base = wkey.replace(".weight", "").lstrip("_").replace(".", "_")
        wn = self.init(base + ".w", wf)
        bname = self.init(base + ".b", bf)
        out = self.name(base)
        self.nodes.append(helper.make_node(
            "Conv", [x, wn, bname], [out], name=out,
            kernel_shape=[k, k], strides=[stride, stride], pads=[lo, lo, hi, hi],
            group=w.shape[0] if depthwise else 1))
        ohw = (hw + lo + hi - k) // stride + 1
        if act:
            lo6 = self.init(self.name("c0"), np.array(0.0))
            hi6 = self.init(self.name("c6"), np.array(6.0))
            y = self.name(base + "_relu6")
            self.nodes.append(helper.make_node("Clip", [out, lo6, hi6], [y], name=y))
            out = y
        return out, ohw, w.shape[0]


def build(sd, ref):
    B = Builder(sd, ref.EPS)
    x, hw = "input", SIZE
    x, hw, c = B.conv_bn(x, hw, "_conv_stem.weight", "_bn0", 2)
    idx = 0
    for reps, k, s, e, _cout in ref.STAGES:
        for r in range(reps):
            p = f"_blocks.{idx}"
            stride = s if r == 0 else 1
            inp, cin, hw_in = x, c, hw
            if e != 1:
                x, hw, c = B.conv_bn(x, hw, f"{p}._expand_conv.weight", f"{p}._bn0", 1)
            assert sd[f"{p}._depthwise_conv.weight"].shape[-1] == k, p
            x, hw, c = B.conv_bn(x, hw, f"{p}._depthwise_conv.weight", f"{p}._bn1", stride,
                                 depthwise=True)
            x, hw, c = B.conv_bn(x, hw, f"{p}._project_conv.weight", f"{p}._bn2", 1, act=False)
            if stride == 1 and cin == c and hw_in == hw:
                y = B.name(f"blocks_{idx}_add")
                B.nodes.append(helper.make_node("Add", [x, inp], [y], name=y))
                x = y
            idx += 1
    assert f"_blocks.{idx}._depthwise_conv.weight" not in sd
    x, hw, c = B.conv_bn(x, hw, "_conv_head.weight", "_bn1", 1)
    B.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    B.nodes.append(helper.make_node("Flatten", ["gap"], ["pooled"], name="flatten", axis=1))
    fw = B.init("fc.w", sd["_fc.weight"])
    fb = B.init("fc.b", sd["_fc.bias"])
    B.nodes.append(helper.make_node("Gemm", ["pooled", fw, fb], ["logits"], name="fc", transB=1))
    ncls = sd["_fc.weight"].shape[0]

    graph = helper.make_graph(
        B.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", c]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", ncls])],
        initializer=B.inits)
    model = helper.make_model(graph, producer_name="pixdex-benches-compare",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = "EfficientNet-Lite0; input normalized (px-127)/128; pooled is pre-L2-norm"
    onnx.checker.check_model(model, full_check=True)
    return model


def verify(onnx_path):
    import onnxruntime as ort
    inp = np.fromfile(REPO / "tests/fixtures/effnet-input.bin", dtype="<f4").reshape(1, 3, SIZE, SIZE)
    with open(REPO / "tests/fixtures/effnet-reference.json") as f:
        want = json.load(f)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    pooled, logits = sess.run(["pooled", "logits"], {"input": inp})
    pooled, logits = pooled[0].astype(np.float64), logits[0].astype(np.float64)

    pairs = []  # (what, got, want)
    pairs += [(f"pooled[{i}]", pooled[i], v) for i, v in enumerate(want["pooled_first16"])]
    pairs += [(f"pooled[{i}]", pooled[i], v) for i, v in want["pooled_max16"]]
    pairs.append(("pooled_sum", pooled.sum(), want["pooled_sum"]))
    pairs.append(("pooled_norm", np.linalg.norm(pooled), want["pooled_norm"]))
    pairs += [(f"logit[{t['class_id']}]", logits[t["class_id"]], t["logit"]) for t in want["top5"]]

    max_abs = max(abs(g - w) for _, g, w in pairs)
    worst = max(pairs, key=lambda p: abs(p[1] - p[2]) / max(abs(p[2]), 1.0))
    max_rel = abs(worst[1] - worst[2]) / max(abs(worst[2]), 1.0)
    top5 = [int(i) for i in np.argsort(-logits)[:5]]
    want_top5 = [t["class_id"] for t in want["top5"]]
    print(f"verify: {len(pairs)} values, max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e} "
          f"(worst {worst[0]}: {worst[1]:.6f} vs {worst[2]:.6f}); top-5 {top5} vs {want_top5}")
    ok = max_rel <= TOL and sorted(top5) == sorted(want_top5)
    if not ok:
        print(f"verify: FAILED (tolerance {TOL} relative)", file=sys.stderr)
    return ok


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    weights, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    ref = load_reference_module()
    sd = ref.load_pth(weights)
    model = build(sd, ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    onnx.save(model, str(tmp))
    if not verify(tmp):
        tmp.unlink()
        sys.exit(1)
    tmp.replace(out)
    print(f"export: wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(model.graph.node)} nodes)")


if __name__ == "__main__":
    main()
