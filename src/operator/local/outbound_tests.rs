//! The outbound network a pool may allow, run for real (root, bubblewrap,
//! `pasta`, network namespaces): a group reaches a server beyond the host
//! (in a namespace of its own behind a veth pair, as the outside world
//! would be) and still never the host's loopback.

use super::outbound::OUTBOUND_ANNOTATION;
use super::tests::{key, launch, lines, Harness};
use crate::protocol::LogStream;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::process::Command;

/// The host side and the far side of the veth pair (TEST-NET-2).
const HOST_SIDE: &str = "198.51.100.1";
const FAR_SIDE: &str = "198.51.100.2";

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}: {status}");
}

/// A network namespace beyond the host, removed when dropped.
struct Outside {
    namespace: String,
}

impl Outside {
    fn new() -> Outside {
        let id = std::process::id() % 100_000;
        let namespace = format!("gantry-outside-{id}");
        let (host_end, far_end) = (format!("gto{id}h"), format!("gto{id}f"));
        // Left over from a killed run, if any.
        let _ = Command::new("ip")
            .args(["netns", "del", &namespace])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &namespace]);
        let outside = Outside { namespace };
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &far_end,
        ]);
        ip(&["link", "set", &far_end, "netns", &outside.namespace]);
        ip(&["addr", "add", &format!("{HOST_SIDE}/30"), "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", outside.namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{FAR_SIDE}/30"), "dev", &far_end]);
        inside(&["link", "set", &far_end, "up"]);
        inside(&["link", "set", "lo", "up"]);
        outside
    }

    /// A listener bound inside the namespace (a socket keeps the namespace
    /// it was made in).
    fn listen(&self) -> TcpListener {
        let path = format!("/var/run/netns/{}", self.namespace);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).expect("the namespace");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the namespace");
            TcpListener::bind(format!("{FAR_SIDE}:0")).expect("bind beyond the host")
        })
        .join()
        .expect("the binding thread")
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

fn tools_present() -> bool {
    let present = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success() || !output.stderr.is_empty())
    };
    let root = nix::unistd::geteuid().is_root();
    if root && present("pasta") && present("ip") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the outbound network test needs root, `pasta` (passt) and `ip` (iproute2)"
    );
    eprintln!("skipped: needs root, pasta and ip");
    false
}

/// A script that tries a TCP connection to each address and prints
/// `ADDRESS reached` or `ADDRESS refused`.
fn probe(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|address| {
            let (host, port) = address.rsplit_once(':').unwrap_or((address, "0"));
            format!(
                "if timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; \
                 then echo '{address} reached'; else echo '{address} refused'; fi"
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn outbound_template() -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {OUTBOUND_ANNOTATION: "true"}}})
}

#[tokio::test]
async fn a_pool_that_allows_outbound_network_reaches_beyond_the_host_but_not_its_loopback() {
    if !tools_present() {
        return;
    }
    let outside = Outside::new();
    // The kernel completes the handshakes; nothing needs to accept.
    let beyond_listener = outside.listen();
    let beyond = beyond_listener.local_addr().unwrap().to_string();
    let loopback_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback = loopback_listener.local_addr().unwrap().to_string();
    let script = probe(&[beyond.clone(), loopback.clone()]);

    let mut h = Harness::new().await;
    // Without the annotation: nothing beyond the group.
    h.create(false, vec![launch("wf-closed", "probe", &script)])
        .await;
    let closed = lines(
        &h.run_to_end(&key("wf-closed", "probe")).await,
        LogStream::Stdout,
    );
    assert_eq!(
        closed,
        [format!("{beyond} refused"), format!("{loopback} refused")]
    );
    // With it: beyond the host, and still not the host's loopback.
    let mut task = launch("wf-open", "probe", &script);
    task.placement.pod_templates = vec![outbound_template()];
    h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-open", "probe")).await;
    assert_eq!(
        lines(&events, LogStream::Stdout),
        [format!("{beyond} reached"), format!("{loopback} refused")],
        "{events:?}"
    );
    drop(outside);
}
