//! Exec and port-forward into a Kubernetes task: kube-rs over WebSocket to
//! the fake API server, which runs the command and connects the port as a
//! kubelet would.

use super::*;
use crate::protocol::exec::{ExecCodec, ExecFrame, ExecRequest};
use crate::protocol::session::SessionIo;
use crate::protocol::SessionKind;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

fn exec(argv: &[&str], tty: bool, size: Option<(u16, u16)>) -> SessionKind {
    SessionKind::Exec(ExecRequest {
        argv: argv.iter().map(|word| word.to_string()).collect(),
        tty,
        size,
    })
}

/// Everything the exec sends until its last frame: (stdout, stderr, last).
async fn run_to_end(end: SessionIo, stdin: &[u8]) -> (String, String, ExecFrame) {
    let mut session = Framed::new(end, ExecCodec);
    if !stdin.is_empty() {
        session
            .send(ExecFrame::Stdin(stdin.to_vec()))
            .await
            .expect("stdin");
    }
    session.send(ExecFrame::StdinClosed).await.expect("close");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let frame = tokio::time::timeout(WAIT, session.next())
            .await
            .expect("exec frame in time")
            .expect("a frame before the stream ends")
            .expect("a well-formed frame");
        match frame {
            ExecFrame::Stdout(bytes) => stdout.extend(bytes),
            ExecFrame::Stderr(bytes) => stderr.extend(bytes),
            last @ (ExecFrame::Exit(_) | ExecFrame::Failed(_)) => {
                return (
                    String::from_utf8_lossy(&stdout).into_owned(),
                    String::from_utf8_lossy(&stderr).into_owned(),
                    last,
                );
            }
            other => panic!("unexpected frame from the task: {other:?}"),
        }
    }
}

#[tokio::test]
async fn exec_and_port_forward_reach_the_tasks_pod_through_the_api_servers_streams() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let job = h.create(group(vec![task("train", 0, true)])).await;
    h.until_done(job).await;
    let train = key_of("train");

    // Not running yet: the API server refuses, and the user is told why.
    let refused = h
        .operator
        .open_session(&train, &exec(&["true"], false, None))
        .await
        .err()
        .expect("a pending pod takes no exec");
    assert!(refused.contains("not running"), "{refused}");
    let unknown = h
        .operator
        .open_session(&key_of("other"), &exec(&["true"], false, None))
        .await
        .err()
        .expect("an unknown task takes no exec");
    assert!(
        unknown.contains("does not run on this backend"),
        "{unknown}"
    );

    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status("train", json!({"running": {}}), "Running"),
    );
    h.api.clear_requests();

    // Without a terminal: stdin in, stdout and stderr apart, the exit code.
    let script = "echo out; echo err >&2; read line; echo got $line; exit 3";
    let end = h
        .operator
        .open_session(&train, &exec(&["sh", "-c", script], false, None))
        .await
        .expect("exec opens");
    let (stdout, stderr, last) = run_to_end(end, b"hello\n").await;
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("out\ngot hello\n", "err\n")
    );
    assert_eq!(last, ExecFrame::Exit(3));
    // Into the task's own pod and container, with the command word by word.
    let request = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/exec"))
        .expect("the exec request reached the API server");
    assert_eq!(request.path, format!("{PODS}/{}/exec", pod_name(0)));
    assert_eq!(
        request.query.get("container").map(String::as_str),
        Some("train")
    );
    assert_eq!(request.query.get("stdin").map(String::as_str), Some("true"));

    // A terminal: one output stream, its size sent; success is 0.
    let end = h
        .operator
        .open_session(
            &train,
            &exec(
                &["sh", "-c", "read line; echo to-err >&2"],
                true,
                Some((120, 40)),
            ),
        )
        .await
        .expect("exec with a terminal opens");
    // The size travels beside the command's streams: the command waits
    // for its input until it arrived.
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.api.resizes().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.api.resizes(), vec![(pod_name(0), 120, 40)]);
    let (stdout, stderr, last) = run_to_end(end, b"").await;
    assert_eq!((stdout.as_str(), stderr.as_str()), ("to-err\n", ""));
    assert_eq!(last, ExecFrame::Exit(0));

    // A command that cannot start: the API server's reason.
    let end = h
        .operator
        .open_session(&train, &exec(&["/no/such/program"], false, None))
        .await
        .expect("the stream opens; the kubelet reports the failure on it");
    let (_, _, last) = run_to_end(end, b"").await;
    assert!(
        matches!(&last, ExecFrame::Failed(reason) if reason.contains("/no/such/program")),
        "{last:?}"
    );

    // UDP: the API server's port-forward carries TCP only, and says so.
    let udp = h
        .operator
        .open_session(&train, &SessionKind::UdpForward { port: 8888 })
        .await
        .err()
        .expect("no UDP into a pod");
    assert!(udp.contains("TCP only"), "{udp}");

    // Port-forward: bytes both ways to what listens on the pod's port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    h.api
        .serve_pod_port(&pod_name(0), 8888, listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = connection.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    let mut end = h
        .operator
        .open_session(&train, &SessionKind::PortForward { port: 8888 })
        .await
        .expect("port-forward opens");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    end.write_all(&payload).await.expect("write");
    let mut echoed = vec![0; payload.len()];
    tokio::time::timeout(WAIT, end.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert!(echoed == payload, "the echo differs");

    // Nothing listens on another port: the stream ends at once.
    let mut closed = h
        .operator
        .open_session(&train, &SessionKind::PortForward { port: 9999 })
        .await
        .expect("the stream opens; the kubelet reports the refusal on it");
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, closed.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(rest.is_empty());
}
