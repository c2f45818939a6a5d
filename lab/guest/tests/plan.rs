//! The agent's plan runner on the host's own kernel and a temporary file:
//! stamps are written, read back, and a foreign write over them is noticed.

use std::io::Write;
use std::process::{Command, Stdio};

fn run_plan(plan: &str) -> Vec<serde_json::Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-guest"))
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("begin").is_none())
        .collect()
}

#[test]
fn writes_verify_and_a_foreign_overwrite_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display();
    let plan = format!(
        r#"{{"run":9,"root":"{root}","steps":[
            {{"open":{{"file":"f"}}}},
            {{"pwrite":{{"offset":0,"len":8192}}}},
            {{"pwrite":{{"offset":4096,"len":4096,"iovecs":2}}}},
            {{"verify":{{}}}},
            {{"close":{{}}}}]}}"#
    );
    let r = run_plan(&plan);
    assert_eq!(r.len(), 5);
    assert_eq!(r[1]["ret"], 8192);
    assert_eq!(r[2]["ret"], 4096);
    assert_eq!(r[3]["ret"], 16, "16 sectors verified: {:?}", r[3]);

    // Another writer (not the agent) scribbles over sector 1.
    let path = dir.path().join("f");
    let mut data = std::fs::read(&path).unwrap();
    data[600] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let plan = format!(
        r#"{{"run":9,"root":"{root}","steps":[
            {{"open":{{"file":"g"}}}},
            {{"pwrite":{{"offset":0,"len":4096}}}},
            {{"pwrite":{{"offset":0,"len":512,"expect":"ok"}}}},
            {{"verify":{{}}}}]}}"#
    );
    let r = run_plan(&plan);
    assert_eq!(
        r[3]["ret"], 8,
        "a rewrite by the agent itself is not a mismatch: {:?}",
        r[3]
    );
    let bad = std::fs::read(&path).unwrap();
    assert_eq!(
        lab_core::stamp::decode(&bad[512..1024]),
        lab_core::stamp::Sector::Garbage
    );
}

/// `mmap_write` stores through a shared mapping exactly the bytes a pwrite
/// of the same range would write: a file built with stores and one built
/// with pwrites are byte for byte the same, and `verify` counts the stored
/// sectors as the store's. An unaligned store writes the unstamped pattern
/// there, as an unaligned pwrite does.
#[test]
fn mmap_stores_write_what_a_pwrite_would() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display();
    let plan = |file: &str, second: &str| {
        format!(
            r#"{{"run":4,"root":"{root}","steps":[
                {{"open":{{"file":"{file}"}}}},
                {{"pwrite":{{"offset":0,"len":16384}}}},
                {{"{second}":{{"offset":4096,"len":6144}}}},
                {{"{second}":{{"offset":12388,"len":1000}}}},
                {{"verify":{{}}}}]}}"#
        )
    };
    let stored = run_plan(&plan("m", "mmap_write"));
    let written = run_plan(&plan("p", "pwrite"));
    for (what, r) in [("stored", &stored), ("written", &written)] {
        assert_eq!(r[2]["ret"], 6144, "{what}: {:?}", r[2]);
        assert_eq!(r[3]["ret"], 1000, "{what}: {:?}", r[3]);
        // 32 sectors less the three the unaligned write touched.
        assert_eq!(r[4]["ret"], 29, "{what}: {:?}", r[4]);
    }
    let m = std::fs::read(dir.path().join("m")).unwrap();
    let p = std::fs::read(dir.path().join("p")).unwrap();
    assert_eq!(m.len(), 16384);
    assert!(m == p, "the stores differ from the pwrite's bytes");
    // The stored sectors carry the store's stamp (write 2), not the
    // pwrite's under it.
    match lab_core::stamp::decode(&m[4096..4608]) {
        lab_core::stamp::Sector::Stamped(st) => assert_eq!((st.write, st.offset), (2, 4096)),
        other => panic!("{other:?}"),
    }
    assert!(m[12388..13388].iter().all(|&b| b == 0xA5));
}

/// A store past the end of the file would fault (SIGBUS): the agent says
/// so and goes on with the plan; a store without msync still lands in the
/// page cache, and `verify` sees it.
#[test]
fn a_store_past_the_end_of_the_file_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display();
    let r = run_plan(&format!(
        r#"{{"run":5,"root":"{root}","steps":[
            {{"open":{{"file":"s"}}}},
            {{"ftruncate":{{"len":8192}}}},
            {{"mmap_write":{{"offset":4096,"len":8192}}}},
            {{"mmap_write":{{"offset":4096,"len":4096,"msync":false}}}},
            {{"verify":{{}}}}]}}"#
    ));
    assert_eq!(r[2]["ret"], serde_json::Value::Null, "{:?}", r[2]);
    assert_eq!(r[2]["errno"], serde_json::Value::Null, "{:?}", r[2]);
    let detail = r[2]["detail"].as_str().unwrap();
    assert!(
        detail.contains("is 8192 bytes long, but the stores reach byte 12288")
            && detail.contains("SIGBUS"),
        "{detail}"
    );
    assert_eq!(r[3]["ret"], 4096, "{:?}", r[3]);
    assert_eq!(r[4]["ret"], 8, "{:?}", r[4]);
    assert_eq!(std::fs::metadata(dir.path().join("s")).unwrap().len(), 8192);
}

#[test]
fn errors_are_reported_by_errno_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display();
    let plan = format!(
        r#"{{"run":1,"root":"{root}","steps":[
            {{"open":{{"file":"missing/dir/f"}}}},
            {{"open":{{"file":"f"}}}},
            {{"ftruncate":{{"len":1048576}}}},
            {{"pwrite":{{"offset":0,"len":4096,"atomic":true,"iovecs":2}}}}]}}"#
    );
    let r = run_plan(&plan);
    assert_eq!(r[0]["errno"], "ENOENT");
    assert_eq!(r[2]["ret"], 0);
    // Two iovecs with RWF_ATOMIC are refused by every kernel that knows the
    // flag (EINVAL) and by those that do not (EOPNOTSUPP).
    let e = r[3]["errno"].as_str().unwrap();
    assert!(e == "EINVAL" || e == "EOPNOTSUPP", "{e}");
}

#[test]
fn a_faulting_user_buffer_gives_short_buffered_write_and_efault_for_direct() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display();
    let plan = format!(
        r#"{{"run":2,"root":"{root}","steps":[
            {{"open":{{"file":"b"}}}},
            {{"pwrite":{{"offset":0,"len":4096,"buffer":"page_fault","expect":"refused_or_skip"}}}},
            {{"verify":{{}}}},
            {{"open":{{"file":"d","direct":true}}}},
            {{"pwrite":{{"offset":0,"len":4096,"buffer":"page_fault","expect":"EFAULT"}}}}]}}"#
    );
    let r = run_plan(&plan);
    // Plain buffered write: the copy stops at the protected page (POSIX
    // allows the short write); the sectors before it were recorded and read
    // back intact.
    assert_eq!(r[1]["ret"], 2048, "{:?}", r[1]);
    assert_eq!(r[2]["ret"], 4, "{:?}", r[2]);
    // O_DIRECT pins the buffer up front: the whole write fails.
    match r[4]["errno"].as_str() {
        Some("EFAULT") => {}
        // Filesystems without O_DIRECT (tmpfs before 6.6) refuse the open.
        other => assert_eq!(r[3]["errno"], "EINVAL", "{other:?} {:?}", r[3]),
    }
}

#[test]
fn scan_reports_runs_of_zeroes_stamps_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display();
    run_plan(&format!(
        r#"{{"run":3,"root":"{root}","steps":[
            {{"open":{{"file":"x"}}}},
            {{"pwrite":{{"offset":4096,"len":8192}}}},
            {{"pwrite":{{"offset":8192,"len":1024}}}},
            {{"pwrite":{{"offset":20480,"len":100}}}}]}}"#
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_lab-guest"))
        .args(["scan", &format!("{root}/x")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    // The header carries the file's extent map (null where the host's
    // filesystem has no FIEMAP); where there is one, it maps the data.
    let header = &lines[0];
    assert_eq!(header["size"], 20580, "{header}");
    match header.get("extents") {
        Some(serde_json::Value::Array(extents)) => {
            let mapped: u64 = extents.iter().map(|e| e["len"].as_u64().unwrap()).sum();
            assert!(mapped >= 8192, "{header}");
        }
        Some(serde_json::Value::Null) => {}
        other => panic!("no extents field: {other:?} in {header}"),
    }
    let runs: Vec<serde_json::Value> = lines
        .into_iter()
        .filter(|v| v.get("size").is_none() && v.get("missing").is_none())
        .collect();
    let brief: Vec<(u64, u64, String, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["from"].as_u64().unwrap(),
                r["to"].as_u64().unwrap(),
                r["kind"].as_str().unwrap().to_string(),
                r["write"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            (0, 4096, "zero".into(), 0),
            (4096, 8192, "stamped".into(), 1),
            (8192, 9216, "stamped".into(), 2),
            (9216, 12288, "stamped".into(), 1),
            (12288, 20480, "zero".into(), 0),
            (20480, 20580, "garbage".into(), 0),
        ]
    );
}

/// With --sync-marks the agent stops at a mark until the lab answers on
/// stdin: nothing after the mark happens before that.
#[test]
fn sync_marks_wait_for_the_lab() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.json");
    std::fs::write(
        &plan_file,
        format!(
            r#"{{"run":3,"root":"{}","steps":[
                {{"open":{{"file":"f"}}}},
                {{"mark":{{"name":"before"}}}},
                {{"pwrite":{{"offset":0,"len":4096}}}}]}}"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-guest"))
        .args(["run", "--sync-marks", "--plan"])
        .arg(&plan_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l);
    }
    assert!(lines[3].contains(r#""mark":"before""#), "{lines:?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        std::fs::metadata(dir.path().join("f")).unwrap().len(),
        0,
        "the write after the mark ran before the lab answered"
    );
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.contains(r#""op":"mark""#) && rest.contains(r#""ret":4096"#),
        "{rest}"
    );
    assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 4096);
}
