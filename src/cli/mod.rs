//! The binary's subcommands: the clap types (`trustmount::args`, in the lib so that tests can
//! parse the shipped manifests' flags), the log (`logging.rs`), the daemon's
//! wiring (`serve.rs`), its `/metrics` and `/healthz` endpoints (`exporter/`, the check in
//! `health.rs`) and the local tools that call `bundle/` directly (`render.rs`,
//! `inspect.rs`).

use trustmount::args;
mod exporter;
mod health;
mod inspect;
mod logging;
mod render;
mod serve;

pub use args::{Cli, Command};
pub use inspect::inspect;
pub use logging::init as init_logging;
pub use render::render;
pub use serve::serve;

/// Config errors exit 64 so an operator can tell "fix the flags" from "something broke".
pub enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}
