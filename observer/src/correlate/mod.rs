//! Correlation: state that spans events (and connections).
//!
//! - `lag`: Kafka consumer lag from the wire.
pub mod lag;
