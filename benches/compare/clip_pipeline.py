#!/usr/bin/env python3
"""The CLIP ViT-B/32 side of benches/compare in Python, two ways (run each in its own process so
each has its own peak RSS):

  --way torch  what the replaced Python service runs: open_clip + torch. Per file
               `preprocess(Image.open(path))` with open_clip's own `preprocess` for ViT-B-32
               (PIL full decode, bicubic resize of the shorter side to 224, centre crop,
               mean/std normalization), `model.encode_image` under torch.inference_mode(),
               torch.set_num_threads(--threads).
  --way ort    the best plain Python: Pillow with JPEG draft mode (libjpeg scales in the DCT
               domain; the shorter side stays >= 224), BICUBIC resize of the centred square to
               224x224, mean/std normalization, and the image tower exported to ONNX
               (clip_export.py) on onnxruntime (CPUExecutionProvider, intra_op_num_threads=
               --threads, all graph optimizations).
  --way check  before anything is timed: the first --check-images files through both ways; the
               ONNX tower must agree with torch on the same tensors, and the draft way's embeddings with
               open_clip's (cosine >= 0.999). Writes
               --check-out (JSON) and its pixels (.u8 beside it) for pixdex's own check.

Both timed ways decode in a ThreadPoolExecutor of --threads workers (Pillow releases the GIL)
that decodes ahead while the model runs, batches of --batch, the same weights
(clip_export.py's safetensors for torch, its ONNX export for onnxruntime).

Rows (each the best of --repeat timed runs after one warm-up run):
  decode_img_s      decode + preprocess of the whole corpus through the pool, no model
  model_img_s       the image tower alone on already-preprocessed, already-stacked batches
  end_to_end_img_s  files -> L2-normalized 512-d embeddings for every file

Prints exactly one JSON line on stdout; progress goes to stderr.

Usage: clip_pipeline.py --way torch|ort|check --corpus DIR --weights W.safetensors --onnx M.onnx
       [--threads 2] [--batch 16] [--repeat 3] [--check-images 4] [--check-out FILE.json]
"""
import argparse
import json
import os
import pathlib
import sys

import numpy as np
from PIL import Image

from benchlib import SIZE, corpus_files, l2, log, measure, ort_session as ort_base, report

# open_clip's OPENAI_DATASET_MEAN / _STD (ViT-B-32's preprocess).
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def load_draft(path):
    """PIL draft decode + bicubic centred square -> float32 CHW, CLIP mean/std."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (SIZE, SIZE))
        im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    im = im.resize((SIZE, SIZE), Image.BICUBIC, box=box)
    a = np.asarray(im, dtype=np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def torch_side(weights, threads):
    import open_clip
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    state = {k: v.float() for k, v in load_file(weights).items()}
    model.load_state_dict(state)
    model.eval()

    def load(path):
        with Image.open(path) as im:
            return preprocess(im)

    def encode(x):
        with torch.inference_mode():
            return model.encode_image(x).numpy()

    return torch, model, preprocess, load, encode


def ort_session(onnx, threads):
    ort, sess = ort_base(onnx, threads)
    return ort, lambda x: sess.run(["embedding"], {"input": x})[0]


def cos_rows(a, b):
    return (l2(a) * l2(b)).sum(1)


def check(args, files):
    """Agreement of the three sides on a few images, before timing."""
    torch, _, preprocess, load, encode = torch_side(args.weights, args.threads)
    _, run = ort_session(args.onnx, args.threads)
    files = files[:args.check_images]
    steps = list(preprocess.transforms)
    cut = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    pixels, tensors = [], []
    for p in files:
        with Image.open(p) as im:
            pil = im
            for t in steps[:cut]:
                pil = t(pil)
            x = pil
            for t in steps[cut:]:
                x = t(x)
            assert torch.equal(x, preprocess(im)), "open_clip's preprocess split in two gives the same tensor"
        pixels.append(np.asarray(pil, dtype=np.uint8))
        tensors.append(x)
    x = torch.stack(tensors)
    tower_torch = l2(encode(x))
    tower_ort = l2(run(x.numpy()))
    c_tower = cos_rows(tower_torch, tower_ort).min()
    e2e_ort = l2(run(np.stack([load_draft(p) for p in files])))
    c_e2e = cos_rows(tower_torch, e2e_ort).min()
    k = len(files)
    other = np.mean([tower_torch[i] @ tower_torch[j] for i in range(k) for j in range(i + 1, k)]) if k > 1 else float("nan")
    log(f"check: {k} images; onnxruntime vs torch on the same tensors: min cosine {c_tower:.6f}; "
        f"end to end (draft + bicubic vs full decode + open_clip preprocess): {c_e2e:.4f}; "
        f"for scale, two different images: mean cosine {other:.4f}")
    if min(c_tower, c_e2e) < 0.999:
        sys.exit(f"check: the onnxruntime way disagrees with open_clip + torch (cosine {c_tower:.6f} on the "
                 f"same tensors, {c_e2e:.4f} end to end; both must be >= 0.999)")
    out = pathlib.Path(args.check_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    u8 = out.with_suffix(".u8")
    np.stack(pixels).tofile(u8)
    json.dump({
        "files": [p.name for p in files],
        "pixels": u8.name,
        "tower": tower_torch.tolist(),
        "end_to_end": {"torch": tower_torch.tolist(), "ort": e2e_ort.tolist()},
        "check_tower_cos_ort": float(c_tower), "check_e2e_cos_ort": float(c_e2e),
    }, open(out, "w"))
    print(json.dumps({"side": "check", "model": "clip", "corpus": os.path.basename(os.path.normpath(args.corpus)),
                      "images": k, "check_tower_cos_ort": round(float(c_tower), 6),
                      "check_e2e_cos_ort": round(float(c_e2e), 5)}, separators=(",", ":")), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--way", required=True, choices=["torch", "ort", "check"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check-images", type=int, default=4)
    ap.add_argument("--check-out")
    args = ap.parse_args()

    files = corpus_files(args.corpus, "clip_pipeline")
    n, T, B = len(files), args.threads, args.batch
    if args.way == "check":
        return check(args, files)

    if args.way == "torch":
        torch, _, _, load, encode = torch_side(args.weights, T)
        stack = torch.stack
        what = f"open_clip + torch {torch.__version__}"
    else:
        ort, encode = ort_session(args.onnx, T)
        load, stack = load_draft, np.stack
        what = f"PIL draft + onnxruntime {ort.__version__}"
    log(f"clip_pipeline: {what}, {n} files in {args.corpus}, threads {T}, batch {B}")
    rates = measure(files, load, encode, 512, T, B, args.repeat, stack)
    report(f"python-{args.way}", "clip", args.corpus, n, T, B, rates)


if __name__ == "__main__":
    main()
