//! The log on stderr: text for people, or JSON lines for collectors; `RUST_LOG` sets the level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::args::LogFormat;

/// Installs the global subscriber. In JSON, each line is one object: the event's fields at the
/// top level (`message`, `grpc.code`, …) and the fields of the span it happened in under `span`
/// (a CSI call's `volume.id`, `pod.*`, `target`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Colours for a terminal only: a pod's log is a file, read with grep.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}
