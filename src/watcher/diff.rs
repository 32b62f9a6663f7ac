//! The heart of the watcher: compare the files on disk under some scopes with what the catalog
//! holds there, and produce the change set that makes the catalog true. Pure: no I/O.
//!
//! Renames keep the asset (and so its vector): an explicit rename seen by the watcher
//! (`hints`, file or directory) is applied first; then a file that vanished and a file that
//! appeared with the same size and modification time (and preferably the same name) are taken
//! to be one file moved — which is how moves look to a poll watcher, to a move between two
//! watched roots, and to a reconcile after changes made while the daemon was down.

use std::collections::{HashMap, HashSet};

use crate::catalog::{AssetFile, ChangeSet};
use crate::library::FileEntry;

pub fn diff(disk: &[FileEntry], known: &[AssetFile], hints: &[(String, String)]) -> ChangeSet {
    let disk_map: HashMap<String, &FileEntry> = disk.iter().map(|f| (f.path.to_string_lossy().into_owned(), f)).collect();
    let known_map: HashMap<&str, &AssetFile> = known.iter().map(|a| (a.path.as_str(), a)).collect();
    let mut cs = ChangeSet::default();

    let mut gone: Vec<&AssetFile> = known.iter().filter(|a| !disk_map.contains_key(&a.path)).collect();
    let mut new: HashSet<String> = disk_map.keys().filter(|p| !known_map.contains_key(p.as_str())).cloned().collect();
    for (path, f) in &disk_map {
        if let Some(a) = known_map.get(path.as_str())
            && (a.size != f.size as i64 || a.modified_ms != f.modified_ms)
        {
            cs.changes.push((a.id, (*f).clone()));
        }
    }

    let rename = |a: &AssetFile, to: String, cs: &mut ChangeSet, new: &mut HashSet<String>| {
        new.remove(&to);
        let f = disk_map[&to];
        if a.size != f.size as i64 || a.modified_ms != f.modified_ms {
            cs.changes.push((a.id, f.clone()));
        }
        cs.renames.push((a.id, to));
    };

    // 1. Renames the watcher saw (file, or directory: every file below moves along).
    for (from, to) in hints {
        let from_dir = format!("{from}/");
        gone.retain(|a| {
            let target = if a.path == *from { Some(to.clone()) } else { a.path.strip_prefix(&from_dir).map(|rest| format!("{to}/{rest}")) };
            match target {
                Some(t) if new.contains(&t) => {
                    rename(a, t, &mut cs, &mut new);
                    false
                }
                _ => true,
            }
        });
    }

    // 2. Same name, size and mtime; then same size and mtime — only where the match is unique.
    for with_name in [true, false] {
        let key = |path: &str, size: i64, mtime: i64| {
            let name = if with_name { path.rsplit('/').next().unwrap_or("").to_string() } else { String::new() };
            (name, size, mtime)
        };
        let mut new_by_key: HashMap<(String, i64, i64), Vec<String>> = HashMap::new();
        for p in &new {
            let f = disk_map[p];
            new_by_key.entry(key(p, f.size as i64, f.modified_ms)).or_default().push(p.clone());
        }
        let mut gone_by_key: HashMap<(String, i64, i64), usize> = HashMap::new();
        for a in &gone {
            *gone_by_key.entry(key(&a.path, a.size, a.modified_ms)).or_default() += 1;
        }
        gone.retain(|a| {
            let k = key(&a.path, a.size, a.modified_ms);
            match new_by_key.get(&k) {
                Some(cands) if cands.len() == 1 && gone_by_key[&k] == 1 && new.contains(&cands[0]) => {
                    let to = cands[0].clone();
                    rename(a, to, &mut cs, &mut new);
                    false
                }
                _ => true,
            }
        });
    }

    cs.deletes = gone.iter().map(|a| a.id).collect();
    let mut creates: Vec<String> = new.into_iter().collect();
    creates.sort();
    cs.creates = creates.iter().map(|p| disk_map[p].clone()).collect();
    cs.changes.sort_by_key(|c| c.0);
    cs.renames.sort_by_key(|r| r.0);
    cs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn f(p: &str, size: u64, m: i64) -> FileEntry {
        FileEntry { path: PathBuf::from(p), size, modified_ms: m }
    }
    fn a(id: i64, p: &str, size: i64, m: i64) -> AssetFile {
        AssetFile { id, path: p.into(), size, modified_ms: m }
    }

    #[test]
    fn unchanged_is_empty() {
        let cs = diff(&[f("/r/a.jpg", 1, 1)], &[a(1, "/r/a.jpg", 1, 1)], &[]);
        assert!(cs.is_empty());
    }

    #[test]
    fn create_change_delete() {
        let cs = diff(&[f("/r/a.jpg", 2, 1), f("/r/new.jpg", 5, 5)], &[a(1, "/r/a.jpg", 1, 1), a(2, "/r/old.jpg", 9, 9)], &[]);
        assert_eq!(cs.changes.len(), 1);
        assert_eq!(cs.creates.len(), 1);
        assert_eq!(cs.deletes, vec![2]);
        assert!(cs.renames.is_empty());
    }

    #[test]
    fn hinted_directory_rename_keeps_ids() {
        let cs =
            diff(&[f("/r/b/x.jpg", 1, 1), f("/r/b/s/y.jpg", 1, 1)], &[a(1, "/r/a/x.jpg", 1, 1), a(2, "/r/a/s/y.jpg", 1, 1)], &[("/r/a".into(), "/r/b".into())]);
        assert_eq!(cs.renames, vec![(1, "/r/b/x.jpg".into()), (2, "/r/b/s/y.jpg".into())]);
        assert!(cs.creates.is_empty() && cs.deletes.is_empty());
    }

    #[test]
    fn unhinted_moves_match_by_size_and_mtime() {
        // poll watcher / reconcile: a file renamed, and a folder moved
        let cs = diff(
            &[f("/r/renamed.jpg", 10, 7), f("/r/z/p.jpg", 3, 3), f("/r/z/q.jpg", 3, 3)],
            &[a(1, "/r/orig.jpg", 10, 7), a(2, "/r/y/p.jpg", 3, 3), a(3, "/r/y/q.jpg", 3, 3)],
            &[],
        );
        assert_eq!(cs.renames, vec![(1, "/r/renamed.jpg".into()), (2, "/r/z/p.jpg".into()), (3, "/r/z/q.jpg".into())]);
        assert!(cs.creates.is_empty() && cs.deletes.is_empty());
    }

    #[test]
    fn ambiguous_matches_are_not_guessed() {
        let cs = diff(&[f("/r/c.jpg", 1, 1), f("/r/d.jpg", 1, 1)], &[a(1, "/r/a.jpg", 1, 1), a(2, "/r/b.jpg", 1, 1)], &[]);
        assert!(cs.renames.is_empty());
        assert_eq!((cs.creates.len(), cs.deletes.len()), (2, 2));
    }
}
