#!/usr/bin/env python3
"""Indexing speed against the size of the catalog (issue 22): the same model and images, a
session over a small library and one over a large one (N pending jobs, N assets), images/s over
a fixed window once the pipeline is warm. The catalog's per-batch work (claim, completion,
counts) must not grow with the library.

  benches/scale/index-rate 10000 1000000       # SQLite, EfficientNet-Lite0 from models/
"""
import os, sys, time, tempfile, shutil, argparse
sys.path.insert(0, os.path.dirname(__file__))
import scale

# A real photo (every image of a folder is a hard link to it: the pipeline embeds one and
# completes the others as copies, so the window mostly measures the per-job catalog work).
SEED = os.path.join(os.path.dirname(__file__), "..", "..", "samples", "coffee.png")


def rate(binary, n, folders, weights, warm, window):
    work = tempfile.mkdtemp(prefix=f"pixdex-rate-{n}-", dir=os.environ.get("SCALE_DIR", "/tmp"))
    lib = os.path.join(work, "lib")
    os.makedirs(lib)
    scale.make_library(lib, n, folders, open(SEED, "rb").read())
    d = scale.Daemon(binary, work, lib, f"sqlite://{work}/catalog.db")
    cfg = open(d.cfg).read().replace(f'weights = "{work}/no-model.pth"', f'weights = "{weights}"')
    open(d.cfg, "w").write(cfg)
    d.start()
    scale.wait_for(lambda: (d.call("GET", "/api/v1/training/watcher")[1] or {}).get("assetsKnown") == n, 3600, 0.5)
    sid = scale.ok(d.call("POST", "/api/v1/training/sessions", {"name": "rate", "rootPath": lib}), "create")["id"]
    scale.ok(d.call("POST", f"/api/v1/training/sessions/{sid}/start"), "start")
    scale.wait_for(lambda: (d.call("GET", f"/api/v1/training/sessions/{sid}")[1] or {}).get("status") == "running", 3600, 0.2)
    done = lambda: scale.ok(d.call("GET", f"/api/v1/training/sessions/{sid}/progress"), "progress")["progress"]["current"]
    time.sleep(warm)
    a, t = done(), time.time()
    time.sleep(window)
    b, t2 = done(), time.time()
    d.stop()
    shutil.rmtree(work, ignore_errors=True)
    return (b - a) / (t2 - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[10000, 1000000])
    ap.add_argument("--binary", default=os.environ.get("PIXDEX_BIN", "target/release/pixdex"))
    ap.add_argument("--weights", default="models/efficientnet-lite0.pth")
    ap.add_argument("--warm", type=float, default=20)
    ap.add_argument("--window", type=float, default=60)
    a = ap.parse_args()
    rows = [(n, rate(a.binary, n, 1000 if n >= 1000 else 1, os.path.abspath(a.weights), a.warm, a.window)) for n in a.sizes]
    print("| catalog (assets = pending jobs) | images/s indexed | vs the first |")
    print("|---|---|---|")
    for n, r in rows:
        print(f"| {n:,} | {r:.1f} | {r / rows[0][1]:.2f}× |")


if __name__ == "__main__":
    main()
