//! Synthesized OpenTelemetry messaging spans: what brokerscope saw, as traces.
//!
//! - `ids`: trace and span ids derived from the wire (traceparent or message identity), so
//!   observers on different nodes agree without talking; the deterministic sampling decision;
//! - `synth`: [`Synthesizer`], events + correlator observations → [`Span`]s (`send`,
//!   `deliver`, `process`), attributes per the messaging semantic conventions;
//! - `export`: [`SpanPipeline`], a synthesizer in front of a bounded queue and an OTLP
//!   exporter (gRPC or HTTP/protobuf) on its own thread; [`SpanConfig`], [`SpanStats`].
//!
//! Use: build the correlator with `keeping_message_info(true)`, then per event
//!
//! ```text
//! let awaits = correlator.observe(e, &mut |o| {
//!     recorder.observation(&o);
//!     spans.observe(&o, e);
//! });
//! spans.observe_event(e, awaits);
//! ```
pub mod export;
pub mod ids;
pub mod synth;

pub use export::{BrokerLookup, OtlpProtocol, ResourceInfo, SpanConfig, SpanPipeline, SpanStats};
pub use synth::{Sampling, Span, SynthStats, Synthesizer};

/// Why the span pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpanError {
    #[error("span export configuration: {0}")]
    Config(String),
    #[error("building the OTLP span exporter: {0}")]
    Exporter(String),
    #[error("starting the span export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("starting the span export thread: {0}")]
    Thread(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
