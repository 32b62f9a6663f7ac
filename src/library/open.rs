//! Opening a file beneath a library root without following any symbolic link: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it (Linux ≥ 5.6), else a walk
//! of `openat(O_NOFOLLOW)` one component at a time. Either way the kernel resolves the path
//! in the same call that opens it, so nothing can be swapped between a check and the read.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// How to open (tests force the fallback walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `openat2` when the kernel has it, else the walk.
    Auto,
    /// The `O_NOFOLLOW` walk only.
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

#[derive(Debug)]
pub(super) enum Failed {
    /// A symbolic link on the way (or an escape from the root): the caller decides.
    Link,
    /// A component does not exist (or is not a directory): met before any link.
    Missing,
    Io(io::Error),
}

/// The flags of the final open: read only, never a link, never blocking (a FIFO would wait
/// for a writer), never a controlling terminal.
const FILE_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

/// `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// 0: not tried yet, 1: the kernel has openat2, 2: it does not (or seccomp refuses it).
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Open `path` (absolute, lexically normalized) beneath the longest of `roots` it starts with.
pub(super) fn open_beneath(roots: &[PathBuf], path: &Path, mode: Mode) -> Result<File, Failed> {
    let root = roots.iter().filter(|r| path.starts_with(r)).max_by_key(|r| r.as_os_str().len()).ok_or(Failed::Link)?;
    let rel = path.strip_prefix(root).map_err(|_| Failed::Link)?;
    let mut comps = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(CString::new(n.as_bytes()).map_err(|_| Failed::Missing)?),
            // Never produced by lexical normalization; refused rather than resolved.
            _ => return Err(Failed::Link),
        }
    }
    // The root itself is configuration, trusted: opened by name (links in it followed).
    let dir = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(root).map_err(classify)?;
    let dir = OwnedFd::from(dir);
    if mode == Mode::Auto && OPENAT2.load(Ordering::Relaxed) != 2 {
        let rel_c = if comps.is_empty() { CString::new(".").unwrap() } else { CString::new(rel.as_os_str().as_bytes()).map_err(|_| Failed::Missing)? };
        match openat2(dir.as_raw_fd(), &rel_c) {
            Ok(fd) => {
                OPENAT2.store(1, Ordering::Relaxed);
                return Ok(File::from(fd));
            }
            // No openat2 (ENOSYS), a seccomp filter refusing it (EPERM), a kernel that does not
            // know these flags or this struct (EINVAL, E2BIG): walk instead, from now on.
            Err(e) if OPENAT2.load(Ordering::Relaxed) != 1 && matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG)) => {
                tracing::info!(error = %e, "openat2 unavailable; library files are opened one O_NOFOLLOW component at a time");
                OPENAT2.store(2, Ordering::Relaxed);
            }
            Err(e) => return Err(classify(e)),
        }
    }
    walk(dir, &comps)
}

fn openat2(dir: RawFd, rel: &CString) -> io::Result<OwnedFd> {
    let how = OpenHow { flags: FILE_FLAGS as u64, mode: 0, resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS };
    // SAFETY: a valid NUL-terminated path and a struct laid out as the kernel's open_how,
    // with its size; the returned descriptor is owned by nobody else.
    let r = unsafe { libc::syscall(libc::SYS_openat2, dir, rel.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) }) }
}

/// One `openat(O_NOFOLLOW)` per component: directories as `O_PATH`, the last as the file.
fn walk(mut dir: OwnedFd, comps: &[CString]) -> Result<File, Failed> {
    let Some((last, dirs)) = comps.split_last() else {
        return at(&dir, c".", FILE_FLAGS).map(File::from);
    };
    for c in dirs {
        dir = at(&dir, c, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)?;
    }
    at(&dir, last, FILE_FLAGS).map(File::from)
}

fn at(dir: &OwnedFd, name: &std::ffi::CStr, flags: libc::c_int) -> Result<OwnedFd, Failed> {
    // SAFETY: a valid directory descriptor and NUL-terminated name.
    let r = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if r >= 0 {
        return Ok(unsafe { OwnedFd::from_raw_fd(r) });
    }
    let e = io::Error::last_os_error();
    // O_PATH|O_NOFOLLOW|O_DIRECTORY on a link says ENOTDIR: tell a link from a file.
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: as above; `st` is written by the kernel when the call succeeds.
        let ok = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) } == 0;
        if ok && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(Failed::Link);
        }
    }
    Err(classify(e))
}

fn classify(e: io::Error) -> Failed {
    match e.raw_os_error() {
        // ELOOP: a link met under RESOLVE_NO_SYMLINKS / O_NOFOLLOW; EXDEV: an escape from
        // beneath the root.
        Some(libc::ELOOP | libc::EXDEV) => Failed::Link,
        Some(libc::ENOENT | libc::ENOTDIR) => Failed::Missing,
        _ => Failed::Io(e),
    }
}

/// The open file if it is a regular file (`fstat` of the descriptor itself), made blocking
/// again; `None` for a directory, FIFO, socket or device.
pub(super) fn regular(f: File) -> Option<File> {
    let meta = f.metadata().ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Some(f)
}
