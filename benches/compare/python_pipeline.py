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

import numpy as np
from PIL import Image

from benchlib import SIZE, corpus_files, log, measure, ort_session, report


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    files = corpus_files(args.corpus, "python_pipeline")
    n, T, B = len(files), args.threads, args.batch
    ort, sess = ort_session(args.model, T)
    log(f"python_pipeline: {n} files in {args.corpus}, threads {T}, batch {B}, "
        f"onnxruntime {ort.__version__}")
    rates = measure(files, load, lambda x: sess.run(["pooled"], {"input": x})[0], 1280, T, B, args.repeat)
    report("python", "effnet", args.corpus, n, T, B, rates)


if __name__ == "__main__":
    main()
