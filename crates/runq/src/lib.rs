//! The runq runtime: a runc-compatible command line that turns a container into a VM by
//! rewriting the bundle's spec, and hands everything else to runc.

pub mod bundle;
pub mod check;
pub mod cli;
pub mod commands;
pub mod disk_images;
pub mod exec;
pub mod host;
pub mod log;
pub mod options;
pub mod rewrite;
pub mod runc;
pub mod sandbox;
pub mod seccomp;
pub mod start;
pub mod template_build;
pub mod templates;
