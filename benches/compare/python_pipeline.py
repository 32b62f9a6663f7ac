#!/usr/bin/env python3
"""The pipeline a competent Python user would write instead of pixdex: Pillow + onnxruntime (CPU).

Per file: Image.open; for JPEG im.draft('RGB', (224, 224)) (libjpeg DCT-domain downscale, the
shorter side stays >= 224); convert('RGB'); resize the centred square to 224x224 with BILINEAR
(= shorter side to 224 + centre crop); float32 (px-127)/128, CHW. Decoding runs in a
ThreadPoolExecutor (Pillow releases the GIL while decoding/resizing); batches of `--batch` go to
one onnxruntime InferenceSession (CPUExecutionProvider, intra_op_num_threads=--threads, all graph
optimizations) while the pool keeps decoding the next files.

Rows (each the best of --repeat timed runs after one warm-up run):
  decode_img_s      decode + preprocess of the whole corpus through the pool, no model
  model_img_s       the model alone on already-preprocessed, already-stacked batches
  end_to_end_img_s  files -> L2-normalized pooled 1280-d features for every file

Prints exactly one JSON line on stdout; progress goes to stderr.

Usage: python_pipeline.py --corpus DIR --model OUT.onnx [--threads 2] [--batch 16] [--repeat 3]
"""
import argparse
import concurrent.futures as cf
import json
import os
import pathlib
import resource
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

SIZE = 224
EXTS = {".jpg", ".jpeg", ".png"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load(path):
    """File -> float32 CHW 3x224x224, normalized (px-127)/128."""
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (SIZE, SIZE))
        im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    im = im.resize((SIZE, SIZE), Image.BILINEAR, box=box)
    a = np.asarray(im, dtype=np.float32)
    a = (a - 127.0) / 128.0
    return a.transpose(2, 0, 1)


def batches(it, n):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def best_of(name, fn, images, repeat):
    fn()  # warm-up
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        log(f"  {name} run {i + 1}/{repeat}: {times[-1]:.3f}s ({images / times[-1]:.1f} img/s)")
    return images / min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    corpus = pathlib.Path(args.corpus)
    files = sorted(p for p in corpus.iterdir() if p.suffix.lower() in EXTS)
    if not files:
        sys.exit(f"python_pipeline: no images in {corpus}")
    n, T, B = len(files), args.threads, args.batch

    so = ort.SessionOptions()
    so.intra_op_num_threads = T
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    log(f"python_pipeline: {n} files in {corpus}, threads {T}, batch {B}, "
        f"onnxruntime {ort.__version__}")

    with cf.ThreadPoolExecutor(max_workers=T) as pool:
        def decode_all():
            return list(pool.map(load, files))

        def end_to_end():
            feats = []
            for x in batches(pool.map(load, files), B):        # pool decodes ahead of the model
                (pooled,) = sess.run(["pooled"], {"input": x})
                feats.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
            feats = np.concatenate(feats)
            assert feats.shape == (n, 1280), feats.shape
            return feats

        log("decode:")
        decode = best_of("decode", decode_all, n, args.repeat)

        pre = list(batches(decode_all(), B))

        def model_only():
            for x in pre:
                sess.run(["pooled"], {"input": x})

        log("model:")
        model = best_of("model", model_only, n, args.repeat)
        del pre
        log("end-to-end:")
        e2e = best_of("end-to-end", end_to_end, n, args.repeat)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({
        "side": "python", "model": "effnet", "corpus": os.path.basename(os.path.normpath(args.corpus)),
        "images": n, "threads": T, "batch": B,
        "decode_img_s": round(decode, 2), "model_img_s": round(model, 2),
        "end_to_end_img_s": round(e2e, 2), "rss_mb": round(rss_mb, 1),
    }, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
