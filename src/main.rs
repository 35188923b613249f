//! The corecache server binary: command line -> [`Config`] -> [`server::run`].

use clap::Parser;
use corecache::config::Cli;
use corecache::server;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("corecache: {message}");
            return ExitCode::from(2);
        }
    };
    let level = match config.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORECACHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if config.udp_port != 0 {
        tracing::warn!(
            "-U {}: corecache does not serve UDP; the port is ignored",
            config.udp_port
        );
    }
    if config.daemon {
        // Before any thread exists: only the calling thread survives a fork.
        if let Err(e) = nix::unistd::daemon(false, false) {
            eprintln!("corecache: could not run in the background: {e}");
            return ExitCode::FAILURE;
        }
    }
    let pidfile = config.pidfile.clone();
    if let Some(path) = &pidfile {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            eprintln!(
                "corecache: could not write the pid file {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let result = server::run(config);
    if let Some(path) = &pidfile {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("corecache: {message}");
            ExitCode::FAILURE
        }
    }
}
