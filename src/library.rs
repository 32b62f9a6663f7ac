//! The image library on disk: which trees pixdex may touch, which files are images, and walks
//! that count and list them. Pure filesystem code: no SQL, no async.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod open;

use crate::config::LibraryConfig;

pub mod mounts;

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    /// Also the answer for a path that goes through a symbolic link leading out of the roots
    /// (or to nothing, or swapped while it was opened): the same words whether the target
    /// exists or not, so answers cannot be used to probe the disk.
    #[error("{path} is outside the library roots ({roots}); add it to `library.roots` in the config or choose a folder inside them")]
    OutsideRoots { path: PathBuf, roots: String },
    #[error("{path} is not a regular file (a directory, FIFO, socket or device is never read)")]
    NotAFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl crate::error::Classify for LibraryError {
    fn cause(&self) -> crate::error::Cause {
        use crate::error::Cause;
        match self {
            LibraryError::OutsideRoots { .. } => Cause::Forbidden,
            LibraryError::NotFound { .. } => Cause::NotFound,
            LibraryError::Io { source, .. } if crate::fault::is_fd_exhaustion(source) => Cause::Transient,
            LibraryError::NotADirectory { .. } | LibraryError::NotAFile { .. } | LibraryError::Io { .. } => Cause::UserInput,
        }
    }
}

/// A regular image file found by a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, Unix milliseconds.
    pub modified_ms: i64,
}

/// What a walk of one directory found.
#[derive(Debug, Clone, Default)]
pub struct DirStats {
    pub images: Vec<FileEntry>,
    /// Regular, non-hidden files whose extension is not an image extension.
    pub unsupported: u64,
    /// Directories (or entries) that exist but could not be read (EACCES, EIO, ESTALE…), with
    /// the error: what they hold is unknown, not gone.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// What a stat-only walk of a whole tree found.
#[derive(Debug, Clone, Default)]
pub struct TreeScan {
    pub files: Vec<FileEntry>,
    /// Directories visited.
    pub dirs: u64,
    /// Directories or entries that exist but could not be read, with the error.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Directories holding regular files that are not images, with how many (the catalog keeps
    /// these counts for listings; it does not catalogue the files).
    pub other: Vec<(PathBuf, u64)>,
}

/// An I/O error on something that exists: anything but "not found" (the entry vanished
/// between listing and stat, which is a delete, not a fault).
fn unreadable(path: &Path, e: &std::io::Error, out: &mut Vec<(PathBuf, String)>) {
    if e.kind() != std::io::ErrorKind::NotFound {
        out.push((path.to_path_buf(), e.to_string()));
    }
}

/// A subdirectory of a root, as listed by a scan.
#[derive(Debug, Clone)]
pub struct SubdirScan {
    pub path: PathBuf,
    pub name: String,
    /// For a child directory: images anywhere below it. For the root itself (listed only when
    /// it holds images directly): images directly in it.
    pub image_count: u64,
    pub unsupported: u64,
    pub is_root: bool,
}

#[derive(Debug, Clone)]
pub struct Library {
    cfg: LibraryConfig,
    /// Roots the watcher has reconciled in this daemon's run (shared by every clone): under
    /// them the catalog's counts are the truth and listings read them instead of the disk.
    catalogued: std::sync::Arc<std::sync::RwLock<HashSet<PathBuf>>>,
    /// Roots with changes the watcher has seen but not yet applied (files still settling,
    /// events queued): until they are, the catalog does not know what these roots hold.
    unsettled: std::sync::Arc<std::sync::RwLock<HashSet<PathBuf>>>,
}

impl Library {
    pub fn new(cfg: LibraryConfig) -> Library {
        Library { cfg, catalogued: Default::default(), unsettled: Default::default() }
    }

    /// The watcher reconciled `root`, and follows it: the catalog knows what it holds.
    pub fn mark_catalogued(&self, root: &Path) {
        self.catalogued.write().unwrap_or_else(|p| p.into_inner()).insert(root.to_path_buf());
    }

    /// `root` is no longer followed (gone, or no watcher): listings walk it again.
    pub fn unmark_catalogued(&self, root: &Path) {
        self.catalogued.write().unwrap_or_else(|p| p.into_inner()).remove(root);
    }

    /// The roots with changes not yet in the catalog (replaces the previous set).
    pub fn set_unsettled(&self, roots: HashSet<PathBuf>) {
        let mut g = self.unsettled.write().unwrap_or_else(|p| p.into_inner());
        if *g != roots {
            *g = roots;
        }
    }

    /// Does the catalog know what `dir` holds: it lies under a root the watcher reconciled and
    /// follows, with no change under that root waiting to be applied?
    pub fn is_catalogued(&self, dir: &Path) -> bool {
        let unsettled = self.unsettled.read().unwrap_or_else(|p| p.into_inner());
        self.catalogued.read().unwrap_or_else(|p| p.into_inner()).iter().any(|r| dir.starts_with(r) && !unsettled.contains(r))
    }

    pub fn config(&self) -> &LibraryConfig {
        &self.cfg
    }

    pub fn extensions(&self) -> &[String] {
        &self.cfg.extensions
    }

    /// Current canonical roots (a root missing at start may have appeared since).
    pub fn roots(&self) -> Vec<PathBuf> {
        self.cfg.roots.iter().map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect()
    }

    fn roots_list(&self) -> String {
        if self.cfg.roots.is_empty() {
            return "none configured".into();
        }
        self.cfg.roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Resolve symlinks and `..`, and check that the directory lies inside a root.
    /// A path lexically outside every root is refused before the filesystem is touched, so a
    /// missing outside directory gets the same answer as an existing one.
    pub fn resolve_dir(&self, path: &Path) -> Result<PathBuf, LibraryError> {
        self.check_lexically(path)?;
        let canon = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LibraryError::NotFound { path: path.to_path_buf() },
            _ => LibraryError::Io { path: path.to_path_buf(), source: e },
        })?;
        if !self.is_inside_roots(&canon) {
            return Err(LibraryError::OutsideRoots { path: path.to_path_buf(), roots: self.roots_list() });
        }
        if !canon.is_dir() {
            return Err(LibraryError::NotADirectory { path: path.to_path_buf() });
        }
        Ok(canon)
    }

    /// Open a library file for reading, the check and the open in one step: every door that
    /// reads a library file (full image, thumbnails, previews, the pipeline's decode, search
    /// by path) reads through this, never through a checked path opened later.
    ///
    /// The path must lie lexically inside a root (else `OutsideRoots`, the filesystem
    /// untouched). It is opened relative to that root's directory with `openat2(RESOLVE_BENEATH
    /// | RESOLVE_NO_SYMLINKS)` (or, where the kernel lacks openat2, component by component
    /// with `O_NOFOLLOW`), so a symlink swapped in after any check cannot redirect the open.
    /// Links that lead inside the roots stay allowed (walks follow them): when the open meets
    /// a link, the path is canonicalized, must lie inside a root, and the canonical path is
    /// opened the same way (no link allowed at all this time). Whatever else a link does
    /// (leads out, leads nowhere, changes in between) is `OutsideRoots`, the same answer
    /// whether its target exists or not. The open file must be a regular file (`fstat`).
    pub fn open_file(&self, path: &Path) -> Result<std::fs::File, LibraryError> {
        self.open_file_with(path, open::Mode::Auto)
    }

    fn open_file_with(&self, path: &Path, mode: open::Mode) -> Result<std::fs::File, LibraryError> {
        let outside = || LibraryError::OutsideRoots { path: path.to_path_buf(), roots: self.roots_list() };
        let io = |source| LibraryError::Io { path: path.to_path_buf(), source };
        let lexical = self.check_lexically(path)?;
        let canon_roots = self.roots();
        let any_roots: Vec<PathBuf> = canon_roots.iter().chain(self.cfg.roots.iter()).cloned().collect();
        match open::open_beneath(&any_roots, &lexical, mode) {
            Ok(f) => return open::regular(f).ok_or_else(|| LibraryError::NotAFile { path: path.to_path_buf() }),
            Err(open::Failed::Missing) => return Err(LibraryError::NotFound { path: path.to_path_buf() }),
            Err(open::Failed::Io(e)) => return Err(io(e)),
            Err(open::Failed::Link) => {}
        }
        // A symbolic link on the way: allowed only where it leads inside the roots, and then
        // the resolved path is opened with no link allowed (one swapped in meanwhile fails).
        let canon = std::fs::canonicalize(&lexical).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => outside(),
            _ => io(e),
        })?;
        if !canon_roots.iter().any(|r| canon.starts_with(r)) {
            return Err(outside());
        }
        match open::open_beneath(&canon_roots, &canon, mode) {
            Ok(f) => open::regular(f).ok_or_else(|| LibraryError::NotAFile { path: path.to_path_buf() }),
            Err(open::Failed::Missing | open::Failed::Link) => Err(outside()),
            Err(open::Failed::Io(e)) => Err(io(e)),
        }
    }

    /// The path made absolute with `.`/`..` resolved, if that lies inside a root (as configured
    /// or resolved); else `OutsideRoots` — decided without touching the filesystem, so the
    /// answer for an outside path does not depend on whether it exists.
    fn check_lexically(&self, path: &Path) -> Result<PathBuf, LibraryError> {
        let lexical = normalize_lexically(&crate::config::absolutize(path));
        if self.roots().iter().chain(self.cfg.roots.iter()).any(|r| lexical.starts_with(r)) {
            Ok(lexical)
        } else {
            Err(LibraryError::OutsideRoots { path: path.to_path_buf(), roots: self.roots_list() })
        }
    }

    /// Is this (canonical) path inside one of the roots?
    pub fn is_inside_roots(&self, canon: &Path) -> bool {
        self.roots().iter().any(|r| canon.starts_with(r))
    }

    pub fn is_image_name(&self, name: &str) -> bool {
        has_extension(name, &self.cfg.extensions)
    }

    /// Hidden entries and configured ignored names are never walked or catalogued.
    pub fn is_ignored_name(&self, name: &str) -> bool {
        name.starts_with('.') || self.cfg.ignored.iter().any(|i| i == name)
    }

    /// Walk `dir` (recursively or not), collecting images and counting unsupported files.
    /// Symlinked directories are followed only inside the roots, and each directory is visited
    /// once (by device and inode), so symlink loops cannot make the walk infinite.
    pub fn walk(&self, dir: &Path, recursive: bool, extensions: Option<&[String]>) -> DirStats {
        let exts = extensions.unwrap_or(&self.cfg.extensions);
        let mut stats = DirStats::default();
        let mut seen = HashSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let meta = match std::fs::metadata(&d) {
                Ok(m) => m,
                Err(e) => {
                    unreadable(&d, &e, &mut stats.unreadable);
                    continue;
                }
            };
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let mut subdirs = Vec::new();
            self.read_one_dir(&d, exts, &mut stats.images, &mut subdirs, &mut stats.unsupported, &mut stats.unreadable);
            if recursive {
                stack.extend(subdirs);
            }
        }
        stats.images.sort_by(|a, b| a.path.cmp(&b.path));
        stats
    }

    /// Stat-only parallel walk of a whole tree (the reconcile scan): every image file below
    /// `dir`, and how many directories were visited. Threads share a stack of directories;
    /// each directory is visited once (device, inode), so symlink loops end. A directory that
    /// cannot be read is reported in `unreadable`, never taken as empty.
    pub fn walk_parallel(&self, dir: &Path, threads: usize) -> TreeScan {
        use std::sync::{Condvar, Mutex};
        struct Shared {
            stack: Vec<PathBuf>,
            busy: usize,
            done: bool,
        }
        let shared = Mutex::new(Shared { stack: vec![dir.to_path_buf()], busy: 0, done: false });
        let cv = Condvar::new();
        let seen = Mutex::new(HashSet::new());
        let results = Mutex::new(TreeScan::default());
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    let mut files = Vec::new();
                    let mut dirs = 0u64;
                    let mut bad = Vec::new();
                    let mut other = Vec::new();
                    loop {
                        let next = {
                            let mut g = shared.lock().unwrap();
                            loop {
                                if let Some(d) = g.stack.pop() {
                                    g.busy += 1;
                                    break Some(d);
                                }
                                if g.busy == 0 || g.done {
                                    g.done = true;
                                    cv.notify_all();
                                    break None;
                                }
                                g = cv.wait(g).unwrap();
                            }
                        };
                        let Some(d) = next else { break };
                        let mut found_dirs = Vec::new();
                        match std::fs::metadata(&d) {
                            Ok(meta) if seen.lock().unwrap().insert((meta.dev(), meta.ino())) => {
                                dirs += 1;
                                let mut unsupported = 0;
                                self.read_one_dir(&d, &self.cfg.extensions, &mut files, &mut found_dirs, &mut unsupported, &mut bad);
                                if unsupported > 0 {
                                    other.push((d.clone(), unsupported));
                                }
                            }
                            Ok(_) => {}
                            Err(e) => unreadable(&d, &e, &mut bad),
                        }
                        let mut g = shared.lock().unwrap();
                        g.stack.extend(found_dirs);
                        g.busy -= 1;
                        cv.notify_all();
                    }
                    let mut r = results.lock().unwrap();
                    r.files.extend(files);
                    r.dirs += dirs;
                    r.unreadable.extend(bad);
                    r.other.extend(other);
                });
            }
        });
        let mut r = results.into_inner().unwrap();
        r.files.sort_by(|a, b| a.path.cmp(&b.path));
        r.unreadable.sort();
        r.other.sort();
        r
    }

    /// One directory's entries: image files into `files`, walkable subdirectories into `dirs`
    /// (symlinked ones only when they stay inside the roots), other regular files counted.
    /// A directory or entry that exists but cannot be read goes to `bad`.
    fn read_one_dir(
        &self,
        d: &Path,
        exts: &[String],
        files: &mut Vec<FileEntry>,
        dirs: &mut Vec<PathBuf>,
        unsupported: &mut u64,
        bad: &mut Vec<(PathBuf, String)>,
    ) {
        let rd = match std::fs::read_dir(d) {
            Ok(rd) => rd,
            Err(e) => return unreadable(d, &e, bad),
        };
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    // The listing broke off (EIO, ESTALE): the rest of the folder is unknown.
                    unreadable(d, &e, bad);
                    break;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if self.is_ignored_name(name) {
                continue;
            }
            let path = entry.path();
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) => {
                    unreadable(&path, &e, bad);
                    continue;
                }
            };
            let meta = if ft.is_symlink() {
                // A dangling link is nothing; one that cannot be followed is unknown.
                let m = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    // ELOOP: a link cycle, a broken link rather than a fault.
                    Err(e) if e.raw_os_error() == Some(40) => continue,
                    Err(e) => {
                        unreadable(&path, &e, bad);
                        continue;
                    }
                };
                // Links are followed only where they lead inside the roots: a linked folder
                // or file pointing elsewhere is neither walked nor catalogued.
                if !std::fs::canonicalize(&path).is_ok_and(|c| self.is_inside_roots(&c)) {
                    continue;
                }
                if m.is_dir() {
                    dirs.push(path);
                    continue;
                }
                m
            } else if ft.is_dir() {
                dirs.push(path);
                continue;
            } else {
                match entry.metadata() {
                    Ok(m) => m,
                    Err(e) => {
                        unreadable(&path, &e, bad);
                        continue;
                    }
                }
            };
            if !meta.is_file() {
                continue;
            }
            if has_extension(name, exts) {
                files.push(FileEntry { path, size: meta.len(), modified_ms: mtime_ms(&meta) });
            } else {
                *unsupported += 1;
            }
        }
    }

    /// Is this path one the catalog should hold: inside a root, no hidden or ignored component
    /// below the root, an image extension?
    pub fn wants_file(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
        self.is_image_name(name) && self.visible_dir_path(path)
    }

    /// Inside a root, and no component below the root hidden or ignored.
    pub fn visible_dir_path(&self, path: &Path) -> bool {
        self.roots()
            .iter()
            .any(|r| path.strip_prefix(r).is_ok_and(|rel| rel.components().all(|c| c.as_os_str().to_str().is_some_and(|s| !self.is_ignored_name(s)))))
    }

    /// The subdirectories of `root` as sessions see them: each visible child directory with its
    /// recursive counts, plus the root itself when it holds images directly.
    pub fn list_subdirectories(&self, root: &Path, recursive: bool, extensions: Option<&[String]>) -> Vec<SubdirScan> {
        let mut out = Vec::new();
        let direct = self.walk(root, false, extensions);
        if !direct.images.is_empty() {
            out.push(SubdirScan {
                path: root.to_path_buf(),
                name: ".".into(),
                image_count: direct.images.len() as u64,
                unsupported: direct.unsupported,
                is_root: true,
            });
        }
        for child in self.child_dirs(root) {
            let s = self.walk(&child, recursive, extensions);
            out.push(SubdirScan {
                name: child.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                path: child,
                image_count: s.images.len() as u64,
                unsupported: s.unsupported,
                is_root: false,
            });
        }
        out
    }

    /// The visible child directories of `dir`, sorted: one `readdir`, no walk below. A
    /// symlinked folder is offered only when it leads somewhere inside the roots.
    pub fn child_dirs(&self, dir: &Path) -> Vec<PathBuf> {
        let mut children: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| !self.is_ignored_name(n)))
                .filter(|e| std::fs::metadata(e.path()).map(|m| m.is_dir()).unwrap_or(false))
                .filter(|e| std::fs::canonicalize(e.path()).is_ok_and(|c| self.is_inside_roots(&c)))
                .map(|e| e.path())
                .collect(),
            Err(_) => vec![],
        };
        children.sort();
        children
    }

    /// Images of one session subdirectory: the root row counts only its direct files.
    pub fn subdirectory_images(&self, root: &Path, subdir: &Path) -> DirStats {
        self.walk(subdir, subdir != root, None)
    }
}

/// Resolve `.` and `..` without touching the filesystem.
pub fn normalize_lexically(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

pub fn has_extension(name: &str, exts: &[String]) -> bool {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => exts.iter().any(|e| e.eq_ignore_ascii_case(ext)),
        _ => false,
    }
}

pub fn mtime_ms(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1000 + m.mtime_nsec() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes() {
        use crate::error::{Cause, Classify};
        let path = PathBuf::from("/a");
        assert_eq!(LibraryError::OutsideRoots { path: path.clone(), roots: "/r".into() }.cause(), Cause::Forbidden);
        assert_eq!(LibraryError::NotFound { path: path.clone() }.cause(), Cause::NotFound);
        for code in [libc::EMFILE, libc::ENFILE] {
            assert_eq!(LibraryError::Io { path: path.clone(), source: std::io::Error::from_raw_os_error(code) }.cause(), Cause::Transient);
        }
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(LibraryError::Io { path, source: denied }.cause(), Cause::UserInput);
    }

    fn lib(root: &Path) -> Library {
        Library::new(LibraryConfig {
            watch: crate::config::WatchMode::Off,
            poll_interval: std::time::Duration::from_secs(1),
            settle: std::time::Duration::from_millis(100),
            rescan_interval: std::time::Duration::from_secs(60),
            roots: vec![std::fs::canonicalize(root).unwrap()],
            extensions: vec!["jpg".into(), "png".into()],
            ignored: vec!["@eaDir".into()],
        })
    }

    #[test]
    fn extensions_case_insensitive() {
        let e = vec!["jpg".to_string()];
        assert!(has_extension("a.JPG", &e));
        assert!(has_extension("a.b.jpg", &e));
        assert!(!has_extension(".jpg", &e));
        assert!(!has_extension("jpg", &e));
        assert!(!has_extension("a.jpeg", &e));
    }

    #[test]
    fn walk_counts_and_skips() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::create_dir_all(r.join(".hidden")).unwrap();
        std::fs::create_dir_all(r.join("a/@eaDir")).unwrap();
        for f in ["a/1.jpg", "a/b/2.PNG", "a/b/c/3.jpg", "a/notes.txt", ".hidden/4.jpg", "a/@eaDir/5.jpg", "a/.6.jpg", "top.jpg"] {
            std::fs::write(r.join(f), b"x").unwrap();
        }
        // a symlink loop must not hang the walk
        std::os::unix::fs::symlink(r.join("a"), r.join("a/b/loop")).unwrap();
        let l = lib(r);
        let s = l.walk(&r.join("a"), true, None);
        assert_eq!(s.images.len(), 3, "{:?}", s.images);
        assert_eq!(s.unsupported, 1);
        let subs = l.list_subdirectories(&std::fs::canonicalize(r).unwrap(), true, None);
        assert_eq!(subs.len(), 2);
        assert!(subs[0].is_root && subs[0].image_count == 1);
        assert_eq!((subs[1].name.as_str(), subs[1].image_count), ("a", 3));
        let TreeScan { files: all, dirs, unreadable, other } = l.walk_parallel(&std::fs::canonicalize(r).unwrap(), 3);
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(other, vec![(std::fs::canonicalize(r).unwrap().join("a"), 1)], "notes.txt, per folder");
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(dirs, 4, "root, a, a/b, a/b/c; the loop is visited once");
        let canon = std::fs::canonicalize(r).unwrap();
        assert!(l.wants_file(&canon.join("a/b/x.jpg")));
        assert!(!l.wants_file(&canon.join(".hidden/x.jpg")));
        assert!(!l.wants_file(&canon.join("a/@eaDir/x.jpg")));
        assert!(!l.wants_file(&canon.join("a/x.txt")));
    }

    #[test]
    fn escapes_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::create_dir_all(d.path().join("out")).unwrap();
        std::os::unix::fs::symlink(d.path().join("out"), root.join("link")).unwrap();
        let l = lib(&root);
        assert!(l.resolve_dir(&root.join("in")).is_ok());
        assert!(matches!(l.resolve_dir(&root.join("in/../../out")), Err(LibraryError::OutsideRoots { .. })));
        assert!(matches!(l.resolve_dir(&root.join("link")), Err(LibraryError::OutsideRoots { .. })));
        assert!(matches!(l.resolve_dir(&root.join("nope")), Err(LibraryError::NotFound { .. })));
        assert!(matches!(l.resolve_dir(&d.path().join("missing-outside")), Err(LibraryError::OutsideRoots { .. })), "no probing");
    }

    #[test]
    fn files_outside_are_refused_alike_whether_they_exist_or_not() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.png"), b"x").unwrap();
        std::fs::write(d.path().join("secret.png"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret.png"), root.join("link.png")).unwrap();
        let l = lib(&root);
        assert!(l.open_file(&root.join("a.png")).is_ok());
        for p in [d.path().join("secret.png"), d.path().join("missing.png"), root.join("../secret.png"), root.join("link.png"), PathBuf::from("/etc/passwd")] {
            assert!(matches!(l.open_file(&p), Err(LibraryError::OutsideRoots { .. })), "{}", p.display());
        }
        // Walks never catalogue the linked file leading out; an in-root link is followed.
        std::os::unix::fs::symlink(root.join("a.png"), root.join("inside-link.png")).unwrap();
        let root_c = std::fs::canonicalize(&root).unwrap();
        let names: Vec<String> = l.walk(&root_c, true, None).images.iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.png", "inside-link.png"], "{names:?}");
        let tree: Vec<String> = l.walk_parallel(&root_c, 2).files.iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(tree, ["a.png", "inside-link.png"]);
        assert!(matches!(l.open_file(&root.join("nope.png")), Err(LibraryError::NotFound { .. })));
    }

    /// Check and open are one step: links leading out, through a file or a folder, are never
    /// opened; links inside the roots are; FIFOs, folders and `..` escapes are refused — with
    /// openat2 and with the O_NOFOLLOW walk alike.
    #[test]
    fn open_file_never_leaves_the_roots() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let out = d.path().join("out");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(root.join("a.png"), b"inside").unwrap();
        std::fs::write(root.join("sub/b.png"), b"below").unwrap();
        std::fs::write(out.join("secret.png"), b"SECRET").unwrap();
        let sl = |target: &Path, link: &str| std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        sl(&out.join("secret.png"), "link-out.png");
        sl(&out.join("missing.png"), "dangling.png");
        sl(&out, "dir-out");
        sl(&root.join("a.png"), "link-in.png");
        sl(Path::new("a.png"), "relative-in.png");
        sl(Path::new("../out/secret.png"), "relative-out.png");
        sl(&root.join("sub"), "dir-in");
        std::fs::create_dir_all(root.join("folder.png")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo.png").as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let l = lib(&root);
        let root = std::fs::canonicalize(&root).unwrap();
        for mode in [open::Mode::Auto, open::Mode::Walk] {
            let read = |rel: &str| -> Result<String, LibraryError> {
                let mut s = String::new();
                l.open_file_with(&root.join(rel), mode)?.read_to_string(&mut s).unwrap();
                Ok(s)
            };
            assert_eq!(read("a.png").unwrap(), "inside");
            assert_eq!(read("sub/b.png").unwrap(), "below");
            assert_eq!(read("sub/../a.png").unwrap(), "inside", "lexical .. inside a root");
            assert_eq!(read("link-in.png").unwrap(), "inside", "{mode:?}: a link inside the roots is followed");
            assert_eq!(read("relative-in.png").unwrap(), "inside");
            assert_eq!(read("dir-in/b.png").unwrap(), "below", "a linked folder inside the roots");
            let outside_answer = |rel: &str| match read(rel) {
                Err(e @ LibraryError::OutsideRoots { .. }) => e.to_string().replace(&root.join(rel).display().to_string(), "P"),
                other => panic!("{mode:?} {rel}: {other:?}"),
            };
            let answers: Vec<String> = [
                "link-out.png",
                "dangling.png",
                "dir-out/secret.png",
                "dir-out/missing.png",
                "relative-out.png",
                "../out/secret.png",
                "sub/../../out/secret.png",
            ]
            .iter()
            .map(|r| outside_answer(r))
            .collect();
            assert!(answers.windows(2).all(|w| w[0] == w[1]), "refusals must not reveal whether a target exists: {answers:?}");
            assert!(matches!(read("fifo.png"), Err(LibraryError::NotAFile { .. })), "a FIFO is refused without blocking");
            assert!(matches!(read("folder.png"), Err(LibraryError::NotAFile { .. })));
            assert!(matches!(read(""), Err(LibraryError::NotAFile { .. })), "the root itself");
            assert!(matches!(read("nope.png"), Err(LibraryError::NotFound { .. })));
            assert!(matches!(read("nope/x.png"), Err(LibraryError::NotFound { .. })));
            assert!(matches!(read("a.png/x.png"), Err(LibraryError::NotFound { .. })));
            assert!(matches!(l.open_file_with(Path::new("/etc/passwd"), mode), Err(LibraryError::OutsideRoots { .. })));
        }
    }

    /// A link swapped in over a checked file between two opens is never followed: the file
    /// is replaced (rename(2)) by a link to a secret outside while another thread opens it.
    #[test]
    fn open_file_races_a_swapped_link() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(d.path().join("secret"), b"SECRET").unwrap();
        std::fs::write(root.join(".real"), b"inside").unwrap();
        std::fs::copy(root.join(".real"), root.join("a.png")).unwrap();
        let l = lib(&root);
        let root = std::fs::canonicalize(&root).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::remove_file(root.join(".link"));
                    std::os::unix::fs::symlink(d.path().join("secret"), root.join(".link")).unwrap();
                    std::fs::rename(root.join(".link"), root.join("a.png")).unwrap();
                    let _ = std::fs::remove_file(root.join(".copy"));
                    std::fs::hard_link(root.join(".real"), root.join(".copy")).unwrap();
                    std::fs::rename(root.join(".copy"), root.join("a.png")).unwrap();
                }
            });
            let (mut opened, mut refused) = (0, 0);
            for i in 0..20_000 {
                let mode = if i % 2 == 0 { open::Mode::Auto } else { open::Mode::Walk };
                match l.open_file_with(&root.join("a.png"), mode) {
                    Ok(mut f) => {
                        let mut s = String::new();
                        f.read_to_string(&mut s).unwrap();
                        assert_eq!(s, "inside");
                        opened += 1;
                    }
                    Err(LibraryError::OutsideRoots { .. }) => refused += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(opened > 0 && refused > 0, "the race ran both ways: {opened} opened, {refused} refused");
        });
    }
}
