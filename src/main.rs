//! The `package-cache` binary: parse arguments, set up logging, run the app
//! until SIGTERM or SIGINT; or run one maintenance subcommand and exit.

use clap::Parser;
use package_cache::builds::privhelper;
use package_cache::cli::{Args, Command, InboxCmd};
use package_cache::config::{default_cache_dir, Config};
use package_cache::maintain::{self, Verdict};
use package_cache::{app, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(privhelper::ARG.as_ref()) {
        return privhelper::main();
    }
    let args = Args::parse();
    match &args.command {
        Some(command @ (Command::Build(_) | Command::Inbox(_))) => {
            return client(command, args.cache.clone())
        }
        Some(command) => return maintenance(command, args.cache.clone()),
        None => {}
    }
    let syslog = args.syslog.then_some(args.syslog_socket.as_path());
    let logs_to_stderr = syslog.is_none();
    // Held to the end of main: dropping it flushes the queued log lines.
    let _log_guard = match telemetry::init(args.verbose, args.log_format, syslog) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("package-cache: cannot set up logging: {err}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("package-cache: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("package-cache: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Said once where the operator looks: on stderr, and in syslog
            // too when the log goes there (stderr is often a terminal then).
            if !logs_to_stderr {
                tracing::error!(error = format!("{err:#}"), "cannot start");
            }
            eprintln!("package-cache: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The build client: exit status 0 when built (or submitted), 1 when the
/// build failed, 2 when the request could not be made.
fn client(command: &Command, top_level_cache: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("package-cache: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout();
    let result = runtime.block_on(async {
        match command {
            Command::Build(cmd) => package_cache::client::build(cmd, &mut stdout).await,
            Command::Inbox(InboxCmd::Add {
                file,
                kind,
                runtime,
                cache,
                api,
            }) => {
                let Some(root) = cache
                    .cache
                    .clone()
                    .or(top_level_cache)
                    .or_else(default_cache_dir)
                else {
                    return Err(package_cache::client::Error::Io(
                        "no cache directory: pass --cache DIR".into(),
                    ));
                };
                package_cache::client::inbox_add(file, kind, runtime, &root, api, &mut stdout).await
            }
            _ => unreachable!("only client commands come here"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ package_cache::client::Error::Failed { .. }) => {
            eprintln!("package-cache: {err}");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("package-cache: {err}");
            ExitCode::from(2)
        }
    }
}

/// Exit status: 0 clean, 1 when `verify` found mismatches, 2 on errors.
fn maintenance(command: &Command, top_level_cache: Option<PathBuf>) -> ExitCode {
    // `package-cache --cache DIR stats` works as well as `stats --cache DIR`.
    let Some(root) = command
        .cache()
        .cloned()
        .or(top_level_cache)
        .or_else(default_cache_dir)
    else {
        eprintln!("package-cache: no cache directory: pass --cache DIR");
        return ExitCode::from(2);
    };
    let stdout = std::io::stdout();
    match maintain::run(command, &root, &mut stdout.lock()) {
        Ok(Verdict::Clean) => ExitCode::SUCCESS,
        Ok(Verdict::Failed) => ExitCode::from(1),
        Err(err) => {
            eprintln!("package-cache: {err}");
            ExitCode::from(2)
        }
    }
}
