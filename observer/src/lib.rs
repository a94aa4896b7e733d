//! brokerscope's library: everything the `brokerscope` binary does, usable from tests.
//!
//! Data flows one way: `capture` (kernel programs, targets, ring records, connections) →
//! `stream` (TCP reassembly per connection and direction) → `protocol` (inference and one
//! decoder per protocol) → `event` (BrokerEvent, one vocabulary) → sinks (`render` for
//! `trace`, later metrics, spans and audit).
pub mod capture;
pub mod correlate;
pub mod event;
pub mod metrics;
pub mod protocol;
pub mod render;
pub mod stream;
