"""What both Python sides of benches/compare share (python_pipeline.py for EfficientNet,
clip_pipeline.py for CLIP): the corpus, onnxruntime's session, and the timing harness — a
ThreadPoolExecutor that decodes ahead of the model, batches of --batch, the best of --repeat
timed runs after one warm-up, and the one JSON line each side prints."""
import concurrent.futures as cf
import json
import os
import pathlib
import resource
import sys
import time

import numpy as np

SIZE = 224
EXTS = {".jpg", ".jpeg", ".png"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def corpus_files(corpus, who):
    """The corpus's images, sorted; exits naming `who` when there are none."""
    corpus = pathlib.Path(corpus)
    files = sorted(p for p in corpus.iterdir() if p.suffix.lower() in EXTS)
    if not files:
        sys.exit(f"{who}: no images in {corpus}")
    return files


def ort_session(model, threads):
    """onnxruntime on the CPU: `threads` intra-op threads, sequential, all graph optimizations."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort, ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def l2(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batches(it, n, stack=np.stack):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield stack(buf)
            buf = []
    if buf:
        yield stack(buf)


def best_of(name, fn, images, repeat):
    fn()  # warm-up
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        log(f"  {name} run {i + 1}/{repeat}: {times[-1]:.3f}s ({images / times[-1]:.1f} img/s)")
    return images / min(times)


def measure(files, load, encode, dim, threads, batch, repeat, stack=np.stack):
    """The three timed rows, images per second: decode (files -> model inputs through the
    pool, no model), model (already-stacked batches), end to end (files -> L2-normalized
    `dim`-d embeddings, the pool decoding ahead of the model)."""
    n = len(files)
    with cf.ThreadPoolExecutor(max_workers=threads) as pool:
        def decode_all():
            return list(pool.map(load, files))

        def end_to_end():
            feats = np.concatenate([l2(encode(x)) for x in batches(pool.map(load, files), batch, stack)])
            assert feats.shape == (n, dim), feats.shape
            return feats

        log("decode:")
        decode = best_of("decode", decode_all, n, repeat)
        pre = list(batches(decode_all(), batch, stack))

        def model_only():
            for x in pre:
                encode(x)

        log("model:")
        model = best_of("model", model_only, n, repeat)
        del pre
        log("end-to-end:")
        e2e = best_of("end-to-end", end_to_end, n, repeat)
    return decode, model, e2e


def report(side, model, corpus, n, threads, batch, rates):
    """The side's one JSON line on stdout, with its peak RSS."""
    decode, model_s, e2e = rates
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({
        "side": side, "model": model, "corpus": os.path.basename(os.path.normpath(corpus)),
        "images": n, "threads": threads, "batch": batch,
        "decode_img_s": round(decode, 2), "model_img_s": round(model_s, 2),
        "end_to_end_img_s": round(e2e, 2), "rss_mb": round(rss_mb, 1),
    }, separators=(",", ":")), flush=True)
