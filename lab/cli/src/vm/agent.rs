//! The guest agent (`lab-guest`, in every guest image) as typed calls: each
//! function returns the shell command line that runs one agent command, so
//! the agent's flags and how its input reaches it (JSON, base64 on the
//! command line, decoded into its stdin or a file) live in one place.
//! What the agent prints back is parsed by the caller (`limits` is a
//! `LimitsReport`, `run` and `generate` stream JSON lines).

use base64::Engine;
use lab_core::steps::Plan;

/// JSON, base64-encoded so it passes through a shell command line intact.
fn b64_json(value: &impl serde::Serialize) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(value).expect("agent input serialises"))
}

/// `lab-guest limits PATH...`: the atomic-write limits of block devices or
/// files (statx and sysfs), as one JSON `LimitsReport`.
pub fn limits(paths: &[&str]) -> String {
    format!("lab-guest limits {}", paths.join(" "))
}

/// `lab-guest run`: the plan's steps in order, one JSON `StepResult` line
/// each.
pub fn run(plan: &Plan) -> String {
    format!("echo {} | base64 -d | lab-guest run", b64_json(plan))
}

/// `lab-guest run --sync-marks`: the plan from a file, its stdin left free
/// for the lab's answers to synchronous marks (a power-cut workload).
pub fn run_with_sync_marks(plan: &Plan) -> String {
    format!(
        "echo {} | base64 -d > /tmp/plan.json && lab-guest run --sync-marks --plan /tmp/plan.json",
        b64_json(plan)
    )
}

/// What `lab-guest generate` reads: the stamp run id, the directory, the
/// file name and the generator's parameters.
#[derive(serde::Serialize)]
pub struct GenerateInput<'a, P: serde::Serialize> {
    pub run: u64,
    pub root: &'a str,
    pub file: &'a str,
    pub params: &'a P,
}

/// `lab-guest generate`: seeded writer threads, their op log as JSON lines,
/// then a read-back.
pub fn generate<P: serde::Serialize>(input: &GenerateInput<'_, P>) -> String {
    format!(
        "echo {} | base64 -d > /tmp/gen.json && lab-guest generate < /tmp/gen.json",
        b64_json(input)
    )
}

/// `lab-guest scan FILE...`: what every sector of each file holds, as runs.
pub fn scan(files: &[String]) -> String {
    format!("lab-guest scan {}", files.join(" "))
}

/// `lab-guest baseline`: records the freshly booted guest (processes,
/// mounts, tunables, scratch files) for later resets.
pub fn baseline() -> String {
    "lab-guest baseline".into()
}

/// `lab-guest reset`: back to the baseline before another testcase runs
/// in this VM; one JSON line says what it undid.
pub fn reset() -> String {
    "lab-guest reset".into()
}

/// `lab-guest plugged COUNT LBA BYTES`: after the lab replaced the NVMe
/// controller, waits until the guest sees its namespaces as asked and
/// records their queue tunables as the baseline's.
pub fn plugged(count: u8, lba: u32, bytes: u64) -> String {
    format!("lab-guest plugged {count} {lba} {bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(cmd: &str) -> serde_json::Value {
        let b64 = cmd.split_whitespace().nth(1).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn inputs_reach_the_agent_as_the_json_it_reads() {
        let plan = Plan {
            run: 7,
            root: "/mnt".into(),
            steps: vec![],
        };
        assert_eq!(decoded(&run(&plan))["run"], 7);
        assert!(run(&plan).ends_with("| base64 -d | lab-guest run"));
        assert!(run_with_sync_marks(&plan)
            .ends_with("lab-guest run --sync-marks --plan /tmp/plan.json"));
        let g = generate(&GenerateInput {
            run: 9,
            root: "/mnt",
            file: "gen",
            params: &serde_json::json!({ "seed": 1 }),
        });
        let v = decoded(&g);
        assert_eq!(
            (v["run"].as_u64(), v["file"].as_str()),
            (Some(9), Some("gen"))
        );
        assert_eq!(v["params"]["seed"], 1);
        assert_eq!(
            limits(&["/dev/nvme0n1", "/mnt/f"]),
            "lab-guest limits /dev/nvme0n1 /mnt/f"
        );
        assert_eq!(plugged(2, 512, 1 << 20), "lab-guest plugged 2 512 1048576");
        assert_eq!(
            scan(&["/mnt/a".into(), "/mnt/b".into()]),
            "lab-guest scan /mnt/a /mnt/b"
        );
    }
}
