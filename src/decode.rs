//! Image decoding for the embedding pipeline.
//!
//! Turns a file (or an uploaded byte buffer) into a small packed RGB8 image ready for the
//! resize + normalize step. No Burn types live here.
//!
//! - The format is sniffed from the magic bytes, never from the extension.
//! - Dimensions are checked against `pipeline.max_megapixels` from the header *before* any
//!   pixel is decoded (decompression bombs are refused instantly).
//! - JPEGs are downscaled in the DCT domain so that the shorter side stays ≥ `target`: a 12 MP
//!   photo is never decoded at full size. libjpeg-turbo (loaded at run time, [`turbo`]) scales
//!   by M/8; `jpeg-decoder` (pure Rust) is the fallback and takes whatever TurboJPEG refuses.
//! - PNG/WebP are decoded by the `image` crate under an allocation limit, then reduced by a
//!   power-of-two box filter with the same rule, so every format hands over a small image.
//! - EXIF orientation is applied to the small image.
//! - Decoder panics are caught and reported as [`DecodeError::Corrupt`].

use std::io::{Cursor, ErrorKind, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

mod budget;
mod turbo;
pub use budget::{Budget, MemoryBudget, Reservation};
pub use turbo::backend as jpeg_backend;

/// Limits applied while decoding (`pipeline.*` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeLimits {
    /// `pipeline.max_megapixels`: refuse images whose header claims more pixels than this.
    pub max_megapixels: f64,
    /// `pipeline.max_file_bytes`: refuse files larger than this.
    pub max_file_bytes: u64,
    /// Side of the model input; decoders keep the shorter side ≥ this when they downscale.
    pub target: u32,
    /// `pipeline.memory_mb`: decoded pixels in flight across every decoder sharing it.
    pub memory: Budget,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_megapixels: 100.0, max_file_bytes: 200 * 1024 * 1024, target: 224, memory: Budget::default() }
    }
}

/// What one PNG/WebP decode may allocate beside its pixels (metadata chunks kept, the ICC
/// profile inflated, row buffers), at most: an eighth of the decode memory budget, between
/// 1 MiB and 16 MiB (16 MiB without a budget). Reserved from the budget with the pixels, and
/// given to the decoder as its allocation limit, so metadata that inflates to hundreds of MB
/// (a "zip bomb" in iCCP/zTXt/iTXt) is refused instead of allocated.
const METADATA_MAX: u64 = 16 << 20;
const METADATA_MIN: u64 = 1 << 20;

impl DecodeLimits {
    /// Bytes one decode may allocate for metadata and working buffers beside its pixels.
    pub fn metadata_allowance(&self) -> u64 {
        match &self.memory.0 {
            Some(b) => (b.total() / 8).clamp(METADATA_MIN, METADATA_MAX),
            None => METADATA_MAX,
        }
    }

    /// Reserve `bytes` of the memory budget for one decode (waiting for room), or refuse an
    /// image that could never fit.
    fn reserve(&self, path: &Path, width: u32, height: u32, bytes: u64) -> Result<Reservation, DecodeError> {
        match &self.memory.0 {
            None => Ok(Reservation::none()),
            Some(b) => b.reserve(bytes).map_err(|total| DecodeError::OverBudget { path: path.to_path_buf(), width, height, bytes, total }),
        }
    }
}

/// A packed RGB8 image (`data.len() == width * height * 3`, rows top to bottom).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// The pixel at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// A decoded (and possibly downscaled, oriented) image.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub image: RgbImage,
    /// Dimensions stored in the file header (before orientation and downscaling).
    pub original_width: u32,
    pub original_height: u32,
    /// `"jpeg"`, `"png"` or `"webp"`.
    pub format: &'static str,
    /// SHA-256 of the file's bytes (hex), for files read from disk.
    pub content_hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{}: the file vanished before it could be read", .path.display())]
    Vanished { path: PathBuf },
    #[error("{}: cannot read the file: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the file is empty (0 bytes)", .path.display())]
    Empty { path: PathBuf },
    #[error(
        "{}: the file is {bytes} bytes, over the limit of {limit} bytes (pipeline.max_file_bytes)",
        .path.display()
    )]
    TooLarge { path: PathBuf, bytes: u64, limit: u64 },
    #[error(
        "{}: the image claims {width}x{height} pixels ({:.1} MP), over the limit of {limit_mp} MP (pipeline.max_megapixels); refused before decoding",
        .path.display(),
        megapixels(.width, .height)
    )]
    Bomb { path: PathBuf, width: u32, height: u32, limit_mp: f64 },
    #[error(
        "{}: decoding this {width}x{height} image needs about {} MB, more than the whole decode memory budget of {} MB (pipeline.memory_mb); raise it, or shrink the image",
        .path.display(), .bytes / 1_000_000, .total / 1_000_000
    )]
    OverBudget { path: PathBuf, width: u32, height: u32, bytes: u64, total: u64 },
    #[error(
        "{}: the image's metadata (ICC profile, text or EXIF chunks) needs more than the {} KB one decode may use beside its pixels under the decode memory budget (pipeline.memory_mb); refused",
        .path.display(), .limit / 1024
    )]
    MetadataTooLarge { path: PathBuf, limit: u64 },
    #[error("{}: the image data is truncated (the file ends before the image does)", .path.display())]
    Truncated { path: PathBuf },
    #[error("{}: unsupported image: {what}", .path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{}: corrupt image: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl crate::error::Classify for DecodeError {
    fn cause(&self) -> crate::error::Cause {
        use crate::error::Cause;
        match self {
            DecodeError::Vanished { .. } => Cause::NotFound,
            DecodeError::Unreadable { source, .. }
                if crate::fault::is_fd_exhaustion(source) || matches!(source.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) =>
            {
                Cause::Transient
            }
            _ => Cause::UserInput,
        }
    }
}

fn megapixels(width: &u32, height: &u32) -> f64 {
    *width as f64 * *height as f64 / 1e6
}

/// Decode the file at `path` for embedding, opening it by name: for files outside the
/// library's rules only (tests, benches). A library file is opened by
/// [`crate::library::Library::open_file`] (check and open in one step) and handed to
/// [`decode_file`].
pub fn decode_for_embedding(path: &Path, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    decode_file(file, path, limits)
}

fn io_error(path: &Path, source: std::io::Error) -> DecodeError {
    if source.kind() == ErrorKind::NotFound {
        DecodeError::Vanished { path: path.to_path_buf() }
    } else {
        DecodeError::Unreadable { path: path.to_path_buf(), source }
    }
}

/// Decode an already open file (`path` names it in messages): the door that opened it decided
/// it may be read.
pub fn decode_file(file: std::fs::File, path: &Path, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    let io_err = |e| io_error(path, e);
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(DecodeError::Unsupported { path: path.to_path_buf(), what: "is a directory, not an image file".into() });
    }
    let len = meta.len();
    if len > limits.max_file_bytes {
        return Err(DecodeError::TooLarge { path: path.to_path_buf(), bytes: len, limit: limits.max_file_bytes });
    }
    // Read at most limit + 1 bytes: a file that grows while we read is still bounded.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limits.max_file_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::TooLarge { path: path.to_path_buf(), bytes: bytes.len() as u64, limit: limits.max_file_bytes });
    }
    let mut decoded = decode_inner(&bytes, path, limits)?;
    decoded.content_hash = Some(sha256_hex(&bytes));
    Ok(decoded)
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Decode an in-memory image (search by upload); `name` is only used in error messages.
pub fn decode_bytes(bytes: &[u8], name: &str, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    let path = Path::new(name);
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::TooLarge { path: path.to_path_buf(), bytes: bytes.len() as u64, limit: limits.max_file_bytes });
    }
    decode_inner(bytes, path, limits)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    Webp,
}

/// The MIME type of an image from its first bytes, by the same sniffing the decoder uses (never
/// from the file name); `None` for anything that is not JPEG, PNG or WebP.
pub fn content_type(head: &[u8]) -> Option<&'static str> {
    match sniff(head) {
        Ok(Format::Jpeg) => Some("image/jpeg"),
        Ok(Format::Png) => Some("image/png"),
        Ok(Format::Webp) => Some("image/webp"),
        Err(_) => None,
    }
}

/// Sniff the container from magic bytes. `Err` carries a description of what it is instead.
fn sniff(bytes: &[u8]) -> Result<Format, String> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    let what = if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "GIF".to_string()
    } else if bytes.starts_with(b"BM") {
        "BMP".to_string()
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "TIFF (or camera raw)".to_string()
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        format!("ISO media ({}: HEIC/AVIF/video?)", String::from_utf8_lossy(&bytes[8..12]))
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("a JPEG start marker without a valid segment after it".into());
    } else {
        let head = &bytes[..bytes.len().min(512)];
        let texty = head.iter().all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7F).contains(&b) || b >= 0x80);
        if texty { "text, not an image".to_string() } else { "unrecognized binary data".to_string() }
    };
    Err(format!("content is {what}; only JPEG, PNG and WebP are supported (the format is read from the content, not the file name)"))
}

fn decode_inner(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty { path: path.to_path_buf() });
    }
    let format = sniff(bytes).map_err(|what| DecodeError::Unsupported { path: path.to_path_buf(), what })?;
    let result = catch_unwind(AssertUnwindSafe(|| match format {
        Format::Jpeg => decode_jpeg(bytes, path, limits),
        Format::Png | Format::Webp => decode_with_image(bytes, format, path, limits),
    }));
    match result {
        Ok(r) => r,
        Err(panic) => {
            Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: format!("the decoder panicked: {}", crate::fault::panic_message(panic.as_ref())) })
        }
    }
}

fn check_bomb(path: &Path, width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    let mp = width as f64 * height as f64 / 1e6;
    if mp > limits.max_megapixels {
        return Err(DecodeError::Bomb { path: path.to_path_buf(), width, height, limit_mp: limits.max_megapixels });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: format!("the header claims a {width}x{height} image") });
    }
    Ok(())
}

// ---------------------------------------------------------------- JPEG

fn jpeg_error(path: &Path, e: jpeg_decoder::Error) -> DecodeError {
    use jpeg_decoder::Error as E;
    match e {
        E::Io(io) if io.kind() == ErrorKind::UnexpectedEof => DecodeError::Truncated { path: path.to_path_buf() },
        E::Io(io) => DecodeError::Corrupt { path: path.to_path_buf(), reason: io.to_string() },
        E::Unsupported(f) => DecodeError::Unsupported { path: path.to_path_buf(), what: format!("JPEG feature {f:?}") },
        other => DecodeError::Corrupt { path: path.to_path_buf(), reason: other.to_string() },
    }
}

fn decode_jpeg(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().map_err(|e| jpeg_error(path, e))?;
    let info = dec.info().ok_or_else(|| DecodeError::Corrupt { path: path.to_path_buf(), reason: "no frame header".into() })?;
    let (ow, oh) = (info.width as u32, info.height as u32);
    check_bomb(path, ow, oh, limits)?;
    // DCT scaling decodes at M/8 of the size (the smallest M keeping the short side ≥ target);
    // lossless JPEGs decode at full size. 3 bytes per pixel out, as much again in working rows.
    let short = ow.min(oh).max(1) as u64;
    let m =
        if info.coding_process == jpeg_decoder::CodingProcess::Lossless { 8 } else { (1..=8u64).find(|m| short * m / 8 >= limits.target as u64).unwrap_or(8) };
    let pixels = (ow as u64 * m / 8 + 1) * (oh as u64 * m / 8 + 1);
    let _reserved = limits.reserve(path, ow, oh, pixels * 6)?;

    // libjpeg-turbo first (lossless JPEGs it cannot read; jpeg-decoder keeps them at full size).
    if info.coding_process != jpeg_decoder::CodingProcess::Lossless {
        match turbo::decode(bytes, limits.target) {
            Ok(t) => {
                // EXIF (APP1) precedes the frame header, so read_info has already seen it.
                let orientation = dec.exif_data().and_then(exif_orientation).unwrap_or(1);
                let image = apply_orientation(RgbImage { width: t.width, height: t.height, data: t.data }, orientation);
                return Ok(Decoded { image, original_width: ow, original_height: oh, format: "jpeg", content_hash: None });
            }
            Err(turbo::Refused::Failed(reason)) => {
                tracing::debug!(path = %path.display(), %reason, "libjpeg-turbo refused the file; decoding with jpeg-decoder");
            }
            Err(turbo::Refused::Unavailable | turbo::Refused::Cmyk) => {}
        }
    }

    // jpeg-decoder picks the strongest reduction for which *either* requested side is reached;
    // asking only for the shorter side keeps the shorter side ≥ target.
    let t = limits.target.min(u16::MAX as u32) as u16;
    let (rw, rh) = if ow <= oh { (t, u16::MAX) } else { (u16::MAX, t) };
    // Lossless JPEGs cannot be scaled; leave them at full size.
    if info.coding_process != jpeg_decoder::CodingProcess::Lossless {
        dec.scale(rw, rh).map_err(|e| jpeg_error(path, e))?;
    }
    let budget = (limits.max_megapixels * 1e6 * 4.0).min(usize::MAX as f64) as usize;
    dec.set_max_decoding_buffer_size(budget.max(1 << 20));
    let pixels = dec.decode().map_err(|e| jpeg_error(path, e))?;
    let info = dec.info().expect("info after decode");
    let (w, h) = (info.width as u32, info.height as u32);
    let n = w as usize * h as usize;
    let data = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => {
            let vals: Vec<u16> = pixels.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
            // Precision is not exposed; infer the bit depth from the largest sample.
            let max = vals.iter().copied().max().unwrap_or(0);
            let bits = (16 - max.leading_zeros()).max(8);
            vals.iter().map(|&v| (v >> (bits - 8)) as u8).flat_map(|l| [l, l, l]).collect()
        }
        jpeg_decoder::PixelFormat::CMYK32 => pixels
            .chunks_exact(4)
            .flat_map(|p| {
                // jpeg-decoder returns inverted samples for Adobe CMYK; same math as `image`.
                let k = 255 - p[3] as u16;
                [0, 1, 2].map(|i| (((255 - p[i] as u16) * k) / 255) as u8)
            })
            .collect(),
    };
    if data.len() != n * 3 {
        return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: format!("decoder returned {} bytes for {w}x{h}", data.len()) });
    }
    let orientation = dec.exif_data().and_then(exif_orientation).unwrap_or(1);
    let image = apply_orientation(RgbImage { width: w, height: h, data }, orientation);
    Ok(Decoded { image, original_width: ow, original_height: oh, format: "jpeg", content_hash: None })
}

/// Read the Orientation tag (0x0112) from IFD0 of a TIFF/EXIF block (starting at the TIFF
/// header, as `jpeg-decoder` returns it). Returns 1..=8 or `None`.
pub(crate) fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let tiff = tiff.strip_prefix(b"Exif\0\0").unwrap_or(tiff);
    let le = match tiff.get(0..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b = tiff.get(o..o + 2)?;
        Some(if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(o..o + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count.min(1000) {
        let e = ifd + 2 + i * 12;
        if u16_at(e)? == 0x0112 {
            let ty = u16_at(e + 2)?;
            let v = match ty {
                3 => u16_at(e + 8)? as u32,        // SHORT
                4 => u32_at(e + 8)?,               // LONG (nonstandard)
                1 | 7 => *tiff.get(e + 8)? as u32, // BYTE/UNDEFINED (nonstandard)
                _ => return None,
            };
            return (1..=8).contains(&v).then_some(v as u8);
        }
    }
    None
}

/// Apply an EXIF orientation (1..=8) so the image displays upright.
pub(crate) fn apply_orientation(img: RgbImage, orientation: u8) -> RgbImage {
    if !(2..=8).contains(&orientation) {
        return img;
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let transposed = orientation >= 5;
    let (ow, oh) = if transposed { (h, w) } else { (w, h) };
    let mut out = vec![0u8; img.data.len()];
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                8 => (w - 1 - y, x),
                _ => unreachable!(),
            };
            let s = (sy * w + sx) * 3;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage { width: ow as u32, height: oh as u32, data: out }
}

// ---------------------------------------------------------------- PNG / WebP

/// `allowance`: the allocation limit the decoder was given (what a limit error refers to).
fn image_error(path: &Path, e: image::ImageError, allowance: u64) -> DecodeError {
    use image::ImageError as E;
    let p = path.to_path_buf();
    match e {
        E::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => DecodeError::Truncated { path: p },
        E::Limits(_) => DecodeError::MetadataTooLarge { path: p, limit: allowance },
        E::Unsupported(u) => DecodeError::Unsupported { path: p, what: u.to_string() },
        other => {
            let reason = other.to_string();
            let lower = reason.to_ascii_lowercase();
            if lower.contains("unexpected end") || lower.contains("eof") || lower.contains("truncat") {
                DecodeError::Truncated { path: p }
            } else {
                DecodeError::Corrupt { path: p, reason }
            }
        }
    }
}

/// Width, height and an upper bound of the decoded bytes per pixel (what `image` hands over:
/// palettes and low bit depths expanded, a tRNS chunk may add alpha, 16 bits kept) from a
/// PNG IHDR, read by hand so a bomb is refused before any decoder allocates anything.
fn png_header(bytes: &[u8]) -> Option<(u32, u32, u64)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    let (depth, color) = (*bytes.get(24)?, *bytes.get(25)?);
    let channels = match color {
        0 | 4 => 2,     // grey (+ alpha from tRNS), grey + alpha
        2 | 3 | 6 => 4, // RGB (+ alpha from tRNS), palette, RGBA
        _ => 4,
    };
    Some((w, h, channels * if depth == 16 { 2 } else { 1 }))
}

/// Every top-level RIFF chunk of a WebP must lie inside the bytes: the decoder would allocate
/// what a chunk header claims (up to 4 GiB) before finding the file too short.
fn webp_chunks_fit(bytes: &[u8]) -> bool {
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let end = pos + 8 + size;
        if end > bytes.len() {
            return false;
        }
        pos = end + (size & 1);
    }
    true
}

fn decode_with_image(bytes: &[u8], format: Format, path: &Path, limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    use image::ImageDecoder;
    let (fmt, name) = match format {
        Format::Png => (image::ImageFormat::Png, "png"),
        Format::Webp => (image::ImageFormat::WebP, "webp"),
        Format::Jpeg => unreachable!(),
    };
    // What the decoder may allocate beside the pixels (metadata, row buffers): reserved from
    // the budget with them, and its allocation limit. The png decoder counts every chunk it
    // keeps and the inflated ICC profile against it; inflating grows a buffer up to twice
    // what it holds, hence half the allowance as the limit. (Text chunks are kept compressed
    // and only inflated on request, which pixdex never makes.)
    let allowance = limits.metadata_allowance();
    let mut reserved = None;
    if format == Format::Png {
        match png_header(bytes) {
            Some((w, h, bpp)) => {
                check_bomb(path, w, h, limits)?;
                // Reserved before the decoder reads any chunk: the pixels (upper bound until
                // the header is read) and the allowance.
                let px = w as u64 * h as u64;
                reserved = Some(limits.reserve(path, w, h, px * bpp + px * 3 + allowance)?);
            }
            None if bytes.len() < 24 => {
                return Err(DecodeError::Truncated { path: path.to_path_buf() });
            }
            None => {
                return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: "PNG without an IHDR chunk first".into() });
            }
        }
    } else if !webp_chunks_fit(bytes) {
        return Err(DecodeError::Truncated { path: path.to_path_buf() });
    }
    let mut img_limits = image::Limits::default();
    img_limits.max_alloc = Some(allowance / 2);
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(img_limits);
    let mut decoder = reader.into_decoder().map_err(|e| image_error(path, e, allowance))?;
    let (ow, oh) = decoder.dimensions();
    check_bomb(path, ow, oh, limits)?;
    // Full-size decode: the decoder's own pixels (RGBA8 … RGBA16) plus the RGB8 copy, and the
    // allowance.
    let need = decoder.total_bytes().saturating_add(ow as u64 * oh as u64 * 3).saturating_add(allowance);
    let _reserved = match reserved {
        Some(mut r) => {
            r.shrink_to(need);
            r
        }
        None => limits.reserve(path, ow, oh, need)?,
    };
    let orientation = decoder.orientation().ok();
    let dynamic = image::DynamicImage::from_decoder(decoder).map_err(|e| image_error(path, e, allowance))?;
    let rgb = dynamic.into_rgb8();
    let (w, h) = rgb.dimensions();
    let img = RgbImage { width: w, height: h, data: rgb.into_raw() };
    let img = box_reduce(img, limits.target);
    let code = match orientation {
        Some(image::metadata::Orientation::FlipHorizontal) => 2,
        Some(image::metadata::Orientation::Rotate180) => 3,
        Some(image::metadata::Orientation::FlipVertical) => 4,
        Some(image::metadata::Orientation::Rotate90FlipH) => 5,
        Some(image::metadata::Orientation::Rotate90) => 6,
        Some(image::metadata::Orientation::Rotate270FlipH) => 7,
        Some(image::metadata::Orientation::Rotate270) => 8,
        _ => 1,
    };
    let image = apply_orientation(img, code);
    Ok(Decoded { image, original_width: ow, original_height: oh, format: name, content_hash: None })
}

/// Reduce by the largest power-of-two factor (≤ 8, like JPEG DCT scaling) that keeps the
/// shorter side ≥ `target`, averaging f×f blocks (partial blocks at the edges average what
/// they cover).
pub(crate) fn box_reduce(img: RgbImage, target: u32) -> RgbImage {
    let short = img.width.min(img.height);
    let mut f = 1u32;
    while f < 8 && short / (f * 2) >= target.max(1) {
        f *= 2;
    }
    if f == 1 {
        return img;
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let fu = f as usize;
    let (ow, oh) = (w.div_ceil(fu), h.div_ceil(fu));
    let mut out = vec![0u8; ow * oh * 3];
    let mut acc = vec![0u32; ow * 3];
    for oy in 0..oh {
        acc.iter_mut().for_each(|a| *a = 0);
        let y0 = oy * fu;
        let y1 = (y0 + fu).min(h);
        for y in y0..y1 {
            let row = &img.data[y * w * 3..(y + 1) * w * 3];
            for x in 0..w {
                let o = (x / fu) * 3;
                acc[o] += row[x * 3] as u32;
                acc[o + 1] += row[x * 3 + 1] as u32;
                acc[o + 2] += row[x * 3 + 2] as u32;
            }
        }
        for ox in 0..ow {
            let cw = ((ox + 1) * fu).min(w) - ox * fu;
            let n = (cw * (y1 - y0)) as u32;
            for c in 0..3 {
                out[(oy * ow + ox) * 3 + c] = ((acc[ox * 3 + c] + n / 2) / n) as u8;
            }
        }
    }
    RgbImage { width: ow as u32, height: oh as u32, data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes() {
        use crate::error::{Cause, Classify};
        for code in [libc::EMFILE, libc::ENFILE] {
            assert_eq!(DecodeError::Unreadable { path: "/a.jpg".into(), source: std::io::Error::from_raw_os_error(code) }.cause(), Cause::Transient);
        }
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(DecodeError::Unreadable { path: "/a.jpg".into(), source: denied }.cause(), Cause::UserInput);
        assert_eq!(DecodeError::Vanished { path: "/a.jpg".into() }.cause(), Cause::NotFound);
    }
    use std::time::Instant;

    fn gradient(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, ((x ^ y) & 0xFF) as u8]))
    }

    fn encode_jpeg(img: &image::RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        img.write_with_encoder(enc).unwrap();
        out
    }

    fn encode_png(img: &image::RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn png_chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = ty.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// Insert an APP1 Exif segment holding a big-endian TIFF with one Orientation entry.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a");
        tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes());
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn decode_jpeg_is_dct_scaled() {
        let src = gradient(4000, 3000);
        let bytes = encode_jpeg(&src, 85);
        let limits = DecodeLimits::default();
        let t = Instant::now();
        let d = decode_bytes(&bytes, "big.jpg", &limits).unwrap();
        let took = t.elapsed();
        assert_eq!((d.original_width, d.original_height), (4000, 3000));
        assert_eq!(d.format, "jpeg");
        let (w, h) = (d.image.width, d.image.height);
        // 1/8 scale: 500x375. Shorter side in [target, 2*target); the longer side keeps the
        // aspect ratio (so it may exceed 2*target for non-square images).
        assert!(w.min(h) >= 224 && w.min(h) < 448, "{w}x{h}");
        assert!(w.max(h) <= 2 * 224 * 4 / 3 + 8, "{w}x{h}");
        assert_eq!((w, h), (500, 375));
        assert_eq!(d.image.data.len(), (w * h * 3) as usize);
        eprintln!("12 MP JPEG decoded to {w}x{h} in {took:?}");
    }

    #[test]
    fn decode_jpeg_panorama_keeps_short_side() {
        let src = gradient(3000, 300);
        let d = decode_bytes(&encode_jpeg(&src, 80), "pano.jpg", &DecodeLimits::default()).unwrap();
        assert!(d.image.height >= 224, "{}x{}", d.image.width, d.image.height);
        // libjpeg-turbo scales by M/8 (6/8 here), jpeg-decoder only by powers of two (none fits).
        let turbo = jpeg_backend() == "libjpeg-turbo";
        assert_eq!((d.image.width, d.image.height), if turbo { (2250, 225) } else { (3000, 300) });
        let src = gradient(600, 2000);
        let d = decode_bytes(&encode_jpeg(&src, 80), "tall.jpg", &DecodeLimits::default()).unwrap();
        assert_eq!((d.image.width, d.image.height), if turbo { (225, 750) } else { (300, 1000) });
    }

    /// CI installs libturbojpeg0 and sets PIXDEX_REQUIRE_TURBOJPEG=1: the fast path must be the
    /// one that runs there, and it must agree with the pure-Rust decoder at the same scale.
    #[test]
    fn libjpeg_turbo_matches_jpeg_decoder() {
        if turbo::backend() != "libjpeg-turbo" {
            assert!(std::env::var_os("PIXDEX_REQUIRE_TURBOJPEG").is_none(), "PIXDEX_REQUIRE_TURBOJPEG is set but libturbojpeg.so.0 did not load");
            eprintln!("SKIPPED: libturbojpeg.so.0 not installed (apt install libturbojpeg0)");
            return;
        }
        let src = image::RgbImage::from_fn(4000, 3000, |x, y| {
            let v = ((x as f32 / 97.0).sin() * 60.0 + (y as f32 / 53.0).cos() * 60.0 + 128.0) as u8;
            image::Rgb([v, (x / 16) as u8, (y / 12) as u8])
        });
        let bytes = encode_jpeg(&src, 90);
        let t = turbo::decode(&bytes, 224).unwrap();
        assert_eq!((t.width, t.height), (500, 375));
        let mut dec = jpeg_decoder::Decoder::new(Cursor::new(&bytes));
        dec.scale(500, 375).unwrap();
        let reference = dec.decode().unwrap();
        assert_eq!(reference.len(), t.data.len());
        let mean = t.data.iter().zip(&reference).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / reference.len() as f64;
        assert!(mean < 1.5, "mean abs difference {mean}");
        // Damaged data is refused (any warning), so the fallback names the fault.
        assert!(matches!(turbo::decode(&bytes[..bytes.len() / 2], 224), Err(turbo::Refused::Failed(_))));
    }

    #[test]
    fn decode_jpeg_small_and_grayscale() {
        let src = gradient(100, 60);
        let d = decode_bytes(&encode_jpeg(&src, 95), "small.jpg", &DecodeLimits::default()).unwrap();
        assert_eq!((d.image.width, d.image.height), (100, 60));
        let px = d.image.pixel(99, 0);
        assert!(px[0] > 230, "{px:?}");
        let gray = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([(x * 4) as u8]));
        let mut out = Vec::new();
        gray.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)).unwrap();
        let d = decode_bytes(&out, "gray.jpg", &DecodeLimits::default()).unwrap();
        assert_eq!(d.image.data.len(), 64 * 64 * 3);
        let p = d.image.pixel(40, 10);
        assert_eq!(p[0], p[1]);
        assert_eq!(p[1], p[2]);
    }

    #[test]
    fn decode_truncated_jpeg() {
        let bytes = encode_jpeg(&gradient(640, 480), 90);
        for cut in [bytes.len() / 2, bytes.len() - 2, 400, 20, 3] {
            let r = decode_bytes(&bytes[..cut], "cut.jpg", &DecodeLimits::default());
            assert!(matches!(r, Err(DecodeError::Truncated { .. }) | Err(DecodeError::Corrupt { .. })), "cut at {cut}: {r:?}");
        }
        let r = decode_bytes(&bytes[..bytes.len() / 2], "cut.jpg", &DecodeLimits::default());
        assert!(matches!(r, Err(DecodeError::Truncated { .. })), "{r:?}");
    }

    #[test]
    fn decode_truncated_png() {
        let bytes = encode_png(&gradient(300, 200));
        let r = decode_bytes(&bytes[..bytes.len() / 2], "cut.png", &DecodeLimits::default());
        assert!(matches!(r, Err(DecodeError::Truncated { .. }) | Err(DecodeError::Corrupt { .. })), "{r:?}");
    }

    #[test]
    fn decode_zero_byte_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.jpg");
        std::fs::write(&p, b"").unwrap();
        let r = decode_for_embedding(&p, &DecodeLimits::default());
        assert!(matches!(r, Err(DecodeError::Empty { .. })), "{r:?}");
        assert!(r.unwrap_err().to_string().contains("empty.jpg"));
    }

    #[test]
    fn decode_missing_file_vanished() {
        let r = decode_for_embedding(Path::new("/nonexistent/pixdex/x.jpg"), &DecodeLimits::default());
        assert!(matches!(r, Err(DecodeError::Vanished { .. })), "{r:?}");
    }

    #[test]
    fn decode_text_named_jpg() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.jpg");
        std::fs::write(&p, "hello, this is not a photo\n").unwrap();
        let err = decode_for_embedding(&p, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("notes.jpg") && msg.contains("text"), "{msg}");
    }

    #[test]
    fn decode_file_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.png");
        std::fs::write(&p, encode_png(&gradient(64, 64))).unwrap();
        let limits = DecodeLimits { max_file_bytes: 100, ..DecodeLimits::default() };
        let err = decode_for_embedding(&p, &limits).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { limit: 100, .. }), "{err:?}");
        assert!(err.to_string().contains("pipeline.max_file_bytes"));
    }

    #[test]
    fn decode_png_bomb_refused_instantly() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        png_chunk(&mut png, b"IHDR", &ihdr);
        // A tiny (invalid-length) IDAT: zlib of a few zero bytes; it never gets decoded.
        png_chunk(&mut png, b"IDAT", &[0x78, 0x9C, 0x63, 0, 0, 0, 1, 0, 1]);
        png_chunk(&mut png, b"IEND", &[]);
        let t = Instant::now();
        let err = decode_bytes(&png, "bomb.png", &DecodeLimits::default()).unwrap_err();
        assert!(t.elapsed().as_millis() < 100, "took {:?}", t.elapsed());
        assert!(matches!(err, DecodeError::Bomb { width: 100_000, height: 100_000, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("bomb.png") && msg.contains("pipeline.max_megapixels"), "{msg}");
    }

    #[test]
    fn decode_jpeg_bomb_by_header() {
        // A real 2000x2000 JPEG (4 MP) with a 1 MP limit: refused from the header.
        let bytes = encode_jpeg(&gradient(2000, 2000), 50);
        let limits = DecodeLimits { max_megapixels: 1.0, ..DecodeLimits::default() };
        let err = decode_bytes(&bytes, "big.jpg", &limits).unwrap_err();
        assert!(matches!(err, DecodeError::Bomb { width: 2000, height: 2000, .. }), "{err:?}");
    }

    #[test]
    fn decode_exif_orientation_6_rotates() {
        // Left half red, right half blue; orientation 6 = rotate 90° clockwise, so the red
        // half ends up on top.
        let src = image::RgbImage::from_fn(64, 32, |x, _| if x < 32 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
        let bytes = with_exif_orientation(&encode_jpeg(&src, 95), 6);
        let d = decode_bytes(&bytes, "rot.jpg", &DecodeLimits::default()).unwrap();
        assert_eq!((d.original_width, d.original_height), (64, 32));
        assert_eq!((d.image.width, d.image.height), (32, 64));
        let top = d.image.pixel(16, 10);
        let bottom = d.image.pixel(16, 54);
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
        // Without the tag nothing moves.
        let d = decode_bytes(&encode_jpeg(&src, 95), "plain.jpg", &DecodeLimits::default()).unwrap();
        assert_eq!((d.image.width, d.image.height), (64, 32));
    }

    #[test]
    fn orientation_transforms_map_corners() {
        // 2x3 image with distinct pixels: value = index.
        let img = RgbImage { width: 2, height: 3, data: (0..6u8).flat_map(|i| [i, 0, 0]).collect() };
        let r = |o| {
            let out = apply_orientation(img.clone(), o);
            (out.width, out.height, out.data.chunks(3).map(|p| p[0]).collect::<Vec<_>>())
        };
        // 0 1
        // 2 3
        // 4 5
        assert_eq!(r(1), (2, 3, vec![0, 1, 2, 3, 4, 5]));
        assert_eq!(r(2), (2, 3, vec![1, 0, 3, 2, 5, 4]));
        assert_eq!(r(3), (2, 3, vec![5, 4, 3, 2, 1, 0]));
        assert_eq!(r(4), (2, 3, vec![4, 5, 2, 3, 0, 1]));
        assert_eq!(r(5), (3, 2, vec![0, 2, 4, 1, 3, 5]));
        assert_eq!(r(6), (3, 2, vec![4, 2, 0, 5, 3, 1]));
        assert_eq!(r(7), (3, 2, vec![5, 3, 1, 4, 2, 0]));
        assert_eq!(r(8), (3, 2, vec![1, 3, 5, 0, 2, 4]));
    }

    #[test]
    fn decode_png_and_webp() {
        let src = gradient(1000, 800);
        let d = decode_bytes(&encode_png(&src), "a.png", &DecodeLimits::default()).unwrap();
        assert_eq!(d.format, "png");
        assert_eq!((d.original_width, d.original_height), (1000, 800));
        // box-reduced by 2 (800/4 = 200 < 224)
        assert_eq!((d.image.width, d.image.height), (500, 400));
        let mut webp = Vec::new();
        image::DynamicImage::ImageRgb8(gradient(300, 200)).write_to(&mut Cursor::new(&mut webp), image::ImageFormat::WebP).unwrap();
        let d = decode_bytes(&webp, "a.webp", &DecodeLimits::default()).unwrap();
        assert_eq!(d.format, "webp");
        assert_eq!((d.image.width, d.image.height), (300, 200));
        assert_eq!(d.image.pixel(10, 10), { gradient(300, 200).get_pixel(10, 10).0 });
    }

    #[test]
    fn exif_parser_handles_little_endian_and_garbage() {
        let mut tiff = b"II\x2a\0".to_vec();
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&0x010Fu16.to_le_bytes()); // Make
        tiff.extend_from_slice(&[2, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&8u16.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        assert_eq!(exif_orientation(&tiff), Some(8));
        assert_eq!(exif_orientation(&tiff[..20]), None);
        assert_eq!(exif_orientation(b"garbage"), None);
        let mut bad = b"MM\0\x2a".to_vec();
        bad.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert_eq!(exif_orientation(&bad), None);
    }

    #[test]
    fn memory_budget_bounds_decodes_in_flight() {
        let img = image::RgbImage::from_fn(1000, 800, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        // A full-size PNG decode holds its RGB8 output and the RGB copy: ~4.8 MB here.
        let tight = DecodeLimits { memory: Budget(Some(MemoryBudget::new(4_000_000))), ..DecodeLimits::default() };
        let e = decode_bytes(&png, "big.png", &tight).unwrap_err();
        assert!(matches!(e, DecodeError::OverBudget { .. }), "{e:?}");
        assert!(e.to_string().contains("pipeline.memory_mb") && e.to_string().contains("1000x800"), "{e}");
        // Room for two at once (4.8 MB of pixels and the 2 MB metadata allowance each): four
        // decoders take turns, never over the budget.
        let b = MemoryBudget::new(16_000_000);
        let limits = DecodeLimits { memory: Budget(Some(b.clone())), ..DecodeLimits::default() };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..3 {
                        decode_bytes(&png, "big.png", &limits).unwrap();
                    }
                });
            }
        });
        assert!(b.peak() <= 16_000_000 && b.peak() >= 4_800_000, "peak {}", b.peak());
    }

    /// A zlib stream of `n` zero bytes (a few hundred KB for hundreds of MB).
    fn zlib_zeros(n: usize) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(block.len());
            z.write_all(&block[..k]).unwrap();
            left -= k;
        }
        z.finish().unwrap()
    }

    /// `png` with `chunks` inserted right after its IHDR.
    fn with_chunks(png: &[u8], chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut out = png[..33].to_vec();
        for (ty, data) in chunks {
            png_chunk(&mut out, ty, data);
        }
        out.extend_from_slice(&png[33..]);
        out
    }

    /// Bytes nothing compresses (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_F491u32;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as u8
            })
            .collect()
    }

    /// Metadata never costs more than the allowance reserved from the budget: a 64x64 PNG whose
    /// ICC profile inflates to 128 MiB decodes (the png decoder inflates at most the allowance,
    /// then drops the profile), as do zTXt/iTXt chunks of the same size (kept compressed, never
    /// inflated); metadata whose bytes alone exceed the allowance is refused with the reason
    /// (file, limit, config key), through bytes and through a file alike.
    #[test]
    fn decode_png_metadata_stays_within_the_budget() {
        let base = encode_png(&gradient(64, 64));
        let z = zlib_zeros(128 << 20);
        assert!(z.len() < 1 << 20, "{} bytes", z.len());
        let mut iccp = b"bomb\0\0".to_vec();
        iccp.extend_from_slice(&z);
        let mut ztxt = b"Comment\0\0".to_vec();
        ztxt.extend_from_slice(&z);
        let mut itxt = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
        itxt.extend_from_slice(&z);
        let budget = MemoryBudget::new(16 << 20);
        let limits = DecodeLimits { memory: Budget(Some(budget.clone())), ..DecodeLimits::default() };
        assert_eq!(limits.metadata_allowance(), 2 << 20);
        assert_eq!(DecodeLimits::default().metadata_allowance(), 16 << 20);

        let bomb = with_chunks(&base, &[(b"iCCP", iccp), (b"zTXt", ztxt), (b"iTXt", itxt)]);
        for l in [&limits, &DecodeLimits::default()] {
            let t = Instant::now();
            let d = decode_bytes(&bomb, "bomb.png", l).unwrap();
            assert_eq!((d.image.width, d.image.height), (64, 64));
            assert_eq!(d.image.pixel(10, 10), gradient(64, 64).get_pixel(10, 10).0);
            assert!(t.elapsed().as_millis() < 2000, "took {:?}", t.elapsed());
        }

        let mut text = b"Comment\0".to_vec();
        text.extend_from_slice(&noise(3 << 20));
        let fat = with_chunks(&base, &[(b"tEXt", text)]);
        let e = decode_bytes(&fat, "fat.png", &limits).unwrap_err();
        assert!(matches!(e, DecodeError::MetadataTooLarge { limit, .. } if limit == 2 << 20), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("fat.png") && msg.contains("pipeline.memory_mb") && msg.contains("2048 KB"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fat.png"), &fat).unwrap();
        let e = decode_for_embedding(&dir.path().join("fat.png"), &limits).unwrap_err();
        assert!(matches!(e, DecodeError::MetadataTooLarge { .. }), "{e:?}");
        // A larger budget has room for it.
        assert!(decode_bytes(&fat, "fat.png", &DecodeLimits::default()).is_ok());
        assert!(budget.peak() <= 16 << 20, "peak {}", budget.peak());
    }

    /// A WebP whose chunk header claims more than the file holds is refused before the decoder
    /// allocates what it claims.
    #[test]
    fn decode_webp_chunk_claiming_too_much_is_refused() {
        let mut webp = Vec::new();
        image::DynamicImage::ImageRgb8(gradient(32, 32)).write_to(&mut Cursor::new(&mut webp), image::ImageFormat::WebP).unwrap();
        let mut bad = webp.clone();
        bad.extend_from_slice(b"EXIF");
        bad.extend_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        let riff = (bad.len() - 8) as u32;
        bad[4..8].copy_from_slice(&riff.to_le_bytes());
        assert!(matches!(decode_bytes(&bad, "x.webp", &DecodeLimits::default()), Err(DecodeError::Truncated { .. })));
        assert!(decode_bytes(&webp, "ok.webp", &DecodeLimits::default()).is_ok());
    }
}
