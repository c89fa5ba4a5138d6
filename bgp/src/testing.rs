//! Helpers shared by the crate's unit tests: a path with a given AS path, and the far end of
//! a session played by a test over an in-memory pipe.

use std::net::Ipv4Addr;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::packet::{
    AsPath, AsSegment, Message, Negotiated, Origin, PathAttributes, SegmentKind, message_length,
};

/// IGP-origin attributes with `asns` as one AS_SEQUENCE (none when empty) and `next_hop`.
pub(crate) fn path_through(asns: &[u32], next_hop: Ipv4Addr) -> PathAttributes {
    let segments = if asns.is_empty() {
        Vec::new()
    } else {
        vec![AsSegment {
            kind: SegmentKind::Sequence,
            asns: asns.to_vec(),
        }]
    };
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath { segments }),
        next_hop: Some(next_hop),
        ..PathAttributes::default()
    }
}

/// The far end of one BGP connection, played by the test: it writes encoded messages and
/// reads framed ones.
pub(crate) struct RawPeer {
    /// The raw pipe, for tests that write bytes no encoder would.
    pub(crate) stream: DuplexStream,
    buffer: Vec<u8>,
}

impl RawPeer {
    pub(crate) fn new(stream: DuplexStream) -> RawPeer {
        RawPeer {
            stream,
            buffer: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, message: &Message, negotiated: Negotiated) {
        let mut bytes = Vec::new();
        message
            .encode(&negotiated, &mut bytes)
            .expect("test messages encode");
        self.stream.write_all(&bytes).await.expect("pipe open");
    }

    /// The next message from the other end, which must be valid.
    pub(crate) async fn receive(&mut self) -> Message {
        loop {
            if let Ok(Some(length)) = message_length(&self.buffer)
                && self.buffer.len() >= length
            {
                let frame: Vec<u8> = self.buffer.drain(..length).collect();
                return Message::decode(&frame, &Negotiated::default())
                    .expect("the code under test sends valid messages")
                    .message;
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .expect("pipe open");
            assert!(read > 0, "the other end closed the connection");
        }
    }

    /// Skips KEEPALIVEs, returns the next other message.
    pub(crate) async fn receive_not_keepalive(&mut self) -> Message {
        loop {
            let message = self.receive().await;
            if message != Message::Keepalive {
                return message;
            }
        }
    }
}
