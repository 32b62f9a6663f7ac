#!/usr/bin/env python3
"""Generate the deterministic benchmark corpus (same bytes on every run with the same versions).

  OUTDIR/jpeg/img-NN.jpg  48 camera-like 12 MP JPEGs: 4000x3000, quality 90, 4:2:0, baseline
  OUTDIR/png/img-NN.png   48 photo-like 640x480 PNGs
  OUTDIR/noisy/img-NN.jpg (--kinds noisy) 48 harsher camera-like 12 MP JPEGs made from the real
                          photos in samples/ (scripts/fetch-samples): a random 4:3 crop, flip and
                          exposure/white balance, upscaled to 4000x3000, then sensor-like noise
                          (signal-dependent luma grain, coarser chroma blotches, per-row banding)
                          at quality 90, 4:2:0 — ~2x the bytes of jpeg/ and far less smooth, like
                          a phone photo at indoor ISO

Content is photo-like rather than synthetic-looking: a sky/ground gradient with soft lighting,
a handful of shaded shapes with blurred (optics-like) edges, mid-frequency texture and mild sensor
noise, so JPEG sizes land where a phone camera's do (a few MB), unlike flat colour or pure noise.
Files that already exist are skipped.

Usage: corpus.py OUTDIR [--count 48] [--kinds jpeg,png] [--samples DIR]
"""
import argparse
import pathlib
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED = 20240611


def _smooth_noise(rng, h, w, cells, amp):
    """Value noise: a (cells x cells*w/h) grid of random values, bicubic-upsampled to h x w."""
    ch = max(2, cells)
    cw = max(2, int(round(cells * w / h)))
    g = rng.standard_normal((ch, cw), dtype=np.float32)
    im = Image.fromarray(g, mode="F").resize((w, h), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) * amp


def scene(rng, w, h, noise_sigma):
    """One photo-like RGB image, uint8 HxWx3."""
    # Build the scene at 1/4 resolution, then upsample (soft edges, like real optics).
    lw, lh = max(w // 4, 64), max(h // 4, 48)
    y = np.linspace(0.0, 1.0, lh, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, lw, dtype=np.float32)[None, :, None]

    sky_top = rng.uniform([40, 90, 150], [140, 170, 245]).astype(np.float32)
    sky_bot = rng.uniform([150, 170, 190], [235, 225, 250]).astype(np.float32)
    gnd_top = rng.uniform([60, 70, 30], [170, 150, 110]).astype(np.float32)
    gnd_bot = rng.uniform([20, 25, 10], [110, 100, 80]).astype(np.float32)
    horizon = rng.uniform(0.3, 0.65) + 0.08 * np.sin(x * rng.uniform(2, 7) + rng.uniform(0, 6))
    t_sky = np.clip(y / horizon, 0, 1)
    t_gnd = np.clip((y - horizon) / (1 - horizon), 0, 1)
    sky = sky_top + (sky_bot - sky_top) * t_sky
    gnd = gnd_top + (gnd_bot - gnd_top) * t_gnd
    blend = 1.0 / (1.0 + np.exp(-(y - horizon) * 120.0))        # soft horizon line
    img = sky * (1 - blend) + gnd * blend

    # Shaded shapes (buildings, trees, objects): flat colours drawn with PIL, shaded below.
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(base)
    for _ in range(int(rng.integers(6, 14))):
        col = tuple(int(c) for c in rng.integers(10, 245, 3))
        cx, cy = rng.uniform(0, lw), rng.uniform(0.25 * lh, lh)
        rx, ry = rng.uniform(0.03, 0.25) * lw, rng.uniform(0.03, 0.3) * lh
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=col)
        elif kind == 1:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=col)
        else:
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = [(float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))) for a in ang]
            draw.polygon(pts, fill=col)
    base = base.filter(ImageFilter.GaussianBlur(0.8))
    img = np.asarray(base, dtype=np.float32)

    # Lighting: a broad gradient and a vignette, so every surface is shaded, not flat.
    lx, ly = rng.uniform(-0.5, 1.5), rng.uniform(-0.5, 0.5)
    light = 1.0 - 0.35 * np.sqrt((x - lx) ** 2 + (y - ly) ** 2)
    vignette = 1.0 - 0.25 * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2
    img *= np.clip(light * vignette, 0.3, 1.2)

    # Mid-frequency texture (foliage, fabric, clouds), stronger on the ground.
    tex = (_smooth_noise(rng, lh, lw, lh // 6, 10.0) + _smooth_noise(rng, lh, lw, lh // 2, 6.0))
    img += tex[:, :, None] * (0.4 + 0.6 * blend)
    img = np.clip(img, 0, 255).astype(np.uint8)

    # Upsample to full size, then fine detail + mild sensor noise at full resolution.
    full = Image.fromarray(img).resize((w, h), Image.BICUBIC)
    out = np.asarray(full, dtype=np.float32)
    fine = _smooth_noise(rng, h, w, h // 6, 3.0)
    luma = rng.standard_normal((h, w, 1), dtype=np.float32) * noise_sigma
    chroma = rng.standard_normal((h, w, 3), dtype=np.float32) * (noise_sigma * 0.35)
    out += fine[:, :, None] + luma + chroma
    return np.clip(out, 0, 255).astype(np.uint8)


def noisy(rng, src, w, h):
    """A real photo made into a noisy 12 MP camera frame, uint8 HxWx3."""
    sw, sh = src.size
    # A random 4:3 crop of 70-100 % of the largest 4:3 box, flipped half the time.
    side = rng.uniform(0.7, 1.0)
    cw = min(sw, sh * 4 / 3) * side
    ch = cw * 3 / 4
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    im = src.resize((w, h), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(im, dtype=np.float32)
    a *= rng.uniform(0.85, 1.15) * rng.uniform(0.94, 1.06, 3).astype(np.float32)  # exposure, white balance
    # Sensor noise: shot noise grows with the signal (sigma 3..8 in u8 units), luma grain per pixel,
    # chroma noise in 2x2 blotches, and a little per-row banding (readout).
    luma = np.sqrt(np.clip(a.mean(axis=2, keepdims=True), 0, 255) / 255.0) * 5.0 + 3.0
    a += rng.standard_normal((h, w, 1), dtype=np.float32) * luma
    chroma = rng.standard_normal((h // 2, w // 2, 3), dtype=np.float32) * 3.0
    a += np.repeat(np.repeat(chroma, 2, axis=0), 2, axis=1)
    a += rng.standard_normal((h, 1, 1), dtype=np.float32) * 0.8
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def sources(samples):
    """The real photos of samples/, RGB (the grayscale one as RGB)."""
    files = sorted(p for p in pathlib.Path(samples).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        sys.exit(f"corpus: no photos in {samples} (run scripts/fetch-samples)")
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def write(path, arr, fmt):
    tmp = path.with_name(path.name + ".tmp")
    im = Image.fromarray(arr)
    if fmt == "jpeg":
        im.save(tmp, "JPEG", quality=90, subsampling=2, progressive=False, optimize=False)
    else:
        im.save(tmp, "PNG")
    tmp.replace(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--kinds", default="jpeg,png", help="comma-separated: jpeg, png, noisy")
    ap.add_argument("--samples", default=str(pathlib.Path(__file__).resolve().parents[2] / "samples"))
    args = ap.parse_args()
    root = pathlib.Path(args.outdir)
    specs = {"jpeg": ("jpeg", "jpg", 4000, 3000, 3.5), "png": ("png", "png", 640, 480, 2.0),
             "noisy": ("jpeg", "jpg", 4000, 3000, None)}
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in specs:
            sys.exit(f"corpus: unknown kind {k!r} (jpeg, png, noisy)")
    photos = None
    for kind in kinds:
        fmt, ext, w, h, sigma = specs[kind]
        d = root / kind
        d.mkdir(parents=True, exist_ok=True)
        made, total, t0 = 0, 0, time.perf_counter()
        for i in range(args.count):
            p = d / f"img-{i:02d}.{ext}"
            if not p.exists():
                if kind == "noisy":
                    photos = photos or sources(args.samples)
                    rng = np.random.default_rng([SEED, i, 2])
                    write(p, noisy(rng, photos[i % len(photos)], w, h), fmt)
                else:
                    rng = np.random.default_rng([SEED, i, 0 if fmt == "jpeg" else 1])
                    write(p, scene(rng, w, h, sigma), fmt)
                made += 1
                print(f"corpus: {p} {p.stat().st_size / 1e6:.2f} MB", file=sys.stderr)
            total += p.stat().st_size
        print(f"corpus: {d}: {args.count} files ({made} new, {time.perf_counter() - t0:.1f}s), "
              f"avg {total / args.count / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
