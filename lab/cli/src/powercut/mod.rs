//! The power-cut machinery below a testcase: the verifier VM that mounts
//! and scans each crash state (`verifier`), and failing states kept on disk
//! for `lab verify` (`kept`). The crash disk itself is one of the host's
//! disks (`host::disks`); the power-cut stage of a testcase, which drives
//! them, is `suite::powercut`.

pub mod kept;
pub mod verifier;
