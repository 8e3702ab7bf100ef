//! Backend operator: the protocol it speaks with the control plane and its
//! executors.

// Reached from `gantry operator --executor kubernetes`; until that command
// is wired, only the tests use it.
#[allow(dead_code, unused_imports)]
pub mod kubernetes;
pub mod local;
pub mod protocol;
