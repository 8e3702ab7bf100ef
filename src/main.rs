//! gantry: workflow orchestration for Physical AI in one binary.
//!
//! The binary holds the roles (API, worker, timers, logger, operator) and the
//! CLI; replicated state lives in `gantry-raft` over `gantry-storage`.

mod cli;
mod operator;
mod spec;

fn main() {}
