//! The power-cut machinery below a testcase: the crash disk as a VM's NVMe
//! backend (`crashdisk`), the verifier VM that mounts and scans each crash
//! state (`verifier`), and failing states kept on disk for `lab verify`
//! (`kept`). The power-cut stage of a testcase, which drives them, is
//! `suite::powercut`.

pub mod crashdisk;
pub mod kept;
pub mod verifier;
