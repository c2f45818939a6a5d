//! The golden splat corpus (`tests/splats/`, see its README.md): every
//! console log gets exactly the splats its `.title` file lists, whether it
//! is scanned whole or fed to the incremental scanner in pieces.

use lab_core::splat::{scan, ConsoleScan, Splat, SplatKind};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/splats")
}

/// `LINE TITLE` per line, as the README says.
fn expected(title_file: &str, name: &str) -> Vec<(usize, String)> {
    title_file
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (line, title) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("{name}.title: `{l}` is not `LINE TITLE`"));
            let line = line
                .parse()
                .unwrap_or_else(|_| panic!("{name}.title: `{line}` is not a line number"));
            (line, title.to_string())
        })
        .collect()
}

/// The console fed to a [`ConsoleScan`] in `pieces`, then finished.
fn incremental<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<Splat> {
    let mut s = ConsoleScan::new();
    let mut found = Vec::new();
    for p in pieces {
        found.extend(s.feed(p));
    }
    found.extend(s.finish());
    found
}

#[test]
fn every_console_gets_its_titles_whole_and_incrementally() {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 15, "the corpus lost files: {logs:?}");
    let mut kinds = Vec::new();
    for log in &logs {
        let name = log.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(log).unwrap();
        let titles = std::fs::read_to_string(log.with_extension("title"))
            .unwrap_or_else(|e| panic!("{name}.log has no readable {name}.title: {e}"));
        let want = expected(&titles, &name);

        let whole = scan(&String::from_utf8_lossy(&bytes));
        let got: Vec<(usize, String)> = whole.iter().map(|s| (s.line, s.title.clone())).collect();
        assert_eq!(got, want, "{name}.log scanned whole");

        for size in [1, 7, 64, 4096] {
            assert_eq!(
                incremental(bytes.chunks(size)),
                whole,
                "{name}.log fed in {size}-byte pieces"
            );
        }
        assert_eq!(
            incremental(bytes.split_inclusive(|&b| b == b'\n')),
            whole,
            "{name}.log fed line by line"
        );
        kinds.extend(whole.iter().map(|s| s.kind));
    }
    for k in SplatKind::ALL {
        assert!(kinds.contains(&k), "no corpus console has a {k:?} splat");
    }
}

#[test]
fn every_title_file_has_its_log() {
    for e in std::fs::read_dir(corpus()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "title") {
            assert!(
                p.with_extension("log").is_file(),
                "{} has no .log",
                p.display()
            );
        }
    }
}

/// What the VM code needs while a console grows: a panic is known at once
/// and is fatal; the Oops before it is not.
#[test]
fn the_recorded_oops_then_panic_is_fatal_only_at_the_panic() {
    let bytes = std::fs::read(corpus().join("oops-int3-then-panic.log")).unwrap();
    let mut s = ConsoleScan::new();
    let mut found = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        found.extend(s.feed(line));
        if !s.saw_panic() {
            assert!(found.iter().all(|f| !f.is_fatal()));
        }
    }
    assert!(s.saw_panic());
    assert!(s.pending().is_some_and(|p| p.is_fatal()));
    assert!(!found[0].is_fatal(), "{found:?}");
}
