//! The testcases rewritten with `repeat` expand to exactly the explicit
//! steps they held before: the old step lists are kept here, verbatim.

use lab_core::testcase::{parse, Testcase, Workload};

/// The file as it is now, and its steps as they were written out before
/// `repeat` (everything above `workload:` is unchanged).
const REWRITTEN: &[(&str, &str, &str)] = &[
    (
        "testcases/powercut-buffered-atomic-xfs-4k.yaml",
        include_str!("../../../testcases/powercut-buffered-atomic-xfs-4k.yaml"),
        "\
workload:
  steps:
    - open: { file: data }
    - pwrite: { offset: 0, len: 131072 }   # 32 blocks, plain
    - fsync: {}
    - mark: { name: synced }
    - pwrite: { offset: 0, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 4096, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 8192, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 12288, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 16384, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 20480, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 24576, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 28672, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 32768, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 36864, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 40960, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 45056, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 49152, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 53248, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 57344, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 61440, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 65536, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 69632, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 73728, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 77824, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 81920, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 86016, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 90112, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 94208, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 98304, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 102400, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 106496, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 110592, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 114688, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 118784, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 122880, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 126976, len: 4096, atomic: true, expect: supported_or_skip }
    - fsync: {}
",
    ),
    (
        "testcases/powercut-sweep-buffered-atomic-xfs-4k.yaml",
        include_str!("../../../testcases/powercut-sweep-buffered-atomic-xfs-4k.yaml"),
        "\
workload:
  steps:
    - open: { file: data }
    - pwrite: { offset: 0, len: 32768 }   # 8 blocks, plain
    - fsync: {}
    - pwrite: { offset: 0, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 4096, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 8192, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 12288, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 16384, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 20480, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 24576, len: 4096, atomic: true, expect: supported_or_skip }
    - pwrite: { offset: 28672, len: 4096, atomic: true, expect: supported_or_skip }
    - fsync: {}
",
    ),
];

fn steps_of(tc: &Testcase) -> &[lab_core::steps::Step] {
    match &tc.workload {
        Workload::Steps(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rewritten_testcases_expand_to_their_old_explicit_steps() {
    for (file, now, old_steps) in REWRITTEN {
        let tc = parse(file, now).unwrap_or_else(|e| panic!("{e}"));
        let head = &now[..now.find("workload:\n").expect(file)];
        let old = parse(file, &format!("{head}{old_steps}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(steps_of(&tc), steps_of(&old), "{file}");
        // The whole testcase, not only its steps.
        assert_eq!(tc, old, "{file}");
        assert!(now.contains("- repeat:"), "{file} uses repeat");
        assert!(
            !old_steps.contains("repeat"),
            "{file}: the old steps are explicit"
        );
    }
}
