#!/usr/bin/env python3
"""Markdown tables (and the issue's targets) from benches/compare's results.jsonl.

Usage: table.py out/results.jsonl
"""
import json
import os
import sys

ROWS = [("decode_img_s", "decode"), ("model_img_s", "model"), ("end_to_end_img_s", "end-to-end"),
        ("rss_mb", "peak RSS (MB)")]


def fmt(v):
    return "—" if v is None else f"{v:.1f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    if not rows:
        sys.exit(f"table: no results in {sys.argv[1]} (CLIP runs on the jpeg and noisy corpora only)")
    for r in rows:
        r.setdefault("model", "effnet")
        r["corpus"] = os.path.basename(os.path.normpath(r.get("corpus") or ""))
    by = {(r["model"], r["side"], r["corpus"]): r for r in rows}
    meta = rows[0]
    print(f"{meta['images']} images per corpus, {meta['threads']} threads, batch {meta['batch']}\n")
    targets = []

    eff = [r for r in rows if r["model"] == "effnet"]
    if eff:
        print("EfficientNet-Lite0: pixdex vs PIL draft + onnxruntime\n")
        print("| corpus | row | pixdex img/s | python img/s | pixdex / python |")
        print("|---|---|---:|---:|---:|")
        for c in dict.fromkeys(r["corpus"] for r in eff):
            px, pyr = by.get(("effnet", "pixdex", c), {}), by.get(("effnet", "python", c), {})
            for key, label in ROWS:
                print(f"| {c} | {label} | {fmt(px.get(key))} | {fmt(pyr.get(key))} | {ratio(px.get(key), pyr.get(key))} |")
            a, b = px.get("end_to_end_img_s"), pyr.get("end_to_end_img_s")
            if a and b:
                targets.append(f"EfficientNet end to end on {c} >= 1.05x PIL draft + onnxruntime: "
                               f"{'met' if a / b >= 1.05 else 'NOT met'} ({a / b:.2f}x)")
        print()

    clip = [r for r in rows if r["model"] == "clip"]
    if clip:
        print("CLIP ViT-B/32: pixdex vs (b) open_clip + torch (PIL full decode, bicubic) "
              "vs (c) PIL draft + onnxruntime\n")
        print("| corpus | row | pixdex | (b) open_clip + torch | (c) PIL draft + onnxruntime "
              "| pixdex / (b) | pixdex / (c) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for c in dict.fromkeys(r["corpus"] for r in clip):
            px = by.get(("clip", "pixdex", c), {})
            tb, oc = by.get(("clip", "python-torch", c), {}), by.get(("clip", "python-ort", c), {})
            for key, label in ROWS:
                label = "image tower" if key == "model_img_s" else label
                a = px.get(key)
                print(f"| {c} | {label} | {fmt(a)} | {fmt(tb.get(key))} | {fmt(oc.get(key))} "
                      f"| {ratio(a, tb.get(key))} | {ratio(a, oc.get(key))} |")
            if "check_tower_cos" in px:
                print(f"| {c} | agreement (min cosine) | tower vs torch {px['check_tower_cos']:.5f}; "
                      f"end to end vs (b) {px['check_e2e_cos_torch']:.4f}, vs (c) {px['check_e2e_cos_ort']:.4f} | | | | |")
            m, mo = px.get("model_img_s"), oc.get("model_img_s")
            e, eb, ec = px.get("end_to_end_img_s"), tb.get("end_to_end_img_s"), oc.get("end_to_end_img_s")
            if m and mo:
                targets.append(f"CLIP image tower on {c} >= 1.25x onnxruntime: {'met' if m / mo >= 1.25 else 'NOT met'} ({m / mo:.2f}x)")
            if e and ec:
                targets.append(f"CLIP end to end on {c} >= 1.05x (c): {'met' if e / ec >= 1.05 else 'NOT met'} ({e / ec:.2f}x)")
            if e and eb:
                targets.append(f"CLIP end to end on {c} >= 2x (b): {'met' if e / eb >= 2 else 'NOT met'} ({e / eb:.2f}x)")
            if px.get("rss_mb"):
                targets.append(f"CLIP peak RSS on {c} <= 1 GiB: {'met' if px['rss_mb'] <= 1024 else 'NOT met'} ({px['rss_mb']:.0f} MB)")
        print()
    if targets:
        print("Targets (issue 24):\n")
        for t in targets:
            print(f"- {t}")


if __name__ == "__main__":
    main()
