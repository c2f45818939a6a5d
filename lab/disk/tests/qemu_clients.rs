//! The crash disk against real NBD clients: qemu-io and qemu-img over
//! nbd+unix://. Needs qemu-utils (scripts/setup.sh installs it).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use lab_disk::{serve_unix, Disk, Single, WriteKind};

struct Served {
    disk: Arc<Disk>,
    url: String,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

/// Serves `catalog` on `sock` from a one-worker runtime, until dropped.
fn serve_catalog(catalog: Arc<dyn lab_disk::Catalog>, sock: &Path) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(async { tokio::net::UnixListener::bind(sock) })
        .unwrap();
    rt.spawn(serve_unix(catalog, listener, Default::default()));
    rt
}

fn serve(size: u64, block: u32) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nbd.sock");
    let disk = Disk::create(&dir.path().join("disk.raw"), size, block).unwrap();
    let rt = serve_catalog(
        Arc::new(Single {
            name: "lab".into(),
            export: disk.clone(),
        }),
        &sock,
    );
    Served {
        disk,
        url: format!("nbd+unix:///lab?socket={}", sock.display()),
        _dir: dir,
        _rt: rt,
    }
}

fn serve_states(store: lab_disk::StateStore, dir: &Path) -> (String, tokio::runtime::Runtime) {
    let sock = dir.join("states.sock");
    let rt = serve_catalog(Arc::new(store), &sock);
    (sock.display().to_string(), rt)
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is needed (qemu-utils; run scripts/setup.sh): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    text
}

fn qemu_io(url: &str, cmds: &[&str]) -> String {
    // writeback: otherwise qemu-io (writethrough) sets FUA on every write.
    let mut args = vec!["-f", "raw", "-t", "writeback"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(url);
    let out = tool("qemu-io", &args);
    assert!(!out.contains("failed") && !out.contains("error"), "{out}");
    out
}

#[test]
fn qemu_img_sees_the_export_size() {
    let s = serve(64 << 20, 4096);
    let info = tool("qemu-img", &["info", "--output=json", &s.url]);
    assert!(info.contains("\"virtual-size\": 67108864"), "{info}");
}

#[test]
fn qemu_io_writes_read_back_and_every_write_is_recorded() {
    let s = serve(64 << 20, 512);
    let out = qemu_io(
        &s.url,
        &[
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            "write -f -P 0xcd 1M 4k",
            "flush",
            "write -z 2M 8k",
            "read -P 0 2M 8k",
            "discard 3M 4k",
        ],
    );
    assert!(out.contains("wrote 65536/65536 bytes at offset 0"), "{out}");
    assert!(out.contains("read 65536/65536 bytes at offset 0"), "{out}");
    let rec = s.disk.record().writes;
    let data: Vec<_> = rec.iter().filter(|w| w.kind == WriteKind::Data).collect();
    // Each write arrives as one request of the same offset and length.
    assert_eq!(data.len(), 2, "{rec:?}");
    assert_eq!(
        (data[0].offset, data[0].len, data[0].fua),
        (0, 65536, false)
    );
    assert!(data[0].data.iter().all(|&b| b == 0xab));
    assert_eq!(
        (data[1].offset, data[1].len, data[1].fua),
        (1 << 20, 4096, true),
        "qemu-io -f sets FUA"
    );
    assert!(rec
        .iter()
        .any(|w| w.kind == WriteKind::Zeroes && w.offset == 2 << 20 && w.len == 8192));
    assert!(rec
        .iter()
        .any(|w| w.kind == WriteKind::Trim && w.offset == 3 << 20));
    assert!(rec.iter().all(|w| w.acked.is_some_and(|a| a >= w.received)));
    assert!(rec.windows(2).all(|p| p[0].seq + 1 == p[1].seq));
    assert!(!s.disk.record().flushes.is_empty());
    // The backing file holds what was written.
    let raw = std::fs::read(Path::new(s._dir.path()).join("disk.raw")).unwrap();
    assert!(raw[..65536].iter().all(|&b| b == 0xab));
    assert!(raw[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0xcd));
}

#[test]
fn the_block_size_is_announced_and_honoured() {
    // With a 4096-byte minimum block, QEMU turns a 512-byte write into a
    // read-modify-write of the whole block: the disk sees 4096 bytes.
    let s = serve(16 << 20, 4096);
    qemu_io(
        &s.url,
        &[
            "write -P 0x11 512 512",
            "read -P 0x11 512 512",
            "read -P 0 0 512",
        ],
    );
    let rec = s.disk.record().writes;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!((rec[0].offset, rec[0].len), (0, 4096));
}

#[test]
fn qemu_nbd_lists_the_export_with_its_block_size() {
    let s = serve(8 << 20, 4096);
    let sock = s.url.split("socket=").nth(1).unwrap().to_string();
    let out = tool("qemu-nbd", &["--list", "-k", &sock]);
    assert!(out.contains("exports available: 1"), "{out}");
    assert!(out.contains("export: 'lab'"), "{out}");
    assert!(out.contains("size:  8388608"), "{out}");
    assert!(out.contains("min block: 4096"), "{out}");
}

/// Held completions, a cut at the 3rd write, then the crash states served
/// as exports: qemu-img reads each one back byte for byte as the planner
/// says, and a client's writes to a state stay in its own connection.
#[test]
fn held_writes_cut_and_crash_states_through_real_clients() {
    use lab_core::powercut::{CutPolicy, HoldPolicy, StateLimits};
    use lab_disk::{AtomicRules, Planner};
    use std::time::Duration;

    let s = serve(1 << 20, 4096);
    s.disk.arm(
        Some(CutPolicy::Write(3)),
        HoldPolicy {
            window: 8,
            ms: 60_000,
        },
        s._rt.handle(),
    );
    // Three concurrent writes, none acknowledged: qemu-io waits for them
    // until it is killed, as QEMU is at a real cut.
    let mut child = Command::new("qemu-io")
        .args(["-f", "raw", "-t", "writeback"])
        .args(["-c", "aio_write -P 0x11 0 4k"])
        .args(["-c", "aio_write -P 0x22 8k 16k"])
        .args(["-c", "aio_write -P 0x33 64k 4k"])
        .args(["-c", "aio_flush"])
        .arg(&s.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-io (qemu-utils)");
    let cut = s
        .disk
        .wait_cut(Duration::from_secs(20))
        .expect("the cut fired");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!((cut.writes_before, cut.reason.as_str()), (3, "write 3"));
    let rec = s.disk.record();
    assert!(
        rec.writes.iter().all(|w| w.acked.is_none()),
        "all held: {rec:?}"
    );

    let rules = AtomicRules {
        lba: 4096,
        unit_lbas: 1,
        boundary_lbas: None,
    };
    let planner = Planner::new(&rec, rules);
    let plan = planner.plan(&StateLimits::default());
    // 2^3 subsets, plus the 16 KiB write torn head/tail at 3 points.
    assert_eq!(plan.in_flight_at_cut, 3);
    assert_eq!(plan.generated, 8 + 6);
    assert_eq!(plan.states.len(), 14);
    let images: Vec<Vec<u8>> = plan
        .states
        .iter()
        .map(|st| planner.image(Some(&st.recipe)))
        .collect();

    let file = std::fs::File::open(s._dir.path().join("disk.raw")).unwrap();
    let store = lab_disk::StateStore::new(&file, rec.clone(), &plan.states).unwrap();
    let (sock, _rt) = serve_states(store, s._dir.path());
    let list = tool("qemu-nbd", &["--list", "-k", &sock]);
    assert!(list.contains("state-13"), "{list}");
    for (i, want) in images.iter().enumerate() {
        let out = s._dir.path().join(format!("state-{i}.raw"));
        tool(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                &format!("nbd+unix:///state-{i}?socket={sock}"),
                out.to_str().unwrap(),
            ],
        );
        let got = std::fs::read(&out).unwrap();
        assert!(
            got == *want,
            "state-{i} ({}) reads back differently",
            plan.states[i].recipe
        );
    }
    // A torn state really has the 16 KiB write in part.
    let torn = plan
        .states
        .iter()
        .position(|st| st.torn == vec![1])
        .unwrap();
    let img = &images[torn];
    let lbas: Vec<bool> = (2..6).map(|l| img[l * 4096] == 0x22).collect();
    assert!(lbas.contains(&true) && lbas.contains(&false), "{lbas:?}");
    // Copy-on-write: a write to a state is seen by its own connection only.
    let url0 = format!("nbd+unix:///state-0?socket={sock}");
    qemu_io(&url0, &["write -P 0x77 512k 4k", "read -P 0x77 512k 4k"]);
    qemu_io(&url0, &["read -P 0 512k 4k"]);
}

/// Runs qemu-io with the given commands in the background (it blocks on
/// held writes until killed, as QEMU does at a real cut).
fn qemu_io_background(url: &str, cmds: &[&str]) -> std::process::Child {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", "-t", "writeback"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-io (qemu-utils)")
}

/// A window of one held write: each new write releases the one before it.
#[test]
fn a_full_window_releases_its_oldest_write() {
    use lab_core::powercut::{CutPolicy, HoldPolicy};
    use std::time::Duration;
    let s = serve(1 << 20, 4096);
    s.disk.arm(
        Some(CutPolicy::Write(3)),
        HoldPolicy {
            window: 1,
            ms: 60_000,
        },
        s._rt.handle(),
    );
    let mut child = qemu_io_background(
        &s.url,
        &[
            "aio_write 0 4k",
            "aio_write 8k 4k",
            "aio_write 16k 4k",
            "aio_flush",
        ],
    );
    let cut = s.disk.wait_cut(Duration::from_secs(20)).expect("cut");
    child.kill().unwrap();
    child.wait().unwrap();
    let acked: Vec<bool> = s
        .disk
        .record()
        .writes
        .iter()
        .map(|w| w.acked.is_some())
        .collect();
    assert_eq!(cut.writes_before, 3);
    assert_eq!(
        acked,
        [true, false, false],
        "write 0 released when write 1 arrived"
    );
}

/// Held for a time: released after `ms` without more writes; and the
/// after-ms policy cuts on its own timer.
#[test]
fn held_writes_are_released_in_time_and_a_timer_cuts() {
    use lab_core::powercut::{CutPolicy, HoldPolicy};
    use std::time::Duration;
    let s = serve(1 << 20, 4096);
    s.disk.arm(
        Some(CutPolicy::AfterMs(1500)),
        HoldPolicy { window: 8, ms: 100 },
        s._rt.handle(),
    );
    // One write, acknowledged after ~100 ms; qemu-io then waits on a read
    // of nothing... it simply ends, and the timer cuts later.
    qemu_io(&s.url, &["write -P 0x5a 0 4k"]);
    let w = &s.disk.record().writes[0];
    let held = w.acked.unwrap() - w.received;
    assert!(held >= Duration::from_millis(100), "held only {held:?}");
    let cut = s.disk.wait_cut(Duration::from_secs(20)).expect("timer cut");
    assert!(cut.reason.contains("1500 ms"), "{}", cut.reason);
    assert!(cut.at >= Duration::from_millis(1500));
    // After the cut nothing is applied or answered.
    let mut child = qemu_io_background(&s.url, &["write 64k 4k"]);
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.disk.record().writes.len(), 1);
}

/// A mark cuts when the policy names it, and is recorded where it fell in
/// the write sequence either way.
#[test]
fn marks_fall_between_writes_and_can_cut() {
    use lab_core::powercut::{CutPolicy, HoldPolicy};
    let s = serve(1 << 20, 4096);
    s.disk.arm(
        Some(CutPolicy::Mark("second".into())),
        HoldPolicy::NONE,
        s._rt.handle(),
    );
    qemu_io(&s.url, &["write 0 4k"]);
    s.disk.mark("first");
    assert!(s.disk.cut_info().is_none());
    qemu_io(&s.url, &["write 4k 4k", "write 8k 4k"]);
    s.disk.mark("second");
    let rec = s.disk.record();
    let marks: Vec<(String, u64)> = rec
        .marks
        .iter()
        .map(|m| (m.name.clone(), m.writes_before))
        .collect();
    assert_eq!(marks, [("first".into(), 1), ("second".into(), 3)]);
    let cut = rec.cut.expect("the mark cut");
    assert_eq!((cut.reason.as_str(), cut.writes_before), ("mark second", 3));
}

/// A store of one 4 KiB write of `byte` at LBA 0 that never completed, on a
/// disk of `size` bytes: state 0 zeroes, state 1 the write landed (planned
/// order), over a base file that has the write.
fn one_write_store(dir: &Path, byte: u8, size: u64) -> lab_disk::StateStore {
    use lab_core::powercut::StateLimits;
    use lab_disk::{AtomicRules, Cut, Planner, Record, WriteRecord};
    use std::time::Duration;

    let data = vec![byte; 4096];
    let base = dir.join(format!("base-{byte:02x}.raw"));
    let mut img = vec![0u8; size as usize];
    img[..4096].copy_from_slice(&data);
    std::fs::write(&base, &img).unwrap();
    let rec = Record {
        lba: 4096,
        size,
        cut: Some(Cut {
            reason: "test".into(),
            at: Duration::from_millis(10),
            writes_before: 1,
        }),
        writes: vec![WriteRecord {
            seq: 0,
            kind: WriteKind::Data,
            offset: 0,
            len: 4096,
            fua: true,
            data: Arc::new(data),
            received: Duration::from_millis(1),
            acked: None,
        }],
        flushes: vec![],
        marks: vec![],
        armed: Some(Duration::ZERO),
    };
    let rules = AtomicRules {
        lba: 4096,
        unit_lbas: 1,
        boundary_lbas: None,
    };
    let plan = Planner::new(&rec, rules).plan(&StateLimits::default());
    assert_eq!(plan.states.len(), 2);
    let file = std::fs::File::open(&base).unwrap();
    lab_disk::StateStore::new(&file, rec, &plan.states).unwrap()
}

/// A verifier VM kept for the next testcase keeps its export: the switch
/// is pointed at the next store, whose states real clients then read; a
/// store of another size is refused (the guest's device was sized when it
/// connected).
#[test]
fn a_switch_retargeted_to_another_store_serves_its_states() {
    use lab_disk::cow::Switch;

    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(one_write_store(dir.path(), 0xaa, 1 << 20));
    let b = Arc::new(one_write_store(dir.path(), 0xbb, 1 << 20));
    let other = Arc::new(one_write_store(dir.path(), 0xcc, 2 << 20));
    let switch = Switch::new(a.clone());
    let sock = dir.path().join("switch.sock");
    let _rt = serve_catalog(
        Arc::new(Single {
            name: "verify".into(),
            export: switch.clone(),
        }),
        &sock,
    );
    let url = format!("nbd+unix:///verify?socket={}", sock.display());
    qemu_io(&url, &["read -P 0 0 4k"]);
    switch.select(1);
    qemu_io(&url, &["read -P 0xaa 0 4k"]);
    switch.retarget(b.clone()).unwrap();
    qemu_io(&url, &["read -P 0 0 4k"]);
    switch.select(1);
    qemu_io(&url, &["read -P 0xbb 0 4k"]);
    let e = switch.retarget(other).unwrap_err();
    assert_eq!((e.size, e.new_size), (1 << 20, 2 << 20), "{e}");
    qemu_io(&url, &["read -P 0xbb 0 4k"]);
}
