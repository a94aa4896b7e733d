//! Which protocol a connection speaks.
//!
//! Decided from the first bytes of the connection (AMQP protocol header, MQTT CONNECT, NATS
//! INFO/CONNECT, Kafka request shape). Port hints only break ties: they decide for connections
//! joined mid-stream, whose first bytes are not a handshake. A port can be forced to a protocol
//! (`--protocol 5673=amqp`), which overrides everything.
use std::collections::HashMap;

use crate::event::System;

/// Bytes kept per connection while undecided; more than any handshake signature needs.
pub const SNIFF_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Protocol(System),
    /// Not a protocol we know; the connection is not decoded.
    Unknown,
    /// Not enough bytes yet.
    NeedMore,
}

#[derive(Clone, Debug)]
pub struct Inference {
    forced: HashMap<u16, System>,
    hints: HashMap<u16, System>,
}

impl Default for Inference {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}

impl Inference {
    pub fn new(forced: HashMap<u16, System>) -> Self {
        let hints = [
            (5672, System::Amqp),
            (5671, System::Amqp),
            (1883, System::Mqtt),
            (8883, System::Mqtt),
            (4222, System::Nats),
            (9092, System::Kafka),
        ]
        .into_iter()
        .collect();
        Self { forced, hints }
    }

    pub fn forced(&self, port: u16) -> Option<System> {
        self.forced.get(&port).copied()
    }

    /// `ingress`: first bytes the client sent; `egress`: first bytes the broker sent;
    /// `mid_stream`: the capture did not see the connection start (or lost its first bytes).
    pub fn decide(
        &self,
        local_port: u16,
        ingress: &[u8],
        egress: &[u8],
        mid_stream: bool,
    ) -> Verdict {
        if let Some(system) = self.forced(local_port) {
            return Verdict::Protocol(system);
        }
        if mid_stream {
            // Not a handshake: the port is all there is (decoders resync to frame boundaries).
            return match self.hints.get(&local_port) {
                Some(&system) => Verdict::Protocol(system),
                None => Verdict::Unknown,
            };
        }
        let mut undecided = false;
        let client_first: [(System, Signature); 3] = [
            (System::Amqp, amqp),
            (System::Mqtt, mqtt),
            (System::Kafka, kafka),
        ];
        for (system, check) in client_first {
            match check(ingress) {
                Some(true) => return Verdict::Protocol(system),
                Some(false) => {}
                None => undecided = true,
            }
        }
        match super::nats::looks_like_nats(ingress, egress) {
            Some(true) => return Verdict::Protocol(System::Nats),
            Some(false) => {}
            None => undecided = true,
        }
        if undecided && ingress.len() + egress.len() < SNIFF_BYTES {
            return Verdict::NeedMore;
        }
        Verdict::Unknown
    }
}

/// Does a connection's first bytes match a protocol's handshake? None: too few bytes to tell.
type Signature = fn(&[u8]) -> Option<bool>;

fn amqp(bytes: &[u8]) -> Option<bool> {
    super::amqp::looks_like_amqp(bytes)
}

fn mqtt(bytes: &[u8]) -> Option<bool> {
    super::mqtt::looks_like_mqtt(bytes)
}

fn kafka(bytes: &[u8]) -> Option<bool> {
    super::kafka::looks_like_kafka(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(ingress: &[u8], egress: &[u8]) -> Verdict {
        Inference::default().decide(40000, ingress, egress, false)
    }

    #[test]
    fn recognises_handshakes() {
        assert_eq!(
            decide(b"AMQP\0\0\x09\x01", b""),
            Verdict::Protocol(System::Amqp)
        );
        assert_eq!(
            decide(b"\x10\x14\0\x04MQTT\x04\x02\0\x3c", b""),
            Verdict::Protocol(System::Mqtt)
        );
        assert_eq!(
            decide(b"\x10\x10\0\x06MQIsdp\x03", b""),
            Verdict::Protocol(System::Mqtt)
        );
        assert_eq!(
            decide(b"", b"INFO {\"server_id\":1}"),
            Verdict::Protocol(System::Nats)
        );
        assert_eq!(
            decide(b"CONNECT {\"verbose\":false}", b""),
            Verdict::Protocol(System::Nats)
        );
        let kafka = b"\0\0\0\x20\0\x12\0\x03\0\0\0\x01\0\x07rdkafka";
        assert_eq!(decide(kafka, b""), Verdict::Protocol(System::Kafka));
    }

    #[test]
    fn waits_for_enough_bytes_then_gives_up() {
        assert_eq!(decide(b"AM", b""), Verdict::NeedMore);
        assert_eq!(decide(b"\x10", b""), Verdict::NeedMore);
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
            Verdict::Unknown
        );
        assert_eq!(decide(&[0xff; 64], b""), Verdict::Unknown);
    }

    #[test]
    fn ports_decide_mid_stream_and_forced_ports_win() {
        let inf = Inference::default();
        assert_eq!(
            inf.decide(5672, b"\x01\0\x01", b"", true),
            Verdict::Protocol(System::Amqp)
        );
        assert_eq!(
            inf.decide(40000, b"\x01\0\x01", b"", true),
            Verdict::Unknown
        );
        let forced = Inference::new([(15672, System::Amqp)].into_iter().collect());
        assert_eq!(
            forced.decide(15672, b"", b"", false),
            Verdict::Protocol(System::Amqp)
        );
        // A handshake on a hinted port is still read from its bytes.
        assert_eq!(
            inf.decide(5672, b"\x10\x14\0\x04MQTT", b"", false),
            Verdict::Protocol(System::Mqtt)
        );
    }
}
