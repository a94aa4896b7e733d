//! Trace and span ids, and the sampling decision, derived from what is on the wire.
//!
//! Two observers (one per node) that see the same message must agree on its trace id, on the
//! id of its `send` span and on whether it is sampled, with no coordination. So every id here
//! is a pure function of the message:
//!
//! - **Trace context carried by the message** (W3C `traceparent`, extracted by the decoders
//!   from AMQP headers, MQTT 5 user properties, NATS headers, Kafka record headers): the trace
//!   id is the traceparent's; the `send` span's parent is the traceparent's span id (remote);
//!   its sampled flag decides sampling.
//! - **Otherwise the message identity** ([`Identity`]):
//!   Kafka: topic, partition, offset (of the first record of the batch);
//!   AMQP: vhost, exchange, routing key as published, body fingerprint (and message id if set);
//!   MQTT: topic, fingerprint (and message id); NATS: subject, fingerprint (and message id).
//!   Its 64-bit FNV-1a hash `h` (fields length-prefixed, so boundaries count) gives the trace
//!   id `mix(h ^ C1) ‖ mix(h ^ C2)` (`mix`: the splitmix64 finaliser) and the ratio sampling
//!   decision (its low 64 bits below `ratio × 2^64`, as `TraceIdRatioBased` does).
//! - **Span ids**: `send` = `derive(h, "send")`, so a `process` span made from a delivery on
//!   one observer names as its parent the `send` span another observer made from the publish.
//!   `deliver` and `process` spans add the consumer's connection and times to their role
//!   (`derive(h, "process", [peer, deliver ts, settle ts])`): unique per delivery, and no one
//!   else needs to compute them.
//!
//! Messages with no identity (a Kafka produce with acks=0 learns no offset; a message without
//! body fingerprint) get an identity local to the observer (connection, time): a trace of
//! their own. Identical bodies sent to the same destination without a message id are the same
//! message as far as the wire can tell: they share a trace and `send` span id.
use opentelemetry::trace::{SpanId, TraceId};

use crate::{correlate::MessageInfo, event::System};

/// The 64-bit hash of a message's identity (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a with length-prefixed fields: stable across processes, versions and machines.
#[derive(Clone, Copy)]
struct Hasher(u64);

impl Hasher {
    fn new() -> Self {
        Self(FNV_OFFSET)
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        for &x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    fn str(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.bytes(&[1]).bytes(s.as_bytes()),
            None => self.bytes(&[0]),
        }
    }

    fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Identity {
    /// The identity the wire gives a message, if it gives one. `offset` overrides the
    /// message's own (a Kafka publish learns its offset from the produce response).
    pub fn of(m: &MessageInfo, offset: Option<i64>) -> Option<Self> {
        let d = m.destination.as_ref()?;
        let h = Hasher::new().str(Some(m.system.as_str()));
        let with_body = |h: Hasher| Some(h.u64(m.fingerprint?).str(m.message_id.as_deref()).0);
        let h = match m.system {
            System::Kafka => {
                let h = h.str(d.topic.as_deref()).u64(d.partition? as u64);
                offset
                    .or(m.offset)
                    .map(|o| h.str(Some("offset")).u64(o as u64).0)
            }
            System::Amqp => with_body(
                h.str(d.vhost.as_deref())
                    .str(Some(d.exchange.as_deref()?))
                    .str(Some(d.routing_key.as_deref().unwrap_or(""))),
            ),
            System::Mqtt => with_body(h.str(Some(d.topic.as_deref()?))),
            System::Nats => with_body(h.str(Some(d.subject.as_deref()?))),
        }?;
        Some(Self(h))
    }

    /// An identity only this observer knows: the connection and time of the event.
    pub fn local(m: &MessageInfo) -> Self {
        Self(
            Hasher::new()
                .str(Some("local"))
                .u64(m.conn.id.0)
                .u64(m.ts_ns)
                .str(Some(m.system.as_str()))
                .0,
        )
    }

    pub fn trace_id(self) -> TraceId {
        let hi = mix(self.0 ^ 0x5452_4143_455f_4849); // "TRACE_HI"
        let lo = mix(self.0 ^ 0x5452_4143_455f_4c4f); // "TRACE_LO"
        let lo = if hi == 0 && lo == 0 { 1 } else { lo };
        TraceId::from(((u128::from(hi)) << 64) | u128::from(lo))
    }

    /// A span id for `role`, refined by `extra` (connection, times) where several spans of
    /// one message share a role.
    pub fn span_id(self, role: &str, extra: &[u64]) -> SpanId {
        let mut h = Hasher::new().u64(self.0).str(Some(role));
        for &x in extra {
            h = h.u64(x);
        }
        let id = mix(h.0);
        SpanId::from(if id == 0 { 1 } else { id })
    }
}

/// A stable hash of a socket address (for span ids that name a connection).
pub(crate) fn addr_hash(a: &std::net::SocketAddr) -> u64 {
    Hasher::new().str(Some(&a.to_string())).0
}

/// The ratio decision: the trace id's low 64 bits below `ratio × 2^64`. Every observer
/// decides the same for the same trace.
pub fn ratio_sampled(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
    // 2^64 × ratio, computed in f64 (53 bits are plenty for a ratio).
    let bound = (ratio * 18_446_744_073_709_551_616.0) as u64;
    low < bound
}

/// A parsed W3C `traceparent` (version 00; later versions read by the same layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let mut parts = s.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let hex = |t: &str, n: usize| {
            (t.len() == n && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u128::from_str_radix(t, 16).ok())
                .flatten()
        };
        let trace_id = hex(trace, 32)?;
        let span_id = hex(span, 16)? as u64;
        let flags = hex(flags, 2)? as u8;
        u8::from_str_radix(version, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id: TraceId::from(trace_id),
            span_id: SpanId::from(span_id),
            sampled: flags & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            tp.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(tp.span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(tp.sampled);
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!tp.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xbf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn ratio_sampling_is_a_function_of_the_trace_id_and_roughly_the_ratio() {
        let ids: Vec<TraceId> = (0..20_000u64).map(|i| Identity(i).trace_id()).collect();
        let kept = ids.iter().filter(|&&t| ratio_sampled(t, 0.25)).count();
        assert!((4_500..5_500).contains(&kept), "{kept}");
        assert!(ids.iter().all(|&t| ratio_sampled(t, 1.0)));
        assert!(!ids.iter().any(|&t| ratio_sampled(t, 0.0)));
        // Monotone: what a lower ratio keeps, a higher one keeps too.
        assert!(
            ids.iter()
                .filter(|&&t| ratio_sampled(t, 0.1))
                .all(|&t| ratio_sampled(t, 0.5))
        );
    }

    #[test]
    fn ids_are_stable_constants() {
        // Pinned: two builds (or two versions) of brokerscope must agree.
        let id = Identity(0x0123_4567_89ab_cdef);
        assert_eq!(id.trace_id(), Identity(0x0123_4567_89ab_cdef).trace_id());
        assert_ne!(id.span_id("send", &[]), id.span_id("process", &[]));
        assert_ne!(id.span_id("process", &[1]), id.span_id("process", &[2]));
        assert_eq!(mix(0), 0);
        assert_eq!(
            format!("{}", id.trace_id()),
            "5c6fc5517ca62e3179476e6d54b09c05"
        );
    }
}
