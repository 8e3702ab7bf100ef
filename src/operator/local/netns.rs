//! Task networks: one network namespace per group, shared by the group's
//! tasks, or the host's network for groups whose platform asks for it.
//!
//! Invariants:
//! - A group's namespace holds only a loopback interface that is up: its
//!   tasks reach each other on `localhost` (what `{{host:<task>}}` becomes
//!   on this executor) and nothing else: not the host's loopback, not other
//!   groups, not the outside.
//! - The namespace lives as long as a handle to it ([`GroupNet`]) or a
//!   process inside it; the executor drops its handle when the group's last
//!   task ends.
//! - The host network is used only when the launch's pod templates (the
//!   POOL's and platform's, set by an administrator) say
//!   `spec.hostNetwork: true`, as they would for a Kubernetes pod.
//! - A group namespace reaches beyond the host only when a pod template
//!   has the annotation `gantry.io/outbound-network: "true"` (`outbound`);
//!   even then, never the host's loopback.
//! - A session into a task connects from inside its namespace
//!   (`connect_inside`), to its loopback only.
//! - Creating a namespace needs `CAP_SYS_ADMIN`; an operator without it
//!   gets [`NetError::Unprivileged`] and gives each task a namespace of its
//!   own (bubblewrap's `--unshare-net`), so a group's tasks cannot reach
//!   each other there.

use super::outbound::{self, Outbound, OUTBOUND_ANNOTATION};
use crate::protocol::TaskPlacement;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

/// How a task is networked.
#[derive(Clone, Debug)]
pub enum TaskNet {
    /// The host's network (HIL tasks; an administrator's setting).
    Host,
    /// The group's namespace, joined before bubblewrap starts.
    Group(std::sync::Arc<GroupNet>),
    /// A namespace of the task's own (`--unshare-net`).
    Own,
    /// The network the task's pool asks for cannot be given; the task
    /// fails to start with this reason.
    Refused(String),
}

/// A handle that keeps a group's network namespace alive (and its outbound
/// network, if it has one).
#[derive(Debug)]
pub struct GroupNet {
    // Dropped first: the daemon goes before the namespace it serves.
    _outbound: Option<Outbound>,
    fd: OwnedFd,
}

impl GroupNet {
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("creating a network namespace needs CAP_SYS_ADMIN")]
    Unprivileged,
    #[error("setting up the group's network namespace: {0}")]
    Setup(String),
    #[error("the pool allows outbound network, but it cannot be given: {0}")]
    Outbound(String),
}

/// Whether the task's pod templates ask for the host's network (the last
/// template that says wins, as in OSMO's merge order).
pub fn wants_host_network(placement: &TaskPlacement) -> bool {
    placement
        .pod_templates
        .iter()
        .filter_map(|template| template.pointer("/spec/hostNetwork"))
        .filter_map(serde_json::Value::as_bool)
        .next_back()
        .unwrap_or(false)
}

/// Whether the task's pod templates allow outbound network (the
/// annotation [`OUTBOUND_ANNOTATION`] is `"true"` in the last template that
/// has it).
pub fn wants_outbound_network(placement: &TaskPlacement) -> bool {
    let pointer = format!(
        "/metadata/annotations/{}",
        OUTBOUND_ANNOTATION.replace('~', "~0").replace('/', "~1")
    );
    placement
        .pod_templates
        .iter()
        .filter_map(|template| template.pointer(&pointer))
        .filter_map(serde_json::Value::as_str)
        .next_back()
        .is_some_and(|value| value == "true")
}

/// A fresh network namespace with loopback up, and with outbound network
/// when `outbound_scratch` names a directory for its daemon's files.
/// Blocking (a short-lived thread enters the namespace, since a namespace
/// change is per thread; the daemon starts after).
pub fn new_group_net(outbound_scratch: Option<&std::path::Path>) -> Result<GroupNet, NetError> {
    let fd = new_namespace()?;
    let outbound = match outbound_scratch {
        Some(scratch) => {
            Some(outbound::attach(fd.as_raw_fd(), scratch).map_err(NetError::Outbound)?)
        }
        None => None,
    };
    Ok(GroupNet {
        _outbound: outbound,
        fd,
    })
}

fn new_namespace() -> Result<OwnedFd, NetError> {
    let thread = std::thread::Builder::new()
        .name("task-netns".into())
        .spawn(|| -> Result<OwnedFd, NetError> {
            match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                Ok(()) => {}
                Err(nix::errno::Errno::EPERM) => return Err(NetError::Unprivileged),
                Err(errno) => return Err(NetError::Setup(format!("unshare: {errno}"))),
            }
            loopback_up().map_err(|e| NetError::Setup(format!("bringing up lo: {e}")))?;
            let file = File::open("/proc/thread-self/ns/net")
                .map_err(|e| NetError::Setup(format!("opening the namespace: {e}")))?;
            Ok(OwnedFd::from(file))
        })
        .map_err(|e| NetError::Setup(format!("spawning a thread: {e}")))?;
    thread
        .join()
        .map_err(|_| NetError::Setup("the setup thread panicked".into()))?
}

/// Longest wait for a task's port to accept a session's connection.
const SESSION_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `make` returns, made by a thread of its own that joined the
/// group's namespace first (a namespace change is per thread, so never a
/// thread of a pool); a socket made there stays in that namespace and is
/// used from tokio.
async fn made_inside<T: Send + 'static>(
    net: std::sync::Arc<GroupNet>,
    make: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("session-netns".into())
        .spawn(move || {
            let made = nix::sched::setns(&net.fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|errno| format!("entering the task's network namespace: {errno}"))
                .and_then(|()| make());
            let _ = sender.send(made);
        })
        .map_err(|error| format!("spawning a thread: {error}"))?;
    receiver
        .await
        .map_err(|_| "the thread in the task's network panicked".to_string())?
}

/// A TCP connection to `127.0.0.1:port` inside the group's namespace.
pub async fn connect_inside(
    net: std::sync::Arc<GroupNet>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let stream = made_inside(net, move || {
        let address = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let stream = std::net::TcpStream::connect_timeout(&address, SESSION_CONNECT_TIMEOUT)
            .map_err(|error| error.to_string())?;
        stream
            .set_nonblocking(true)
            .map_err(|error| error.to_string())?;
        Ok(stream)
    })
    .await?;
    tokio::net::TcpStream::from_std(stream).map_err(|error| error.to_string())
}

/// A UDP socket in the group's namespace, connected to `127.0.0.1:port`
/// there.
pub async fn udp_inside(
    net: std::sync::Arc<GroupNet>,
    port: u16,
) -> Result<tokio::net::UdpSocket, String> {
    let socket = made_inside(net, move || udp_to_loopback(port)).await?;
    tokio::net::UdpSocket::from_std(socket).map_err(|error| error.to_string())
}

/// A non-blocking UDP socket of the calling thread's namespace, connected
/// to `127.0.0.1:port`.
pub fn udp_to_loopback(port: u16) -> Result<std::net::UdpSocket, String> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| error.to_string())?;
    socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port))
        .map_err(|error| error.to_string())?;
    socket
        .set_nonblocking(true)
        .map_err(|error| error.to_string())?;
    Ok(socket)
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
// ioctl's request is an unsigned long on glibc and an int on musl.
#[allow(clippy::unnecessary_cast)]
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked and
    // owned by `OwnedFd` from here on.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and nothing else owns.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: an all-zero `ifreq` is valid (a name of NULs, zero flags).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `request`, a live
    // `ifreq` with a NUL-terminated name, on an open socket.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_template_that_names_host_network_wins() {
        let mut placement = TaskPlacement::default();
        assert!(!wants_host_network(&placement));
        placement.pod_templates = vec![
            json!({"spec": {"hostNetwork": true}}),
            json!({"metadata": {"labels": {"a": "b"}}}),
        ];
        assert!(wants_host_network(&placement));
        placement
            .pod_templates
            .push(json!({"spec": {"hostNetwork": false}}));
        assert!(!wants_host_network(&placement));
        placement.pod_templates = vec![json!({"spec": {"hostNetwork": "true"}})];
        assert!(!wants_host_network(&placement), "only a boolean counts");
    }
}
