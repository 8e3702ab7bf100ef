//! Local executor: runs tasks as sandboxed child processes on this host.
