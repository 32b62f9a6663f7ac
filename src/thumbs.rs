//! Thumbnails for the web apps: 256 px JPEGs made from a DCT-scaled decode (a 12 MP JPEG is
//! never decoded at full size), cached under `<data_dir>/thumbs`. The cache key holds the file's
//! size and mtime, so a changed file gets a new thumbnail (and a new ETag); the stale one is
//! removed when the new one is written. Blocking code: callers run it on `spawn_blocking`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::decode::{DecodeError, DecodeLimits, decode_file};

/// The longer side of a thumbnail.
pub const SIZE: u32 = 256;
const QUALITY: u8 = 82;

/// A thumbnail ready to send.
pub struct Thumb {
    pub bytes: Vec<u8>,
    /// Strong validator: asset id, file size and mtime.
    pub etag: String,
    /// Served from the cache (no decode).
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    /// The image cannot be decoded: the reason names the file and the cause.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("cannot write the thumbnail cache under {dir}: {source}")]
    Cache { dir: String, source: std::io::Error },
}

#[derive(Clone)]
pub struct Thumbs {
    dir: PathBuf,
    limits: DecodeLimits,
}

impl Thumbs {
    pub fn new(data_dir: &Path, limits: &DecodeLimits) -> Thumbs {
        Thumbs { dir: data_dir.join("thumbs"), limits: DecodeLimits { target: SIZE, ..limits.clone() } }
    }

    fn shard(&self, asset_id: i64) -> PathBuf {
        self.dir.join(format!("{:02x}", asset_id.rem_euclid(256)))
    }

    /// The thumbnail of asset `asset_id` whose file is `file` (opened by
    /// [`crate::library::Library::open_file`]; `path` names it in messages) with the current
    /// `size` and `mtime_ms` (of the open file).
    pub fn get(&self, asset_id: i64, file: std::fs::File, path: &Path, size: i64, mtime_ms: i64) -> Result<Thumb, ThumbError> {
        let etag = format!("\"{asset_id}-{size}-{mtime_ms}\"");
        let shard = self.shard(asset_id);
        let cached = shard.join(format!("{asset_id}-{size}-{mtime_ms}.jpg"));
        match std::fs::read(&cached) {
            Ok(bytes) if !bytes.is_empty() => return Ok(Thumb { bytes, etag, cached: true }),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %cached.display(), error = %e, "thumbnail cache unreadable; regenerating"),
        }
        let bytes = render(file, path, &self.limits)?;
        // The cache is an optimisation: a full or read-only data disk serves the thumbnail
        // uncached (and says so in the log) instead of failing the request.
        if let Err(e) = self.store(asset_id, &shard, &cached, &bytes) {
            tracing::warn!(error = %e, "thumbnail served uncached");
        }
        Ok(Thumb { bytes, etag, cached: false })
    }

    /// Drop this asset's older thumbnails (the file changed), then write atomically through a
    /// temporary name of this render's own (two renders of one thumbnail never share one).
    fn store(&self, asset_id: i64, shard: &Path, cached: &Path, bytes: &[u8]) -> Result<(), ThumbError> {
        static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let cache_err = |source| ThumbError::Cache { dir: self.dir.display().to_string(), source };
        std::fs::create_dir_all(shard).map_err(cache_err)?;
        if let Ok(rd) = std::fs::read_dir(shard) {
            let prefix = format!("{asset_id}-");
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = shard.join(format!(".{asset_id}-{}-{n}.tmp", std::process::id()));
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, cached));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(cache_err)
    }
}

/// Decode (DCT-scaled) the open `file` (`path` names it in messages), fit inside SIZE×SIZE,
/// encode as JPEG.
pub fn render(file: std::fs::File, path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, DecodeError> {
    let d = decode_file(file, path, &DecodeLimits { target: SIZE, ..limits.clone() })?;
    let (w, h) = (d.image.width, d.image.height);
    let scale = (SIZE as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let img = image::RgbImage::from_raw(w, h, d.image.data)
        .ok_or_else(|| DecodeError::Corrupt { path: path.to_path_buf(), reason: "decoded buffer has the wrong size".into() })?;
    let small = if (tw, th) == (w, h) { img } else { image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle) };
    let mut out = Vec::with_capacity(16 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&small)
        .map_err(|e| DecodeError::Corrupt { path: path.to_path_buf(), reason: format!("thumbnail encoding failed: {e}") })?;
    Ok(out)
}

/// The placeholder shown for an image that cannot be decoded (SVG, no data from the file).
pub fn placeholder_svg(reason: &str) -> String {
    let esc: String = reason
        .chars()
        .take(120)
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"256\" height=\"256\" viewBox=\"0 0 256 256\" role=\"img\" aria-label=\"image unavailable\">\
<rect width=\"256\" height=\"256\" fill=\"#e5e7eb\"/><path d=\"M88 168l32-40 24 28 16-20 24 32z\" fill=\"#9ca3af\"/>\
<text x=\"128\" y=\"212\" font-family=\"sans-serif\" font-size=\"13\" text-anchor=\"middle\" fill=\"#4b5563\">image unavailable</text>\
<title>{esc}</title></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_fits_and_is_cached_until_the_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("wide.png");
        image::RgbImage::from_fn(1200, 600, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 80])).save(&src).unwrap();
        let t = Thumbs::new(d.path(), &DecodeLimits::default());
        let open = || std::fs::File::open(&src).unwrap();
        let a = t.get(7, open(), &src, 100, 1).unwrap();
        assert!(!a.cached);
        let img = image::load_from_memory(&a.bytes).unwrap();
        assert_eq!((img.width(), img.height()), (256, 128));
        let b = t.get(7, open(), &src, 100, 1).unwrap();
        assert!(b.cached && b.etag == a.etag);
        let c = t.get(7, open(), &src, 100, 2).unwrap();
        assert!(!c.cached && c.etag != a.etag);
        // Only the current thumbnail of asset 7 stays.
        assert_eq!(std::fs::read_dir(t.shard(7)).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_file_is_a_decode_error() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("bad.jpg");
        std::fs::write(&src, b"not an image at all").unwrap();
        let e = Thumbs::new(d.path(), &DecodeLimits::default()).get(1, std::fs::File::open(&src).unwrap(), &src, 1, 1).err().unwrap();
        assert!(e.to_string().contains("bad.jpg"), "{e}");
        assert!(placeholder_svg("a <b>").contains("a &lt;b&gt;"));
    }
}
