//! How a process talks with whatever supervises it: systemd notifications
//! for `Type=notify` units (a server: `READY=1` once it is a member of a
//! cluster with a leader, `WATCHDOG=1` while its Raft core runs,
//! `STOPPING=1` on shutdown; an operator: `READY=1` once it holds a stream
//! to the control plane, its connection in `STATUS`) and the signals that
//! end it (SIGINT, SIGTERM).
//!
//! Invariants: without `NOTIFY_SOCKET` nothing is sent (the `sd-notify`
//! crate checks); a server's ready means what `/readyz` means (a
//! linearizable read succeeds: a leader confirmed this member's state), an
//! operator's that the leader took its stream; each is sent once; the
//! watchdog is fed every half `WATCHDOG_USEC` only while the node is
//! healthy as `/healthz` judges it, so a node whose Raft core stopped (a
//! full disk) is restarted by systemd.

use gantry_raft::RaftNode;
use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pause between readiness checks while not ready.
const READY_RETRY: Duration = Duration::from_millis(100);
/// Longest one readiness check waits (as `/readyz` does).
const READY_CHECK_MAX: Duration = Duration::from_secs(2);

/// Sends `READY=1` when ready and feeds the watchdog, until `stop`.
pub async fn run(node: RaftNode, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
    let work = async {
        tokio::join!(signal_ready(&node), feed_watchdog(&node, watchdog));
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = work => {}
    }
}

/// Whether this operator has said `READY=1` yet.
static OPERATOR_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An operator holds a stream to `url`: `READY=1` the first time, the
/// connection in `STATUS` every time (after a reconnect too).
pub fn operator_connected(url: &str, backend: &str) {
    let status = format!("connected to {url} as backend {backend}");
    if OPERATOR_READY.swap(true, std::sync::atomic::Ordering::SeqCst) {
        send(&[NotifyState::Status(&status)]);
    } else {
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }
}

/// Why an operator is not connected, for `systemctl status`.
pub fn operator_status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Tells systemd the server is stopping (before it stops serving).
pub fn stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        send(&[NotifyState::Stopping]);
    }
}

async fn signal_ready(node: &RaftNode) {
    send(&[NotifyState::Status(
        "joining the cluster: waiting for a leader",
    )]);
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(READY_CHECK_MAX, node.read()).await {
            break;
        }
        tokio::time::sleep(READY_RETRY).await;
    }
    let status = format!("serving: member {} of a cluster with a leader", node.id());
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("told systemd the server is ready");
}

async fn feed_watchdog(node: &RaftNode, interval: Option<Duration>) {
    let Some(interval) = interval else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match node.stopped_reason() {
            None => send(&[NotifyState::Watchdog]),
            Some(reason) => {
                tracing::error!(%reason, "Raft core stopped: no longer feeding the systemd watchdog");
                return;
            }
        }
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "could not notify systemd");
    }
}

/// Returns on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
    tracing::info!("shutting down");
}
