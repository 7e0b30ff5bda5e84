//! `trustmount`: the CSI daemon (`serve`), a local renderer (`render`) and a bundle reader
//! (`inspect`). The whole configuration is parsed and checked before anything is bound or
//! mounted; bad configuration exits 64 (EX_USAGE).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, Failure};

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let Cli { command, log_format } = match Cli::try_parse() {
        Ok(parsed) => parsed,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    cli::init_logging(log_format);
    let result = match command {
        Command::Serve(args) => cli::serve(args),
        Command::Render(args) => cli::render(args),
        Command::Inspect(args) => cli::inspect(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(error)) => {
            eprintln!("trustmount: configuration error: {error:#}");
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("trustmount: {error:#}");
            ExitCode::FAILURE
        }
    }
}
