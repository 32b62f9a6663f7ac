#!/usr/bin/env python3
"""Independent numpy forward pass of EfficientNet-Lite0 (no torch, no Burn).

Reads the legacy (pre-1.6) PyTorch .pth with a minimal, restricted unpickler, runs the network in
float64 on a deterministic smooth input and writes the fixtures used by tests/it/embed_model.rs:

  tests/fixtures/effnet-input.bin       f32 LE, 1x3x224x224 NCHW, already normalized
  tests/fixtures/effnet-reference.json  first 16 values, the 16 largest (index, value), sum and
                                        L2 norm of the pooled 1280-d feature (before L2
                                        normalization) and the top-5 logits

Usage: python3 scripts/make-reference.py [WEIGHTS] [OUTDIR]   (needs numpy)
"""
import collections, json, pickle, struct, sys
import numpy as np

# ---------------------------------------------------------------- legacy .pth reader
_DT = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
       "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}

class _StorageType:
    def __init__(self, name):
        self.name = name

def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return (storage, offset, tuple(size), tuple(stride))

class _Unpickler(pickle.Unpickler):
    def find_class(self, mod, name):
        if (mod, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if mod == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if (mod, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {mod}.{name}")

    def persistent_load(self, pid):  # ('storage', type, key, location, numel, ...)
        return (pid[1].name, pid[2])

def load_pth(path):
    with open(path, "rb") as f:
        for _ in range(3):           # magic number, protocol version, sys info
            pickle.load(f)
        meta = _Unpickler(f).load()  # name -> ((storage type, key), offset, size, stride)
        keys = pickle.load(f)
        dtype_of = {s[1]: _DT[s[0]] for (s, *_r) in meta.values()}
        raw = {}
        for k in keys:
            (n,) = struct.unpack("<q", f.read(8))
            dt = np.dtype(dtype_of[k]).newbyteorder("<")
            raw[k] = np.frombuffer(f.read(n * dt.itemsize), dtype=dt)
    out = {}
    for name, ((_, key), off, size, stride) in meta.items():
        a = raw[key]
        out[name] = np.lib.stride_tricks.as_strided(
            a[off:], shape=size, strides=tuple(s * a.itemsize for s in stride)).astype(np.float64)
    return out

# ---------------------------------------------------------------- network
# (repeats, kernel, stride, expand ratio, out channels) per stage, EfficientNet-B0/Lite0 table
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
EPS = 1e-3

def same_pad(x, k, s):
    """TF 'SAME' padding: total = max((ceil(n/s)-1)*s + k - n, 0), extra on bottom/right."""
    n = x.shape[-1]
    total = max((-(-n // s) - 1) * s + k - n, 0)
    lo, hi = total // 2, total - total // 2
    return np.pad(x, ((0, 0), (0, 0), (lo, hi), (lo, hi)))

def conv(x, w, s):
    """Dense conv, x (N,C,H,W), w (O,C,k,k), SAME padding."""
    k = w.shape[-1]
    xp = same_pad(x, k, s)
    N, C, H, W = xp.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros((N, w.shape[0], Ho, Wo))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + s * Ho:s, j:j + s * Wo:s]          # N,C,Ho,Wo
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j], optimize=True)
    return out

def dwconv(x, w, s):
    """Depthwise conv, w (C,1,k,k)."""
    k = w.shape[-1]
    xp = same_pad(x, k, s)
    N, C, H, W = xp.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros((N, C, Ho, Wo))
    for i in range(k):
        for j in range(k):
            out += xp[:, :, i:i + s * Ho:s, j:j + s * Wo:s] * w[None, :, 0, i, j, None, None]
    return out

def bn(x, sd, p):
    g, b, m, v = (sd[f"{p}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    scale = g / np.sqrt(v + EPS)
    return x * scale[None, :, None, None] + (b - m * scale)[None, :, None, None]

relu6 = lambda x: np.clip(x, 0.0, 6.0)

def forward(sd, x):
    x = relu6(bn(conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    idx = 0
    for reps, k, s, e, _cout in STAGES:
        for r in range(reps):
            p = f"_blocks.{idx}"
            stride = s if r == 0 else 1
            inp = x
            if e != 1:
                x = relu6(bn(conv(x, sd[f"{p}._expand_conv.weight"], 1), sd, f"{p}._bn0"))
            w = sd[f"{p}._depthwise_conv.weight"]
            assert w.shape[-1] == k, (p, w.shape)
            x = relu6(bn(dwconv(x, w, stride), sd, f"{p}._bn1"))
            x = bn(conv(x, sd[f"{p}._project_conv.weight"], 1), sd, f"{p}._bn2")
            if stride == 1 and inp.shape == x.shape:
                x = x + inp
            idx += 1
    assert f"_blocks.{idx}._depthwise_conv.weight" not in sd
    x = relu6(bn(conv(x, sd["_conv_head.weight"], 1), sd, "_bn1"))
    pooled = x.mean(axis=(2, 3))                                         # N,1280
    logits = pooled @ sd["_fc.weight"].T + sd["_fc.bias"]
    return pooled, logits

def make_input():
    """Deterministic smooth-ish pattern with edges, already in the (px-127)/128 range."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(224), np.arange(224), indexing="ij")
    px = (127.5 + 80 * np.sin(x / 11.0 + c) * np.cos(y / 17.0 - 0.5 * c)
          + 40 * ((x + 2 * y) % 64 < 32) - 20 * (c == 1))
    px = np.clip(np.round(px), 0, 255)
    return ((px - 127.0) / 128.0).astype(np.float32)[None]

def main():
    weights = sys.argv[1] if len(sys.argv) > 1 else "models/efficientnet-lite0.pth"
    outdir = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures"
    sd = load_pth(weights)
    inp = make_input()
    pooled, logits = forward(sd, inp.astype(np.float64))
    pooled, logits = pooled[0], logits[0]
    top = np.argsort(-logits)[:5]
    with open(f"{outdir}/effnet-input.bin", "wb") as f:
        f.write(inp.astype("<f4").tobytes())
    ref = {
        "input": {"shape": [1, 3, 224, 224], "normalization": "(px - 127) / 128"},
        "pooled_first16": [float(v) for v in pooled[:16]],
        "pooled_sum": float(pooled.sum()),
        "pooled_norm": float(np.linalg.norm(pooled)),
        "pooled_max16": [[int(i), float(pooled[i])] for i in np.argsort(-pooled)[:16]],
        "top5": [{"class_id": int(i), "logit": float(logits[i])} for i in top],
    }
    with open(f"{outdir}/effnet-reference.json", "w") as f:
        json.dump(ref, f, indent=2)
        f.write("\n")
    print(json.dumps(ref["top5"]))

if __name__ == "__main__":
    main()
