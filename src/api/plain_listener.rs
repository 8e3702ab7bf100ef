//! The API's listener without TLS (`gantry dev`, a server on loopback): the
//! same bound on connections served at once as the TLS listener
//! ([`API_CONNECTIONS_MAX`]).
//!
//! Invariant: a connection holds its slot until it closes; while every slot
//! is taken, new connections wait in the kernel's accept queue, so held
//! connections (log follows) cannot make the server run out of files.

use gantry_raft::transport::API_CONNECTIONS_MAX;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Pause after a failed accept (out of files, say), so it is not retried hot.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A TCP listener serving at most `slots` connections at once.
pub struct PlainListener {
    tcp: TcpListener,
    slots: Arc<Semaphore>,
}

impl PlainListener {
    pub fn new(tcp: TcpListener) -> PlainListener {
        PlainListener::with_slots(tcp, API_CONNECTIONS_MAX)
    }

    fn with_slots(tcp: TcpListener, slots: usize) -> PlainListener {
        PlainListener {
            tcp,
            slots: Arc::new(Semaphore::new(slots)),
        }
    }
}

/// A connection and the slot it holds.
pub struct SlottedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl axum::serve::Listener for PlainListener {
    type Io = SlottedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed.
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                continue;
            };
            match self.tcp.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        SlottedStream {
                            stream,
                            _slot: slot,
                        },
                        address,
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "API listener: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl AsyncRead for SlottedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for SlottedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: std::net::SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        stream
    }

    async fn answered(stream: &mut TcpStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, stream.read(&mut byte)).await,
            Ok(Ok(1))
        )
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_a_slot_is_free() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = tcp.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(PlainListener::with_slots(tcp, 2), router).await });
        let mut first = get(address).await;
        let mut second = get(address).await;
        assert!(answered(&mut first, Duration::from_secs(5)).await);
        assert!(answered(&mut second, Duration::from_secs(5)).await);
        // Both held open (keep-alive): the third waits...
        let mut third = get(address).await;
        assert!(!answered(&mut third, Duration::from_millis(300)).await);
        // ...until one of them closes.
        drop(first);
        assert!(answered(&mut third, Duration::from_secs(5)).await);
    }
}
