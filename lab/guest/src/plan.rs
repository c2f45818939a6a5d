//! `lab-guest run`: executes a Plan of steps (JSON on stdin) and prints one
//! StepResult per step (JSON lines), flushing after each so the host sees
//! progress even if the guest dies mid-plan.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io::{self, Read, Write};

use lab_core::stamp::{self, Sector, Stamp, SECTOR};
use lab_core::steps::{
    errno_name, BufferPlacement, FileOnly, MmapWrite, Plan, Pwrite, Step, StepResult,
};

const RWF_DSYNC: i32 = 0x02;
const RWF_SYNC: i32 = 0x04;
const RWF_ATOMIC: i32 = 0x40;
const PAGE: usize = 4096;

/// _IOR(0x12, 114, size_t): a block device's length in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// What one write puts down: its stamp identity and range.
struct Pattern {
    run: u64,
    file: u32,
    write: u32,
    generation: u32,
    offset: u64,
    len: u64,
    stamped: bool,
}

struct OpenFile {
    fd: i32,
    id: u32,
    path: String,
}

/// A stamped write that returned an error.
struct FailedWrite {
    path: String,
    /// `step 5 pwritev2(off=0 len=4096 RWF_ATOMIC)`.
    describe: String,
    errno: String,
    file: u32,
    write: u32,
    offset: u64,
    len: u64,
}

#[derive(Default)]
struct State {
    files: HashMap<String, OpenFile>,
    last: Option<String>,
    next_file_id: u32,
    next_write: u32,
    generation: HashMap<String, u32>,
    /// Per file: sector offset -> the stamp this plan wrote there last
    /// (None: zeroes, from a punch, zero range or truncate since).
    written: HashMap<String, BTreeMap<u64, Option<Stamp>>>,
    /// Stamped writes that returned an error: `verify` looks for their
    /// data anyway (a failed write that changed the file is a finding).
    failed: Vec<FailedWrite>,
    /// The step being run, for findings that name it.
    step: usize,
    /// The census the last `folios` step took, for its result.
    census: Option<lab_core::folio::FolioCensus>,
}

pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

type Outcome = Result<i64, (i32, String)>;

fn fail(detail: impl Into<String>) -> Outcome {
    Err((0, detail.into()))
}

fn check(ret: i64) -> Outcome {
    if ret < 0 {
        Err((errno(), String::new()))
    } else {
        Ok(ret)
    }
}

/// A page-aligned allocation with room to place a buffer anywhere in it.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(size: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(size.max(1), PAGE).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, layout }
    }
    fn slice(&mut self, start: usize, len: usize) -> &mut [u8] {
        assert!(start + len <= self.layout.size());
        // SAFETY: in bounds of the allocation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl State {
    fn resolve(&self, root: &str, file: &str) -> String {
        if file.starts_with('/') {
            file.to_string()
        } else {
            format!("{}/{}", root.trim_end_matches('/'), file)
        }
    }

    fn fd(&self, root: &str, file: &Option<String>) -> Result<(i32, String), (i32, String)> {
        let name = match file {
            Some(f) => self.resolve(root, f),
            None => self
                .last
                .clone()
                .ok_or((0, "no file is open".to_string()))?,
        };
        let f = self
            .files
            .get(&name)
            .ok_or((0, format!("{name} is not open")))?;
        Ok((f.fd, f.path.clone()))
    }

    fn open(&mut self, root: &str, o: &lab_core::steps::Open) -> Outcome {
        let path = self.resolve(root, &o.file);
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
        if !path.starts_with("/dev/") {
            flags |= libc::O_CREAT;
        }
        if o.direct {
            flags |= libc::O_DIRECT;
        }
        if o.sync {
            flags |= libc::O_SYNC;
        }
        if o.dsync {
            flags |= libc::O_DSYNC;
        }
        let c = CString::new(path.clone()).map_err(|_| (libc::EINVAL, String::new()))?;
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
        let fd = check(i64::from(fd))? as i32;
        if let Some(old) = self.files.remove(&path) {
            // SAFETY: closing a descriptor we own.
            unsafe { libc::close(old.fd) };
        }
        self.next_file_id += 1;
        self.files.insert(
            path.clone(),
            OpenFile {
                fd,
                id: self.next_file_id,
                path: path.clone(),
            },
        );
        self.last = Some(path);
        Ok(i64::from(fd))
    }

    fn pwrite(&mut self, run: u64, root: &str, p: &Pwrite) -> Outcome {
        let (fd, path) = self.fd(root, &p.file)?;
        let len = usize::try_from(p.len).map_err(|_| (libc::EINVAL, String::new()))?;
        let mut mem = AlignedBuf::new(len + 3 * PAGE);
        let start = match p.buffer {
            BufferPlacement::Aligned => PAGE,
            // Half of the buffer before a page boundary, half after.
            BufferPlacement::PageCrossing | BufferPlacement::PageFault => {
                2 * PAGE - (len / 2).clamp(1, PAGE - 1)
            }
            BufferPlacement::Misaligned => PAGE + 1,
        };
        let pattern = self.pattern(run, &path, p.offset, mem.slice(start, len));
        let n = p.iovecs.max(1) as usize;
        let piece = len / n;
        let iov: Vec<libc::iovec> = (0..n)
            .map(|i| {
                let off = i * piece;
                let l = if i + 1 == n { len - off } else { piece };
                libc::iovec {
                    iov_base: mem.slice(start + off, l).as_mut_ptr().cast(),
                    iov_len: l,
                }
            })
            .collect();
        let mut flags = 0;
        if p.atomic {
            flags |= RWF_ATOMIC;
        }
        if p.dsync {
            flags |= RWF_DSYNC;
        }
        if p.sync {
            flags |= RWF_SYNC;
        }
        // The page after the boundary becomes inaccessible: the kernel's copy
        // (buffered) or pin (direct) of the user buffer faults midway.
        let fault_page = (p.buffer == BufferPlacement::PageFault)
            .then(|| mem.slice(2 * PAGE, PAGE).as_mut_ptr());
        if let Some(pg) = fault_page {
            // SAFETY: a whole page inside our own allocation.
            if unsafe { libc::mprotect(pg.cast(), PAGE, libc::PROT_NONE) } != 0 {
                return fail(format!("mprotect: {}", errno_name(errno())));
            }
        }
        // SAFETY: iovecs point into `mem`, alive for the call.
        let ret =
            unsafe { libc::pwritev2(fd, iov.as_ptr(), n as i32, p.offset as libc::off_t, flags) };
        let saved_errno = errno();
        if let Some(pg) = fault_page {
            // SAFETY: restore the page before the allocation is freed.
            unsafe { libc::mprotect(pg.cast(), PAGE, libc::PROT_READ | libc::PROT_WRITE) };
        }
        if ret < 0 {
            if pattern.stamped {
                self.failed.push(FailedWrite {
                    path,
                    describe: format!(
                        "step {} {}",
                        self.step + 1,
                        Step::Pwrite(p.clone()).describe()
                    ),
                    errno: errno_name(saved_errno),
                    file: pattern.file,
                    write: pattern.write,
                    offset: p.offset,
                    len: p.len,
                });
            }
            return Err((saved_errno, String::new()));
        }
        let ret = ret as i64;
        self.record(path, &pattern, ret as u64);
        Ok(ret)
    }

    /// Fills `buf` with what the next write to `path` at `offset` puts
    /// down (a stamp in every sector, or 0xA5 bytes where the range is not
    /// sector aligned), numbering the write; `record` notes what landed.
    fn pattern(&mut self, run: u64, path: &str, offset: u64, buf: &mut [u8]) -> Pattern {
        self.next_write += 1;
        let generation = {
            let g = self.generation.entry(path.to_string()).or_insert(0);
            *g += 1;
            *g
        };
        let p = Pattern {
            run,
            file: self.files[path].id,
            write: self.next_write,
            generation,
            offset,
            len: buf.len() as u64,
            stamped: offset.is_multiple_of(SECTOR as u64) && buf.len().is_multiple_of(SECTOR),
        };
        if p.stamped {
            stamp::encode_write(run, p.file, p.write, generation, offset, buf);
        } else {
            buf.fill(0xA5);
        }
        p
    }

    /// Notes the first `done` bytes of a pattern as landed in `path`, for
    /// `verify`.
    fn record(&mut self, path: String, p: &Pattern, done: u64) {
        if !p.stamped {
            // Unstamped bytes landed over these sectors: nothing to verify there.
            if let Some(map) = self.written.get_mut(&path) {
                let first = p.offset / SECTOR as u64 * SECTOR as u64;
                let end = p.offset + done;
                let doomed: Vec<u64> = map.range(first..end).map(|(k, _)| *k).collect();
                for k in doomed {
                    map.remove(&k);
                }
            }
            return;
        }
        // Record the sectors this write fully covered: all of them, or for
        // a short write those before where it stopped (the sector it
        // stopped in holds a mix and is not checked).
        let map = self.written.entry(path).or_default();
        for i in 0..p.len / SECTOR as u64 {
            let off = p.offset + i * SECTOR as u64;
            if off + SECTOR as u64 <= p.offset + done {
                map.insert(
                    off,
                    Some(Stamp {
                        run: p.run,
                        file: p.file,
                        write: p.write,
                        generation: p.generation,
                        offset: off,
                    }),
                );
            } else if off < p.offset + done {
                map.remove(&off);
            }
        }
    }

    /// `mmap_write`: the pattern a pwrite of the range would write, stored
    /// through a MAP_SHARED mapping of the pages that hold the range, then
    /// msync(MS_SYNC) of those pages if asked.
    fn mmap_write(&mut self, run: u64, root: &str, m: &MmapWrite) -> Outcome {
        let (fd, path) = self.fd(root, &m.file)?;
        let end = m.offset + m.len;
        // SAFETY: fstat into a zeroed struct on an open descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(i64::from(unsafe { libc::fstat(fd, &mut st) }))?;
        // A block device's st_size is 0; its length is what BLKGETSIZE64 says.
        let size = if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
            let mut bytes = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64.
            check(i64::from(unsafe {
                libc::ioctl(fd, BLKGETSIZE64, &mut bytes)
            }))?;
            bytes
        } else {
            st.st_size as u64
        };
        if size < end {
            return fail(format!(
                "{path} is {size} bytes long, but the stores reach byte {end}: a store past the end of a mapped file faults (SIGBUS); make it longer first"
            ));
        }
        let (from, to) = m.pages();
        let map_len = usize::try_from(to - from).map_err(|_| (libc::EINVAL, String::new()))?;
        let len = usize::try_from(m.len).map_err(|_| (libc::EINVAL, String::new()))?;
        let mut data = vec![0u8; len];
        let pattern = self.pattern(run, &path, m.offset, &mut data);
        // SAFETY: a fresh shared mapping of pages inside the file.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                from as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err((errno(), "mmap failed: nothing stored".into()));
        }
        // SAFETY: [offset - from, + len) lies inside the mapping, and every
        // page of it inside the file (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                addr.cast::<u8>().add((m.offset - from) as usize),
                len,
            );
        }
        // The stores are in the page cache whatever msync says.
        self.record(path, &pattern, m.len);
        // SAFETY: the mapping made above.
        let synced = if m.msync {
            check(i64::from(unsafe {
                libc::msync(addr, map_len, libc::MS_SYNC)
            }))
            .map_err(|(e, _)| (e, "msync(MS_SYNC) failed after the stores".to_string()))
        } else {
            Ok(0)
        };
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(addr, map_len) };
        synced.map(|_| m.len as i64)
    }

    /// FICLONE: the destination shares the source's extents; what the plan
    /// recorded for the source now holds for the destination too (stamps
    /// carry the source's file id and offsets, which match).
    fn clone_from(&mut self, root: &str, c: &lab_core::steps::CloneFrom) -> Outcome {
        const FICLONE: libc::c_ulong = 0x4004_9409;
        let (dst, dst_path) = self.fd(root, &c.file)?;
        let src_path = self.resolve(root, &c.from);
        let src = std::fs::File::open(&src_path)
            .map_err(|e| (e.raw_os_error().unwrap_or(0), String::new()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open for the call.
        let r = check(i64::from(unsafe {
            libc::ioctl(dst, FICLONE, src.as_raw_fd())
        }))?;
        let copied = self.written.get(&src_path).cloned().unwrap_or_default();
        self.written.insert(dst_path, copied);
        Ok(r)
    }

    /// Marks the sectors of `[from, to)` this plan wrote as zeroes (a
    /// punch, a zero range, the part a truncate cut off); a sector only
    /// partly inside holds a mix and is no longer checked.
    fn zeroed(&mut self, path: &str, from: u64, to: u64) {
        let Some(map) = self.written.get_mut(path) else {
            return;
        };
        let sector = SECTOR as u64;
        let inside: Vec<u64> = map
            .range(from / sector * sector..to)
            .map(|(k, _)| *k)
            .collect();
        for off in inside {
            if off >= from && off.saturating_add(sector) <= to {
                map.insert(off, None);
            } else {
                map.remove(&off);
            }
        }
    }

    /// fallocate with `mode` (PUNCH_HOLE|KEEP_SIZE or ZERO_RANGE): the
    /// range reads back as zeroes afterwards.
    fn zero(&mut self, root: &str, r: &lab_core::steps::Range, mode: i32) -> Outcome {
        let (fd, path) = self.fd(root, &r.file)?;
        // SAFETY: an open descriptor.
        let ret = check(i64::from(unsafe {
            libc::fallocate(fd, mode, r.offset as libc::off_t, r.len as libc::off_t)
        }))?;
        self.zeroed(&path, r.offset, r.offset + r.len);
        Ok(ret)
    }

    /// Reads one sector as the file holds it (past the end: zeroes).
    fn read_sector(file: &mut std::fs::File, off: u64) -> Result<Sector, (i32, String)> {
        use std::io::{Seek, SeekFrom};
        let mut buf = vec![0u8; SECTOR];
        file.seek(SeekFrom::Start(off))
            .map_err(|e| (e.raw_os_error().unwrap_or(0), String::new()))?;
        Ok(match file.read_exact(&mut buf) {
            Ok(()) => stamp::decode(&buf),
            Err(_) => Sector::Zero,
        })
    }

    /// Reads back every sector this plan wrote to the file and compares;
    /// and looks for the data of the writes that returned an error, which
    /// must not be there.
    fn verify(&self, root: &str, f: &FileOnly) -> Outcome {
        let (_, path) = self.fd(root, &f.file)?;
        let empty = BTreeMap::new();
        let map = self.written.get(&path).unwrap_or(&empty);
        let failed: Vec<&FailedWrite> = self.failed.iter().filter(|w| w.path == path).collect();
        if map.is_empty() && failed.is_empty() {
            return Ok(0);
        }
        let mut file = std::fs::File::open(&path)
            .map_err(|e| (e.raw_os_error().unwrap_or(0), String::new()))?;
        // A failed write's data in the file: one finding per write, and
        // the sectors it explains are not counted again as mismatches.
        let mut findings = Vec::new();
        let mut explained = std::collections::BTreeSet::new();
        for w in failed {
            let mut landed = 0;
            for i in 0..w.len / SECTOR as u64 {
                let off = w.offset + i * SECTOR as u64;
                if let Sector::Stamped(s) = Self::read_sector(&mut file, off)? {
                    if (s.file, s.write, s.offset) == (w.file, w.write, off) {
                        landed += 1;
                        explained.insert(off);
                    }
                }
            }
            if landed > 0 {
                findings.push(format!(
                    "{} returned {} but {landed} of its {} sectors reached the file",
                    w.describe,
                    w.errno,
                    w.len / SECTOR as u64
                ));
            }
        }
        let mut bad = Vec::new();
        for (off, want) in map {
            let got = Self::read_sector(&mut file, *off)?;
            let expected = want.map_or(Sector::Zero, Sector::Stamped);
            if got != expected && !explained.contains(off) {
                let found = match got {
                    Sector::Zero => "zeroes".to_string(),
                    Sector::Garbage => "garbage".to_string(),
                    Sector::Stamped(s) => format!("write {} (gen {})", s.write, s.generation),
                };
                let wanted = want.map_or("zeroes".to_string(), |w| format!("write {}", w.write));
                bad.push(format!("sector at {off}: expected {wanted}, found {found}"));
            }
        }
        if !bad.is_empty() {
            findings.push(format!(
                "{} of {} sectors differ; first: {}",
                bad.len(),
                map.len(),
                bad[0]
            ));
        }
        if findings.is_empty() {
            Ok(map.len() as i64)
        } else {
            fail(findings.join("; "))
        }
    }

    /// Touches up to `mb` MiB of anonymous memory, page by page, then frees
    /// it: reclaim has to push page cache out (and dirty page cache to
    /// writeback) to make room. Stops 128 MiB short of what the guest has
    /// available, so the agent is never the one the OOM killer picks.
    /// Returns the MiB touched.
    fn memory_pressure(mb: u64) -> Outcome {
        let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| {
            (
                e.raw_os_error().unwrap_or(0),
                "reading /proc/meminfo".to_string(),
            )
        })?;
        let available_kb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or((0, "no MemAvailable in /proc/meminfo".to_string()))?;
        let touch = mb.min((available_kb / 1024).saturating_sub(128));
        if touch == 0 {
            return Ok(0);
        }
        let len = (touch << 20) as usize;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err((errno(), format!("mmap of {touch} MiB failed")));
        }
        for off in (0..len).step_by(PAGE) {
            // SAFETY: inside the mapping; volatile, so the store happens.
            unsafe { std::ptr::write_volatile(addr.cast::<u8>().add(off), 1) };
        }
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(addr, len) };
        Ok(touch as i64)
    }
}

fn one_step(st: &mut State, plan: &Plan, step: &Step) -> Outcome {
    let root = plan.root.as_str();
    // SAFETY (all libc calls below): descriptors come from State and are open.
    match step {
        Step::Open(o) => st.open(root, o),
        Step::Pwrite(p) => st.pwrite(plan.run, root, p),
        Step::MmapWrite(m) => st.mmap_write(plan.run, root, m),
        Step::Fsync(f) => check(i64::from(unsafe { libc::fsync(st.fd(root, &f.file)?.0) })),
        Step::Fdatasync(f) => check(i64::from(unsafe {
            libc::fdatasync(st.fd(root, &f.file)?.0)
        })),
        Step::Ftruncate(t) => {
            let (fd, path) = st.fd(root, &t.file)?;
            let r = check(i64::from(unsafe {
                libc::ftruncate(fd, t.len as libc::off_t)
            }))?;
            // Cut off, then read back as zeroes if the file grows again.
            st.zeroed(&path, t.len, u64::MAX);
            Ok(r)
        }
        Step::PunchHole(r) => st.zero(
            root,
            r,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        ),
        Step::ZeroRange(r) => st.zero(root, r, libc::FALLOC_FL_ZERO_RANGE),
        Step::Sync(_) => {
            unsafe { libc::sync() };
            Ok(0)
        }
        Step::Sysctl(s) => std::fs::write(s.path(), &s.value).map(|()| 0).map_err(|e| {
            (
                e.raw_os_error().unwrap_or(0),
                format!("writing {} to {}: {e}", s.value, s.path()),
            )
        }),
        Step::Sleep(s) => {
            std::thread::sleep(std::time::Duration::from_millis(s.ms));
            Ok(0)
        }
        Step::MemoryPressure(m) => State::memory_pressure(m.mb),
        Step::Fallocate(r) => check(i64::from(unsafe {
            libc::fallocate(
                st.fd(root, &r.file)?.0,
                0,
                r.offset as libc::off_t,
                r.len as libc::off_t,
            )
        })),
        Step::SyncFileRange(r) => check(i64::from(unsafe {
            libc::sync_file_range(
                st.fd(root, &r.file)?.0,
                r.offset as libc::off64_t,
                r.len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        })),
        Step::Verify(f) => st.verify(root, f),
        Step::Clone(c) => st.clone_from(root, c),
        // Reported by `run` itself, which talks to the lab.
        Step::Mark(_) => Ok(0),
        Step::Folios(f) => {
            let (fd, _) = st.fd(root, &f.file)?;
            let c = crate::folios::of_range(fd, f.offset, f.len)?;
            st.census = Some(c);
            Ok(c.cached as i64)
        }
        Step::Close(f) => {
            let (fd, path) = st.fd(root, &f.file)?;
            st.files.remove(&path);
            if st.last.as_deref() == Some(path.as_str()) {
                st.last = None;
            }
            check(i64::from(unsafe { libc::close(fd) }))
        }
    }
}

/// `lab-guest generate`: the input the host sends.
#[derive(serde::Deserialize)]
struct GenInput {
    run: u64,
    root: String,
    file: String,
    params: lab_core::generate::GenParams,
}

/// One line of `generate` output for one operation.
#[derive(serde::Serialize)]
struct ThreadResult<'a> {
    thread: u32,
    step: &'a Step,
    result: &'a StepResult,
}

/// Runs a seeded generator: reads the file's real limits, generates each
/// thread's operations, runs the threads at once on the same file, prints
/// the limits, every operation with its result, and a final read-back.
pub fn generate() -> Result<(), String> {
    use lab_core::generate::{self as gen, GenLimits};
    use lab_core::steps::Open;
    let mut input = String::new();
    io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading input: {e}"))?;
    let g: GenInput = serde_json::from_str(&input).map_err(|e| format!("bad input: {e}"))?;
    let open = Step::Open(Open {
        file: g.file.clone(),
        direct: g.params.direct,
        sync: false,
        dsync: false,
        expect: Default::default(),
    });
    // Create the file first so statx sees the limits of a file on this fs.
    let mut probe = State::default();
    let opened = one_step(
        &mut probe,
        &Plan {
            run: g.run,
            root: g.root.clone(),
            steps: vec![],
        },
        &open,
    );
    if let Err((e, d)) = opened {
        return Err(format!("open {}: {} {d}", g.file, errno_name(e)));
    }
    let path = probe.last.clone().expect("opened");
    let sx = crate::statx::statx_atomic(&path).map_err(|e| format!("statx {path}: {e}"))?;
    let limits = GenLimits {
        atomic_min: sx.atomic.unit_min,
        atomic_max: sx.atomic.unit_max,
        align: if g.params.direct {
            sx.dio_offset_align.max(512)
        } else {
            512
        },
        block: sx.blksize,
    };
    println!("{}", serde_json::json!({ "limits": limits }));
    let per_thread = gen::generate(&g.params, &limits);
    let plan = Plan {
        run: g.run,
        root: g.root.clone(),
        steps: vec![],
    };
    // Every operation's start and result go out as they happen (one line
    // each, under stdout's lock), so after a power cut the lab knows which
    // ones were in flight.
    let emit = |line: String| {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .iter()
            .enumerate()
            .map(|(t, steps)| {
                let plan = &plan;
                let open = &open;
                let emit = &emit;
                s.spawn(move || {
                    let mut st = State {
                        // Distinct write ids per thread: thread t numbers its
                        // writes from t << 24.
                        next_write: (t as u32) << 24,
                        ..State::default()
                    };
                    let _ = one_step(&mut st, plan, open);
                    for (i, step) in steps.iter().enumerate() {
                        emit(serde_json::json!({ "tbegin": [t, i] }).to_string());
                        let r = to_result(i, step, one_step(&mut st, plan, step));
                        let line = ThreadResult {
                            thread: t as u32,
                            step,
                            result: &r,
                        };
                        emit(serde_json::to_string(&line).expect("serialises"));
                    }
                    st
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect::<Vec<_>>()
    });
    let stdout = io::stdout();
    let mut out = stdout.lock();
    // Regions are disjoint, so the threads' records merge without conflict.
    let mut merged = State::default();
    let _ = one_step(&mut merged, &plan, &open);
    for st in results {
        for (file, map) in st.written {
            merged.written.entry(file).or_default().extend(map);
        }
    }
    let verify = Step::Verify(FileOnly::default());
    let r = to_result(0, &verify, one_step(&mut merged, &plan, &verify));
    writeln!(out, "{}", serde_json::json!({ "verify": r })).map_err(|e| e.to_string())?;
    Ok(())
}

fn to_result(index: usize, step: &Step, outcome: Outcome) -> StepResult {
    let (ret, errno, detail) = match outcome {
        Ok(r) => (Some(r), None, String::new()),
        Err((0, d)) => (None, None, d),
        Err((e, d)) => (None, Some(errno_name(e)), d),
    };
    StepResult {
        index,
        op: step.name().to_string(),
        ret,
        errno,
        detail,
        folios: None,
    }
}

/// Runs a plan read from `plan_file` (or stdin), one JSON result per line.
/// A mark prints `{"mark":NAME}` first; with `sync_marks` the agent then
/// waits for a line on stdin, so the lab has registered the mark (and
/// perhaps cut the power) before any later write is issued.
pub fn run(plan_file: Option<&str>, sync_marks: bool) -> Result<(), String> {
    let input = match plan_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("reading {f}: {e}"))?,
        None => {
            let mut input = String::new();
            io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("reading the plan: {e}"))?;
            input
        }
    };
    let plan: Plan = serde_json::from_str(&input).map_err(|e| format!("bad plan: {e}"))?;
    let mut st = State::default();
    let stdout = io::stdout();
    for (index, step) in plan.steps.iter().enumerate() {
        // The start of every step, so the lab knows what may be in flight
        // when the power goes.
        {
            let mut out = stdout.lock();
            writeln!(out, "{}", serde_json::json!({ "begin": index }))
                .map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
        }
        if let Step::Mark(m) = step {
            let mut out = stdout.lock();
            writeln!(out, "{}", serde_json::json!({ "mark": m.name }))
                .map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            drop(out);
            if sync_marks {
                let mut line = String::new();
                io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| format!("waiting for the lab after mark {}: {e}", m.name))?;
            }
        }
        st.step = index;
        let mut r = to_result(index, step, one_step(&mut st, &plan, step));
        r.folios = st.census.take();
        let mut out = stdout.lock();
        writeln!(out, "{}", serde_json::to_string(&r).expect("serialises"))
            .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::steps::Open;

    /// A write that returned an error and whose data is in the file anyway
    /// (here put there by hand, as a buggy kernel would) is named by
    /// `verify` as such, and the sectors it explains are not reported again
    /// as mismatches.
    #[test]
    fn verify_names_a_failed_write_whose_data_reached_the_file() {
        let dir = std::env::temp_dir().join(format!("lab-guest-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = Plan {
            run: 9,
            root: dir.display().to_string(),
            steps: vec![],
        };
        let mut st = State::default();
        let open = Step::Open(Open {
            file: "f".into(),
            direct: false,
            sync: false,
            dsync: false,
            expect: Default::default(),
        });
        one_step(&mut st, &plan, &open).unwrap();
        st.step = 1;
        let plain = Step::Pwrite(Pwrite::new(0, 4096, false));
        assert_eq!(one_step(&mut st, &plan, &plain), Ok(4096));
        // Two iovecs: refused by any kernel (EINVAL), or RWF_ATOMIC unknown.
        st.step = 2;
        let refused = Step::Pwrite(Pwrite {
            iovecs: 2,
            ..Pwrite::new(0, 4096, true)
        });
        let Err((e, _)) = one_step(&mut st, &plan, &refused) else {
            panic!("a two-iovec atomic write succeeded");
        };
        let verify = Step::Verify(FileOnly::default());
        assert_eq!(one_step(&mut st, &plan, &verify), Ok(8));
        // Half of the refused write's stamps reach the file.
        let mut buf = vec![0u8; 2048];
        stamp::encode_write(9, 1, 2, 2, 0, &mut buf);
        std::fs::write(dir.join("f"), [buf, vec![0u8; 2048]].concat()).unwrap();
        let Err((0, detail)) = one_step(&mut st, &plan, &verify) else {
            panic!("verify passed");
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            detail,
            format!(
                "step 3 pwritev2(off=0 len=4096 RWF_ATOMIC iovecs=2) returned {} but 4 of its 8 sectors reached the file; 4 of 8 sectors differ; first: sector at 2048: expected write 1, found zeroes",
                errno_name(e)
            )
        );
    }
}
