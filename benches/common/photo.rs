//! Shared by the benches: a camera-like test photo.

/// A `w`×`h` JPEG (quality 88) of gradients plus mild texture: it compresses like a photo rather
/// than like flat colour.
pub fn photo_like(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 28;
        image::Rgb([
            ((x * 255 / w) as u8).wrapping_add(t as u8),
            ((y * 255 / h) as u8).wrapping_add(t as u8),
            (((x + y) * 255 / (w + h)) as u8).wrapping_sub(t as u8),
        ])
    });
    let mut out = Vec::new();
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88)).unwrap();
    out
}
