//! Results of a run: per-case outcomes, the JUnit file CI reads and the
//! summary.json scripts read.

use serde::{Deserialize, Serialize};

/// The verdict of one testcase (or one check inside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    /// The kernel under test did something wrong.
    Failed {
        message: String,
        detail: String,
    },
    /// Not applicable to this kernel or device; never counted as a pass.
    Skipped {
        reason: String,
    },
    /// The lab could not carry the case out (boot failure, timeout of the
    /// harness, missing tool): neither a pass nor a kernel failure.
    Error {
        message: String,
        detail: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Error { .. } => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Testcase name (the JUnit classname groups the checks of one case).
    pub case: String,
    /// Check name inside the case, e.g. `bdev.sysfs.unit_max`.
    pub check: String,
    pub outcome: Outcome,
    pub duration_s: f64,
}

/// Everything a run reports; serialised as summary.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: String,
    /// Properties of the environment: kernel, QEMU, accel, device params...
    #[serde(with = "pairs_as_map")]
    pub properties: Vec<(String, String)>,
    pub suites: Vec<SuiteReport>,
    /// A command that reproduces this run.
    pub reproduce: String,
    /// Set when the run was cut short (Ctrl-C): results are partial.
    pub interrupted: bool,
}

/// One testcase run (one JUnit testsuite), with its own properties (the
/// device it ran on, the limits the guest saw).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    pub name: String,
    #[serde(with = "pairs_as_map")]
    pub properties: Vec<(String, String)>,
    pub results: Vec<CaseResult>,
    /// Relative path of this suite's console log inside the run directory.
    pub console_log: Option<String>,
    /// A command that runs this testcase again.
    #[serde(default)]
    pub reproduce: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl RunReport {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in self.suites.iter().flat_map(|s| &s.results) {
            match r.outcome {
                Outcome::Passed => c.passed += 1,
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
                Outcome::Error { .. } => c.errors += 1,
            }
        }
        c
    }

    /// The documented exit code: 0 all passed (skips allowed), 1 a test
    /// failed, 3 the lab could not carry a case out.
    pub fn exit_code(&self) -> i32 {
        let c = self.counts();
        if c.errors > 0 {
            3
        } else if c.failed > 0 {
            1
        } else {
            0
        }
    }

    pub fn summary_json(&self) -> String {
        #[derive(Serialize)]
        struct Summary<'a> {
            #[serde(flatten)]
            report: &'a RunReport,
            counts: Counts,
            exit_code: i32,
        }
        serde_json::to_string_pretty(&Summary {
            report: self,
            counts: self.counts(),
            exit_code: self.exit_code(),
        })
        .expect("summary serialises")
    }

    /// JUnit XML: one testsuite per testcase run, one testcase per check.
    pub fn junit_xml(&self) -> String {
        use junit_report::{ReportBuilder, TestCase, TestSuiteBuilder};
        let mut skip_reasons = Vec::new();
        let mut suites = Vec::new();
        for s in &self.suites {
            let mut sb = TestSuiteBuilder::new(&s.name);
            if let Ok(ts) = time::OffsetDateTime::parse(
                &self.started_at,
                &time::format_description::well_known::Rfc3339,
            ) {
                sb.set_timestamp(ts);
            }
            for r in &s.results {
                let d = junit_report::Duration::seconds_f64(r.duration_s.max(0.0));
                let mut tc = match &r.outcome {
                    Outcome::Passed => TestCase::success(&r.check, d),
                    Outcome::Failed { message, detail } => {
                        let mut t = TestCase::failure(&r.check, d, "failure", message);
                        t.set_system_out(&with_reproduce(detail, &s.reproduce));
                        t
                    }
                    Outcome::Error { message, detail } => {
                        let mut t = TestCase::error(&r.check, d, "lab-error", message);
                        t.set_system_out(&with_reproduce(detail, &s.reproduce));
                        t
                    }
                    Outcome::Skipped { reason } => {
                        skip_reasons.push(reason.clone());
                        TestCase::skipped(&r.check)
                    }
                };
                tc.set_classname(&s.name);
                sb.add_testcase(tc);
            }
            suites.push(sb.build());
        }
        let report = ReportBuilder::new().add_testsuites(suites).build();
        let mut buf = Vec::new();
        report.write_xml(&mut buf).expect("write to Vec");
        let xml = String::from_utf8(buf).expect("junit-report writes UTF-8");
        let props: Vec<Vec<(String, String)>> = self
            .suites
            .iter()
            .map(|s| {
                let mut p = self.properties.clone();
                p.extend(s.properties.iter().cloned());
                p
            })
            .collect();
        add_skip_messages(&add_properties(&xml, &props), &skip_reasons)
    }
}

/// A failure's detail with the command that reproduces it at the end.
fn with_reproduce(detail: &str, reproduce: &str) -> String {
    match (detail.is_empty(), reproduce.is_empty()) {
        (_, true) => detail.to_string(),
        (true, false) => format!("reproduce: {reproduce}"),
        (false, false) => format!("{detail}\n\nreproduce: {reproduce}"),
    }
}

/// Ordered (name, value) pairs written as a JSON object, in their order.
mod pairs_as_map {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        let m = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(m.into_iter().collect())
    }
}

/// Escape text for an XML attribute value.
pub fn xml_attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\n' => o.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// junit-report 0.8 cannot write `<properties>`; JUnit consumers (Jenkins,
/// GitLab) show them, so they are added to the k-th `<testsuite>` here.
fn add_properties(xml: &str, props: &[Vec<(String, String)>]) -> String {
    let mut out = String::with_capacity(xml.len() + 256);
    let mut rest = xml;
    let mut k = 0;
    while let Some(pos) = rest.find("<testsuite ") {
        let end = pos + rest[pos..].find('>').expect("tag closes");
        let tag = &rest[pos..=end];
        out.push_str(&rest[..pos]);
        let p = props.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let mut block = String::from("<properties>");
        for (n, v) in p {
            block.push_str(&format!(
                "<property name=\"{}\" value=\"{}\"/>",
                xml_attr(n),
                xml_attr(v)
            ));
        }
        block.push_str("</properties>");
        if let Some(open) = tag.strip_suffix("/>") {
            out.push_str(open);
            out.push('>');
            out.push_str(&block);
            out.push_str("</testsuite>");
        } else {
            out.push_str(tag);
            out.push_str(&block);
        }
        rest = &rest[end + 1..];
        k += 1;
    }
    out.push_str(rest);
    out
}

/// junit-report 0.8 writes a bare `<skipped/>`; the reason matters (an
/// unsupported kernel feature must say so), so it becomes the message.
fn add_skip_messages(xml: &str, reasons: &[String]) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut parts = xml.split("<skipped/>");
    out.push_str(parts.next().unwrap_or(""));
    for (i, part) in parts.enumerate() {
        let reason = reasons.get(i).map(String::as_str).unwrap_or("");
        out.push_str(&format!("<skipped message=\"{}\"/>", xml_attr(reason)));
        out.push_str(part);
    }
    out
}

/// `--compare-base`, as syzbot ci reports: of the patched run's failures
/// only regressions stay failures. A check that fails on the base kernel
/// too becomes a skip that says so; one that passes (or was skipped) on the
/// base stays a failure and says what the base did. Checks are matched by
/// testcase and check name.
pub fn regressions_only(patched: &RunReport, base: &RunReport) -> RunReport {
    let base_outcome = |suite: &str, check: &str| {
        base.suites
            .iter()
            .filter(|s| s.name == suite)
            .flat_map(|s| &s.results)
            .find(|r| r.check == check)
            .map(|r| &r.outcome)
    };
    let mut out = patched.clone();
    for s in &mut out.suites {
        for r in &mut s.results {
            let Outcome::Failed { message, detail } = &r.outcome else {
                continue;
            };
            r.outcome = match base_outcome(&s.name, &r.check) {
                Some(Outcome::Failed { message: bm, .. }) => Outcome::Skipped {
                    reason: format!("not a regression: fails on the base kernel too ({bm})"),
                },
                Some(b) => Outcome::Failed {
                    message: format!("regression: {message} (on the base kernel: {})", b.label()),
                    detail: detail.clone(),
                },
                None => Outcome::Failed {
                    message: format!("{message} (not run on the base kernel)"),
                    detail: detail.clone(),
                },
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regressions_stay_failures() {
        let patched = report();
        let mut base = report();
        // The base fails the same check: not a regression.
        let r = regressions_only(&patched, &base);
        assert!(
            matches!(&r.suites[0].results[1].outcome, Outcome::Skipped { reason } if reason.contains("not a regression")),
            "{:?}",
            r.suites[0].results[1].outcome
        );
        assert_eq!(r.exit_code(), 0);
        // The base passes it: a regression, which says what the base did.
        base.suites[0].results[1].outcome = Outcome::Passed;
        let r = regressions_only(&patched, &base);
        assert!(
            matches!(&r.suites[0].results[1].outcome, Outcome::Failed { message, .. } if message.starts_with("regression:") && message.contains("passed")),
            "{:?}",
            r.suites[0].results[1].outcome
        );
        assert_eq!(r.exit_code(), 1);
        // Passes and skips of the patched run are untouched.
        assert_eq!(r.suites[0].results[0].outcome, Outcome::Passed);
        assert_eq!(
            r.suites[1].results[0].outcome,
            patched.suites[1].results[0].outcome
        );
    }

    fn report() -> RunReport {
        RunReport {
            run_id: "r1".into(),
            started_at: "2026-11-27T18:00:00Z".into(),
            properties: vec![
                ("kernel".into(), "7.2.13".into()),
                ("accel".into(), "tcg".into()),
            ],
            suites: vec![
                SuiteReport {
                    name: "limits-4k".into(),
                    properties: vec![("device.lba_size".into(), "4096".into())],
                    results: vec![
                        CaseResult {
                            case: "limits-4k".into(),
                            check: "bdev.sysfs.unit_max".into(),
                            outcome: Outcome::Passed,
                            duration_s: 0.5,
                        },
                        CaseResult {
                            case: "limits-4k".into(),
                            check: "xfs.statx.unit_max".into(),
                            outcome: Outcome::Failed {
                                message: "expected 4096, got <8192>".into(),
                                detail: "rule: x".into(),
                            },
                            duration_s: 0.1,
                        },
                    ],
                    console_log: Some("limits-4k/console.log".into()),
                    reproduce: "lab run --accel tcg limits-4k".into(),
                },
                SuiteReport {
                    name: "buffered".into(),
                    properties: vec![],
                    results: vec![CaseResult {
                        case: "buffered".into(),
                        check: "run".into(),
                        outcome: Outcome::Skipped {
                            reason: "buffered RWF_ATOMIC unsupported: EOPNOTSUPP".into(),
                        },
                        duration_s: 0.0,
                    }],
                    console_log: None,
                    reproduce: String::new(),
                },
            ],
            reproduce: "lab run limits-4k".into(),
            interrupted: false,
        }
    }

    #[test]
    fn junit_has_properties_failures_and_skip_reasons() {
        let x = report().junit_xml();
        assert!(
            x.contains("<property name=\"kernel\" value=\"7.2.13\"/>"),
            "{x}"
        );
        assert!(x.contains("<property name=\"device.lba_size\" value=\"4096\"/>"));
        assert!(x.contains("message=\"expected 4096, got &lt;8192&gt;\""));
        assert!(x.contains("<skipped message=\"buffered RWF_ATOMIC unsupported: EOPNOTSUPP\"/>"));
        assert!(x.contains("classname=\"limits-4k\""));
        assert!(
            x.contains("rule: x\n\nreproduce: lab run --accel tcg limits-4k"),
            "{x}"
        );
        assert_eq!(x.matches("<properties>").count(), 2);
        assert_eq!(x.matches("<testsuite ").count(), 2);
    }

    #[test]
    fn exit_code_follows_worst_outcome() {
        let mut r = report();
        assert_eq!(r.exit_code(), 1);
        r.suites[0].results[1].outcome = Outcome::Passed;
        assert_eq!(r.exit_code(), 0, "skips do not fail a run");
        r.suites[1].results[0].outcome = Outcome::Error {
            message: "boot timed out".into(),
            detail: String::new(),
        };
        assert_eq!(r.exit_code(), 3);
    }

    #[test]
    fn summary_has_counts() {
        let v: serde_json::Value = serde_json::from_str(&report().summary_json()).unwrap();
        assert_eq!(v["counts"]["failed"], 1);
        assert_eq!(v["counts"]["skipped"], 1);
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["reproduce"], "lab run limits-4k");
        assert_eq!(v["properties"]["kernel"], "7.2.13");
        assert_eq!(v["suites"][0]["properties"]["device.lba_size"], "4096");
    }
}
