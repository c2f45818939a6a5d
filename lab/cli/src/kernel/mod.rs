//! Kernels the lab builds: source trees in the cache (`tree`), patch series
//! applied to them as one commit per patch (`series`), configured and
//! compiled with a cache keyed by what went in (`build`), the pipeline that
//! ties them together for `lab run --series` and `lab bisect` (`pipeline`),
//! and the bisection driver (`bisect`).

pub mod bisect;
pub mod build;
pub mod pipeline;
pub mod series;
pub mod tree;
