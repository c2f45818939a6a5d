//! Explaining why a patch did not apply.
//!
//! When a series under test does not apply to the lab's kernel tree,
//! `git apply --check --verbose` and `git am -3` say so in a dozen lines
//! of `error:`, `hint:` and echoed context. A report wants one line that
//! names the file and the hunk (`core.c, hunk #2 (@@ -2041,7 ... @@
//! nvme_configure_atomic_write)`), so the reader knows which part of the
//! series collides with the tree without rerunning git. This module reads
//! the patch text into files and hunks, and git's output into that one
//! line. Pure: the caller runs git.

use regex::Regex;
use serde::Serialize;
use std::fmt;
use std::sync::OnceLock;

/// One hunk of a file's diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hunk {
    /// 1-based within its file, as `git apply` counts them.
    pub index: usize,
    pub old_start: u32,
    pub old_len: u32,
    pub new_start: u32,
    pub new_len: u32,
    /// The whole `@@ -a,b +c,d @@ context` line.
    pub header: String,
}

/// One file's part of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilePatch {
    /// `None` for a new file (`/dev/null`); `a/` stripped.
    pub old_path: Option<String>,
    /// `None` for a deleted file (`/dev/null`); `b/` stripped.
    pub new_path: Option<String>,
    /// Empty for a binary file, a pure rename or a mode change.
    pub hunks: Vec<Hunk>,
}

impl FilePatch {
    /// The name git reports the file by: the old one if any (renames and
    /// changes), else the new one (new files).
    pub fn path(&self) -> &str {
        self.old_path
            .as_deref()
            .or(self.new_path.as_deref())
            .unwrap_or("")
    }

    /// Whether `name` is this file before or after the patch.
    pub fn names(&self, name: &str) -> bool {
        self.old_path.as_deref() == Some(name) || self.new_path.as_deref() == Some(name)
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid pattern"))
}

/// `@@ -a[,b] +c[,d] @@`: a missing length is 1.
fn hunk_header(line: &str) -> Option<(u32, u32, u32, u32)> {
    static H: OnceLock<Regex> = OnceLock::new();
    let c = re(&H, r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@").captures(line)?;
    let n = |i: usize, default: u32| -> Option<u32> {
        match c.get(i) {
            Some(m) => m.as_str().parse().ok(),
            None => Some(default),
        }
    };
    Some((n(1, 0)?, n(2, 1)?, n(3, 0)?, n(4, 1)?))
}

/// A C-quoted name as git writes names with unusual characters
/// (`"a/caf\303\251.c"`): the name and the text after the closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &body[i + 1..])),
            b'\\' if i + 1 < bytes.len() => {
                let e = bytes[i + 1];
                i += 2;
                match e {
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match bytes.get(i) {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(v as u8);
                    }
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b't' => out.push(b'\t'),
                    b'n' => out.push(b'\n'),
                    b'v' => out.push(11),
                    b'f' => out.push(12),
                    b'r' => out.push(b'\r'),
                    other => out.push(other),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

fn strip_ab(p: &str) -> String {
    p.strip_prefix("a/")
        .or_else(|| p.strip_prefix("b/"))
        .unwrap_or(p)
        .to_string()
}

/// The name on a `--- ` or `+++ ` line (`/dev/null` is none; a plain
/// diff's `\t2024-01-01 ...` timestamp is dropped).
fn side_path(v: &str) -> Option<String> {
    let name = match unquote(v) {
        Some((name, _)) => name,
        None => v.split('\t').next().unwrap_or(v).trim_end().to_string(),
    };
    (name != "/dev/null").then(|| strip_ab(&name))
}

/// The two names of `diff --git a/X b/Y`. When both are the same (all
/// but renames) the line is split in the middle, so a name containing
/// ` b/` is read right.
fn git_paths(rest: &str) -> (Option<String>, Option<String>) {
    if let Some((a, after)) = unquote(rest) {
        let after = after.trim_start();
        let b = match unquote(after) {
            Some((b, _)) => b,
            None => after.to_string(),
        };
        return (Some(strip_ab(&a)), Some(strip_ab(&b)));
    }
    let len = rest.len();
    if len >= 5 && (len - 5).is_multiple_of(2) {
        let n = (len - 5) / 2;
        if let (Some(a), Some(b)) = (rest.get(..n + 2), rest.get(n + 3..)) {
            if a.starts_with("a/") && b.starts_with("b/") && a[2..] == b[2..] {
                return (Some(a[2..].to_string()), Some(b[2..].to_string()));
            }
        }
    }
    match rest.split_once(" b/").or_else(|| rest.split_once(" \"b/")) {
        Some((a, b)) => (Some(strip_ab(a)), Some(b.trim_end_matches('"').to_string())),
        None => (Some(strip_ab(rest)), Some(strip_ab(rest))),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// No file yet (email headers, commit message, diffstat).
    Outside,
    /// After `diff --git`, before the first hunk.
    Header,
    /// Inside a hunk: the old and new lines still to come.
    Body(u32, u32),
    /// After a hunk: another hunk, another file or trailing text.
    After,
}

/// The files and hunks of a unified diff. The diff may be inside an email
/// (headers and commit message before the first `diff --git`, a `-- `
/// signature after) or a whole mbox; plain `--- a/x` / `+++ b/x` diffs
/// without `diff --git` are read too. Hunk bodies are counted by their
/// header's lengths, so a removed line that reads `-- ` or `--- x` is not
/// taken for a signature or a new file.
pub fn file_patches(patch_text: &str) -> Vec<FilePatch> {
    let lines: Vec<&str> = patch_text.lines().collect();
    let mut files: Vec<FilePatch> = Vec::new();
    let mut state = State::Outside;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let State::Body(old, new) = state {
            let (o, n) = match l.as_bytes().first() {
                // An empty line is context whose space a mailer ate.
                None | Some(b' ') => (1, 1),
                Some(b'-') => (1, 0),
                Some(b'+') => (0, 1),
                Some(b'\\') => (0, 0),
                // A short hunk: read this line as what follows it.
                Some(_) => {
                    state = State::After;
                    continue;
                }
            };
            let (old, new) = (old.saturating_sub(o), new.saturating_sub(n));
            state = if old == 0 && new == 0 {
                State::After
            } else {
                State::Body(old, new)
            };
            i += 1;
            continue;
        }
        if matches!(state, State::Header | State::After) && l.starts_with("From ") {
            // The next message of an mbox: its commit message is no hunk.
            state = State::Outside;
        } else if let Some(rest) = l.strip_prefix("diff --git ") {
            let (old_path, new_path) = git_paths(rest);
            files.push(FilePatch {
                old_path,
                new_path,
                hunks: Vec::new(),
            });
            state = State::Header;
        } else if let (Some(file), Some((os, ol, ns, nl))) = (
            files.last_mut().filter(|_| state != State::Outside),
            hunk_header(l),
        ) {
            file.hunks.push(Hunk {
                index: file.hunks.len() + 1,
                old_start: os,
                old_len: ol,
                new_start: ns,
                new_len: nl,
                header: l.to_string(),
            });
            state = if ol == 0 && nl == 0 {
                State::After
            } else {
                State::Body(ol, nl)
            };
        } else if state == State::Header {
            let file = files.last_mut().expect("a header follows a file");
            if l.starts_with("new file mode ") {
                file.old_path = None;
            } else if l.starts_with("deleted file mode ") {
                file.new_path = None;
            } else if let Some(p) = l
                .strip_prefix("rename from ")
                .or_else(|| l.strip_prefix("copy from "))
            {
                file.old_path = Some(unquote(p).map_or_else(|| p.to_string(), |q| q.0));
            } else if let Some(p) = l
                .strip_prefix("rename to ")
                .or_else(|| l.strip_prefix("copy to "))
            {
                file.new_path = Some(unquote(p).map_or_else(|| p.to_string(), |q| q.0));
            } else if let Some(p) = l.strip_prefix("--- ") {
                file.old_path = side_path(p);
            } else if let Some(p) = l.strip_prefix("+++ ") {
                file.new_path = side_path(p);
            }
        } else if let (Some(old), Some(new)) = (
            l.strip_prefix("--- "),
            lines.get(i + 1).and_then(|n| n.strip_prefix("+++ ")),
        ) {
            files.push(FilePatch {
                old_path: side_path(old),
                new_path: side_path(new),
                hunks: Vec::new(),
            });
            state = State::Header;
            i += 1;
        }
        i += 1;
    }
    files
}

/// Why a patch did not apply, as one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyFailure {
    pub file: Option<String>,
    pub hunk: Option<Hunk>,
    pub reason: String,
}

impl fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(h) = &self.hunk {
                write!(f, ", hunk #{} ({})", h.index, h.header)?;
            }
            write!(f, ": ")?;
        } else if let Some(h) = &self.hunk {
            write!(f, "hunk #{} ({}): ", h.index, h.header)?;
        }
        f.write_str(&self.reason)
    }
}

const NO_MATCH: &str = "the context does not match the tree";

/// The hunk of `file` that git's `patch failed: file:line` means: the one
/// starting at `line`, else the one whose old range holds it, else the
/// nearest; the reason says which when it is not exact.
fn locate(files: &[FilePatch], file: &str, line: u32) -> (Option<Hunk>, String) {
    let hunks: Vec<&Hunk> = files
        .iter()
        .filter(|f| f.names(file))
        .flat_map(|f| &f.hunks)
        .collect();
    if let Some(h) = hunks.iter().find(|h| h.old_start == line) {
        return (Some((*h).clone()), NO_MATCH.to_string());
    }
    if let Some(h) = hunks
        .iter()
        .find(|h| h.old_start <= line && line < h.old_start + h.old_len.max(1))
    {
        return (
            Some((*h).clone()),
            format!("{NO_MATCH} (git reported line {line}, inside this hunk)"),
        );
    }
    match hunks.iter().min_by_key(|h| h.old_start.abs_diff(line)) {
        Some(h) => (
            Some((*h).clone()),
            format!(
                "{NO_MATCH} (git reported line {line}; no hunk starts there, this is the nearest)"
            ),
        ),
        None => (
            None,
            format!("{NO_MATCH} at line {line} (the patch text has no hunk for this file)"),
        ),
    }
}

/// One finding in git's output; lower ranks are more telling.
struct Finding {
    rank: u8,
    failure: ApplyFailure,
}

fn finding(rank: u8, file: Option<&str>, reason: impl Into<String>) -> Finding {
    Finding {
        rank,
        failure: ApplyFailure {
            file: file.map(str::to_string),
            hunk: None,
            reason: reason.into(),
        },
    }
}

/// What one `error:`/`fatal:` message says.
fn classify_error(msg: &str, files: &[FilePatch]) -> Finding {
    if let Some((file, line)) = msg
        .strip_prefix("patch failed: ")
        .and_then(|r| r.rsplit_once(':'))
        .and_then(|(f, l)| Some((f, l.trim().parse::<u32>().ok()?)))
    {
        let (hunk, reason) = locate(files, file, line);
        return Finding {
            rank: 0,
            failure: ApplyFailure {
                file: Some(file.to_string()),
                hunk,
                reason,
            },
        };
    }
    let suffixed = |suffixes: &[&str]| suffixes.iter().find_map(|s| msg.strip_suffix(s));
    if let Some(f) = suffixed(&[": does not exist in index", ": No such file or directory"]) {
        return finding(0, Some(f), "does not exist in the tree");
    }
    if let Some(f) = suffixed(&[
        ": already exists in index",
        ": already exists in working directory",
    ]) {
        return finding(0, Some(f), "already exists in the tree");
    }
    if let Some(f) = suffixed(&[": does not match index"]) {
        return finding(
            0,
            Some(f),
            "does not match the index (the tree has uncommitted changes to it)",
        );
    }
    if let Some(f) = msg
        .strip_prefix("sha1 information is lacking or useless (")
        .and_then(|r| r.strip_suffix(")."))
    {
        return finding(
            0,
            Some(f),
            "does not apply, and git am -3 cannot fall back to a three-way merge: \
             the blobs the patch's index lines name are not in this repository",
        );
    }
    if msg.starts_with("corrupt patch at line ") {
        return finding(0, None, msg);
    }
    if msg.starts_with("No valid patches in input") {
        return finding(0, None, "no valid patches in the input (no diff in it)");
    }
    if let Some(f) = suffixed(&[": patch does not apply"]) {
        return finding(1, Some(f), "the patch does not apply");
    }
    finding(2, None, msg)
}

/// Explains the stderr of `git apply --check --verbose PATCH` and/or
/// `git am -3` against the patch it was given. The most telling message
/// wins (a failed hunk, a conflict, a missing or existing file, a
/// corrupt patch, before a bare `patch does not apply`, before any other
/// `error:`, before `Patch failed at`); among equals the first.
pub fn explain(apply_output: &str, patch_text: &str) -> ApplyFailure {
    let files = file_patches(patch_text);
    let mut best: Option<Finding> = None;
    let mut searching = false;
    for raw in apply_output.lines() {
        let l = raw.trim_end();
        // After `while searching for:` git echoes the hunk's old text,
        // which may hold anything (a C label `error:` for one) until the
        // `patch failed` line.
        if searching {
            if l.starts_with("error: patch failed: ")
                || l.starts_with("Checking patch ")
                || l.starts_with("Applying: ")
                || l.starts_with("Applied patch ")
            {
                searching = false;
            } else {
                continue;
            }
        }
        let found = if l == "error: while searching for:" {
            searching = true;
            continue;
        } else if let Some(rest) = l.strip_prefix("CONFLICT (") {
            match rest.split_once("): Merge conflict in ") {
                Some((kind, file)) => finding(
                    0,
                    Some(file),
                    format!("the three-way merge left conflicts ({kind})"),
                ),
                None => finding(1, None, l),
            }
        } else if let Some(rest) = l.strip_prefix("Patch failed at ") {
            finding(3, None, format!("git am stopped at patch {rest}"))
        } else if let Some(msg) = l
            .strip_prefix("error: ")
            .or_else(|| l.strip_prefix("fatal: "))
        {
            classify_error(msg, &files)
        } else {
            continue;
        };
        if best.as_ref().is_none_or(|b| found.rank < b.rank) {
            best = Some(found);
        }
    }
    best.map_or_else(
        || ApplyFailure {
            file: None,
            hunk: None,
            reason: "git gave no reason (no error in its output)".into(),
        },
        |b| b.failure,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `git format-patch` email touching five files: a change with
    /// three hunks, a new file, a rename with a change, a deletion and a
    /// binary file.
    const EMAIL: &str = "\
From 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39 Mon Sep 17 00:00:00 2001
From: Dev One <dev@example.org>
Date: Tue, 4 Mar 2025 10:12:44 +0000
Subject: [PATCH v3 2/4] nvme: honour NAWUPF when NSFEAT says atomics are
 per-namespace

The per-namespace limit was ignored when the controller also set AWUPF.
Use it, and keep the old behaviour when the namespace has none.

--- this line only looks like a diff
Signed-off-by: Dev One <dev@example.org>
---
 drivers/nvme/host/core.c        | 14 +++++++-------
 drivers/nvme/host/atomic.h      |  9 +++++++++
 drivers/nvme/host/{nvme.h => nvme-core.h} | 2 +-
 drivers/nvme/host/old.c         |  3 ---
 Documentation/nvme/atomic.png   | Bin 0 -> 1234 bytes
 5 files changed, 17 insertions(+), 11 deletions(-)

diff --git a/drivers/nvme/host/core.c b/drivers/nvme/host/core.c
index 1a2b3c4d5e6f..6f5e4d3c2b1a 100644
--- a/drivers/nvme/host/core.c
+++ b/drivers/nvme/host/core.c
@@ -12,6 +12,7 @@
 #include <linux/hdreg.h>
 #include <linux/kernel.h>
 #include <linux/module.h>
+#include \"atomic.h\"
 #include <linux/backing-dev.h>
 #include <linux/slab.h>
 #include <linux/types.h>
@@ -2041,7 +2042,7 @@ static u32 nvme_configure_atomic_write(struct nvme_ns *ns,
 	u32 atomic_bs;
 
 	if ((id->nsfeat & NVME_NS_FEAT_ATOMICS) && id->nawupf) {
-		atomic_bs = (1 + le16_to_cpu(id->nawupf)) * bs;
+		atomic_bs = (1 + le16_to_cpu(id->nawupf)) * bs;	/* per ns */
 		if (id->nabo)
 			return 0;
 	} else {
@@ -2110 +2111 @@ static void nvme_update_disk_info(struct nvme_ctrl *ctrl, struct gendisk *disk,
-	lim->atomic_write_hw_max = 0;
+	lim->atomic_write_hw_max = atomic_bs;
diff --git a/drivers/nvme/host/atomic.h b/drivers/nvme/host/atomic.h
new file mode 100644
index 000000000000..0123456789ab
--- /dev/null
+++ b/drivers/nvme/host/atomic.h
@@ -0,0 +1,9 @@
+/* SPDX-License-Identifier: GPL-2.0 */
+#ifndef _NVME_ATOMIC_H
+#define _NVME_ATOMIC_H
+
+-- not a signature, an added line
+--- not a file, an added line
+static inline bool nvme_atomic(void) { return true; }
+
+#endif
diff --git a/drivers/nvme/host/nvme.h b/drivers/nvme/host/nvme-core.h
similarity index 98%
rename from drivers/nvme/host/nvme.h
rename to drivers/nvme/host/nvme-core.h
index 2222222..3333333 100644
--- a/drivers/nvme/host/nvme.h
+++ b/drivers/nvme/host/nvme-core.h
@@ -400,7 +400,7 @@ struct nvme_ns_head {
 	struct list_head	entry;
 	struct kref		ref;
 	bool			shared;
-	bool			rotational;
+	bool			rotational:1;
 	bool			passthru_err_log_enabled;
 	struct nvme_effects_log *effects;
 	u64			nuse;
diff --git a/drivers/nvme/host/old.c b/drivers/nvme/host/old.c
deleted file mode 100644
index 4444444..0000000
--- a/drivers/nvme/host/old.c
+++ /dev/null
@@ -1,3 +0,0 @@
-// old
--- removed line that reads like a signature
-int old;
diff --git a/Documentation/nvme/atomic.png b/Documentation/nvme/atomic.png
new file mode 100644
index 0000000..5555555
Binary files /dev/null and b/Documentation/nvme/atomic.png differ
-- 
2.47.2

";

    fn names(f: &FilePatch) -> (Option<&str>, Option<&str>) {
        (f.old_path.as_deref(), f.new_path.as_deref())
    }

    #[test]
    fn a_format_patch_email() {
        let fs = file_patches(EMAIL);
        assert_eq!(fs.len(), 5, "{fs:#?}");
        let core = "drivers/nvme/host/core.c";
        assert_eq!(names(&fs[0]), (Some(core), Some(core)));
        let starts: Vec<(usize, u32, u32, u32, u32)> = fs[0]
            .hunks
            .iter()
            .map(|h| (h.index, h.old_start, h.old_len, h.new_start, h.new_len))
            .collect();
        assert_eq!(
            starts,
            [
                (1, 12, 6, 12, 7),
                (2, 2041, 7, 2042, 7),
                (3, 2110, 1, 2111, 1)
            ]
        );
        assert_eq!(
            fs[0].hunks[1].header,
            "@@ -2041,7 +2042,7 @@ static u32 nvme_configure_atomic_write(struct nvme_ns *ns,"
        );
        assert_eq!(names(&fs[1]), (None, Some("drivers/nvme/host/atomic.h")));
        assert_eq!(fs[1].hunks.len(), 1);
        assert_eq!((fs[1].hunks[0].old_start, fs[1].hunks[0].new_len), (0, 9));
        assert_eq!(
            names(&fs[2]),
            (
                Some("drivers/nvme/host/nvme.h"),
                Some("drivers/nvme/host/nvme-core.h")
            )
        );
        assert_eq!(fs[2].hunks[0].old_start, 400);
        assert_eq!(names(&fs[3]), (Some("drivers/nvme/host/old.c"), None));
        assert_eq!(fs[3].hunks.len(), 1);
        assert_eq!(names(&fs[4]), (None, Some("Documentation/nvme/atomic.png")));
        assert!(fs[4].hunks.is_empty());
        assert_eq!(fs[2].path(), "drivers/nvme/host/nvme.h");
        assert_eq!(fs[1].path(), "drivers/nvme/host/atomic.h");
    }

    #[test]
    fn odd_diffs() {
        // A pure rename, a mode change, a plain diff with timestamps, a
        // quoted name, a name containing " b/".
        let text = "\
diff --git a/fs/a.c b/fs/b.c
similarity index 100%
rename from fs/a.c
rename to fs/b.c
diff --git a/scripts/x.sh b/scripts/x.sh
old mode 100644
new mode 100755
diff --git \"a/fs/caf\\303\\251.c\" \"b/fs/caf\\303\\251.c\"
--- \"a/fs/caf\\303\\251.c\"
+++ \"b/fs/caf\\303\\251.c\"
@@ -1 +1 @@
-a
+b
diff --git a/x b/y b/x b/y
--- a/x b/y
+++ b/x b/y
@@ -3,0 +4 @@
+new
--- fs/plain.c.orig\t2025-03-04 10:00:00.000000000 +0000
+++ fs/plain.c\t2025-03-04 10:01:00.000000000 +0000
@@ -5,2 +5,2 @@ int main(void)
 a
-b
+c
";
        let fs = file_patches(text);
        assert_eq!(fs.len(), 5, "{fs:#?}");
        assert_eq!(names(&fs[0]), (Some("fs/a.c"), Some("fs/b.c")));
        assert!(fs[0].hunks.is_empty());
        assert_eq!(names(&fs[1]), (Some("scripts/x.sh"), Some("scripts/x.sh")));
        assert_eq!(names(&fs[2]), (Some("fs/café.c"), Some("fs/café.c")));
        assert_eq!((fs[2].hunks[0].old_len, fs[2].hunks[0].new_len), (1, 1));
        assert_eq!(names(&fs[3]), (Some("x b/y"), Some("x b/y")));
        let h = &fs[3].hunks[0];
        assert_eq!(
            (h.old_start, h.old_len, h.new_start, h.new_len),
            (3, 0, 4, 1)
        );
        assert_eq!(names(&fs[4]), (Some("fs/plain.c.orig"), Some("fs/plain.c")));
        assert_eq!(fs[4].hunks[0].old_start, 5);
        // A removed `-- x` and an added `++ b/y` read `--- x` / `+++ b/y`:
        // only counting the hunk tells them from a new file's header.
        let trap = "\
diff --git a/t.txt b/t.txt
--- a/t.txt
+++ b/t.txt
@@ -1,2 +1,2 @@
 a
--- x
+++ b/y
@@ -9 +9 @@
-b
+c
";
        let fs = file_patches(trap);
        assert_eq!(fs.len(), 1, "{fs:#?}");
        assert_eq!(fs[0].hunks.len(), 2);
        assert!(file_patches("just a message\n---\n file | 1 +\n").is_empty());
        assert!(file_patches("").is_empty());
    }

    #[test]
    fn a_mailbox_of_two_patches() {
        let two = format!("{EMAIL}{}", EMAIL.replace("core.c", "pci.c"));
        let fs = file_patches(&two);
        assert_eq!(fs.len(), 10);
        assert_eq!(fs[5].path(), "drivers/nvme/host/pci.c");
        assert_eq!(fs[5].hunks.len(), 3);
        // The binary file that ends the first message keeps its names: the
        // next message's `--- this line only looks like a diff` is not its
        // header.
        assert_eq!(fs[4], file_patches(EMAIL)[4]);
    }

    const CONTEXT_FAILED: &str = "\
Checking patch drivers/nvme/host/core.c...
error: while searching for:
	u32 atomic_bs;

	if ((id->nsfeat & NVME_NS_FEAT_ATOMICS) && id->nawupf) {
		atomic_bs = (1 + le16_to_cpu(id->nawupf)) * bs;
		if (id->nabo)
error: out of memory in a C comment, echoed
			return 0;
	} else {

error: patch failed: drivers/nvme/host/core.c:2041
error: drivers/nvme/host/core.c: patch does not apply
Checking patch drivers/nvme/host/atomic.h...
Checking patch drivers/nvme/host/nvme.h => drivers/nvme/host/nvme-core.h...
Checking patch drivers/nvme/host/old.c...
Checking patch Documentation/nvme/atomic.png...
";

    #[test]
    fn context_that_does_not_match() {
        let f = explain(CONTEXT_FAILED, EMAIL);
        assert_eq!(f.file.as_deref(), Some("drivers/nvme/host/core.c"));
        assert_eq!(f.hunk.as_ref().unwrap().index, 2);
        assert_eq!(f.reason, "the context does not match the tree");
        assert_eq!(
            f.to_string(),
            "drivers/nvme/host/core.c, hunk #2 (@@ -2041,7 +2042,7 @@ static u32 nvme_configure_atomic_write(struct nvme_ns *ns,): the context does not match the tree"
        );
    }

    #[test]
    fn a_line_that_no_hunk_starts_at() {
        let out = |l: u32| format!("error: patch failed: drivers/nvme/host/core.c:{l}\n");
        // Inside hunk 2's old range 2041..2048.
        let f = explain(&out(2045), EMAIL);
        assert_eq!(f.hunk.unwrap().index, 2);
        assert!(
            f.reason
                .contains("git reported line 2045, inside this hunk"),
            "{}",
            f.reason
        );
        // Nearest: 2100 is 10 from hunk 3 and 59 from hunk 2.
        let f = explain(&out(2100), EMAIL);
        assert_eq!(f.hunk.unwrap().index, 3);
        assert!(f.reason.contains("this is the nearest"), "{}", f.reason);
        // A renamed file by its new name, a file not in the patch.
        let f = explain(
            "error: patch failed: drivers/nvme/host/nvme-core.h:400\n",
            EMAIL,
        );
        assert_eq!(f.hunk.unwrap().old_start, 400);
        let f = explain("error: patch failed: fs/xfs/xfs_file.c:10\n", EMAIL);
        assert_eq!(f.hunk, None);
        assert_eq!(
            f.to_string(),
            "fs/xfs/xfs_file.c: the context does not match the tree at line 10 (the patch text has no hunk for this file)"
        );
    }

    #[test]
    fn missing_and_existing_files() {
        for out in [
            "Checking patch fs/x.c...\nerror: fs/x.c: does not exist in index\n",
            "Checking patch fs/x.c...\nerror: fs/x.c: No such file or directory\n",
        ] {
            assert_eq!(
                explain(out, EMAIL).to_string(),
                "fs/x.c: does not exist in the tree"
            );
        }
        for out in [
            "error: drivers/nvme/host/atomic.h: already exists in index\n",
            "error: drivers/nvme/host/atomic.h: already exists in working directory\n",
        ] {
            let f = explain(out, EMAIL);
            assert_eq!(
                f.to_string(),
                "drivers/nvme/host/atomic.h: already exists in the tree"
            );
            assert_eq!(f.hunk, None);
        }
        let f = explain("error: fs/x.c: does not match index\n", EMAIL);
        assert!(f
            .to_string()
            .starts_with("fs/x.c: does not match the index"));
    }

    #[test]
    fn corrupt_and_empty_patches() {
        let f = explain("error: corrupt patch at line 12\n", "");
        assert_eq!(f.to_string(), "corrupt patch at line 12");
        let f = explain(
            "error: No valid patches in input (allow with \"--allow-empty\")\n",
            "",
        );
        assert_eq!(
            f.to_string(),
            "no valid patches in the input (no diff in it)"
        );
        assert_eq!(
            explain("", EMAIL).to_string(),
            "git gave no reason (no error in its output)"
        );
        let f = explain(
            "fatal: not a git repository (or any of the parent directories): .git\n",
            "",
        );
        assert_eq!(
            f.reason,
            "not a git repository (or any of the parent directories): .git"
        );
    }

    #[test]
    fn git_am_three_way() {
        let out = "\
Applying: nvme: honour NAWUPF when NSFEAT says atomics are per-namespace
Using index info to reconstruct a base tree...
M	drivers/nvme/host/core.c
Falling back to patching base and 3-way merge...
Auto-merging drivers/nvme/host/core.c
CONFLICT (content): Merge conflict in drivers/nvme/host/core.c
error: Failed to merge in the changes.
hint: Use 'git am --show-current-patch=diff' to see the failed patch
hint: When you have resolved this problem, run \"git am --continue\".
Patch failed at 0002 nvme: honour NAWUPF when NSFEAT says atomics are per-namespace
";
        let f = explain(out, EMAIL);
        assert_eq!(f.file.as_deref(), Some("drivers/nvme/host/core.c"));
        assert_eq!(f.hunk, None);
        assert_eq!(
            f.to_string(),
            "drivers/nvme/host/core.c: the three-way merge left conflicts (content)"
        );

        let out = "\
Applying: nvme: honour NAWUPF
error: sha1 information is lacking or useless (drivers/nvme/host/core.c).
error: could not build fake ancestor
Patch failed at 0002 nvme: honour NAWUPF
";
        let f = explain(out, EMAIL);
        assert_eq!(f.file.as_deref(), Some("drivers/nvme/host/core.c"));
        assert!(f.reason.contains("three-way"), "{f}");

        // am without -3 prints apply's errors, then its own.
        let out = "\
Applying: nvme: honour NAWUPF
error: patch failed: drivers/nvme/host/core.c:2110
error: drivers/nvme/host/core.c: patch does not apply
Patch failed at 0002 nvme: honour NAWUPF
";
        let f = explain(out, EMAIL);
        assert_eq!(f.hunk.unwrap().index, 3);

        let f = explain("Patch failed at 0003 xfs: atomic buffered writes\n", EMAIL);
        assert_eq!(
            f.to_string(),
            "git am stopped at patch 0003 xfs: atomic buffered writes"
        );
        let f = explain(
            "error: fs/y.c: patch does not apply\nPatch failed at 0001 y\n",
            "",
        );
        assert_eq!(f.to_string(), "fs/y.c: the patch does not apply");
    }

    #[test]
    fn display_forms() {
        let h = Hunk {
            index: 1,
            old_start: 1,
            old_len: 1,
            new_start: 1,
            new_len: 1,
            header: "@@ -1 +1 @@".into(),
        };
        let f = ApplyFailure {
            file: None,
            hunk: Some(h),
            reason: "r".into(),
        };
        assert_eq!(f.to_string(), "hunk #1 (@@ -1 +1 @@): r");
    }

    #[derive(Debug, Clone)]
    enum Kind {
        Modify,
        New,
        Delete,
        Rename,
    }

    /// Lines that fool a parser that does not count: a removed `-- ` reads
    /// as a signature, a removed `-- x` as a `--- ` header.
    fn content() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "x",
            "",
            "-- ",
            "-- x",
            "++ b/y",
            "@@ -1 +1 @@",
            "diff",
        ])
    }

    #[derive(Debug, Clone)]
    struct GenHunk {
        gap: u32,
        old_len: u32,
        new_len: u32,
        short: bool,
        lines: Vec<&'static str>,
        context: bool,
        /// The last removed line `-- x` and the first added `++ b/y`:
        /// together they read as a file header `--- x` / `+++ b/y`.
        trap: bool,
    }

    fn gen_hunk() -> impl Strategy<Value = GenHunk> {
        (
            1u32..500,
            0u32..5,
            0u32..5,
            any::<bool>(),
            prop::collection::vec(content(), 10),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(gap, old_len, new_len, short, lines, context, trap)| GenHunk {
                    gap,
                    old_len: if old_len + new_len == 0 { 1 } else { old_len },
                    new_len,
                    short,
                    lines,
                    context,
                    trap,
                },
            )
    }

    fn len(n: u32, short: bool) -> String {
        if n == 1 && short {
            String::new()
        } else {
            format!(",{n}")
        }
    }

    /// Renders the files as `git format-patch` would (optionally inside an
    /// email) and returns the expected (old, new, hunk starts and lengths).
    #[allow(clippy::type_complexity)]
    fn render(
        files: &[(Kind, Vec<GenHunk>)],
        email: bool,
    ) -> (
        String,
        Vec<(Option<String>, Option<String>, Vec<(u32, u32, u32, u32)>)>,
    ) {
        let mut text = String::new();
        if email {
            text.push_str("From 0 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: [PATCH] x\n\n--- not a header\n---\n x | 1 +\n\n");
        }
        let mut want = Vec::new();
        for (i, (kind, hunks)) in files.iter().enumerate() {
            let old = format!("dir{i}/file {i}.c");
            let new = format!("dir{i}/renamed{i}.c");
            let body = |h: &GenHunk, text: &mut String| {
                let common =
                    (h.old_len.min(h.new_len) as usize).saturating_sub(usize::from(h.trap));
                let mut k = 0;
                let mut next = || {
                    k += 1;
                    h.lines[k % h.lines.len()]
                };
                for _ in 0..common {
                    let c = next();
                    if c.is_empty() && h.short {
                        text.push('\n');
                    } else {
                        text.push_str(&format!(" {c}\n"));
                    }
                }
                for j in common..h.old_len as usize {
                    let c = next();
                    let c = if h.trap && j + 1 == h.old_len as usize {
                        "-- x"
                    } else {
                        c
                    };
                    text.push_str(&format!("-{c}\n"));
                }
                for j in common..h.new_len as usize {
                    let c = next();
                    let c = if h.trap && j == common { "++ b/y" } else { c };
                    text.push_str(&format!("+{c}\n"));
                }
            };
            match kind {
                Kind::Modify | Kind::Rename => {
                    let newname = if matches!(kind, Kind::Rename) {
                        &new
                    } else {
                        &old
                    };
                    text.push_str(&format!("diff --git a/{old} b/{newname}\n"));
                    if matches!(kind, Kind::Rename) {
                        text.push_str(&format!(
                            "similarity index 90%\nrename from {old}\nrename to {new}\n"
                        ));
                    }
                    text.push_str(&format!(
                        "index 1..2 100644\n--- a/{old}\n+++ b/{newname}\n"
                    ));
                    let mut starts = Vec::new();
                    let (mut o, mut n) = (0u32, 0u32);
                    for h in hunks {
                        let (os, ns) = (o + h.gap, n + h.gap);
                        text.push_str(&format!(
                            "@@ -{os}{} +{ns}{} @@{}\n",
                            len(h.old_len, h.short),
                            len(h.new_len, h.short),
                            if h.context { " static int f(void)" } else { "" }
                        ));
                        body(h, &mut text);
                        starts.push((os, h.old_len, ns, h.new_len));
                        o = os + h.old_len;
                        n = ns + h.new_len;
                    }
                    want.push((Some(old.clone()), Some(newname.clone()), starts));
                }
                Kind::New => {
                    let h = GenHunk {
                        old_len: 0,
                        new_len: hunks.len() as u32 + 1,
                        ..hunks[0].clone()
                    };
                    text.push_str(&format!(
                        "diff --git a/{old} b/{old}\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/{old}\n@@ -0,0 +1{} @@\n",
                        len(h.new_len, h.short)
                    ));
                    body(&h, &mut text);
                    want.push((None, Some(old.clone()), vec![(0, 0, 1, h.new_len)]));
                }
                Kind::Delete => {
                    let h = GenHunk {
                        old_len: hunks.len() as u32 + 1,
                        new_len: 0,
                        ..hunks[0].clone()
                    };
                    text.push_str(&format!(
                        "diff --git a/{old} b/{old}\ndeleted file mode 100644\nindex 1..0\n--- a/{old}\n+++ /dev/null\n@@ -1{} +0,0 @@\n",
                        len(h.old_len, h.short)
                    ));
                    body(&h, &mut text);
                    want.push((Some(old.clone()), None, vec![(1, h.old_len, 0, 0)]));
                }
            }
        }
        if email {
            text.push_str("-- \n2.47.2\n\n");
        }
        (text, want)
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            3 => Just(Kind::Modify),
            1 => Just(Kind::New),
            1 => Just(Kind::Delete),
            1 => Just(Kind::Rename),
        ]
    }

    proptest! {
        #[test]
        fn diffs_are_read_back_and_every_hunk_is_found(
            files in prop::collection::vec((kind(), prop::collection::vec(gen_hunk(), 1..5)), 1..6),
            email in any::<bool>(),
        ) {
            let (text, want) = render(&files, email);
            let got = file_patches(&text);
            let got_summary: Vec<_> = got
                .iter()
                .map(|f| (
                    f.old_path.clone(),
                    f.new_path.clone(),
                    f.hunks.iter().map(|h| (h.old_start, h.old_len, h.new_start, h.new_len)).collect::<Vec<_>>(),
                ))
                .collect();
            prop_assert_eq!(&got_summary, &want, "{}", text);
            for f in &got {
                for (i, h) in f.hunks.iter().enumerate() {
                    prop_assert_eq!(h.index, i + 1);
                    let out = format!(
                        "Checking patch {p}...\nerror: while searching for:\nerror: x\n\nerror: patch failed: {p}:{l}\nerror: {p}: patch does not apply\n",
                        p = f.path(),
                        l = h.old_start
                    );
                    let e = explain(&out, &text);
                    prop_assert_eq!(e.file.as_deref(), Some(f.path()));
                    prop_assert_eq!(e.hunk.as_ref(), Some(h));
                    prop_assert_eq!(e.reason.as_str(), NO_MATCH);
                }
            }
        }
    }
}
