//! Reading crash states through the extent map of a state already mounted
//! (lab_core::filemap has the idea; docs/power-cuts.md, "Reading states
//! through an extent map", the argument). A mounted state whose files all
//! have readable maps becomes a class; a later state equal to it outside
//! those files' extents is a member: it has the class's metadata, so it
//! would mount, map and pass `xfs_repair -n` as the class did, and its
//! files are read from its own bytes at the class's extents, on the host.
//!
//! Trust but verify: the first `FIRST_AUDITS` states of a run read through
//! a map, and every `AUDIT_EVERY`-th after them, are also mounted, and the
//! two scans must agree. A disagreement is reported as a lab error (the
//! argument did not hold) and that class is not used again.

use std::path::Path;

use lab_core::filemap::{self, MapExtent};
use lab_disk::StateStore;
use lab_model::FileScan;

/// States read through a map that are mounted anyway: the first few of a
/// run, then one in `AUDIT_EVERY`.
pub const FIRST_AUDITS: usize = 3;
pub const AUDIT_EVERY: usize = 16;
/// Classes compared per state, most recent first: a sweep's neighbouring
/// states share metadata, older classes rarely match again.
const RECENT: usize = 32;

/// A state that was mounted and scanned clean, with its files' maps.
struct Class {
    rep: usize,
    covered: Vec<(u64, u64)>,
    /// (file, size or None when missing, extents of an existing file).
    files: Vec<(String, Option<u64>, Vec<MapExtent>)>,
    retired: bool,
}

/// The classes the verifier workers of one run have learnt (shared: the
/// states of a run are dealt out to them in turn), and what came of them.
#[derive(Default)]
pub struct Classes {
    classes: Vec<Class>,
    /// States read through a map, mounted as audits, and audits that
    /// disagreed.
    pub read: usize,
    pub audited: usize,
    pub mismatches: usize,
}

/// A state read through a class's map.
pub struct MappedRead {
    pub class: usize,
    pub files: Vec<FileScan>,
    /// Mount this one too and compare (an audit).
    pub audit: bool,
}

impl Classes {
    /// Learns state `i`, mounted and scanned clean, as a class, when every
    /// file it found has a map the host can read through.
    pub fn learn(&mut self, i: usize, files: &[FileScan], maps: &[Option<Vec<MapExtent>>]) {
        if files.len() != maps.len() {
            return;
        }
        let mut entries = Vec::new();
        for (f, m) in files.iter().zip(maps) {
            match (f.size, m) {
                (None, _) => entries.push((f.file.clone(), None, Vec::new())),
                (Some(size), Some(m)) => entries.push((f.file.clone(), Some(size), m.clone())),
                // An existing file without a readable map: not a class.
                (Some(_), None) => return,
            }
        }
        let maps: Vec<&[MapExtent]> = entries.iter().map(|(_, _, m)| m.as_slice()).collect();
        self.classes.push(Class {
            rep: i,
            covered: filemap::covered(&maps),
            files: entries,
            retired: false,
        });
    }

    /// State `i` read through the first recent class it belongs to, if any.
    pub fn read(&mut self, store: &StateStore, i: usize) -> std::io::Result<Option<MappedRead>> {
        let n = self.classes.len();
        for c in (n.saturating_sub(RECENT)..n).rev() {
            let class = &self.classes[c];
            if class.retired || !store.same_outside(i, class.rep, &class.covered)? {
                continue;
            }
            let mut files = Vec::with_capacity(class.files.len());
            for (name, size, extents) in &class.files {
                let Some(size) = *size else {
                    files.push(FileScan {
                        file: name.clone(),
                        size: None,
                        sectors: Vec::new(),
                    });
                    continue;
                };
                let runs = filemap::scan_runs(size, extents, |p, buf| store.read(i, p, buf))?;
                let runs: Vec<_> = runs.iter().map(|r| (r.from, r.to, r.sector)).collect();
                files.push(FileScan {
                    file: name.clone(),
                    size: Some(size),
                    sectors: lab_model::sectors_from_runs(&runs),
                });
            }
            let audit = self.read < FIRST_AUDITS || self.read.is_multiple_of(AUDIT_EVERY);
            self.read += 1;
            return Ok(Some(MappedRead {
                class: c,
                files,
                audit,
            }));
        }
        Ok(None)
    }

    /// The mounted result of an audited state (its files, or why the mount
    /// or `xfs_repair -n` failed): None when it agrees with the map's read;
    /// otherwise what differs, and the class is retired.
    pub fn audit(
        &mut self,
        read: &MappedRead,
        mounted: Result<&[FileScan], &str>,
        state: usize,
        dir: &Path,
    ) -> Option<String> {
        self.audited += 1;
        let first = match mounted {
            Ok(files) if read.files == files => return None,
            Ok(files) => read
                .files
                .iter()
                .zip(files)
                .find(|(a, b)| a != b)
                .map(|(a, b)| {
                    let at = a
                        .sectors
                        .iter()
                        .zip(&b.sectors)
                        .position(|(x, y)| x != y)
                        .map_or("its size or length".to_string(), |s| {
                            format!(
                                "sector {s}: map {:?}, mount {:?}",
                                a.sectors[s], b.sectors[s]
                            )
                        });
                    format!("{} differs at {at}", a.file)
                })
                .unwrap_or_else(|| "the files scanned differ".into()),
            Err(why) => format!("the mount found what the map could not: {why}"),
        };
        self.mismatches += 1;
        let class = &mut self.classes[read.class];
        class.retired = true;
        Some(format!(
            "crash state {state} read through the extent map of state {} disagrees with its mount: {first} (results in {})",
            class.rep,
            dir.display()
        ))
    }
}
