//! Child processes: the reaper that no child outlives the lab.

pub mod reaper;
