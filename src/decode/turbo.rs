//! libjpeg-turbo's TurboJPEG API, loaded at run time from the system's `libturbojpeg.so.0`
//! (Debian/Ubuntu package `libturbojpeg0`; Fedora `turbojpeg`).
//!
//! Why: libjpeg-turbo's SIMD Huffman/IDCT path with DCT-domain scaling (M/8) decodes a 12 MP
//! photo straight to ~500×375 several times faster than `jpeg-decoder` (see `benches/decode.rs`).
//! Why loaded, not linked: the build needs no C toolchain or `-dev` package and a machine without
//! the library still decodes every JPEG — through `jpeg-decoder` (the fallback in `decode.rs`),
//! which also takes every file TurboJPEG refuses (CMYK/YCCK, lossless, 12-bit, damaged data), so
//! the error a user sees is the same whichever decoder is present.
//!
//! Only the 2.x ABI is used (`tjInitDecompress`, `tjDecompressHeader3`, `tjDecompress2`,
//! `tjGetErrorStr2`, `tjDestroy`), which libjpeg-turbo 3.x still exports.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_uchar, c_ulong, c_void};
use std::sync::OnceLock;

type Handle = *mut c_void;

/// Function pointers resolved once; the library is leaked so they stay valid for the process.
struct Api {
    init_decompress: unsafe extern "C" fn() -> Handle,
    decompress_header3: unsafe extern "C" fn(Handle, *const c_uchar, c_ulong, *mut c_int, *mut c_int, *mut c_int, *mut c_int) -> c_int,
    decompress2: unsafe extern "C" fn(Handle, *const c_uchar, c_ulong, *mut c_uchar, c_int, c_int, c_int, c_int, c_int) -> c_int,
    error_str2: unsafe extern "C" fn(Handle) -> *mut c_char,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
}

const TJPF_RGB: c_int = 0;
/// `TJFLAG_ACCURATEDCT`: the exact integer IDCT (libjpeg's default, what Pillow uses).
const TJFLAG_ACCURATEDCT: c_int = 4096;
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;

/// Library names tried in order.
const NAMES: &[&str] = &["libturbojpeg.so.0", "libturbojpeg.so", "libturbojpeg.0.dylib"];

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        if std::env::var("PIXDEX_TURBOJPEG").is_ok_and(|v| v == "off" || v == "0") {
            tracing::info!("PIXDEX_TURBOJPEG=off: JPEGs decode with jpeg-decoder");
            return None;
        }
        for name in NAMES {
            // SAFETY: loading libturbojpeg runs no initialisers with preconditions of ours.
            let Ok(lib) = (unsafe { libloading::Library::new(name) }) else { continue };
            let lib: &'static libloading::Library = Box::leak(Box::new(lib));
            // SAFETY: the symbol types match turbojpeg.h (2.x ABI, unchanged in 3.x).
            let api = unsafe {
                (|| -> Result<Api, libloading::Error> {
                    Ok(Api {
                        init_decompress: *lib.get(b"tjInitDecompress\0")?,
                        decompress_header3: *lib.get(b"tjDecompressHeader3\0")?,
                        decompress2: *lib.get(b"tjDecompress2\0")?,
                        error_str2: *lib.get(b"tjGetErrorStr2\0")?,
                        destroy: *lib.get(b"tjDestroy\0")?,
                    })
                })()
            };
            match api {
                Ok(api) => {
                    tracing::info!(library = name, "JPEGs decode with libjpeg-turbo");
                    return Some(api);
                }
                Err(e) => tracing::warn!(library = name, error = %e, "libturbojpeg lacks the 2.x API; trying the next name"),
            }
        }
        tracing::warn!("libturbojpeg.so.0 not found (apt install libturbojpeg0): JPEGs decode with jpeg-decoder, several times slower");
        None
    })
    .as_ref()
}

/// Which JPEG decoder this process uses (for `/health`, benches and logs).
pub fn backend() -> &'static str {
    if api().is_some() { "libjpeg-turbo" } else { "jpeg-decoder" }
}

/// One decompressor per thread, created on first use and destroyed when the thread ends.
struct ThreadHandle(Handle);

impl Drop for ThreadHandle {
    fn drop(&mut self) {
        if let Some(api) = api() {
            // SAFETY: the handle came from tjInitDecompress and is destroyed once.
            unsafe { (api.destroy)(self.0) };
        }
    }
}

thread_local! {
    static HANDLE: RefCell<Option<ThreadHandle>> = const { RefCell::new(None) };
}

/// Why TurboJPEG did not produce an image; the caller falls back to `jpeg-decoder`.
#[derive(Debug)]
pub enum Refused {
    /// No library on this machine (or `PIXDEX_TURBOJPEG=off`).
    Unavailable,
    /// The colour space is CMYK/YCCK: `jpeg-decoder`'s Adobe inversion is the reference.
    Cmyk,
    /// libjpeg-turbo reported an error or a warning (damaged data, unsupported coding).
    Failed(String),
}

/// A decoded JPEG: packed RGB8, `width × height` after DCT scaling.
pub struct Scaled {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// The smallest M/8 scale (M = 1..=8) keeping the shorter side ≥ `target`, as output dimensions
/// computed the way libjpeg does (`ceil(dim · M / 8)`).
pub fn scaled_dims(width: u32, height: u32, target: u32) -> (u32, u32) {
    let short = width.min(height) as u64;
    let m = (1..=8u64).find(|m| (short * m).div_ceil(8) >= target as u64).unwrap_or(8);
    ((width as u64 * m).div_ceil(8) as u32, (height as u64 * m).div_ceil(8) as u32)
}

/// Decode `bytes` (already sniffed as JPEG, dimensions already checked against the bomb limit)
/// to RGB with the shorter side ≥ `target`. Any warning counts as a failure so damaged files take
/// the fallback path and get its precise error.
pub fn decode(bytes: &[u8], target: u32) -> Result<Scaled, Refused> {
    let api = api().ok_or(Refused::Unavailable)?;
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: plain constructor; null means allocation failure.
            let h = unsafe { (api.init_decompress)() };
            if h.is_null() {
                return Err(Refused::Failed("tjInitDecompress returned null".into()));
            }
            *slot = Some(ThreadHandle(h));
        }
        let h = slot.as_ref().map(|t| t.0).expect("handle just set");
        let err = |h: Handle| {
            // SAFETY: tjGetErrorStr2 returns a NUL-terminated string owned by the handle.
            let s = unsafe { (api.error_str2)(h) };
            if s.is_null() { "unknown libjpeg-turbo error".to_string() } else { unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned() }
        };
        let (mut w, mut hgt, mut subsamp, mut cs) = (0, 0, 0, 0);
        // SAFETY: bytes is a valid slice; the out-pointers are valid locals.
        let rc = unsafe { (api.decompress_header3)(h, bytes.as_ptr(), bytes.len() as c_ulong, &mut w, &mut hgt, &mut subsamp, &mut cs) };
        if rc != 0 {
            return Err(Refused::Failed(err(h)));
        }
        if cs == TJCS_CMYK || cs == TJCS_YCCK {
            return Err(Refused::Cmyk);
        }
        if w <= 0 || hgt <= 0 {
            return Err(Refused::Failed(format!("header claims {w}x{hgt}")));
        }
        let (sw, sh) = scaled_dims(w as u32, hgt as u32, target);
        let pitch = sw as usize * 3;
        let mut data = vec![0u8; pitch * sh as usize];
        // SAFETY: data holds pitch × sh bytes, exactly what tjDecompress2 writes for RGB at the
        // scaled size it derives from (sw, sh) — the same M/8 factor, so the same dimensions.
        let rc = unsafe {
            (api.decompress2)(
                h,
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                data.as_mut_ptr(),
                sw as c_int,
                pitch as c_int,
                sh as c_int,
                TJPF_RGB,
                TJFLAG_ACCURATEDCT,
            )
        };
        if rc != 0 {
            return Err(Refused::Failed(err(h)));
        }
        Ok(Scaled { width: sw, height: sh, data })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_keeps_the_shorter_side_at_or_above_target() {
        assert_eq!(scaled_dims(4000, 3000, 224), (500, 375));
        assert_eq!(scaled_dims(3000, 4000, 224), (375, 500));
        assert_eq!(scaled_dims(640, 480, 224), (320, 240));
        assert_eq!(scaled_dims(300, 300, 224), (225, 225)); // 6/8
        assert_eq!(scaled_dims(100, 80, 224), (100, 80)); // never upscales
        for (w, h) in [(4032, 3024), (1001, 999), (225, 4000), (7, 9)] {
            let (sw, sh) = scaled_dims(w, h, 224);
            assert!(sw.min(sh) >= 224.min(w.min(h)), "{w}x{h} -> {sw}x{sh}");
        }
    }
}
