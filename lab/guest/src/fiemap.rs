//! A file's extent map through the FS_IOC_FIEMAP ioctl, for the verifier's
//! extent-map reads (lab_core::filemap).

use lab_core::filemap::{MapExtent, FIEMAP_EXTENT_UNWRITTEN, FIEMAP_FLAGS_UNDERSTOOD};
use std::os::fd::AsRawFd;

/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Extents asked for per call.
const BATCH: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Request {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [Extent; BATCH],
}

/// The file's extents, or None when one carries a flag the host cannot
/// read through.
pub fn extents(path: &str) -> std::io::Result<Option<Vec<MapExtent>>> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut req = Request {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [Extent::default(); BATCH],
        };
        // SAFETY: `req` is a valid struct fiemap with room for BATCH
        // extents, as extent_count says; the kernel writes only into it.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, &mut req as *mut Request) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = req.mapped_extents as usize;
        if n == 0 {
            return Ok(Some(out));
        }
        for e in &req.extents[..n] {
            if e.flags & !FIEMAP_FLAGS_UNDERSTOOD != 0 {
                return Ok(None);
            }
            out.push(MapExtent {
                logical: e.logical,
                physical: e.physical,
                len: e.length,
                unwritten: e.flags & FIEMAP_EXTENT_UNWRITTEN != 0,
            });
        }
        let last = req.extents[n - 1];
        if last.flags & FIEMAP_EXTENT_LAST != 0 {
            return Ok(Some(out));
        }
        start = last.logical + last.length;
    }
}
