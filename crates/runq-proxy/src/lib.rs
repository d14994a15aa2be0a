//! The part of runq-proxy without I/O, as a library so that the fuzz targets can drive it:
//! the supervisor's state machine. Everything else is the `runq-proxy` binary.

pub mod supervisor;
