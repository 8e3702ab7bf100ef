//! A unix datagram socket standing in for systemd's notification socket:
//! a test binds it, starts a `gantry` process with `NOTIFY_SOCKET` pointing
//! at it, and reads what arrives.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A unix datagram socket standing in for systemd's notification socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
    received: Vec<(Instant, String)>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// Reads datagrams for up to `limit`, until one holds `line`; returns
    /// whether it came.
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        if self.count(line) > 0 {
            return true;
        }
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(length) = self.socket.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..length]).to_string();
                let found = message.lines().any(|l| l == line);
                self.received.push((Instant::now(), message));
                if found {
                    return true;
                }
            }
        }
        false
    }

    /// Datagrams received so far holding `line`.
    pub fn count(&self, line: &str) -> usize {
        self.received
            .iter()
            .filter(|(_, message)| message.lines().any(|l| l == line))
            .count()
    }

    pub fn messages(&self) -> Vec<&str> {
        self.received.iter().map(|(_, m)| m.as_str()).collect()
    }
}
