//! Folder counts for listings, session creation and admission: read from the catalog's
//! per-directory counts where the watcher follows the folder (O(folders) per request), and from
//! a walk only where the catalog cannot know (no watcher, or a root not reconciled yet).

use std::path::Path;

use super::{Result, Sessions};
use crate::catalog::DirCount;
use crate::library::SubdirScan;

/// Where a listing's numbers came from (the API says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CountsFrom {
    /// The catalog's counts, kept by the watcher (non-image files: as of its last walk).
    Catalog,
    /// A walk of the disk, now (the catalog does not follow this folder).
    Walk,
}

/// The catalog's per-directory counts at and below one folder, sorted by path (byte order).
pub(crate) struct CatalogCounts {
    dirs: Vec<DirCount>,
    other: Vec<(String, i64)>,
}

/// Sum over `rows` (sorted by path) of the rows at `dir`, and below it when `recursive`.
fn sum_under<T>(rows: &[T], path: impl Fn(&T) -> &str, value: impl Fn(&T) -> i64, dir: &str, recursive: bool) -> i64 {
    let dir = dir.trim_end_matches('/');
    let exact = rows.binary_search_by(|r| path(r).cmp(dir)).map(|i| value(&rows[i])).unwrap_or(0);
    if !recursive {
        return exact;
    }
    let (lo, hi) = (format!("{dir}/"), format!("{dir}0"));
    let a = rows.partition_point(|r| path(r) < lo.as_str());
    let b = rows.partition_point(|r| path(r) < hi.as_str());
    exact + rows[a..b].iter().map(value).sum::<i64>()
}

impl CatalogCounts {
    /// Catalogued images at `dir` (and below when `recursive`).
    pub fn images(&self, dir: &Path, recursive: bool) -> u64 {
        sum_under(&self.dirs, |d| d.path.as_str(), |d| d.images, &dir.to_string_lossy(), recursive).max(0) as u64
    }

    /// Non-image files at `dir` (and below when `recursive`), as the watcher last walked them.
    pub fn other(&self, dir: &Path, recursive: bool) -> u64 {
        sum_under(&self.other, |o| o.0.as_str(), |o| o.1, &dir.to_string_lossy(), recursive).max(0) as u64
    }
}

impl Sessions {
    /// The catalog's counts at and below `dir`, when the catalog knows that folder.
    pub(crate) async fn catalog_counts(&self, dir: &Path) -> Result<Option<CatalogCounts>> {
        if !self.library.is_catalogued(dir) {
            return Ok(None);
        }
        let d = dir.to_string_lossy();
        Ok(Some(CatalogCounts { dirs: self.catalog.dir_counts(&d).await?, other: self.catalog.other_files(&d).await? }))
    }

    /// The subdirectories of `root` as sessions see them (each visible child folder with its
    /// counts, recursive or not, plus the root itself when it holds images directly) and where
    /// the numbers came from. Custom `extensions` can only be answered by a walk.
    pub async fn list_subdirs(&self, root: &Path, recursive: bool, extensions: Option<&[String]>) -> Result<(Vec<SubdirScan>, CountsFrom)> {
        let custom = extensions.is_some_and(|e| {
            let mut a: Vec<&String> = e.iter().collect();
            let mut b: Vec<&String> = self.library.extensions().iter().collect();
            a.sort();
            b.sort();
            a != b
        });
        if !custom && let Some(c) = self.catalog_counts(root).await? {
            let r2 = root.to_path_buf();
            let children = self.blocking(move |lib| lib.child_dirs(&r2)).await?;
            let mut out = Vec::with_capacity(children.len() + 1);
            let direct = c.images(root, false);
            if direct > 0 {
                out.push(SubdirScan { path: root.to_path_buf(), name: ".".into(), image_count: direct, unsupported: c.other(root, false), is_root: true });
            }
            for child in children {
                out.push(SubdirScan {
                    name: child.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    image_count: c.images(&child, recursive),
                    unsupported: c.other(&child, recursive),
                    path: child,
                    is_root: false,
                });
            }
            return Ok((out, CountsFrom::Catalog));
        }
        let r2 = root.to_path_buf();
        let exts = extensions.map(|e| e.to_vec());
        let subs = self.blocking(move |lib| lib.list_subdirectories(&r2, recursive, exts.as_deref())).await?;
        Ok((subs, CountsFrom::Walk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_folder_and_below_but_not_its_namesakes() {
        let rows = vec![("/p", 1), ("/p/a", 2), ("/p/a b", 100), ("/p/a-x", 50), ("/p/a/b", 3), ("/p/a/b/c", 4), ("/p/a0", 7), ("/p/b", 5)];
        let s = |dir, rec| sum_under(&rows, |r| r.0, |r| r.1, dir, rec);
        assert_eq!(s("/p/a", true), 9);
        assert_eq!(s("/p/a", false), 2);
        assert_eq!(s("/p/a/", true), 9);
        assert_eq!(s("/p", false), 1);
        assert_eq!(s("/p", true), 172);
        assert_eq!(s("/q", true), 0);
    }
}
