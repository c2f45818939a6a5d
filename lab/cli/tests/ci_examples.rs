//! The CI examples under `examples/ci/` are real files for real engines:
//! each parses as YAML (serde_yaml, a full YAML parser), has the shape its
//! engine needs (a build job, N shard jobs, a merge that runs even when a
//! shard failed), and every `lab` command line in it, with the engine's
//! variables filled in, is accepted by the lab's own command-line parser,
//! so a renamed flag breaks this test before it breaks a pipeline.

use clap::Parser;
use serde_yaml::Value;

mod common;
use common::{read, root};

fn load(name: &str) -> (String, Value) {
    let text = read(&root().join("examples/ci").join(name));
    let v: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("examples/ci/{name}: {e}"));
    (text, v)
}

/// Every `target/release/lab ...` command in a file, variables filled in
/// with sample values the way the engine would.
fn lab_commands(text: &str) -> Vec<Vec<String>> {
    const VARS: &[(&str, &str)] = &[
        ("${{ matrix.shard }}", "2"),
        ("${{ env.SHARDS }}", "4"),
        ("${{ github.run_id }}", "123"),
        ("${CI_NODE_INDEX}", "2"),
        ("${CI_NODE_TOTAL}", "4"),
        ("${CI_PIPELINE_ID}", "987"),
        ("$((JOB_COMPLETION_INDEX + 1))", "2"),
        ("$JOB_COMPLETION_INDEX", "1"),
        ("$SHARDS", "4"),
        ("$RUN_ID", "k8s-run-1"),
        ("\"$SERIES\"", "patches/xfs-buffered-atomic"),
    ];
    text.lines()
        .filter_map(|l| l.find("target/release/lab ").map(|i| &l[i..]))
        .map(|cmd| {
            let mut c = cmd.to_string();
            for (var, value) in VARS {
                c = c.replace(var, value);
            }
            assert!(!c.contains('$'), "a variable left unfilled: {c}");
            let mut words = shlex::split(&c).unwrap_or_else(|| panic!("not shell words: {c}"));
            words[0] = "lab".into();
            words
        })
        .collect()
}

fn check_commands(name: &str, text: &str, want: &[&str]) {
    let cmds = lab_commands(text);
    for words in &cmds {
        if let Err(e) = lab_cli::cmd::Cli::try_parse_from(words) {
            panic!(
                "examples/ci/{name}: `{}` is not a lab command line:\n{e}",
                words.join(" ")
            );
        }
    }
    let subcommands: Vec<String> = cmds.iter().map(|w| w[1..3].join(" ")).collect();
    for w in want {
        assert!(
            subcommands.iter().any(|s| s.starts_with(w)),
            "examples/ci/{name}: no `lab {w}` in {subcommands:?}"
        );
    }
}

#[test]
fn the_github_actions_workflow_builds_once_shards_and_merges() {
    let (text, v) = load("github-actions.yml");
    let jobs = &v["jobs"];
    assert_eq!(jobs["test"]["needs"], Value::from("kernel"));
    let shards = jobs["test"]["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap();
    assert_eq!(
        shards.len().to_string(),
        v["env"]["SHARDS"].as_str().unwrap(),
        "the matrix and SHARDS disagree"
    );
    assert_eq!(jobs["merge"]["needs"], Value::from("test"));
    assert_eq!(jobs["merge"]["if"], Value::from("always()"));
    check_commands(
        "github-actions.yml",
        &text,
        &["build --series", "run --kernel", "report merge"],
    );
}

#[test]
fn the_gitlab_pipeline_takes_its_shard_from_ci_node_index() {
    let (text, v) = load("gitlab-ci.yml");
    assert_eq!(v["test"]["parallel"], Value::from(4));
    assert_eq!(v["test"]["stage"], Value::from("test"));
    assert_eq!(v["merge"]["when"], Value::from("always"));
    assert!(text.contains("--shard ${CI_NODE_INDEX}/${CI_NODE_TOTAL}"));
    check_commands(
        "gitlab-ci.yml",
        &text,
        &["build --series", "run --kernel", "report merge"],
    );
}

#[test]
fn the_kubernetes_job_is_indexed_and_shards_from_its_completion_index() {
    let (text, v) = load("k8s-indexed-job.yaml");
    assert_eq!(v["apiVersion"], Value::from("batch/v1"));
    assert_eq!(v["kind"], Value::from("Job"));
    let spec = &v["spec"];
    assert_eq!(spec["completionMode"], Value::from("Indexed"));
    assert_eq!(spec["completions"], spec["parallelism"]);
    let env = spec["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap();
    let shards = env.iter().find(|e| e["name"] == "SHARDS").unwrap();
    assert_eq!(
        shards["value"].as_str().unwrap(),
        spec["completions"].as_u64().unwrap().to_string()
    );
    check_commands("k8s-indexed-job.yaml", &text, &["run --kernel"]);
}
