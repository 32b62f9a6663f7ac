#!/usr/bin/env python3
"""Random full-size open_clip ViT-B-32 for the CLIP rows of benches/compare (bench time only).

Writes, in OUTDIR:
  vit-b-32-random.safetensors  the whole open_clip state dict (image and text towers, open_clip's
                               own key names, as pixdex loads them), values rounded to f16 and
                               stored as f16, so torch, onnxruntime and pixdex all run the same
                               numbers
  vit-b-32-image.onnx          the image tower (`model.visual`, what `encode_image` runs before
                               its optional L2 normalization), exported with torch.onnx.export (dynamo):
                               input `input` [N,3,224,224] normalized with CLIP's mean/std,
                               output `embedding` [N,512]
  vit-b-32-image-opt.onnx      the same through onnxruntime's own transformer optimizer
                               (`onnxruntime.transformers.optimizer`, model_type "clip"): GELU
                               and residual + LayerNorm fused (BiasGelu, SkipLayerNormalization),
                               which the session's online optimizer does not do on this graph;
                               what the onnxruntime side runs
and refuses to write an ONNX model unless onnxruntime agrees with torch (cosine >= 0.9999 on
random inputs). Speed does not depend on the values; they are drawn from a fixed seed so the
network's output depends on its input (LayerNorm gains 1 +- 0.2, biases +- 0.2, weights
N(0, 1/fan_in), embeddings N(0, 0.25): scales like a trained CLIP's, as
scripts/make-clip-fixtures.py does for the tiny fixtures). Needs the venv `setup --clip` makes.

Usage: clip_export.py OUTDIR
"""
import math
import os
import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort
import open_clip
import torch
from safetensors.torch import save_file

SEED = 20240611


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def random_vit_b_32():
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            r = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and ("ln" in name or "bias" in name):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * r)
            elif name.endswith("class_embedding") or "positional_embedding" in name or "token_embedding" in name:
                p.copy_(0.5 * r)
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else int(np.prod(p.shape[1:]))
                p.copy_(r / math.sqrt(max(fan_in, 1)))
            p.copy_(p.half().float())
    return model


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    weights, onnx_path = out / "vit-b-32-random.safetensors", out / "vit-b-32-image.onnx"
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = random_vit_b_32()
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    log(f"clip_export: {weights} ({weights.stat().st_size / 1e6:.0f} MB, {len(state)} tensors, "
        f"open_clip {open_clip.__version__}, torch {torch.__version__})")

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    with torch.no_grad():
        # torch.onnx's dynamo exporter: the TorchScript one cannot export the fused attention
        # (`aten::_native_multi_head_attention`) torch runs in inference.
        n = torch.export.Dim("n", min=1, max=1024)
        torch.onnx.export(model.visual, (x,), str(tmp), input_names=["input"], output_names=["embedding"],
                          dynamic_shapes={"x": {0: n}}, opset_version=18, dynamo=True, external_data=False)

    # onnxruntime must agree with torch before anything is timed.
    xs = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.visual(xs).numpy()

    def agree(path, final):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        (got,) = sess.run(["embedding"], {"input": xs.numpy()})
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        log(f"clip_export: onnxruntime ({final.name}) vs torch on random inputs: min cosine {cos.min():.6f}")
        if cos.min() < 0.9999:
            path.unlink()
            sys.exit(f"clip_export: the ONNX image tower disagrees with torch (cosine {cos.min():.6f})")
        path.replace(final)
        log(f"clip_export: {final} ({final.stat().st_size / 1e6:.0f} MB, onnxruntime {ort.__version__})")

    agree(tmp, onnx_path)
    from onnxruntime.transformers import optimizer
    opt_path = out / "vit-b-32-image-opt.onnx"
    opt = optimizer.optimize_model(str(onnx_path), model_type="clip", num_heads=12, hidden_size=768, opt_level=0)
    log(f"clip_export: onnxruntime transformer optimizer fused {opt.get_fused_operator_statistics()}")
    tmp = opt_path.with_name(opt_path.name + ".tmp")
    opt.save_model_to_file(str(tmp))
    agree(tmp, opt_path)
    log(f"clip_export: done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
