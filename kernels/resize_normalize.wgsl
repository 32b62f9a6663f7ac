// Resize + center-crop + normalize, one invocation per output pixel (all three channels).
//
// Geometry (identical to `cpu_resize_normalize` in src/embed/preprocess.rs, which uses
// fast_image_resize `Convolution(Bilinear)` with a crop box):
//   the crop box is the centered square of side s = min(width, height) (left/top may be
//   fractional); it is resampled to OUT x OUT with a triangle filter whose support is
//   max(s / OUT, 1) source pixels on each side (antialiased when downscaling), weights
//   normalized to sum to 1, taps clipped to the image.
// Output: NCHW f32, (round(px) - 127) / 128.
//
// Bindings (all declared read_write, the layout cubecl gives raw kernels):
//   0: pixels  — every image's packed RGB8 bytes, 4 bytes per u32 little-endian; each image
//                starts on a word boundary.
//   1: table   — [0] = image count, then 8 words per image from word 4:
//                word offset, width, height, (unused), crop left (f32 bits),
//                crop top (f32 bits), crop side (f32 bits), (unused).
//   2: out     — n * 3 * OUT * OUT f32.
// Dispatch: (ceil(OUT/16), ceil(OUT/16), n) workgroups of 16x16.

@group(0) @binding(0) var<storage, read_write> pixels: array<u32>;
@group(0) @binding(1) var<storage, read_write> table: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const OUT: u32 = 224u;

fn byte_at(word_offset: u32, b: u32) -> f32 {
    let word = pixels[word_offset + (b >> 2u)];
    return f32((word >> ((b & 3u) * 8u)) & 0xFFu);
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ox = gid.x;
    let oy = gid.y;
    let img = gid.z;
    if (ox >= OUT || oy >= OUT || img >= table[0]) {
        return;
    }
    let e = 4u + img * 8u;
    let offset = table[e];
    let w = table[e + 1u];
    let h = table[e + 2u];
    let left = bitcast<f32>(table[e + 4u]);
    let top = bitcast<f32>(table[e + 5u]);
    let side = bitcast<f32>(table[e + 6u]);

    let scale = side / f32(OUT);
    let support = max(scale, 1.0);
    let inv = 1.0 / support;

    // Horizontal taps.
    let cx = left + (f32(ox) + 0.5) * scale;
    let x0 = u32(max(floor(cx - support), 0.0));
    let x1 = u32(min(ceil(cx + support), f32(w)));
    var sx = 0.0;
    for (var x = x0; x < x1; x = x + 1u) {
        sx = sx + max(0.0, 1.0 - abs(f32(x) + 0.5 - cx) * inv);
    }
    // Vertical taps.
    let cy = top + (f32(oy) + 0.5) * scale;
    let y0 = u32(max(floor(cy - support), 0.0));
    let y1 = u32(min(ceil(cy + support), f32(h)));
    var sy = 0.0;
    for (var y = y0; y < y1; y = y + 1u) {
        sy = sy + max(0.0, 1.0 - abs(f32(y) + 0.5 - cy) * inv);
    }

    var acc = vec3<f32>(0.0, 0.0, 0.0);
    for (var y = y0; y < y1; y = y + 1u) {
        let wy = max(0.0, 1.0 - abs(f32(y) + 0.5 - cy) * inv);
        if (wy == 0.0) {
            continue;
        }
        var row = vec3<f32>(0.0, 0.0, 0.0);
        for (var x = x0; x < x1; x = x + 1u) {
            let wx = max(0.0, 1.0 - abs(f32(x) + 0.5 - cx) * inv);
            let b = (y * w + x) * 3u;
            let px = vec3<f32>(byte_at(offset, b), byte_at(offset, b + 1u), byte_at(offset, b + 2u));
            row = row + wx * px;
        }
        acc = acc + wy * row;
    }
    var norm = 1.0;
    if (sx * sy > 0.0) {
        norm = 1.0 / (sx * sy);
    }
    let v = clamp(floor(acc * norm + vec3<f32>(0.5)), vec3<f32>(0.0), vec3<f32>(255.0));
    let n = (v - vec3<f32>(127.0)) / 128.0;

    let plane = OUT * OUT;
    let base = img * 3u * plane + oy * OUT + ox;
    out[base] = n.x;
    out[base + plane] = n.y;
    out[base + 2u * plane] = n.z;
}
