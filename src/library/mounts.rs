//! Mount points and directory identity: a mount that is away is not a folder that was emptied.
//!
//! An unmounted network or USB mount leaves its mount point behind as an ordinary empty
//! folder. The catalog remembers which directories under the roots were mount points (and of
//! which device) when their images were catalogued; a remembered mount point that is no longer
//! mounted and is empty (or missing) is *away*: its assets and vectors are kept.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory's identity: (device, inode). Another directory put in its place (a root renamed
/// away and made anew, a mount coming or going) has another identity.
pub fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

/// Every mount point of this process (`/proc/self/mountinfo`, field 5, octal escapes undone).
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|s| parse_mountinfo(&s)).unwrap_or_default()
}

fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| PathBuf::from(unescape(p))).collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir` (from a list read once by `mount_points`).
pub fn mounts_under<'a>(all: &'a [PathBuf], dir: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
    all.iter().filter(move |m| m.starts_with(dir))
}

/// True when `dir` exists as a directory with nothing in it, or does not exist at all: what an
/// unmounted mount point looks like.
pub fn looks_unmounted(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_and_escapes() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    95 22 0:50 / /mnt/my\\040photos rw,nosuid - tmpfs tmpfs rw,size=65536k\n";
        assert_eq!(parse_mountinfo(text), vec![PathBuf::from("/"), PathBuf::from("/mnt/my photos")]);
        assert_eq!(unescape("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn this_process_sees_its_root_mount_and_identities_differ() {
        assert!(mount_points().iter().any(|m| m == Path::new("/")));
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        let id = dir_identity(&a).unwrap();
        assert!(looks_unmounted(&a));
        std::fs::rename(&a, &b).unwrap();
        std::fs::create_dir(&a).unwrap();
        assert_ne!(dir_identity(&a), Some(id), "a folder made anew in place has another identity");
        assert_eq!(dir_identity(&b), Some(id));
        std::fs::write(a.join("x.png"), b"x").unwrap();
        assert!(!looks_unmounted(&a));
        assert!(looks_unmounted(&t.path().join("missing")));
    }
}
