//! bootfactory: a self-hosted Talos Linux image factory and network-boot appliance.
//!
//! The crate is organised one module per concern; `ARCHITECTURE.md` maps them.

pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod schematic;
pub mod server;
pub mod store;
