//! Frames of the operator stream: one long-lived HTTP/2 request whose body
//! carries [`Up`] frames and whose response carries [`Down`] frames, each a
//! length-prefixed value in the connection's [`FrameFormat`].
//!
//! Invariants: a frame is at most [`FRAME_BYTES_MAX`] bytes (both ends
//! refuse larger ones); sequence numbers of `Up::Report` start at 1 and
//! grow by one per message of an operator instance, across connections;
//! the first `Down` frame of every connection is `Resume`; both directions
//! of a connection use the one format the server chose from what the
//! operator offered ([`FRAME_FORMAT_HEADER`]), and a side that offers or
//! answers nothing is of a build from before formats were negotiated
//! (format 1). Messages only ever gain fields, each with a default, so in
//! format 2 a field one side lacks takes its default and a field it does
//! not know is skipped: operators and servers one version apart
//! interoperate.

use super::{byte_queue, FromOperator, ToOperator};
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;

/// Largest frame in either direction (a log batch is the largest message).
pub const FRAME_BYTES_MAX: usize = 16 << 20;

/// One connection between an operator and a server, as two frame
/// channels: over HTTP/2 (`operator::connect`) or in-process (the hub's
/// in-process link).
pub struct Link {
    pub up: mpsc::Sender<Up>,
    pub down: byte_queue::Receiver<Down>,
    /// How the operator answers a `ToOperator::OpenSession` of this link.
    pub sessions: super::session::AttachSession,
    /// The reports the server of this link takes ([`REPORTS_HEADER`]).
    pub reports_level: u8,
}

impl Link {
    /// Whether the server of this link decodes `message` (a server of an
    /// older build would end the connection on a kind it does not know).
    pub fn takes(&self, message: &super::FromOperator) -> bool {
        message.reports_level() <= self.reports_level
    }
}

/// Operator → server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Up {
    /// A message of the executor, numbered. Shared with the operator's
    /// backlog of unacknowledged messages, so sending copies no log lines
    /// (on the wire it is the message itself).
    Report {
        seq: u64,
        message: Arc<FromOperator>,
    },
}

impl Up {
    pub fn report(seq: u64, message: FromOperator) -> Up {
        Up::Report {
            seq,
            message: Arc::new(message),
        }
    }
}

/// Server → operator.
// A frame lives only from decode to dispatch, one at a time: boxing the
// job would cost an allocation per frame and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Down {
    /// First frame: everything up to `acked` is already applied, so the
    /// operator drops it instead of resending.
    Resume { acked: u64 },
    /// Everything up to `seq` is committed (and log lines stored).
    Ack { seq: u64 },
    /// A job for the executor.
    Job(ToOperator),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot encode an operator frame: {0}")]
    Encode(String),
    #[error("malformed operator frame: {0}")]
    Decode(String),
    #[error("operator frame of {0} bytes is larger than the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
}

/// The request header in which an operator offers the newest frame format
/// it speaks, and the response header in which the server names the one
/// the connection uses.
pub const FRAME_FORMAT_HEADER: &str = "gantry-frame-format";

/// The response header in which the server says which operator reports
/// it decodes beyond those every build does ([`REPORTS_LEVEL`]); a server
/// that sends none takes level 0.
pub const REPORTS_HEADER: &str = "gantry-reports";

/// The operator reports this build decodes: 1, also
/// `FromOperator::TaskEvents`.
pub const REPORTS_LEVEL: u8 = 1;

/// How the frames of one connection encode their values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFormat {
    /// 1: positional bincode, what builds from before format negotiation
    /// speak; a field added to a message breaks it.
    Bincode,
    /// 2: MessagePack with field and variant names: a missing field takes
    /// its default, an unknown one is skipped.
    Named,
}

impl FrameFormat {
    /// The newest format this build speaks (what an operator offers).
    pub const NEWEST: FrameFormat = FrameFormat::Named;

    pub fn number(self) -> u8 {
        match self {
            FrameFormat::Bincode => 1,
            FrameFormat::Named => 2,
        }
    }

    /// The format for a peer's header: the newest this build speaks at or
    /// below the one offered; format 1 when there is no header (an older
    /// build) or it is not a number.
    pub fn from_header(value: Option<&str>) -> FrameFormat {
        match value.and_then(|text| text.trim().parse::<u32>().ok()) {
            Some(offered) if offered >= 2 => FrameFormat::Named,
            _ => FrameFormat::Bincode,
        }
    }
}

/// The length-delimited codec both ends frame with.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Appends one frame, its 4-byte big-endian length prefix first, to
/// `buffer`: the value is
/// encoded in place, not copied in afterwards. On error `buffer` is as it was.
pub fn encode_frame_into<T: Serialize>(
    value: &T,
    format: FrameFormat,
    buffer: &mut BytesMut,
) -> Result<(), WireError> {
    let start = buffer.len();
    buffer.put_u32(0);
    let mut writer = (&mut *buffer).writer();
    let encoded = match format {
        FrameFormat::Bincode => {
            bincode::serde::encode_into_std_write(value, &mut writer, bincode::config::standard())
                .map(drop)
                .map_err(|error| error.to_string())
        }
        FrameFormat::Named => {
            rmp_serde::encode::write_named(&mut writer, value).map_err(|error| error.to_string())
        }
    };
    let body = buffer.len() - start - 4;
    let result = match encoded {
        Err(error) => Err(WireError::Encode(error)),
        Ok(_) if body > FRAME_BYTES_MAX => Err(WireError::TooLarge(body)),
        Ok(_) => {
            // Bounded by FRAME_BYTES_MAX above, so it fits in u32.
            buffer[start..start + 4].copy_from_slice(&(body as u32).to_be_bytes());
            return Ok(());
        }
    };
    buffer.truncate(start);
    result
}

/// Frames joined into one body chunk, at most.
const FRAMES_PER_CHUNK_MAX: usize = 512;

/// Encodes a stream of frames as body chunks, joining the frames that are
/// ready at once into one chunk: a backlog of small frames then travels as
/// a few large HTTP/2 DATA frames instead of thousands of tiny ones (which
/// the peer's HTTP/2 stack rightly treats as abuse).
pub fn body_chunks<T: Serialize>(
    frames: impl futures::Stream<Item = T>,
    format: FrameFormat,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    use futures::StreamExt;
    frames.ready_chunks(FRAMES_PER_CHUNK_MAX).map(move |batch| {
        let mut chunk = BytesMut::new();
        for frame in &batch {
            encode_frame_into(frame, format, &mut chunk).map_err(std::io::Error::other)?;
        }
        Ok(chunk.freeze())
    })
}

/// Decodes the body of one frame (without its length prefix).
pub fn decode_frame<T: DeserializeOwned>(body: &[u8], format: FrameFormat) -> Result<T, WireError> {
    match format {
        FrameFormat::Bincode => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(value, _)| value)
                .map_err(|error| WireError::Decode(error.to_string()))
        }
        FrameFormat::Named => {
            rmp_serde::from_slice(body).map_err(|error| WireError::Decode(error.to_string()))
        }
    }
}

/// Decodes frames from `reader` into `frames` until the reader ends, a
/// frame is malformed, or the receiver goes away; returns why it stopped.
/// Each frame takes its encoded size from the queue's byte budget, so the
/// reader stops (and the peer's flow control holds the sender back) while
/// the decoded frames waiting hold that many bytes.
pub async fn pump_frames<T: DeserializeOwned>(
    reader: impl tokio::io::AsyncRead + Unpin,
    format: FrameFormat,
    frames: byte_queue::Sender<T>,
) -> String {
    use futures::StreamExt;
    let mut reader = tokio_util::codec::FramedRead::new(reader, codec());
    while let Some(frame) = reader.next().await {
        let decoded = frame.map_err(|error| error.to_string()).and_then(|bytes| {
            decode_frame::<T>(&bytes, format)
                .map(|frame| (frame, bytes.len()))
                .map_err(|error| error.to_string())
        });
        match decoded {
            Ok((frame, bytes)) => {
                if frames.send(frame, bytes).await.is_err() {
                    return "the receiver closed".to_string();
                }
            }
            Err(error) => return error,
        }
    }
    "the stream ended".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_util::codec::FramedRead;

    #[tokio::test]
    async fn frames_round_trip_through_the_codec() {
        let mut joined = BytesMut::new();
        encode_frame_into(
            &Down::Resume { acked: 7 },
            FrameFormat::Bincode,
            &mut joined,
        )
        .unwrap();
        encode_frame_into(&Down::Ack { seq: 9 }, FrameFormat::Named, &mut joined).unwrap();
        let mut reader = FramedRead::new(&joined[..], codec());
        let first: Down =
            decode_frame(&reader.next().await.unwrap().unwrap(), FrameFormat::Bincode).unwrap();
        let second: Down =
            decode_frame(&reader.next().await.unwrap().unwrap(), FrameFormat::Named).unwrap();
        assert!(matches!(first, Down::Resume { acked: 7 }));
        assert!(matches!(second, Down::Ack { seq: 9 }));
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_is_an_error_not_an_allocation() {
        let mut bytes = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        bytes.extend([0u8; 16]);
        let mut reader = FramedRead::new(bytes.as_slice(), codec());
        assert!(reader.next().await.unwrap().is_err());
    }

    #[test]
    fn an_oversized_frame_is_refused_and_leaves_the_buffer_as_it_was() {
        let mut buffer = BytesMut::new();
        encode_frame_into(&Down::Ack { seq: 1 }, FrameFormat::Named, &mut buffer).unwrap();
        let before = buffer.clone();
        let huge = vec![7u8; FRAME_BYTES_MAX + 1];
        assert!(matches!(
            encode_frame_into(&huge, FrameFormat::Named, &mut buffer),
            Err(WireError::TooLarge(_))
        ));
        assert_eq!(buffer, before);
    }

    #[tokio::test]
    async fn frames_joined_into_body_chunks_decode_one_by_one() {
        let frames = futures::stream::iter(
            (1..=3).map(|seq| Up::report(seq, FromOperator::JobDone { job_id: seq * 10 })),
        );
        let chunks: Vec<Bytes> = body_chunks(frames, FrameFormat::Named)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        let joined = chunks.concat();
        let mut reader = FramedRead::new(joined.as_slice(), codec());
        for expected in 1..=3u64 {
            let Up::Report { seq, message } =
                decode_frame(&reader.next().await.unwrap().unwrap(), FrameFormat::Named).unwrap();
            assert_eq!(seq, expected);
            assert!(
                matches!(*message, FromOperator::JobDone { job_id } if job_id == expected * 10)
            );
        }
        assert!(reader.next().await.is_none());
    }

    #[test]
    fn the_format_is_the_newest_at_or_below_the_offer() {
        assert_eq!(FrameFormat::from_header(None), FrameFormat::Bincode);
        assert_eq!(FrameFormat::from_header(Some("1")), FrameFormat::Bincode);
        assert_eq!(FrameFormat::from_header(Some("2")), FrameFormat::Named);
        // A newer operator's offer: this build's newest.
        assert_eq!(FrameFormat::from_header(Some("7")), FrameFormat::Named);
        assert_eq!(FrameFormat::from_header(Some("two")), FrameFormat::Bincode);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for format in [FrameFormat::Bincode, FrameFormat::Named] {
            assert!(matches!(
                decode_frame::<Down>(&[0xff, 0xff, 0xff], format),
                Err(WireError::Decode(_))
            ));
        }
    }
}
