//! UDP port-forward over a session's byte stream: each datagram is a frame
//! of its flow (the user's local UDP address, as a number), its length and
//! its bytes, both ways. The task side keeps one UDP socket per flow, so
//! the task's replies reach the local client that sent to it, as OSMO's
//! router protocol does with its address-prefixed messages.
//!
//! Invariants: a frame is at most [`DATAGRAM_BYTES_MAX`] of payload (the
//! largest UDP datagram over IPv4); a longer length is an error, never an
//! allocation; an IPv4 address and port map to a flow and back unchanged.

use bytes::{Buf, BufMut, BytesMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use tokio_util::codec::{Decoder, Encoder};

/// Largest UDP payload over IPv4.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// Flow (8 bytes) and length (2 bytes).
const HEADER_BYTES: usize = 10;

/// One datagram of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub flow: u64,
    pub payload: Vec<u8>,
}

/// The flow of a local IPv4 client: its address and port.
pub fn flow_of(address: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*address.ip())) << 16) | u64::from(address.port())
}

/// The IPv4 client a flow names.
pub fn address_of(flow: u64) -> SocketAddrV4 {
    let ip = Ipv4Addr::from(((flow >> 16) & 0xffff_ffff) as u32);
    SocketAddrV4::new(ip, (flow & 0xffff) as u16)
}

#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram of {0} bytes is larger than UDP allows ({DATAGRAM_BYTES_MAX})")]
    TooLarge(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Datagram`]s on a byte stream.
#[derive(Debug, Default)]
pub struct DatagramCodec;

impl Decoder for DatagramCodec {
    type Item = Datagram;
    type Error = DatagramError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Datagram>, DatagramError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let length = usize::from(u16::from_be_bytes([src[8], src[9]]));
        if length > DATAGRAM_BYTES_MAX {
            return Err(DatagramError::TooLarge(length));
        }
        if src.len() < HEADER_BYTES + length {
            src.reserve(HEADER_BYTES + length - src.len());
            return Ok(None);
        }
        let flow = src.get_u64();
        src.advance(2);
        let payload = src.split_to(length).to_vec();
        Ok(Some(Datagram { flow, payload }))
    }
}

impl Encoder<Datagram> for DatagramCodec {
    type Error = DatagramError;

    fn encode(&mut self, datagram: Datagram, dst: &mut BytesMut) -> Result<(), DatagramError> {
        let length = datagram.payload.len();
        let length16 = u16::try_from(length)
            .ok()
            .filter(|_| length <= DATAGRAM_BYTES_MAX)
            .ok_or(DatagramError::TooLarge(length))?;
        dst.reserve(HEADER_BYTES + length);
        dst.put_u64(datagram.flow);
        dst.put_u16(length16);
        dst.put_slice(&datagram.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_whole_and_in_pieces() {
        let mut codec = DatagramCodec;
        let mut bytes = BytesMut::new();
        let sent = [
            Datagram {
                flow: 7,
                payload: b"hello".to_vec(),
            },
            Datagram {
                flow: u64::MAX,
                payload: Vec::new(),
            },
            Datagram {
                flow: 1,
                payload: vec![9; DATAGRAM_BYTES_MAX],
            },
        ];
        for datagram in sent.clone() {
            codec.encode(datagram, &mut bytes).expect("encode");
        }
        let mut received = Vec::new();
        let mut partial = BytesMut::new();
        for byte in bytes {
            partial.put_u8(byte);
            while let Some(datagram) = codec.decode(&mut partial).expect("decode") {
                received.push(datagram);
            }
        }
        assert_eq!(received, sent);
    }

    #[test]
    fn an_oversized_length_is_refused_before_anything_is_read() {
        let mut codec = DatagramCodec;
        let mut bytes = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut bytes),
            Err(DatagramError::TooLarge(65_535))
        ));
        let too_big = Datagram {
            flow: 1,
            payload: vec![0; DATAGRAM_BYTES_MAX + 1],
        };
        assert!(codec.encode(too_big, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn an_address_is_its_flow_and_back() {
        let address = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 54_321);
        assert_eq!(address_of(flow_of(address)), address);
    }
}
