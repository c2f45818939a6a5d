//! What a scan of a file sees, computed from its extent map instead of
//! through a mount.
//!
//! The verifier mounts a crash state, scans the workload's files sector by
//! sector and runs `xfs_repair -n`; most of that time is the mount, the
//! repair and the guest's round trip, all of which depend only on the
//! filesystem's metadata. Crash states of one run mostly differ in file
//! data: the in-flight subsets of the data writes. So once a state has
//! been mounted and its files' extent maps read (FIEMAP), another state
//! whose bytes are equal to it everywhere outside those files' extents
//! mounts to the same metadata, the same maps, the same `xfs_repair -n`
//! verdict, and its files read as its own bytes at those extents
//! (docs/power-cuts.md, "Reading states through an extent map", has the
//! argument and its limits). This module is the pure half: the runs a
//! scan reports, from a map and a way to read the state's bytes.

use serde::{Deserialize, Serialize};

use crate::stamp::{decode, Sector, SECTOR};

/// One run of sectors with the same content class (and, for stamps, the
/// same write, at consecutive offsets): the unit the guest's scan reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub from: u64,
    pub to: u64,
    #[serde(flatten)]
    pub sector: Sector,
}

/// Builds the runs of a file read front to back, chunk by chunk (the
/// guest's scan and the host's extent-map scan share it, so both report
/// exactly the same runs for the same bytes).
#[derive(Debug, Default)]
pub struct RunBuilder {
    cur: Option<Run>,
}

impl RunBuilder {
    /// Adds the chunk at file offset `off` (at most one sector; shorter only
    /// at the end of the file). Returns the run it ended, if any.
    pub fn push(&mut self, off: u64, chunk: &[u8]) -> Option<Run> {
        let s = decode(chunk);
        let end = off + chunk.len() as u64;
        let extends = match (&self.cur, &s) {
            (Some(r), Sector::Stamped(b)) => match r.sector {
                Sector::Stamped(a) => {
                    a.write == b.write && a.file == b.file && b.offset == off - r.from + a.offset
                }
                _ => false,
            },
            (Some(r), other) => r.sector == *other,
            (None, _) => false,
        };
        if extends {
            if let Some(r) = self.cur.as_mut() {
                r.to = end;
            }
            return None;
        }
        self.cur.replace(Run {
            from: off,
            to: end,
            sector: s,
        })
    }

    /// The last run, once the file has been read.
    pub fn finish(self) -> Option<Run> {
        self.cur
    }
}

/// One extent of a file as FIEMAP reports it (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapExtent {
    pub logical: u64,
    /// On the block device.
    pub physical: u64,
    pub len: u64,
    /// Allocated but unwritten: reads as zeroes whatever the disk holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unwritten: bool,
}

/// FIEMAP extent flags the extent-map read can stand behind: the last
/// extent, unwritten, merged by the kernel, shared (reflink). Any other
/// (delalloc, unknown location, encoded, inline, tail-packed, not
/// aligned) makes the file unmappable and its state is mounted.
pub const FIEMAP_FLAGS_UNDERSTOOD: u32 = 0x1 | 0x800 | 0x1000 | 0x2000;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// The physical byte ranges a set of maps covers, sorted and merged.
pub fn covered(maps: &[&[MapExtent]]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = maps
        .iter()
        .flat_map(|m| m.iter().map(|e| (e.physical, e.physical + e.len)))
        .filter(|(a, b)| a < b)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether `[from, to)` lies inside one of the merged `ranges`.
pub fn inside(ranges: &[(u64, u64)], from: u64, to: u64) -> bool {
    let i = ranges.partition_point(|r| r.1 < to);
    ranges.get(i).is_some_and(|r| r.0 <= from && to <= r.1)
}

/// The runs a scan of a file of `size` bytes mapped by `extents` reports,
/// reading the state's bytes with `read(physical, buf)`. Holes and
/// unwritten extents read as zeroes, as the kernel returns them.
pub fn scan_runs<E>(
    size: u64,
    extents: &[MapExtent],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<Vec<Run>, E> {
    let mut runs = Vec::new();
    let mut b = RunBuilder::default();
    let mut buf = [0u8; SECTOR];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(SECTOR as u64) as usize;
        let chunk = &mut buf[..n];
        chunk.fill(0);
        // XFS extents are block aligned and blocks are at least a sector,
        // so a sector lies in one extent or one hole; it is read piecewise
        // anyway, so that any valid map is read right.
        let mut pos = off;
        while pos < off + n as u64 {
            let at = (pos - off) as usize;
            match extents
                .iter()
                .find(|e| e.logical <= pos && pos < e.logical + e.len)
            {
                Some(e) => {
                    let upto = (e.logical + e.len).min(off + n as u64);
                    if !e.unwritten {
                        let len = (upto - pos) as usize;
                        read(e.physical + (pos - e.logical), &mut chunk[at..at + len])?;
                    }
                    pos = upto;
                }
                None => {
                    // A hole up to the next extent or the sector's end.
                    let next = extents
                        .iter()
                        .map(|e| e.logical)
                        .filter(|&l| l > pos)
                        .min()
                        .unwrap_or(u64::MAX);
                    pos = next.min(off + n as u64);
                }
            }
        }
        if let Some(r) = b.push(off, chunk) {
            runs.push(r);
        }
        off += n as u64;
    }
    runs.extend(b.finish());
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{encode_write, Stamp};
    use proptest::prelude::*;

    /// The guest's view: the file's bytes laid out, read front to back.
    fn runs_of_bytes(bytes: &[u8]) -> Vec<Run> {
        let mut b = RunBuilder::default();
        let mut runs: Vec<Run> = bytes
            .chunks(SECTOR)
            .enumerate()
            .filter_map(|(i, c)| b.push((i * SECTOR) as u64, c))
            .collect();
        runs.extend(b.finish());
        runs
    }

    #[test]
    fn runs_follow_a_write_and_break_at_another() {
        let mut bytes = vec![0u8; 4 * SECTOR];
        encode_write(7, 1, 3, 1, 0, &mut bytes[..2 * SECTOR]);
        encode_write(
            7,
            1,
            4,
            2,
            2 * SECTOR as u64,
            &mut bytes[2 * SECTOR..3 * SECTOR],
        );
        let runs = runs_of_bytes(&bytes);
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert_eq!((runs[0].from, runs[0].to), (0, 1024));
        assert!(matches!(
            runs[0].sector,
            Sector::Stamped(Stamp { write: 3, .. })
        ));
        assert_eq!(
            (runs[2].from, runs[2].to, runs[2].sector),
            (1536, 2048, Sector::Zero)
        );
    }

    #[test]
    fn covered_merges_and_inside_needs_one_range() {
        let a = [MapExtent {
            logical: 0,
            physical: 4096,
            len: 4096,
            unwritten: false,
        }];
        let b = [
            MapExtent {
                logical: 0,
                physical: 8192,
                len: 4096,
                unwritten: true,
            },
            MapExtent {
                logical: 8192,
                physical: 65536,
                len: 8192,
                unwritten: false,
            },
        ];
        let c = covered(&[&a, &b]);
        assert_eq!(c, vec![(4096, 12288), (65536, 73728)]);
        assert!(inside(&c, 4096, 12288));
        assert!(inside(&c, 66048, 66560));
        assert!(!inside(&c, 12288, 12800));
        assert!(!inside(&c, 65024, 66048), "straddles the start");
        assert!(!inside(&[], 0, 512));
    }

    /// (file size, raw extents as (start, len, unwritten, keep) in sectors,
    /// what each disk sector holds).
    type Layout = (u64, Vec<(u64, u64, bool, bool)>, Vec<u8>);

    fn layout() -> impl Strategy<Value = Layout> {
        (
            1u64..=16 * SECTOR as u64,
            proptest::collection::vec((0u64..16, 1u64..4, any::<bool>(), any::<bool>()), 0..6),
            proptest::collection::vec(0u8..4, 64),
        )
    }

    proptest! {
        /// A file of up to 16 sectors laid out on a "disk" by random extents
        /// (some unwritten, some holes, a size that may end mid-sector): the
        /// extent-map scan reports exactly the runs a front-to-back read of
        /// the file's bytes (as the kernel returns them) does.
        #[test]
        fn extent_map_scan_equals_reading_the_file((size, raw, kinds) in layout()) {
            // Extents in sectors: (logical start, length, unwritten, keep);
            // overlapping ones dropped so the map is a valid one.
            let mut extents: Vec<MapExtent> = Vec::new();
            let mut next_phys = 100u64;
            for (start, len, unwritten, keep) in raw {
                if !keep && !unwritten { continue; }
                let e = MapExtent {
                    logical: start * SECTOR as u64,
                    physical: next_phys * SECTOR as u64,
                    len: len * SECTOR as u64,
                    unwritten,
                };
                if extents.iter().any(|x| x.logical < e.logical + e.len && e.logical < x.logical + x.len) {
                    continue;
                }
                next_phys += len + 3;
                extents.push(e);
            }
            // The disk: each sector a stamp of one of a few writes, zeroes or garbage.
            let disk_sectors = next_phys as usize + 8;
            let mut disk = vec![0u8; disk_sectors * SECTOR];
            for (i, s) in disk.chunks_mut(SECTOR).enumerate() {
                match kinds[i % kinds.len()] {
                    0 => {}
                    1 => s.fill(0xA5),
                    k => encode_write(9, 1, u32::from(k), 1, (i * SECTOR) as u64, s),
                }
            }
            // What the kernel returns for the file.
            let mut file = vec![0u8; size as usize];
            for e in &extents {
                if e.unwritten { continue; }
                for b in 0..e.len {
                    let l = e.logical + b;
                    if l < size {
                        file[l as usize] = disk[(e.physical + b) as usize];
                    }
                }
            }
            let want = runs_of_bytes(&file);
            let got = scan_runs(size, &extents, |p, buf: &mut [u8]| -> Result<(), ()> {
                buf.copy_from_slice(&disk[p as usize..p as usize + buf.len()]);
                Ok(())
            }).unwrap();
            prop_assert_eq!(got, want);
        }
    }
}
