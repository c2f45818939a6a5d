//! How the page cache holds a file: the folios behind a range of it, counted
//! from `/proc/kpageflags`. The guest agent reads one flags word per cached
//! page (through an mmap of the file and `/proc/self/pagemap`); this module
//! turns those words into a census, so "large folios were used" is a fact
//! measured on the kernel under test, not an assumption about its config.

use serde::{Deserialize, Serialize};

/// `/proc/kpageflags` bit numbers (include/uapi/linux/kernel-page-flags.h).
pub const KPF_COMPOUND_HEAD: u32 = 15;
pub const KPF_COMPOUND_TAIL: u32 = 16;
pub const KPF_THP: u32 = 22;

/// The page size the census counts in (x86_64).
pub const PAGE: u64 = 4096;

/// One page of the range, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachedPage {
    /// Not in the page cache (a hole in what was cached).
    Absent,
    /// In the page cache, with its `/proc/kpageflags` word.
    Flags(u64),
}

/// What the page cache held for a range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FolioCensus {
    /// Pages of the range.
    pub pages: u64,
    /// Of those, pages in the page cache.
    pub cached: u64,
    /// Folios those cached pages belong to (a folio cut by the range's ends
    /// counts once).
    pub folios: u64,
    /// Folios of more than one page.
    pub large: u64,
    /// Pages of the largest folio seen (within the range).
    pub largest: u64,
}

impl FolioCensus {
    /// True when at least one folio of the range spans several pages.
    pub fn has_large_folios(&self) -> bool {
        self.large > 0
    }

    /// For reports: `512 of 512 pages cached, in 1 folio (1 large; the
    /// largest 512 pages, 2048 KiB)`.
    pub fn describe(&self) -> String {
        let plural = |n: u64, one: &str, many: &str| {
            if n == 1 {
                format!("{n} {one}")
            } else {
                format!("{n} {many}")
            }
        };
        format!(
            "{} of {} cached, in {} ({} large; the largest {}, {} KiB)",
            self.cached,
            plural(self.pages, "page", "pages"),
            plural(self.folios, "folio", "folios"),
            self.large,
            plural(self.largest, "page", "pages"),
            self.largest * PAGE / 1024
        )
    }
}

fn bit(flags: u64, b: u32) -> bool {
    flags & (1 << b) != 0
}

/// Counts folios over the range's pages. A folio starts at a compound head,
/// at a page that is not compound (a single-page folio), or at a tail page
/// with no cached page of its folio before it in the range (the range began
/// inside the folio, or the page before was not cached).
pub fn census(pages: &[CachedPage]) -> FolioCensus {
    let mut c = FolioCensus {
        pages: pages.len() as u64,
        ..FolioCensus::default()
    };
    // Pages of the folio being counted.
    let mut current = 0u64;
    let close = |c: &mut FolioCensus, n: u64| {
        if n > 0 {
            c.folios += 1;
            if n > 1 {
                c.large += 1;
            }
            c.largest = c.largest.max(n);
        }
    };
    for p in pages {
        match *p {
            CachedPage::Absent => {
                close(&mut c, current);
                current = 0;
            }
            CachedPage::Flags(f) => {
                c.cached += 1;
                if bit(f, KPF_COMPOUND_TAIL) && current > 0 {
                    current += 1;
                } else {
                    close(&mut c, current);
                    current = 1;
                }
            }
        }
    }
    close(&mut c, current);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: u64 = 1 << KPF_COMPOUND_HEAD;
    const TAIL: u64 = 1 << KPF_COMPOUND_TAIL;
    /// Flags that say nothing about folio shape (uptodate, lru, dirty).
    const OTHER: u64 = (1 << 3) | (1 << 5) | (1 << 4);

    /// The flags of one folio of `n` pages, as the kernel reports them.
    fn folio(n: u64) -> Vec<CachedPage> {
        (0..n)
            .map(|i| match (n, i) {
                (1, _) => CachedPage::Flags(OTHER),
                (_, 0) => CachedPage::Flags(HEAD | OTHER | (1 << KPF_THP)),
                _ => CachedPage::Flags(TAIL | OTHER),
            })
            .collect()
    }

    #[test]
    fn one_pmd_sized_folio() {
        let c = census(&folio(512));
        assert_eq!(
            c,
            FolioCensus {
                pages: 512,
                cached: 512,
                folios: 1,
                large: 1,
                largest: 512
            }
        );
        assert!(c.has_large_folios());
        assert_eq!(
            c.describe(),
            "512 of 512 pages cached, in 1 folio (1 large; the largest 512 pages, 2048 KiB)"
        );
    }

    #[test]
    fn single_page_folios_are_not_large() {
        let pages: Vec<CachedPage> = (0..8).flat_map(|_| folio(1)).collect();
        let c = census(&pages);
        assert_eq!((c.folios, c.large, c.largest), (8, 0, 1));
        assert!(!c.has_large_folios());
    }

    #[test]
    fn a_range_that_starts_inside_a_folio_counts_its_part_once() {
        let pages = folio(16)[4..].to_vec();
        let c = census(&pages);
        assert_eq!((c.folios, c.large, c.largest), (1, 1, 12));
    }

    #[test]
    fn a_hole_splits_what_is_cached() {
        let mut pages = folio(4);
        pages.push(CachedPage::Absent);
        pages.extend(folio(4)[1..].iter().copied());
        let c = census(&pages);
        assert_eq!((c.pages, c.cached, c.folios, c.largest), (8, 7, 2, 4));
    }

    proptest! {
        /// The oracle is the layout itself: folios of the given sizes, with
        /// absent runs between some of them, are counted back exactly.
        #[test]
        fn census_counts_the_folios_it_was_built_from(
            layout in proptest::collection::vec((1u64..=64, 0u64..3), 0..40)
        ) {
            let mut pages = Vec::new();
            for (n, gap) in &layout {
                pages.extend(folio(*n));
                pages.extend(std::iter::repeat_n(CachedPage::Absent, *gap as usize));
            }
            let c = census(&pages);
            let sizes: Vec<u64> = layout.iter().map(|(n, _)| *n).collect();
            prop_assert_eq!(c.pages, pages.len() as u64);
            prop_assert_eq!(c.cached, sizes.iter().sum::<u64>());
            prop_assert_eq!(c.folios, sizes.len() as u64);
            prop_assert_eq!(c.large, sizes.iter().filter(|n| **n > 1).count() as u64);
            prop_assert_eq!(c.largest, sizes.iter().copied().max().unwrap_or(0));
        }
    }
}
