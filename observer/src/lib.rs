//! brokerscope's library: everything the `brokerscope` binary does, usable from tests.
//!
//! Data flows one way: `capture` (kernel programs, targets, ring records, connections) →
//! `stream` (TCP reassembly per connection and direction) → `protocol` (inference and one
//! decoder per protocol) → `event` (BrokerEvent, one vocabulary) → sinks (`render` for
//! `trace`, `metrics`, `live` for `latency`, spans and audit). `k8s` adds Kubernetes pod metadata about the brokers. `daemon` holds what `brokerscope run` needs around
//! that flow: configuration, logging, the HTTP endpoints.
pub mod audit;
pub mod capture;
pub mod correlate;
pub mod daemon;
pub mod event;
pub mod k8s;
pub mod live;
pub mod metrics;
pub mod protocol;
pub mod render;
pub mod spans;
pub mod stream;

/// Hash maps on the per-event path: foldhash instead of SipHash (several times faster on the
/// small keys used there), seeded per process so traffic cannot choose collisions. Its
/// `quality` variant: with `fast`, integer keys such as (dest, fingerprint) spread badly over
/// the table's tag bits and lookups compared several keys each (events bench 12% slower).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
pub(crate) type FastState = foldhash::quality::RandomState;
