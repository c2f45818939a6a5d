//! Large folios, proved on the kernel under test: a `folios` step counts the
//! page-cache folios behind a file (mmap, mincore, /proc/self/pagemap,
//! /proc/kpageflags in the guest) and the results say whether large folios
//! were used. Debian's kernel (THP on) caches an aligned 2 MiB buffered XFS
//! write in one 512-page folio; a file on the guest's tmpfs (huge=never)
//! gets single-page folios, and a testcase that needs large folios is then
//! skipped with the census as its reason, never passed. Stores through a
//! shared mapping (`mmap_write`) go into the cached large folio, keep it,
//! read back, and survive every cut of a sweep that their msync promised.

mod common;
use common::{lab, outcome, output, prop, read, suite_of, summary_of};

#[test]
fn the_large_folio_testcases_prove_their_folios_on_the_default_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(lab().args(["run", "--results"]).arg(&results).args([
        "large-folio-buffered-xfs-4k",
        "large-folio-buffered-xfs-1k",
        "powercut-mmap-store-xfs-4k",
    ]));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(" 0 failed, 0 skipped, 0 errors"),
        "{stdout}"
    );
    let v = summary_of(&results);
    for case in ["large-folio-buffered-xfs-4k", "large-folio-buffered-xfs-1k"] {
        let s = suite_of(&v, case);
        assert_eq!(prop(s, "page_cache.large_folios"), "yes", "{case}");
        // Right after the 2 MiB write, still after fsync wrote it back,
        // before the stores through a mapping and after them.
        for step in ["step03", "step08", "step13", "step17"] {
            assert_eq!(outcome(s, &format!("{step}.folios")), "passed", "{case}");
            let census = prop(s, &format!("folios.{step}"));
            assert!(
                census.starts_with(
                    "512 of 512 pages cached, in 1 folio (1 large; the largest 512 pages"
                ),
                "{case} {step}: {census}"
            );
        }
        for step in ["step14", "step15", "step16"] {
            assert_eq!(
                outcome(s, &format!("{step}.mmap_write")),
                "passed",
                "{case}"
            );
        }
        // The overwrites and the stores inside the folio read back as
        // written: verify expects the stores' stamps where they stored.
        assert_eq!(outcome(s, "step19.verify"), "passed", "{case}");
    }

    // Under a sweep: every cut point judged, none losing what an msync or
    // the fsync promised; the stores reached the crash disk, recognised by
    // their stamps.
    let s = suite_of(&v, "powercut-mmap-store-xfs-4k");
    assert_eq!(prop(s, "page_cache.large_folios"), "yes");
    assert_eq!(outcome(s, "sweep.verdicts"), "passed");
    assert_eq!(prop(s, "sweep.cut_points_left_out"), "0");
    assert_eq!(prop(s, "sweep.judgements_failed"), "0");
    for step in ["step05", "step07", "step08", "step09"] {
        assert_eq!(outcome(s, &format!("{step}.mmap_write")), "passed");
    }
    assert_eq!(outcome(s, "step11.verify"), "passed");
    let sweep = read(&results.join("latest/powercut-mmap-store-xfs-4k/crash/sweep.jsonl"));
    assert!(
        sweep.contains("(`step 8 mmap_write(off=1572864 len=65536 no msync)`)"),
        "no device write carried the stores: {sweep}"
    );
    // Points after the msync of step 7 were judged (and passed). Which op
    // the first of them names depends on when the agent's lines reach the
    // host: steps 8 and 9 do no I/O, so on a loaded host the next device
    // event can come after their lines.
    assert!(
        [
            "step 7 mmap_write(",
            "step 8 mmap_write(",
            "step 9 mmap_write(",
            "step 10 fsync("
        ]
        .iter()
        .any(|op| sweep.contains(&format!("after `{op}"))),
        "no cut point after the msync of step 7: {sweep}"
    );
}

/// `verify` holds the stores to what they stored and follows the file's
/// size: after a truncate that cuts off half of them, the half below the
/// cut must still hold the store's stamps and the cut-off half is expected
/// gone (verify knows truncates, punches and zero ranges), and a store past
/// the new end of the file fails with the lengths instead of faulting.
#[test]
fn verify_follows_a_truncate_and_a_store_past_the_end_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let tc = tmp.path().join("mmap-cut-off.yaml");
    std::fs::write(
        &tc,
        "name: mmap-cut-off\ndevice: { lba_size: 512 }\nmkfs: { block_size: 4096 }\nworkload:\n  steps:\n    - open: { file: f }\n    - pwrite: { offset: 0, len: 16384 }\n    - mmap_write: { offset: 8192, len: 8192 }\n    - ftruncate: { len: 12288 }\n    - verify: {}\n    - mmap_write: { offset: 8192, len: 8192 }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = output(lab().args(["run", "--results"]).arg(&results).arg(&tc));
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    let s = suite_of(&v, "mmap-cut-off");
    assert_eq!(outcome(s, "step03.mmap_write"), "passed");
    assert_eq!(outcome(s, "step05.verify"), "passed");
    assert_eq!(outcome(s, "step06.mmap_write"), "failed");
    assert!(
        stdout.contains("/mnt/f is 12288 bytes long, but the stores reach byte 16384"),
        "{stdout}"
    );
}

#[test]
fn a_file_in_single_page_folios_skips_the_testcase_with_the_census() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let tc = tmp.path().join("tmpfs-folios.yaml");
    std::fs::write(
        &tc,
        "name: tmpfs-folios\nworkload:\n  steps:\n    - open: { file: /tmp/f }\n    - pwrite: { offset: 0, len: 2097152 }\n    - folios: { expect: supported_or_skip }\n    - folios: { len: 65536 }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = output(lab().args(["run", "--results"]).arg(&results).arg(&tc));
    // The step that needs large folios is a skip; the one that expects them
    // outright fails, naming the census.
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    let s = suite_of(&v, "tmpfs-folios");
    assert_eq!(prop(s, "page_cache.large_folios"), "no");
    assert_eq!(outcome(s, "step03.folios"), "skipped");
    assert_eq!(outcome(s, "step04.folios"), "failed");
    assert!(
        stdout.contains("no large folios: the page cache holds the range in single-page folios only (512 of 512 pages cached, in 512 folios"),
        "{stdout}"
    );
    assert!(
        stdout.contains("16 of 16 pages cached, in 16 folios (0 large"),
        "{stdout}"
    );
}
