//! The `trainer` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Loss experiments, reference cases and benchmarks for the loss workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every reference case (*.json, format in shared/cases/FORMAT.md) in the given folders.
    Cases {
        /// Folders holding case files.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cases { dirs } => match trainer::cases::run_dirs(&dirs, &candle_core::Device::Cpu) {
            Ok(report) => {
                for (id, msg) in &report.failed {
                    println!("FAIL {id}: {msg}");
                }
                println!("{}", report.summary());
                if report.failed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("trainer cases: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
