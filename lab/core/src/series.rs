//! Patch series as kernel developers mail them: an mbox as `b4 am` writes
//! it, a directory of `git format-patch` files, or a quilt `series` file.
//! Parsed into patches ordered by their `[PATCH vN n/m]` numbers, with the
//! cover letter (0/m, or a message with no diff) set aside. Pure: the
//! caller reads the files.

use std::fmt;

/// One patch of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Position in the series (1-based), from the subject when it has
    /// `n/m`, else from the order of the input.
    pub number: u32,
    /// Series length from the subject (`m`), when given.
    pub total: Option<u32>,
    /// Version from `[PATCH v2 ...]`.
    pub version: Option<u32>,
    /// The subject without the `[PATCH ...]` prefix.
    pub subject: String,
    pub author: String,
    /// The whole message as `git am` takes it (headers, body, diff).
    pub text: String,
    /// Where it came from: `series.mbox message 3`, `0002-foo.patch`.
    pub origin: String,
}

impl Patch {
    /// `3/8 xfs: ...` as reports print it.
    pub fn label(&self) -> String {
        match self.total {
            Some(m) => format!("{}/{} {}", self.number, m, self.subject),
            None => format!("{} {}", self.number, self.subject),
        }
    }
}

/// A series: its patches in order, and the cover letter if there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub cover: Option<Patch>,
    pub patches: Vec<Patch>,
}

/// Why a series could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesError {
    pub origin: String,
    pub message: String,
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

impl std::error::Error for SeriesError {}

/// The parts of a `[PATCH v2 3/8]`-style subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTag {
    pub version: Option<u32>,
    pub n: Option<u32>,
    pub m: Option<u32>,
    pub rest: String,
}

/// Parses a subject: any leading bracketed tags (`[PATCH v2 3/8]`,
/// `[RFC PATCH 1/2]`, `[PATCH 5.10 2/4]`), `Re:` is kept as the rest.
pub fn parse_subject(subject: &str) -> SubjectTag {
    let mut s = subject.trim();
    let mut tag = SubjectTag {
        version: None,
        n: None,
        m: None,
        rest: String::new(),
    };
    while let Some(after) = s.strip_prefix('[') {
        let Some(end) = after.find(']') else { break };
        for word in after[..end].split_whitespace() {
            if let Some(v) = word.strip_prefix('v').or_else(|| word.strip_prefix('V')) {
                if let Ok(v) = v.parse() {
                    tag.version = Some(v);
                    continue;
                }
            }
            if let Some((n, m)) = word.split_once('/') {
                if let (Ok(n), Ok(m)) = (n.parse(), m.parse()) {
                    tag.n = Some(n);
                    tag.m = Some(m);
                }
            }
        }
        s = after[end + 1..].trim_start();
    }
    tag.rest = s.to_string();
    tag
}

/// Splits an mbox into messages at `From ` lines (mboxrd quoting `>From `
/// is left to `git am`).
pub fn split_mbox(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") && (pos == 0 || text[..pos].ends_with('\n')) {
            starts.push(pos);
        }
        pos += line.len();
    }
    if starts.is_empty() && !text.trim().is_empty() {
        return vec![text];
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| &text[s..starts.get(i + 1).copied().unwrap_or(text.len())])
        .collect()
}

/// A header's value (unfolded), case-insensitive name.
fn header(msg: &str, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for line in msg.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = out.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                out = Some(v.trim().to_string());
            }
        }
    }
    out
}

fn has_diff(msg: &str) -> bool {
    msg.lines().any(|l| {
        l.starts_with("diff --git ") || l.starts_with("--- a/") || l.starts_with("Index: ")
    })
}

/// Parses one message (or a `git format-patch` file).
pub fn parse_message(msg: &str, origin: &str) -> Result<(Patch, bool), SeriesError> {
    let err = |m: &str| SeriesError {
        origin: origin.to_string(),
        message: m.to_string(),
    };
    let subject = header(msg, "Subject").ok_or_else(|| err("no Subject: header"))?;
    let tag = parse_subject(&subject);
    let patch = Patch {
        number: tag.n.unwrap_or(0),
        total: tag.m,
        version: tag.version,
        subject: tag.rest,
        author: header(msg, "From").unwrap_or_default(),
        text: msg.to_string(),
        origin: origin.to_string(),
    };
    // A cover letter: numbered 0, or no diff at all.
    let cover = tag.n == Some(0) || !has_diff(msg);
    Ok((patch, cover))
}

/// Builds a series from messages in input order. Patches are ordered by
/// their n/m numbers when every patch has one, else kept in input order and
/// numbered from 1; a second cover letter, duplicate numbers, a gap or a
/// count that disagrees with m are errors that name the message.
pub fn from_messages(messages: &[(String, String)]) -> Result<Series, SeriesError> {
    let mut cover = None;
    let mut patches = Vec::new();
    for (origin, msg) in messages {
        let (p, is_cover) = parse_message(msg, origin)?;
        if is_cover {
            if cover.is_some() {
                return Err(SeriesError {
                    origin: origin.clone(),
                    message: "a second message without a diff (only one cover letter is allowed)"
                        .into(),
                });
            }
            cover = Some(p);
        } else {
            patches.push(p);
        }
    }
    if patches.is_empty() {
        return Err(SeriesError {
            origin: messages.first().map(|m| m.0.clone()).unwrap_or_default(),
            message: "no patches (no message contains a diff)".into(),
        });
    }
    let numbered = patches.iter().all(|p| p.number > 0);
    if numbered {
        patches.sort_by_key(|p| p.number);
        for (i, p) in patches.iter().enumerate() {
            if p.number as usize != i + 1 {
                return Err(SeriesError {
                    origin: p.origin.clone(),
                    message: format!(
                        "patch {} where {} was expected (missing or duplicate patch numbers)",
                        p.label(),
                        i + 1
                    ),
                });
            }
        }
        if let Some(m) = patches[0].total {
            if patches.len() as u32 != m {
                return Err(SeriesError {
                    origin: patches[0].origin.clone(),
                    message: format!(
                        "the subjects say {m} patches, the input has {}",
                        patches.len()
                    ),
                });
            }
        }
    } else {
        for (i, p) in patches.iter_mut().enumerate() {
            p.number = i as u32 + 1;
        }
    }
    Ok(Series { cover, patches })
}

/// An mbox (`b4 am` output).
pub fn from_mbox(origin: &str, text: &str) -> Result<Series, SeriesError> {
    let msgs: Vec<(String, String)> = split_mbox(text)
        .into_iter()
        .enumerate()
        .map(|(i, m)| (format!("{origin} message {}", i + 1), m.to_string()))
        .collect();
    from_messages(&msgs)
}

/// A quilt `series` file: patch file names in order (comments and `-p1`
/// style options allowed). Returns the names.
pub fn quilt_names(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, diff: bool) -> String {
        format!(
            "From 1234 Mon Sep 17 00:00:00 2001\nFrom: Dev One <dev@example.org>\nSubject: {subject}\n\nbody\n{}",
            if diff {
                "---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"
            } else {
                ""
            }
        )
    }

    #[test]
    fn subjects() {
        let t = parse_subject("[PATCH v2 3/8] xfs: buffered atomic writes");
        assert_eq!((t.version, t.n, t.m), (Some(2), Some(3), Some(8)));
        assert_eq!(t.rest, "xfs: buffered atomic writes");
        let t = parse_subject("[RFC PATCH 01/10] mm: foo");
        assert_eq!((t.n, t.m, t.rest.as_str()), (Some(1), Some(10), "mm: foo"));
        let t = parse_subject("[PATCH] one fix");
        assert_eq!((t.n, t.version), (None, None));
        let t = parse_subject("[PATCH 6.18 2/4] [tag] x");
        assert_eq!((t.n, t.rest.as_str()), (Some(2), "x"));
    }

    #[test]
    fn mbox_in_any_order_with_cover_letter() {
        let mbox = [
            msg("[PATCH v2 0/3] the cover", false),
            msg("[PATCH v2 2/3] second", true),
            msg("[PATCH v2 1/3] first", true),
            msg("[PATCH v2 3/3] third", true),
        ]
        .join("\n");
        let s = from_mbox("s.mbox", &mbox).unwrap();
        assert_eq!(s.cover.unwrap().subject, "the cover");
        let labels: Vec<String> = s.patches.iter().map(Patch::label).collect();
        assert_eq!(labels, ["1/3 first", "2/3 second", "3/3 third"]);
        assert_eq!(s.patches[0].author, "Dev One <dev@example.org>");
        assert!(s.patches[1].text.contains("diff --git"));
    }

    #[test]
    fn gaps_duplicates_and_counts_are_named() {
        let e = from_mbox(
            "s.mbox",
            &[msg("[PATCH 1/3] a", true), msg("[PATCH 3/3] c", true)].join("\n"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("patch 3/3 c where 2 was expected"),
            "{e}"
        );
        assert!(e.origin.contains("message 2"), "{e}");
        let e = from_mbox(
            "s.mbox",
            &[msg("[PATCH 1/3] a", true), msg("[PATCH 2/3] b", true)].join("\n"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("say 3 patches, the input has 2"),
            "{e}"
        );
        let e = from_mbox("s.mbox", &msg("[PATCH 0/1] only a cover", false)).unwrap_err();
        assert!(e.message.contains("no patches"), "{e}");
    }

    #[test]
    fn unnumbered_patches_keep_input_order() {
        let msgs = vec![
            ("0001-b.patch".to_string(), msg("[PATCH] b", true)),
            ("0002-a.patch".to_string(), msg("[PATCH] a", true)),
        ];
        let s = from_messages(&msgs).unwrap();
        assert_eq!(s.patches[0].label(), "1 b");
        assert_eq!(s.patches[1].origin, "0002-a.patch");
    }

    #[test]
    fn folded_subjects_and_quilt() {
        let m = "From: x\nSubject: [PATCH 1/1] a very\n long subject\n\n---\ndiff --git a/f b/f\n";
        let (p, cover) = parse_message(m, "m").unwrap();
        assert!(!cover);
        assert_eq!(p.subject, "a very long subject");
        assert_eq!(
            quilt_names("# comment\n0001-a.patch\n\n0002-b.patch -p1\n"),
            ["0001-a.patch", "0002-b.patch"]
        );
    }
}
