//! Duplicates. Exact copies share a SHA-256 of their bytes (`content_hash`): the pipeline embeds
//! such content once and a later copy reuses the vector. Near-duplicates (resized, re-encoded,
//! slightly edited copies) share most of a 64-bit difference hash (dHash: the image reduced to
//! 9x8 grey pixels, one bit per horizontally adjacent pair, set where the left one is brighter):
//! two images are near-duplicates when their dHashes differ in at most [`NEAR_BITS`] bits.
//!
//! The threshold: re-encoding or resizing a photo typically flips 0–4 of the 64 bits, while
//! unrelated photos differ in about 32 (half); 6 keeps a wide margin on both sides, like the
//! replaced service's dHash check.

use std::collections::HashMap;

use serde::Serialize;

use crate::catalog::AssetHashes;
use crate::decode::RgbImage;

/// Largest dHash distance (bits of 64) at which two images count as near-duplicates.
pub const NEAR_BITS: u32 = 6;

/// 64-bit difference hash of an image (any size).
pub fn dhash(img: &RgbImage) -> u64 {
    let (w, h) = (img.width.max(1) as usize, img.height.max(1) as usize);
    // Box-average the grey image into 9x8 cells.
    let mut cells = [[0f64; 9]; 8];
    for (cy, row) in cells.iter_mut().enumerate() {
        let (y0, y1) = (cy * h / 8, ((cy + 1) * h / 8).max(cy * h / 8 + 1).min(h));
        for (cx, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (cx * w / 9, ((cx + 1) * w / 9).max(cx * w / 9 + 1).min(w));
            let (mut sum, mut n) = (0f64, 0f64);
            for y in y0..y1 {
                for x in x0..x1 {
                    let i = (y * w + x) * 3;
                    if let Some(px) = img.data.get(i..i + 3) {
                        sum += 0.299 * px[0] as f64 + 0.587 * px[1] as f64 + 0.114 * px[2] as f64;
                        n += 1.0;
                    }
                }
            }
            *cell = if n > 0.0 { sum / n } else { 0.0 };
        }
    }
    let mut bits = 0u64;
    for row in &cells {
        for x in 0..8 {
            bits = (bits << 1) | u64::from(row[x] > row[x + 1]);
        }
    }
    bits
}

pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Whether two assets are copies of each other: `Some(true)` for the same bytes,
/// `Some(false)` for near-identical pixels (dHash within [`NEAR_BITS`]), `None` otherwise.
pub fn copy_kind(a: &AssetHashes, b: &AssetHashes) -> Option<bool> {
    if a.content_hash.is_some() && a.content_hash == b.content_hash {
        return Some(true);
    }
    match (a.dhash, b.dhash) {
        (Some(x), Some(y)) if distance(x, y) <= NEAR_BITS => Some(false),
        _ => None,
    }
}

/// One asset in a group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub asset_id: i64,
    pub path: String,
    /// Bits its dHash differs from the group's first asset's (0 for exact copies).
    pub distance: u32,
    /// Same bytes as the group's first asset.
    pub identical: bool,
}

/// Assets that are copies of one another (the first, lowest id, is the group's original).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub members: Vec<Member>,
}

/// Group assets whose bytes are identical or whose dHashes are within [`NEAR_BITS`]
/// (transitively). Candidate pairs come from buckets: split the 64 bits into `NEAR_BITS + 1`
/// bands; two hashes within `NEAR_BITS` bits agree on at least one whole band (pigeonhole), so
/// only assets sharing a band value are compared.
pub fn groups(assets: &[AssetHashes]) -> Vec<Group> {
    let n = assets.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let union = |p: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(p, a), find(p, b));
        if ra != rb {
            p[ra.max(rb)] = ra.min(rb);
        }
    };
    let mut by_content: HashMap<&str, usize> = HashMap::new();
    for (i, a) in assets.iter().enumerate() {
        if let Some(h) = a.content_hash.as_deref() {
            match by_content.get(h) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    by_content.insert(h, i);
                }
            }
        }
    }
    let bands = NEAR_BITS as usize + 1;
    let width = 64usize.div_ceil(bands);
    for band in 0..bands {
        let shift = band * width;
        if shift >= 64 {
            break;
        }
        let mask = if width + shift >= 64 { u64::MAX >> shift } else { (1u64 << width) - 1 };
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, a) in assets.iter().enumerate() {
            if let Some(d) = a.dhash {
                buckets.entry((d >> shift) & mask).or_default().push(i);
            }
        }
        for members in buckets.values() {
            // A huge bucket (e.g. thousands of flat images) is compared pairwise all the same:
            // each pair costs one XOR.
            for (k, &i) in members.iter().enumerate() {
                for &j in &members[k + 1..] {
                    if let (Some(a), Some(b)) = (assets[i].dhash, assets[j].dhash)
                        && distance(a, b) <= NEAR_BITS
                    {
                        union(&mut parent, i, j);
                    }
                }
            }
        }
    }
    let mut grouped: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..n {
        let r = find(&mut parent, i);
        grouped.entry(r).or_default().push(i);
    }
    let mut out: Vec<Group> = grouped
        .into_values()
        .filter(|m| m.len() > 1)
        .map(|mut m| {
            m.sort_by_key(|&i| assets[i].id);
            let first = &assets[m[0]];
            Group {
                members: m
                    .iter()
                    .map(|&i| {
                        let a = &assets[i];
                        Member {
                            asset_id: a.id,
                            path: a.path.clone(),
                            distance: match (first.dhash, a.dhash) {
                                (Some(x), Some(y)) => distance(x, y),
                                _ => 0,
                            },
                            identical: a.content_hash.is_some() && a.content_hash == first.content_hash,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by_key(|g| g.members[0].asset_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&f(x, y));
            }
        }
        RgbImage { width: w, height: h, data }
    }

    fn scene(x: u32, y: u32, scale: u32) -> [u8; 3] {
        let (x, y) = (x * 100 / scale, y * 100 / scale);
        let v = ((x * 7 + y * 3) % 200 + if (x / 20 + y / 15) % 2 == 0 { 40 } else { 0 }) as u8;
        [v, v / 2, 255 - v]
    }

    #[test]
    fn resized_copies_are_near_and_others_are_not() {
        let a = dhash(&img(100, 80, |x, y| scene(x, y, 100)));
        let half = dhash(&img(50, 40, |x, y| scene(x, y, 50)));
        let other = dhash(&img(100, 80, |x, y| [((x * y) % 256) as u8, (x % 256) as u8, (y * 5 % 256) as u8]));
        assert!(distance(a, half) <= NEAR_BITS, "resized copy: {} bits", distance(a, half));
        assert!(distance(a, other) > NEAR_BITS, "unrelated: {} bits", distance(a, other));
    }

    #[test]
    fn groups_join_exact_and_near_copies() {
        let h = |id: i64, c: Option<&str>, d: u64| AssetHashes { id, path: format!("/p/{id}.jpg"), content_hash: c.map(str::to_owned), dhash: Some(d) };
        let base = 0xf0f0_1234_5678_9abc_u64;
        let assets = vec![
            h(1, Some("aa"), base),
            h(2, Some("aa"), base),         // identical bytes
            h(3, Some("bb"), base ^ 0b111), // 3 bits off: near
            h(4, Some("cc"), !base),        // unrelated
            h(5, Some("dd"), base ^ 0xff),  // 8 bits off from 1, but 5 from 3: joins through 3
        ];
        let g = groups(&assets);
        assert_eq!(g.len(), 1, "{g:?}");
        let ids: Vec<i64> = g[0].members.iter().map(|m| m.asset_id).collect();
        assert_eq!(ids, [1, 2, 3, 5]);
        assert!(g[0].members[1].identical && !g[0].members[2].identical);
        assert_eq!(g[0].members[2].distance, 3);
    }
}
