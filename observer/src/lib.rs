//! brokerscope's library: everything the `brokerscope` binary does, usable from tests.
//!
//! Data flows one way: `capture` (kernel programs, targets, ring records, connections) →
//! `stream` (TCP reassembly per connection and direction) → sinks (for now the `capture`
//! subcommand's printer in the binary).
pub mod capture;
pub mod stream;
