//! Typed configuration for the edge daemon ([`EdgeConfig`]) and the cloud sync
//! service ([`CloudConfig`]).
//!
//! Data enters as a TOML file (or the built-in defaults) plus a few `GANTRY_…`
//! environment overrides, and leaves as a validated struct. Every problem found is
//! reported as one [`Problem`] line in the contract's form
//! `FILE: key.path: problem (expected …)`.

pub mod cli;
pub mod cloud;
pub mod edge;
mod load;
pub mod package;
mod problem;
pub mod records;
pub mod task;
pub mod wire;

pub use cloud::CloudConfig;
pub use edge::EdgeConfig;
pub use load::{disk_size_bytes, load, load_str, process_env, Configuration, Env, EnvOverride, LoadError};
pub use problem::{Checker, Problem};
