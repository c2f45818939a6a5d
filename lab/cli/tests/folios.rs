//! Large folios, proved on the kernel under test: a `folios` step counts the
//! page-cache folios behind a file (mmap, mincore, /proc/self/pagemap,
//! /proc/kpageflags in the guest) and the results say whether large folios
//! were used. Debian's kernel (THP on) caches an aligned 2 MiB buffered XFS
//! write in one 512-page folio; a file on the guest's tmpfs (huge=never)
//! gets single-page folios, and a testcase that needs large folios is then
//! skipped with the census as its reason, never passed.

mod common;
use common::{lab, outcome, output, prop, suite_of, summary_of};

#[test]
fn the_large_folio_testcases_prove_their_folios_on_the_default_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--results"])
            .arg(&results)
            .args(["large-folio-buffered-xfs-4k", "large-folio-buffered-xfs-1k"]),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(" 0 failed, 0 skipped, 0 errors"),
        "{stdout}"
    );
    let v = summary_of(&results);
    for case in ["large-folio-buffered-xfs-4k", "large-folio-buffered-xfs-1k"] {
        let s = suite_of(&v, case);
        assert_eq!(prop(s, "page_cache.large_folios"), "yes", "{case}");
        // Right after the 2 MiB write, and still after fsync wrote it back.
        for step in ["step03", "step08"] {
            assert_eq!(outcome(s, &format!("{step}.folios")), "passed", "{case}");
            let census = prop(s, &format!("folios.{step}"));
            assert!(
                census.starts_with(
                    "512 of 512 pages cached, in 1 folio (1 large; the largest 512 pages"
                ),
                "{case} {step}: {census}"
            );
        }
        // The overwrites inside the folio read back as written.
        assert_eq!(outcome(s, "step13.verify"), "passed", "{case}");
    }
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
