//! statx(2) with the atomic-write fields. Declared here rather than taken
//! from libc so that fields newer than the libc crate (unit_max_opt, Linux
//! 6.16) are read too.

use std::ffi::CString;
use std::io;

use lab_core::limits::{
    BufferedProbe, CombinedRequest, StatxAtomic, StatxBuffered, STATX_WRITE_ATOMIC_BUF,
};

const STATX_WRITE_ATOMIC: u32 = 0x0001_0000;
const STATX_BASIC_STATS: u32 = 0x0000_07ff;
const STATX_DIOALIGN: u32 = 0x0000_2000;
const STATX_ATTR_WRITE_ATOMIC: u64 = 0x0040_0000;
const S_IFMT: u16 = 0o170000;
const S_IFBLK: u16 = 0o060000;

/// `struct statx` from include/uapi/linux/stat.h (256 bytes).
#[repr(C)]
#[derive(Default)]
struct RawStatx {
    mask: u32,
    blksize: u32,
    attributes: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u16,
    _spare0: u16,
    ino: u64,
    size: u64,
    blocks: u64,
    attributes_mask: u64,
    times: [u64; 8],
    rdev_major: u32,
    rdev_minor: u32,
    dev_major: u32,
    dev_minor: u32,
    mnt_id: u64,
    dio_mem_align: u32,
    dio_offset_align: u32,
    subvol: u64,
    atomic_write_unit_min: u32,
    atomic_write_unit_max: u32,
    atomic_write_segments_max: u32,
    dio_read_offset_align: u32,
    atomic_write_unit_max_opt: u32,
    _spare2: u32,
    /// 0xc0: the buffered limits of STATX_WRITE_ATOMIC_BUF (the lab's own
    /// series); spare space, so zero, on kernels without it.
    atomic_write_unit_min_buf: u32,
    atomic_write_unit_max_buf: u32,
    _spare3: [u64; 7],
}

const _: () = assert!(std::mem::size_of::<RawStatx>() == 256);

pub struct StatxResult {
    pub atomic: StatxAtomic,
    pub buffered: StatxBuffered,
    /// Which bits came back when both were asked for in one call.
    pub combined: CombinedRequest,
    pub blksize: u32,
    /// O_DIRECT offset alignment (0 when the kernel does not say).
    pub dio_offset_align: u32,
    pub is_block_device: bool,
}

fn raw_statx(path: &CString, mask: u32) -> io::Result<RawStatx> {
    let mut buf = RawStatx::default();
    // SAFETY: buf is a properly sized, writable struct statx.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            mask,
            &mut buf as *mut RawStatx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

/// The atomic-write limits of `path`, each kind asked for in a call of its
/// own: implementations of buffered atomic writes disagree on what asking
/// for both at once means (the seed RFC clears both bits), and the
/// direct-I/O limits must not depend on that. A third call asks for both,
/// to report how the kernel answers it.
pub fn statx_atomic(path: &str) -> io::Result<StatxResult> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // Kernels ignore request bits they do not know.
    let buf = raw_statx(&c, STATX_BASIC_STATS | STATX_WRITE_ATOMIC | STATX_DIOALIGN)?;
    let alone = raw_statx(&c, STATX_BASIC_STATS | STATX_WRITE_ATOMIC_BUF)?;
    let both = raw_statx(&c, STATX_WRITE_ATOMIC | STATX_WRITE_ATOMIC_BUF)?;
    Ok(StatxResult {
        atomic: StatxAtomic {
            mask_write_atomic: buf.mask & STATX_WRITE_ATOMIC != 0,
            attr_write_atomic: buf.attributes & STATX_ATTR_WRITE_ATOMIC != 0,
            unit_min: buf.atomic_write_unit_min,
            unit_max: buf.atomic_write_unit_max,
            unit_max_opt: buf.atomic_write_unit_max_opt,
            segments_max: buf.atomic_write_segments_max,
        },
        buffered: BufferedProbe {
            mask_buf: alone.mask & STATX_WRITE_ATOMIC_BUF != 0,
            unit_min: alone.atomic_write_unit_min,
            unit_max: alone.atomic_write_unit_max,
            unit_min_buf: alone.atomic_write_unit_min_buf,
            unit_max_buf: alone.atomic_write_unit_max_buf,
        }
        .limits(),
        combined: CombinedRequest {
            direct: both.mask & STATX_WRITE_ATOMIC != 0,
            buffered: both.mask & STATX_WRITE_ATOMIC_BUF != 0,
        },
        blksize: buf.blksize,
        dio_offset_align: if buf.mask & STATX_DIOALIGN != 0 {
            buf.dio_offset_align
        } else {
            0
        },
        is_block_device: buf.mode & S_IFMT == S_IFBLK,
    })
}
