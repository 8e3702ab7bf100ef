//! Backend operator: the protocol it speaks with the control plane and its
//! executors.

pub mod local;
pub mod protocol;
