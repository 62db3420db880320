//! `virtuos`: the command line and the trusted daemon of virtuos.

mod backend;
mod cli;
mod client;
mod commands;
mod config;
mod daemon;
mod info;
mod network;
mod paths;
mod sys;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Run { domain, command } => {
            let s = commands::settings(&cli, domain)?;
            commands::run::cmd(&s, command)
        }
        Command::Up { domain } => {
            commands::up::cmd(&commands::settings(&cli, domain)?)?;
            Ok(0)
        }
        Command::Down => {
            let s = commands::settings(&cli, &Default::default())?;
            commands::down::cmd(&s.runtime)?;
            Ok(0)
        }
        Command::Status { json } => {
            let s = commands::settings(&cli, &Default::default())?;
            commands::status::cmd(&s.runtime, *json)
        }
        Command::Demo { keep } => commands::demo::cmd(*keep),
        Command::Domain { action } => {
            let s = commands::settings(&cli, &Default::default())?;
            commands::domain::cmd(&s.runtime, action)
        }
        Command::Daemon { domain } => {
            daemon::run(commands::settings(&cli, domain)?)?;
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("virtuos: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
