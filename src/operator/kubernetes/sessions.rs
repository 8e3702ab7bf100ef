//! Sessions into Kubernetes tasks, through the API server's own streaming
//! subresources (kube-rs over WebSocket): `pods/exec` for exec and
//! `pods/portforward` for port-forward, the way `kubectl` reaches a pod.
//! No in-pod agent and no inbound connection into the cluster: the
//! operator dials the API server, as it already does for everything else.
//!
//! Invariants: a session reaches only the task's own pod and container
//! (looked up from what the executor tracks, never from the user's
//! input); an exec's last frame is its exit code, taken from the status
//! the API server sends, or why it failed; a user who goes away ends the
//! stream, which ends the command's connection.

use crate::protocol::exec::{read_output, ExecCodec, ExecFrame, ExecRequest};
use crate::protocol::session::SessionAnswer;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess, TerminalSize};
use kube::Api;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

/// Bytes buffered each way between the session's stream and the pod.
const SESSION_BUFFER_BYTES: usize = 256 << 10;

/// A TCP stream to `port` of `pod`, as the kubelet connects it.
pub async fn port_forward(pods: &Api<Pod>, pod: &str, port: u16) -> SessionAnswer {
    let mut forwarder = pods
        .portforward(pod, &[port])
        .await
        .map_err(|error| format!("the API server refused port-forward to pod {pod}: {error}"))?;
    let stream = forwarder
        .take_stream(port)
        .ok_or_else(|| format!("the API server gave no stream for port {port}"))?;
    let error = forwarder.take_error(port);
    let pod = pod.to_string();
    // The forwarder's loop runs until both ends close; the kubelet's error
    // (nothing listens on the port, say) is only ever reported here.
    tokio::spawn(async move {
        if let Some(error) = error {
            if let Some(message) = error.await {
                tracing::info!(%pod, port, "port-forward: {message}");
            }
        }
        if let Err(error) = forwarder.join().await {
            tracing::debug!(%pod, port, %error, "port-forward stream ended");
        }
    });
    Ok(Box::new(stream))
}

/// Runs `request` in `container` of `pod` and answers with the session's
/// end, speaking `protocol::exec` frames.
pub async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    request: &ExecRequest,
) -> SessionAnswer {
    if request.argv.is_empty() {
        return Err("exec needs a command".into());
    }
    let params = AttachParams {
        container: Some(container.to_string()),
        stdin: true,
        stdout: true,
        // A terminal is one stream; the API server refuses stderr with it.
        stderr: !request.tty,
        tty: request.tty,
        max_stdin_buf_size: Some(SESSION_BUFFER_BYTES),
        max_stdout_buf_size: Some(SESSION_BUFFER_BYTES),
        max_stderr_buf_size: Some(SESSION_BUFFER_BYTES),
    };
    let mut process = pods
        .exec(pod, request.argv.clone(), &params)
        .await
        .map_err(|error| format!("the API server refused exec in pod {pod}: {error}"))?;
    if let (Some((columns, rows)), Some(mut resize)) = (request.size, process.terminal_size()) {
        let _ = resize
            .send(TerminalSize {
                width: columns,
                height: rows,
            })
            .await;
    }
    let (user_end, our_end) = tokio::io::duplex(SESSION_BUFFER_BYTES);
    tokio::spawn(pump(Framed::new(our_end, ExecCodec), process));
    Ok(Box::new(user_end))
}

/// Moves frames between the session and the pod's command until its
/// output ends, then sends its exit status; a user who goes away aborts
/// the command's connection.
async fn pump(session: Framed<tokio::io::DuplexStream, ExecCodec>, mut process: AttachedProcess) {
    let (mut to_user, mut from_user) = session.split();
    let mut stdin = process.stdin();
    let mut stdout = process.stdout();
    let mut stderr = process.stderr();
    let mut resize = process.terminal_size();
    let status = process.take_status();
    let mut user_open = true;
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            frame = from_user.next(), if user_open => match frame {
                Some(Ok(ExecFrame::Stdin(bytes))) => {
                    if let Some(pipe) = stdin.as_mut() {
                        if pipe.write_all(&bytes).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(Ok(ExecFrame::StdinClosed)) => {
                    if let Some(mut pipe) = stdin.take() {
                        let _ = pipe.shutdown().await;
                    }
                }
                Some(Ok(ExecFrame::Resize { columns, rows })) => {
                    if let Some(sender) = resize.as_mut() {
                        let _ = sender.send(TerminalSize { width: columns, height: rows }).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    user_open = false;
                    process.abort();
                }
            },
            // Guarded, not pattern-matched: a stream's end must end this
            // `select!` so that the loop sees it.
            bytes = read_output(&mut stdout), if stdout.is_some() => {
                if let Some(bytes) = bytes {
                    if to_user.send(ExecFrame::Stdout(bytes)).await.is_err() {
                        process.abort();
                    }
                }
            }
            bytes = read_output(&mut stderr), if stderr.is_some() => {
                if let Some(bytes) = bytes {
                    if to_user.send(ExecFrame::Stderr(bytes)).await.is_err() {
                        process.abort();
                    }
                }
            }
        }
    }
    let last = match status {
        Some(status) => match status.await {
            Some(status) => exit_frame(&status),
            None => ExecFrame::Failed(
                "the exec stream from the API server ended without the command's status".into(),
            ),
        },
        None => ExecFrame::Failed("the command's status was already taken".into()),
    };
    let _ = to_user.send(last).await;
    let _ = to_user.close().await;
}

/// The frame that ends an exec, from the API server's status: `Success`
/// is 0, `NonZeroExitCode` carries the code in its `ExitCode` cause, and
/// anything else is a failure to run, with the server's message.
pub(super) fn exit_frame(status: &Status) -> ExecFrame {
    if status.status.as_deref() == Some("Success") {
        return ExecFrame::Exit(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|details| details.causes.as_ref())
            .and_then(|causes| {
                causes
                    .iter()
                    .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|cause| cause.message.as_deref())
            .and_then(|message| message.trim().parse::<i32>().ok());
        if let Some(code) = code {
            return ExecFrame::Exit(code);
        }
    }
    ExecFrame::Failed(
        status
            .message
            .clone()
            .unwrap_or_else(|| "the command could not run in the pod".into()),
    )
}
