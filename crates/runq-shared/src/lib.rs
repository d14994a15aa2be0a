//! The contract between the runq processes.
//!
//! `runq` (the runtime CLI) writes a [`config::VmConfig`]; `runq-proxy` reads it on the host
//! side and hands the guest part to `runq-init` over the control channel, whose frames are
//! defined in [`protocol`]. Both sides compile this crate, so they cannot disagree.

pub mod config;
pub mod disks;
pub mod dns;
pub mod helpers;
pub mod in_root;
pub mod layout;
pub mod log_tail;
pub mod protocol;
pub mod qemu;
pub mod qmp;
pub mod rlimits;
pub mod seccomp;
pub mod start_report;
pub mod tap;
pub mod template;
pub mod timeline;
