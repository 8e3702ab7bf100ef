//! The frames of an exec session: a command run inside a running task,
//! its standard streams, window size and exit status carried over one
//! session stream (see `session`), which the control plane splices
//! without reading.
//!
//! A frame is one kind byte, a big-endian `u32` length and that many
//! bytes. The user's side sends [`ExecFrame::Stdin`], [`ExecFrame::StdinClosed`]
//! and [`ExecFrame::Resize`]; the task's side sends [`ExecFrame::Stdout`],
//! [`ExecFrame::Stderr`] (never with a terminal: a terminal has one
//! stream), then exactly one [`ExecFrame::Exit`] or [`ExecFrame::Failed`]
//! last.
//!
//! Invariants: a frame's payload is at most [`EXEC_FRAME_BYTES_MAX`]; an
//! unknown kind or a malformed payload is an error, never skipped, so both
//! sides agree on every byte.

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// The `Upgrade` protocol token of a user's exec request.
pub const EXEC_PROTOCOL: &str = "gantry-exec";

/// Largest payload of one frame.
pub const EXEC_FRAME_BYTES_MAX: usize = 1 << 20;

/// What an exec session runs (the operator's side of
/// `SessionKind::Exec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The command and its arguments; found on the task's `PATH`.
    pub argv: Vec<String>,
    /// With a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// The terminal's first size, `(columns, rows)`.
    pub size: Option<(u16, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecFrame {
    Stdin(Vec<u8>),
    StdinClosed,
    /// The terminal's new size: columns, rows.
    Resize {
        columns: u16,
        rows: u16,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended: its exit code (128 + N when signal N ended it).
    Exit(i32),
    /// The command could not run; why, for the user.
    Failed(String),
}

impl ExecFrame {
    fn kind(&self) -> u8 {
        match self {
            ExecFrame::Stdin(_) => 0,
            ExecFrame::StdinClosed => 1,
            ExecFrame::Resize { .. } => 2,
            ExecFrame::Stdout(_) => 10,
            ExecFrame::Stderr(_) => 11,
            ExecFrame::Exit(_) => 12,
            ExecFrame::Failed(_) => 13,
        }
    }
}

/// Encodes and decodes [`ExecFrame`]s on a byte stream.
#[derive(Default)]
pub struct ExecCodec;

#[derive(Debug, thiserror::Error)]
pub enum ExecFrameError {
    #[error("exec frame of {0} bytes is larger than the limit of {EXEC_FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("unknown exec frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed exec frame of kind {0}")]
    Malformed(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const HEADER_BYTES: usize = 5;

impl Decoder for ExecCodec {
    type Item = ExecFrame;
    type Error = ExecFrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ExecFrame>, ExecFrameError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let kind = src[0];
        let length = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
        if length > EXEC_FRAME_BYTES_MAX {
            return Err(ExecFrameError::TooLarge(length));
        }
        if src.len() < HEADER_BYTES + length {
            src.reserve(HEADER_BYTES + length - src.len());
            return Ok(None);
        }
        src.advance(HEADER_BYTES);
        let payload = src.split_to(length);
        let malformed = || ExecFrameError::Malformed(kind);
        let frame = match kind {
            0 => ExecFrame::Stdin(payload.to_vec()),
            1 if payload.is_empty() => ExecFrame::StdinClosed,
            2 if payload.len() == 4 => ExecFrame::Resize {
                columns: u16::from_be_bytes([payload[0], payload[1]]),
                rows: u16::from_be_bytes([payload[2], payload[3]]),
            },
            10 => ExecFrame::Stdout(payload.to_vec()),
            11 => ExecFrame::Stderr(payload.to_vec()),
            12 if payload.len() == 4 => ExecFrame::Exit(i32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ])),
            13 => ExecFrame::Failed(String::from_utf8_lossy(&payload).into_owned()),
            1 | 2 | 12 => return Err(malformed()),
            other => return Err(ExecFrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

impl Encoder<ExecFrame> for ExecCodec {
    type Error = ExecFrameError;

    fn encode(&mut self, frame: ExecFrame, dst: &mut BytesMut) -> Result<(), ExecFrameError> {
        let kind = frame.kind();
        let payload: Vec<u8> = match frame {
            ExecFrame::Stdin(bytes) | ExecFrame::Stdout(bytes) | ExecFrame::Stderr(bytes) => bytes,
            ExecFrame::StdinClosed => Vec::new(),
            ExecFrame::Resize { columns, rows } => {
                let mut bytes = columns.to_be_bytes().to_vec();
                bytes.extend_from_slice(&rows.to_be_bytes());
                bytes
            }
            ExecFrame::Exit(code) => code.to_be_bytes().to_vec(),
            ExecFrame::Failed(reason) => reason.into_bytes(),
        };
        if payload.len() > EXEC_FRAME_BYTES_MAX {
            return Err(ExecFrameError::TooLarge(payload.len()));
        }
        dst.reserve(HEADER_BYTES + payload.len());
        dst.put_u8(kind);
        dst.put_u32(payload.len() as u32);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

/// Largest read of a command's output sent as one frame.
pub const OUTPUT_CHUNK_BYTES: usize = 32 << 10;

/// Reads up to [`OUTPUT_CHUNK_BYTES`] of a command's output stream;
/// `None` once it ended (or failed), after which the stream is `None`.
pub async fn read_output(
    stream: &mut Option<impl tokio::io::AsyncRead + Unpin>,
) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let reader = stream.as_mut()?;
    let mut buffer = vec![0; OUTPUT_CHUNK_BYTES];
    match reader.read(&mut buffer).await {
        Ok(0) | Err(_) => {
            *stream = None;
            None
        }
        Ok(n) => {
            buffer.truncate(n);
            Some(buffer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips_and_bad_ones_are_errors() {
        let frames = [
            ExecFrame::Stdin(b"ls\n".to_vec()),
            ExecFrame::StdinClosed,
            ExecFrame::Resize {
                columns: 120,
                rows: 40,
            },
            ExecFrame::Stdout(b"a".to_vec()),
            ExecFrame::Stderr(Vec::new()),
            ExecFrame::Exit(-1),
            ExecFrame::Failed("no such task".into()),
        ];
        let mut buffer = BytesMut::new();
        for frame in frames.clone() {
            ExecCodec.encode(frame, &mut buffer).unwrap();
        }
        // Byte by byte, as a stream may deliver them.
        let mut stream = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in buffer {
            stream.put_u8(byte);
            while let Some(frame) = ExecCodec.decode(&mut stream).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        for bad in [
            &[9u8, 0, 0, 0, 0][..],
            &[2, 0, 0, 0, 1, 7],
            &[0, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(
                ExecCodec.decode(&mut BytesMut::from(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
