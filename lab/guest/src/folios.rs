//! The page-cache census of a `folios` step: which folios hold a range of an
//! open file. The range is mapped read-only; `mincore` says which pages are
//! cached, and only those are touched (so nothing is read in, and readahead
//! cannot build folios the workload did not); `/proc/self/pagemap` gives
//! each touched page's frame and `/proc/kpageflags` that frame's flags,
//! which `lab_core::folio::census` counts. Both files need root and
//! CONFIG_PROC_PAGE_MONITOR; without them the step fails saying so.

use std::fs::File;
use std::os::unix::fs::FileExt;

use lab_core::folio::{census, CachedPage, FolioCensus, PAGE};

type Failure = (i32, String);

fn os_err(what: &str, e: std::io::Error) -> Failure {
    (0, format!("{what}: {e}"))
}

/// A read-only shared mapping, unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: addr/len came from a successful mmap.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Counts the folios behind `[offset, offset + len)` of `fd` (`len` None:
/// to the end of the file). `offset` is page aligned (validated).
pub fn of_range(fd: i32, offset: u64, len: Option<u64>) -> Result<FolioCensus, Failure> {
    // SAFETY: a zeroed stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err((crate::plan::errno(), String::new()));
    }
    let size = st.st_size as u64;
    let end = match len {
        Some(l) => offset + l,
        None => size.div_ceil(PAGE) * PAGE,
    };
    if end <= offset || offset >= size {
        return Err((
            0,
            format!("the range {offset}..{end} holds no page of the file ({size} bytes)"),
        ));
    }
    let npages = ((end - offset) / PAGE) as usize;
    let len = npages * PAGE as usize;
    // SAFETY: a fresh read-only mapping of an open descriptor.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err((crate::plan::errno(), "mmap".into()));
    }
    let map = Mapping { addr, len };
    let mut resident = vec![0u8; npages];
    // SAFETY: the vector has one byte per page of the mapping.
    if unsafe { libc::mincore(map.addr, map.len, resident.as_mut_ptr()) } < 0 {
        return Err((crate::plan::errno(), "mincore".into()));
    }
    // Fault in the cached pages only, so pagemap has their frames.
    for (i, r) in resident.iter().enumerate() {
        if r & 1 == 1 {
            // SAFETY: inside the mapping; the page is cached, so this maps
            // it without I/O.
            unsafe { std::ptr::read_volatile((map.addr as *const u8).add(i * PAGE as usize)) };
        }
    }
    let pagemap = File::open("/proc/self/pagemap").map_err(|e| os_err("/proc/self/pagemap", e))?;
    let kpageflags = File::open("/proc/kpageflags")
        .map_err(|e| os_err("/proc/kpageflags (CONFIG_PROC_PAGE_MONITOR)", e))?;
    let mut entries = vec![0u8; npages * 8];
    pagemap
        .read_exact_at(&mut entries, (map.addr as u64 / PAGE) * 8)
        .map_err(|e| os_err("/proc/self/pagemap", e))?;
    let mut pages = Vec::with_capacity(npages);
    for (i, r) in resident.iter().enumerate() {
        let e = u64::from_le_bytes(entries[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let present = e >> 63 == 1;
        let pfn = e & ((1 << 55) - 1);
        if r & 1 == 0 || !present {
            pages.push(CachedPage::Absent);
            continue;
        }
        if pfn == 0 {
            return Err((
                0,
                "/proc/self/pagemap hides frame numbers (the agent is not root)".into(),
            ));
        }
        let mut w = [0u8; 8];
        kpageflags
            .read_exact_at(&mut w, pfn * 8)
            .map_err(|e| os_err("/proc/kpageflags", e))?;
        pages.push(CachedPage::Flags(u64::from_le_bytes(w)));
    }
    Ok(census(&pages))
}
