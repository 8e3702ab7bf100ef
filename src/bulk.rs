//! The bulk runtime: a second tokio runtime, on threads of lower CPU
//! priority, for the work whose volume tasks decide rather than callers:
//! taking in operators' streams (decoding their frames, the hub's ingest of
//! their batches: mostly task output), the in-process operator (reading
//! task output and batching it) and the log followers' streams.
//!
//! A task that prints without end can keep every core busy with that work;
//! on the server's own runtime it would queue in front of API requests,
//! Raft and the worker, which tokio schedules without priorities. Here the
//! kernel's scheduler gives the server's threads the CPU first (nice 0
//! against [`BULK_NICE`]), and bulk work takes what is left.
//!
//! Invariants:
//! - Every thread of the runtime (workers and its blocking pool) runs at
//!   [`BULK_NICE`] from its start; processes started from them inherit it
//!   (the in-process operator's tasks run below the control plane).
//! - Dropping [`BulkRuntime`] shuts the runtime down without blocking, so
//!   it may be dropped from within the server's runtime.

use tokio::runtime::{Handle, Runtime};

/// Niceness of bulk threads: weight 110 against 1024 for the server's
/// threads, so under contention the server gets about nine tenths.
pub const BULK_NICE: libc::c_int = 10;

/// The bulk runtime; shut down when dropped.
pub struct BulkRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl BulkRuntime {
    /// Starts the runtime with `workers` worker threads.
    pub fn start(workers: usize) -> std::io::Result<BulkRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("gantry-bulk")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(BulkRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for BulkRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's niceness (Linux nice values are per thread).
fn niceness() -> libc::c_int {
    // SAFETY: getpriority(2) on the calling thread (`who` 0) reads no
    // memory. (-1 is also its error value, which cannot happen for `who` 0.)
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// The niceness a bulk thread runs at: [`BULK_NICE`], or the process's own
/// when that is lower in priority already.
fn bulk_niceness(inherited: libc::c_int) -> libc::c_int {
    inherited.max(BULK_NICE)
}

/// Lowers the calling thread's priority.
fn lower_priority() {
    let nice = bulk_niceness(niceness());
    // SAFETY: setpriority(2) on the calling thread (`who` 0) reads no
    // memory; raising a niceness needs no privilege.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lower a bulk thread's priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_threads_run_at_the_bulk_niceness_and_others_do_not() {
        let bulk = BulkRuntime::start(1).expect("bulk runtime");
        let here = niceness();
        let on_worker = bulk.handle().block_on(async move {
            tokio::spawn(async move { niceness() })
                .await
                .unwrap_or(-100)
        });
        let on_blocking = bulk
            .handle()
            .block_on(bulk.handle().spawn_blocking(niceness))
            .unwrap_or(-100);
        // (Under `nice` the tests' own threads may be lower already.)
        assert_eq!(on_worker, bulk_niceness(here));
        assert_eq!(on_blocking, bulk_niceness(here));
        assert_eq!(niceness(), here, "the caller's thread is left alone");
        assert_eq!(bulk_niceness(0), BULK_NICE);
        assert_eq!(bulk_niceness(19), 19);
    }
}
