//! Log setup: tracing-subscriber, text by default or JSON, filtered by
//! `RUST_LOG` (default `info`). Access-log lines use the target
//! `roost::access`.
//!
//! Pingora logs through the `log` crate; its records are bridged into
//! tracing by `PingoraLog`, which first demotes the ones that are normal
//! in steady state to debug and counts them ([`crate::metrics::Benign`]),
//! so an ERROR line always means an operator must act.

use std::io::IsTerminal;

use tracing_log::AsLog;
use tracing_subscriber::EnvFilter;

use crate::metrics::{self, Benign};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Install the global subscriber and the bridge for Pingora's `log`
/// records; call once, before the server starts.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()),
        LogFormat::Json => {
            tracing::subscriber::set_global_default(builder.json().flatten_event(true).finish())
        }
    };
    if let Err(e) = installed {
        eprintln!("logging already initialised: {e}");
        return;
    }
    if log::set_boxed_logger(Box::new(PingoraLog)).is_ok() {
        log::set_max_level(tracing::level_filters::LevelFilter::current().as_log());
    }
}

/// Pingora's `log` records, into tracing; the benign ones demoted.
struct PingoraLog;

impl log::Log for PingoraLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(event) = benign(record) else {
            forward(record);
            return;
        };
        metrics::count(event);
        if log::Level::Debug <= log::max_level() {
            forward(
                &log::Record::builder()
                    .args(*record.args())
                    .level(log::Level::Debug)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        }
    }

    fn flush(&self) {}
}

/// Hand a record to tracing.
fn forward(record: &log::Record<'_>) {
    // Only fails when no subscriber is installed, which `init` did first.
    let _ = tracing_log::format_trace(record);
}

/// The benign event a Pingora error record reports, if it is one:
///
/// - a pool miss (`pingora_core::connectors`: "failed to acquire reusable
///   stream");
/// - a client connection that broke or timed out before its request header
///   was read (`pingora_proxy`: "Fail to proxy: ..., downstream session
///   type: ...", logged for every such connection).
fn benign(record: &log::Record<'_>) -> Option<Benign> {
    if record.level() != log::Level::Error {
        return None;
    }
    let target = record.target();
    if target.starts_with("pingora_core::connectors") {
        let is_pool_miss = record.args().as_str() == Some("failed to acquire reusable stream");
        return is_pool_miss.then_some(Benign::PoolMiss);
    }
    if target.starts_with("pingora_proxy") {
        let message = record.args().to_string();
        let header_unread =
            message.starts_with("Fail to proxy: ") && message.contains("downstream session type");
        return header_unread.then_some(Benign::ClientDisconnect);
    }
    None
}
