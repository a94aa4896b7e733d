//! `brokerscope run`, the daemon users deploy: its configuration, logging and HTTP endpoints.
//!
//! - `config`: [`config::RunArgs`] (the flags, with their environment variables) and
//!   [`config::Config`] (the effective configuration, also the TOML file's schema); precedence
//!   flags > environment > file > defaults; validation with messages that say what to do;
//!   destination rules that template metric label values.
//! - `logging`: `tracing` to stderr, human or JSON lines, filtered by an `EnvFilter` string.
//! - `http`: `/metrics`, `/healthz`, `/readyz`, `/health` on a thread of their own (its own
//!   current-thread tokio runtime), so a busy decode loop never delays a health probe. What they
//!   answer comes from an [`http::HttpState`] the run loop implements.
//!
//! The run loop itself (capture → decode → correlate → metrics) lives with the binary's `run`
//! subcommand and uses these.
pub mod config;
pub mod http;
pub mod logging;

pub use config::{Config, ConfigError, LogFormat, RunArgs};
pub use http::{HttpError, HttpServer, HttpState};
