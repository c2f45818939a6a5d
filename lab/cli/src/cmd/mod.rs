//! One file per `lab` command: its arguments, and the glue from them to the
//! library. Each returns the process exit code.

pub mod doctor;
