//! Backend operator: the numbered stream that carries the protocol to the
//! control plane (`session`, `connect`), the process entry (`run`) and its
//! executors (`local`, `kubernetes`). The messages and frames themselves
//! are `crate::protocol`, shared with the control plane.
//!
//! Invariant: an executor only sees `ToOperator` jobs and emits
//! `FromOperator` reports; numbering, acknowledgement, resending and
//! following the leader live in `session` and `connect`, the same for every
//! executor and for the in-process operator of `gantry dev`.

pub mod connect;
pub mod kubernetes;
pub mod local;
pub mod run;
pub mod session;

use crate::protocol::session::SessionAnswer;
use crate::protocol::{FromOperator, SessionKind, ToOperator};
use gantry_storage::TaskKey;
use local::LocalOperator;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The executors an operator can drive.
#[derive(Clone)]
pub enum Executor {
    /// Sandboxed processes on this host.
    Local(Arc<LocalOperator>),
    /// Pods (KAI, Volcano or default-scheduler gangs) on a Kubernetes cluster.
    Kubernetes(Arc<kubernetes::KubernetesOperator>),
}

impl Executor {
    /// Serves one connection: `Hello` first, then acts on each job until
    /// `jobs` closes.
    pub async fn serve(
        &self,
        jobs: mpsc::Receiver<ToOperator>,
        reports: mpsc::Sender<FromOperator>,
    ) {
        match self {
            Executor::Local(local) => local.serve(jobs, reports).await,
            Executor::Kubernetes(kubernetes) => kubernetes.serve(jobs, reports).await,
        }
    }

    /// This executor's end of a session into running task `key`, or why
    /// there is none.
    pub async fn open_session(&self, key: &TaskKey, kind: &SessionKind) -> SessionAnswer {
        match self {
            Executor::Local(local) => local.open_session(key, kind).await,
            Executor::Kubernetes(kubernetes) => kubernetes.open_session(key, kind).await,
        }
    }

    /// Stops every task (boundedly waiting for their final reports).
    pub async fn shutdown(&self) {
        match self {
            Executor::Local(local) => local.shutdown().await,
            Executor::Kubernetes(kubernetes) => kubernetes.shutdown().await,
        }
    }
}
