//! Pure core of the atomic-write lab.
//!
//! Nothing in this crate touches a process, a socket or a file: it turns
//! inputs (testcase YAML, device parameters, console text, results) into
//! outputs (validated plans, QEMU argument lists, expected atomic-write
//! limits, splat titles, JUnit). The I/O shells live in `lab-cli`.

pub mod bisect;
pub mod cpio;
pub mod device;
pub mod filemap;
pub mod folio;
pub mod generate;
pub mod gitam;
pub mod html;
pub mod kconfig;
pub mod kmod;
pub mod limits;
pub mod make_output;
pub mod merge;
pub mod powercut;
pub mod qemu;
pub mod repeat;
pub mod report;
pub mod schedule;
pub mod series;
pub mod shard;
pub mod splat;
pub mod stamp;
pub mod steps;
pub mod testcase;
