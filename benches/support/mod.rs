//! What the benchmarks share: statistics over samples ([`stats`]), process figures from `/proc`
//! ([`procfs`]) and guards that make sure a
//! benchmark leaves nothing behind ([`guard`]): child processes, network namespaces and
//! temporary directories are registered when created and removed by their drop guard, by the
//! SIGINT/SIGTERM watcher or by a deadline watchdog, whichever comes first.
//!
//! Included by each benchmark with `#[path = "support/mod.rs"] mod support;` (benchmarks are
//! separate crates); not every benchmark uses every helper.
#![allow(dead_code)]

pub mod guard;
pub mod procfs;
pub mod stats;
