//! Results of a run: per-case outcomes, the JUnit file CI reads and the
//! summary.json scripts read.

use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// How bad it is, for "the worst outcome of a testcase": passed 0,
    /// skipped 1, failed 2, error 3.
    pub fn severity(&self) -> usize {
        match self {
            Outcome::Passed => 0,
            Outcome::Skipped { .. } => 1,
            Outcome::Failed { .. } => 2,
            Outcome::Error { .. } => 3,
        }
    }

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

/// The value of `key` in a list of properties (the first, as JUnit shows them).
fn lookup<'a>(properties: &'a [(String, String)], key: &str) -> Option<&'a str> {
    properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl SuiteReport {
    /// The value of property `key`, if the suite has it.
    pub fn property(&self, key: &str) -> Option<&str> {
        lookup(&self.properties, key)
    }
}

/// Why two runs of one testcase disagree, if they do (`lab run -j 1`
/// against `-j N` with reuse: the equivalence test and `lab bench run`).
/// Every check must come out the same, with one allowance a power cut (a
/// real one or a sweep's) forces on any two runs: the cut races the guest, so which of the last
/// steps' results reach the host before QEMU dies (`stepNN.*`), which writes
/// are in flight and so which crash states exist (`state.*`), which cut
/// points a sweep finds (`cut-*`), whether an atomic write was in flight
/// to be checked whole (`power_cut.atomic_writes_whole`, skipped when none
/// was) and whether a write larger than the atomic unit was in flight to
/// tear (`power_cut.positive_control`, skipped when none was) vary from run
/// to run. For those, the checks both runs made (and did
/// not skip) must agree, and the worst outcome must be the same, a racy
/// check's skip aside.
pub fn verdict_difference(a: &SuiteReport, b: &SuiteReport) -> Option<String> {
    // A power cut: a real one (`power_cut.cut`) or a sweep's, which has no
    // cut check but the same `power_cut.*` device checks (and leaves a
    // skipped one out of its results, as a property).
    let cut = |s: &SuiteReport| s.results.iter().any(|r| r.check.starts_with("power_cut."));
    let racy = |check: &str| {
        check.starts_with("step")
            || check.starts_with("state.")
            || check.starts_with("cut-")
            || check == "power_cut.atomic_writes_whole"
            || check == "power_cut.positive_control"
    };
    let skipped = |r: &CaseResult| matches!(r.outcome, Outcome::Skipped { .. });
    let power_cut = cut(a) || cut(b);
    let fixed = |s: &SuiteReport| -> Vec<(String, &'static str)> {
        s.results
            .iter()
            .filter(|r| !(power_cut && racy(&r.check)))
            .map(|r| (r.check.clone(), r.outcome.label()))
            .collect()
    };
    let (fa, fb) = (fixed(a), fixed(b));
    if fa != fb {
        let only = |x: &[(String, &str)], y: &[(String, &str)]| -> Vec<String> {
            x.iter()
                .filter(|c| !y.contains(c))
                .map(|(c, o)| format!("{c} {o}"))
                .collect()
        };
        return Some(format!(
            "{}: {:?} in one run, {:?} in the other",
            a.name,
            only(&fa, &fb),
            only(&fb, &fa)
        ));
    }
    if !power_cut {
        return None;
    }
    for r in a.results.iter().filter(|r| racy(&r.check) && !skipped(r)) {
        if let Some(o) = b.results.iter().find(|o| o.check == r.check && !skipped(o)) {
            if o.outcome.label() != r.outcome.label() {
                return Some(format!(
                    "{}: {} {} in one run, {} in the other",
                    a.name,
                    r.check,
                    r.outcome.label(),
                    o.outcome.label()
                ));
            }
        }
    }
    let worst = |s: &SuiteReport| {
        s.results
            .iter()
            .filter(|r| !(racy(&r.check) && skipped(r)))
            .map(|r| r.outcome.severity())
            .max()
    };
    (worst(a) != worst(b)).then(|| format!("{}: the worst outcome differs", a.name))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl RunReport {
    /// The value of run property `key` (kernel, QEMU, shard...), if set.
    pub fn property(&self, key: &str) -> Option<&str> {
        lookup(&self.properties, key)
    }

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

    /// JUnit XML: one testsuite per testcase run (with the run's and its own
    /// properties), one testcase per check (classname = the testcase), a
    /// failure or lab error with its message and its detail (plus the command
    /// that reproduces it) as the element's text, a skip with its reason.
    ///
    /// Written by quick-junit, which models properties, skip messages and
    /// failure text and escapes every value itself: the XML is never built
    /// or patched as text here.
    pub fn junit_xml(&self) -> String {
        use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
        let timestamp = chrono::DateTime::parse_from_rfc3339(&self.started_at).ok();
        let mut report = Report::new(self.run_id.as_str());
        if let Some(ts) = timestamp {
            report.set_timestamp(ts);
        }
        let mut run_time = Duration::ZERO;
        for (id, s) in self.suites.iter().enumerate() {
            let mut suite = TestSuite::new(s.name.as_str());
            if let Some(ts) = timestamp {
                suite.set_timestamp(ts);
            }
            // `id`, `package` and `hostname` are what the Ant JUnit schema
            // asks of a testsuite inside testsuites, and what junit-report
            // wrote before; kept so no consumer loses them.
            suite.extra.insert("id".into(), id.to_string().into());
            suite
                .extra
                .insert("package".into(), format!("testsuite/{}", s.name).into());
            suite.extra.insert("hostname".into(), "localhost".into());
            suite.add_properties(
                self.properties
                    .iter()
                    .chain(&s.properties)
                    .map(|(n, v)| Property::new(n.as_str(), v.as_str())),
            );
            let mut suite_time = Duration::ZERO;
            for r in &s.results {
                let status = match &r.outcome {
                    Outcome::Passed => TestCaseStatus::success(),
                    Outcome::Failed { message, detail } => {
                        let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        st.set_type("failure").set_message(message.as_str());
                        describe(&mut st, detail, &s.reproduce);
                        st
                    }
                    Outcome::Error { message, detail } => {
                        let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
                        st.set_type("lab-error").set_message(message.as_str());
                        describe(&mut st, detail, &s.reproduce);
                        st
                    }
                    Outcome::Skipped { reason } => {
                        // The reason matters: an unsupported kernel feature
                        // must say so, never read as a bare skip.
                        let mut st = TestCaseStatus::skipped();
                        st.set_message(reason.as_str());
                        st
                    }
                };
                let time = seconds(r.duration_s);
                suite_time += time;
                let mut tc = TestCase::new(r.check.as_str(), status);
                tc.set_classname(s.name.as_str()).set_time(time);
                suite.add_test_case(tc);
            }
            suite.set_time(suite_time);
            run_time += suite_time;
            report.add_test_suite(suite);
        }
        report.set_time(run_time);
        report
            .to_string()
            .expect("quick-junit writes a report held in memory to a Vec")
    }
}

/// A duration in seconds as JUnit's `time`; a negative, NaN or endless one
/// (a clock that went back) counts as zero rather than panicking the report.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// A failure's or lab error's text: its detail and the command that
/// reproduces it; no text at all when there is neither.
fn describe(st: &mut quick_junit::TestCaseStatus, detail: &str, reproduce: &str) {
    let text = with_reproduce(detail, reproduce);
    if !text.is_empty() {
        st.set_description(text);
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
///
/// `junit_xml` no longer uses it (quick-junit escapes); kept because it is
/// part of lab-core's public API.
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
    fn suite_with(name: &str, checks: &[(&str, Outcome)]) -> SuiteReport {
        SuiteReport {
            name: name.into(),
            properties: vec![],
            results: checks
                .iter()
                .map(|(c, o)| CaseResult {
                    case: name.into(),
                    check: (*c).into(),
                    outcome: o.clone(),
                    duration_s: 0.0,
                })
                .collect(),
            console_log: None,
            reproduce: String::new(),
        }
    }

    /// A suite of `head`'s checks, then `extra`'s, then `last`.
    fn framed(
        name: &str,
        head: &[(&str, Outcome)],
        extra: &[(&str, Outcome)],
        last: (&str, Outcome),
    ) -> SuiteReport {
        let mut v = head.to_vec();
        v.extend(extra.iter().cloned());
        v.push(last);
        suite_with(name, &v)
    }

    #[test]
    fn verdicts_differ_unless_a_power_cut_raced_the_guest() {
        let fail = || Outcome::Failed {
            message: "m".into(),
            detail: String::new(),
        };
        let plain = suite_with(
            "a",
            &[
                ("step01.open", Outcome::Passed),
                ("console", Outcome::Passed),
            ],
        );
        let short = suite_with("a", &[("console", Outcome::Passed)]);
        assert_eq!(verdict_difference(&plain, &plain), None);
        assert!(verdict_difference(&plain, &short)
            .unwrap()
            .contains("step01.open"));

        let pass = Outcome::Passed;
        let cut = |extra: &[(&str, Outcome)]| {
            framed(
                "c",
                &[
                    ("power_cut.cut", pass.clone()),
                    ("step01.open", pass.clone()),
                ],
                extra,
                ("power_cut.states", pass.clone()),
            )
        };
        // A step or a crash state only one run saw: the race, not a difference.
        let more = cut(&[
            ("step02.mark", Outcome::Passed),
            ("state.state-9", Outcome::Passed),
        ]);
        assert_eq!(verdict_difference(&cut(&[]), &more), None);
        // The same step judged differently, or a failure only one run has.
        let failed_step = cut(&[("step02.mark", fail())]);
        assert!(verdict_difference(&more, &failed_step)
            .unwrap()
            .contains("step02.mark"));
        let failed_state = cut(&[("state.state-3", fail())]);
        assert!(verdict_difference(&cut(&[]), &failed_state)
            .unwrap()
            .contains("worst"));
        // A verdict of the cut itself must match.
        let mut lost = cut(&[]);
        lost.results[2].outcome = fail();
        assert!(verdict_difference(&cut(&[]), &lost)
            .unwrap()
            .contains("power_cut.states"));
        // No atomic write in flight at one run's cut: nothing to check
        // whole there, and nothing to compare; torn in one run is a
        // difference.
        let none_in_flight = cut(&[(
            "power_cut.atomic_writes_whole",
            Outcome::Skipped { reason: "r".into() },
        )]);
        let whole = cut(&[("power_cut.atomic_writes_whole", Outcome::Passed)]);
        assert_eq!(verdict_difference(&none_in_flight, &whole), None);
        assert_eq!(verdict_difference(&whole, &none_in_flight), None);
        let torn = cut(&[("power_cut.atomic_writes_whole", fail())]);
        assert!(verdict_difference(&none_in_flight, &torn)
            .unwrap()
            .contains("worst"));
        assert!(verdict_difference(&whole, &torn)
            .unwrap()
            .contains("atomic_writes_whole"));
        // Likewise the positive control: no tearable write in flight at one
        // run's cut is no difference (seen in `lab bench run`); a blind
        // injector in one run is.
        let nothing_tearable = cut(&[(
            "power_cut.positive_control",
            Outcome::Skipped { reason: "r".into() },
        )]);
        let seen_torn = cut(&[("power_cut.positive_control", Outcome::Passed)]);
        assert_eq!(verdict_difference(&nothing_tearable, &seen_torn), None);
        assert_eq!(verdict_difference(&seen_torn, &nothing_tearable), None);
        let blind = cut(&[("power_cut.positive_control", fail())]);
        assert!(verdict_difference(&seen_torn, &blind)
            .unwrap()
            .contains("positive_control"));
        // A sweep has no power_cut.cut, and leaves a skipped device check
        // out of its results: present in one run, absent in the other.
        let sweep = |extra: &[(&str, Outcome)]| {
            framed(
                "s",
                &[
                    ("step01.open", pass.clone()),
                    ("power_cut.states", pass.clone()),
                ],
                extra,
                ("sweep.verdicts", pass.clone()),
            )
        };
        let with_control = sweep(&[("power_cut.positive_control", Outcome::Passed)]);
        assert_eq!(verdict_difference(&sweep(&[]), &with_control), None);
        assert!(verdict_difference(
            &with_control,
            &sweep(&[("power_cut.positive_control", fail())])
        )
        .is_some());
        let failed_sweep = suite_with(
            "s",
            &[
                ("power_cut.states", Outcome::Passed),
                ("sweep.verdicts", fail()),
            ],
        );
        assert!(verdict_difference(&sweep(&[]), &failed_sweep).is_some());
    }

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

    /// Scripts and the lab's own tests read summary.json back as a
    /// RunReport: the counts and exit code written beside it are ignored,
    /// and properties come back as a set (a JSON object has no order).
    #[test]
    fn summary_json_reads_back_as_the_report() {
        let r = report();
        let back: RunReport = serde_json::from_str(&r.summary_json()).unwrap();
        let sorted = |p: &[(String, String)]| {
            let mut v = p.to_vec();
            v.sort();
            v
        };
        assert_eq!(sorted(&back.properties), sorted(&r.properties));
        assert_eq!(back.suites.len(), 2);
        for (a, b) in back.suites.iter().zip(&r.suites) {
            assert_eq!(a.name, b.name);
            assert_eq!(sorted(&a.properties), sorted(&b.properties));
            assert_eq!(a.results, b.results);
            assert_eq!(
                (&a.console_log, &a.reproduce),
                (&b.console_log, &b.reproduce)
            );
        }
        assert_eq!(back.counts(), r.counts());
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
        // What lab/cli's tests search junit.xml for.
        assert!(x.contains("<testsuite name=\"limits-4k\""), "{x}");
        assert!(x.contains(" id=\"0\""), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 3);
    }

    /// The element tree of an XML text, read back by quick-xml: names,
    /// attributes and text with every entity resolved, so a test compares
    /// the values a JUnit consumer sees, not their spelling.
    #[derive(Debug, Default, Clone)]
    struct Node {
        name: String,
        attrs: Vec<(String, String)>,
        text: String,
        children: Vec<Node>,
    }

    impl Node {
        fn attr(&self, k: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        }
        fn all(&self, name: &str) -> Vec<&Node> {
            self.children.iter().filter(|c| c.name == name).collect()
        }
        fn one(&self, name: &str) -> &Node {
            let v = self.all(name);
            assert_eq!(v.len(), 1, "one <{name}> in <{}>", self.name);
            v[0]
        }
    }

    fn parse(xml: &str) -> Node {
        use quick_xml::events::{BytesStart, Event};
        // Attribute values as a consumer sees them: entities resolved and,
        // as XML 1.0 says, a newline inside one read as a space.
        const XML: quick_xml::XmlVersion = quick_xml::XmlVersion::Explicit1_0;
        fn open(e: &BytesStart) -> Node {
            Node {
                name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                attrs: e
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        let k = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                        (k, a.normalized_value(XML).unwrap().into_owned())
                    })
                    .collect(),
                ..Node::default()
            }
        }
        let mut r = quick_xml::Reader::from_str(xml);
        let mut stack = vec![Node::default()];
        loop {
            match r.read_event().unwrap() {
                Event::Start(e) => stack.push(open(&e)),
                Event::Empty(e) => stack.last_mut().unwrap().children.push(open(&e)),
                Event::End(_) => {
                    let n = stack.pop().unwrap();
                    stack.last_mut().unwrap().children.push(n);
                }
                Event::Text(t) => stack.last_mut().unwrap().text += &t.decode().unwrap(),
                Event::CData(t) => stack.last_mut().unwrap().text += &t.decode().unwrap(),
                Event::GeneralRef(g) => {
                    let name = g.decode().unwrap();
                    let v = quick_xml::escape::resolve_xml_entity(&name)
                        .unwrap_or_else(|| panic!("unknown entity &{name};"));
                    stack.last_mut().unwrap().text += v;
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(stack.len(), 1, "every element closed");
        stack.pop().unwrap().one("testsuites").clone()
    }

    fn props(suite: &Node) -> Vec<(String, String)> {
        suite
            .one("properties")
            .all("property")
            .iter()
            .map(|p| {
                (
                    p.attr("name").unwrap().to_string(),
                    p.attr("value").unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn junit_reads_back_with_properties_failures_skips_and_times() {
        let rep = report();
        let root = parse(&rep.junit_xml());
        assert_eq!(root.attr("tests"), Some("3"));
        assert_eq!(root.attr("failures"), Some("1"));
        assert_eq!(root.attr("skipped"), Some("1"));
        let suites = root.all("testsuite");
        assert_eq!(suites.len(), 2);
        for (k, (node, s)) in suites.iter().zip(&rep.suites).enumerate() {
            assert_eq!(node.attr("name"), Some(s.name.as_str()));
            assert_eq!(node.attr("id"), Some(k.to_string().as_str()));
            assert!(node
                .attr("timestamp")
                .unwrap()
                .starts_with("2026-11-27T18:00:00"));
            // The run's properties first, then the suite's own, in order.
            let mut want = rep.properties.clone();
            want.extend(s.properties.iter().cloned());
            assert_eq!(props(node), want);
            let cases = node.all("testcase");
            assert_eq!(cases.len(), s.results.len());
            for (c, r) in cases.iter().zip(&s.results) {
                assert_eq!(c.attr("name"), Some(r.check.as_str()));
                assert_eq!(c.attr("classname"), Some(s.name.as_str()));
                let t: f64 = c.attr("time").unwrap().parse().unwrap();
                assert!((t - r.duration_s).abs() < 1e-3, "{t} vs {}", r.duration_s);
            }
        }
        assert_eq!(suites[0].attr("time"), Some("0.600"));
        let failure = suites[0].all("testcase")[1].one("failure");
        assert_eq!(failure.attr("type"), Some("failure"));
        assert_eq!(failure.attr("message"), Some("expected 4096, got <8192>"));
        assert_eq!(
            failure.text,
            "rule: x\n\nreproduce: lab run --accel tcg limits-4k"
        );
        assert!(
            suites[0].all("testcase")[0].children.is_empty(),
            "a pass is bare"
        );
        let skipped = suites[1].all("testcase")[0].one("skipped");
        assert_eq!(
            skipped.attr("message"),
            Some("buffered RWF_ATOMIC unsupported: EOPNOTSUPP")
        );
    }

    #[test]
    fn junit_escapes_markup_in_every_value() {
        let nasty = r#"a<b & c>"d" 'e'"#;
        let mut rep = report();
        rep.properties.push(("cmdline".into(), nasty.into()));
        let s = &mut rep.suites[0];
        s.name = format!("suite {nasty}");
        s.reproduce = format!("lab run {nasty}");
        s.results[0].check = format!("check {nasty}");
        s.results[1].outcome = Outcome::Failed {
            message: format!("failed: {nasty}"),
            detail: format!("detail: {nasty}\n</failure><x>"),
        };
        rep.suites[1].results[0].outcome = Outcome::Skipped {
            reason: format!("skipped: {nasty}"),
        };
        rep.suites[1].results.push(CaseResult {
            case: "buffered".into(),
            check: "boot".into(),
            outcome: Outcome::Error {
                message: format!("lab: {nasty}"),
                detail: String::new(),
            },
            duration_s: -1.0,
        });
        let x = rep.junit_xml();
        assert!(
            !x.contains(nasty),
            "raw markup never reaches the file:\n{x}"
        );
        assert!(x.contains("&lt;b &amp; c&gt;"), "{x}");
        let root = parse(&x);
        let suites = root.all("testsuite");
        let s0 = suites[0];
        assert_eq!(s0.attr("name").unwrap(), format!("suite {nasty}"));
        assert!(props(s0).contains(&("cmdline".to_string(), nasty.to_string())));
        let cases = s0.all("testcase");
        assert_eq!(cases[0].attr("name").unwrap(), format!("check {nasty}"));
        assert_eq!(
            cases[0].attr("classname").unwrap(),
            format!("suite {nasty}")
        );
        let f = cases[1].one("failure");
        assert_eq!(f.attr("message").unwrap(), format!("failed: {nasty}"));
        assert_eq!(
            f.text,
            format!("detail: {nasty}\n</failure><x>\n\nreproduce: lab run {nasty}")
        );
        let s1 = suites[1].all("testcase");
        assert_eq!(
            s1[0].one("skipped").attr("message").unwrap(),
            format!("skipped: {nasty}")
        );
        let e = s1[1].one("error");
        assert_eq!(e.attr("type"), Some("lab-error"));
        assert_eq!(e.attr("message").unwrap(), format!("lab: {nasty}"));
        assert_eq!(e.text, "", "no detail, no reproduce: no text");
        assert_eq!(s1[1].attr("time"), Some("0.000"), "a negative time is zero");
        assert_eq!(root.attr("errors"), Some("1"));
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
