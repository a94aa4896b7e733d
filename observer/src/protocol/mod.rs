//! Protocol decoding: reassembled streams in, [`BrokerEvent`]s out.
//!
//! - `infer`: which protocol a connection speaks (first bytes, port hints, forced per port).
//! - one module per protocol implementing [`ProtocolDecoder`]: `amqp`, `mqtt`, `nats`, `kafka`.
//! - `pipeline`: the [`crate::capture::StreamSink`] that routes each connection's bytes to its
//!   decoder and hands events to an [`EventSink`].
//!
//! Decoder contract: incremental over in-order bytes of each direction; frames split across
//! calls and many frames per call are normal; "check then parse", with an incomplete frame
//! (wait for more) distinct from a malformed one (count, resync); memory bounded by a per-protocol
//! frame-size limit; after a gap the decoder drops its partial frame and resynchronises at the
//! next frame boundary it can prove, and counts it. Malformed traffic never panics.
pub mod amqp;
pub mod infer;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod pipeline;
#[cfg(test)]
mod testkit;

use crate::{
    capture::Direction,
    event::{BrokerEvent, ConnRef, System},
};

/// Where the bytes handed to a decoder come from.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub conn: &'a ConnRef,
    /// Ingress = client → broker, egress = broker → client.
    pub dir: Direction,
    /// Wall-clock ns of the packet that carried these bytes.
    pub ts_ns: u64,
}

/// Per-decoder health counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Complete frames decoded.
    pub frames: u64,
    /// Bytes consumed (decoded or skipped).
    pub bytes: u64,
    /// Frames that failed to parse (counted, skipped).
    pub malformed: u64,
    /// Times the decoder had to search for a frame boundary (after a gap or a malformed frame).
    pub resyncs: u64,
    /// Bytes skipped while resynchronising.
    pub skipped_bytes: u64,
    /// Frames over the size limit (skipped without buffering).
    pub oversize: u64,
    /// Bytes held for incomplete frames right now.
    pub buffered_bytes: usize,
}

impl DecoderStats {
    pub fn add(&mut self, other: &DecoderStats) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.malformed += other.malformed;
        self.resyncs += other.resyncs;
        self.skipped_bytes += other.skipped_bytes;
        self.oversize += other.oversize;
        self.buffered_bytes += other.buffered_bytes;
    }
}

/// One connection's decoder (both directions; they share state such as channels).
pub trait ProtocolDecoder: Send {
    fn system(&self) -> System;
    /// In-order bytes of one direction.
    fn on_data(&mut self, ctx: &Ctx<'_>, bytes: &[u8], out: &mut dyn FnMut(BrokerEvent));
    /// `len` bytes of `ctx.dir` will never be seen: drop the partial frame, resync.
    fn on_gap(&mut self, ctx: &Ctx<'_>, len: u32, out: &mut dyn FnMut(BrokerEvent));
    /// The direction ended (FIN/RST/close).
    fn on_end(&mut self, ctx: &Ctx<'_>, out: &mut dyn FnMut(BrokerEvent));
    fn stats(&self) -> DecoderStats;
}

/// Consumer of decoded events (trace printer, metrics, tests).
pub trait EventSink {
    fn event(&mut self, event: &BrokerEvent);
}

impl<F: FnMut(&BrokerEvent)> EventSink for F {
    fn event(&mut self, event: &BrokerEvent) {
        self(event)
    }
}
