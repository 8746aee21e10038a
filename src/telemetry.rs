//! Logging set-up: `tracing` to stderr (text or JSON) or to the local syslog,
//! with `-v`/`-vv` picking the level unless `RUST_LOG` says otherwise.

use crate::cli::LogFormat;
use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use tracing_subscriber::EnvFilter;

/// Keeps the log writer thread alive; dropping it flushes what is queued.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global subscriber. Call once, from `main`, and keep the guard
/// until exit. Lines are formatted on the calling thread and written by a
/// writer thread in batches, so a request never waits on stderr or syslog.
pub fn init(verbose: u8, format: LogFormat, syslog: Option<&Path>) -> io::Result<LogGuard> {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,package_cache={default}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if let Some(socket) = syslog {
        let (writer, guard) = tracing_appender::non_blocking(Syslog::connect(socket)?);
        builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(writer)
            .init();
        return Ok(guard);
    }
    let ansi = io::stderr().is_terminal();
    let (writer, guard) =
        tracing_appender::non_blocking(io::BufWriter::with_capacity(64 * 1024, io::stderr()));
    match format {
        LogFormat::Json => builder.json().with_writer(writer).init(),
        LogFormat::Text => builder.with_ansi(ansi).with_writer(writer).init(),
    }
    Ok(guard)
}

/// Writes each log line as one RFC 3164 datagram to the syslog socket, facility daemon.
struct Syslog {
    socket: UnixDatagram,
}

impl Syslog {
    fn connect(path: &Path) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // A syslog that stops reading must cost lines, not a stuck writer.
        socket.set_nonblocking(true)?;
        Ok(Syslog { socket })
    }
}

impl Write for Syslog {
    /// One call is one formatted line (the writer thread writes each whole).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(line);
        // <30> = facility daemon (3) * 8 + severity info (6); the level is in the text.
        let msg = format!(
            "<30>package-cache[{}]: {}",
            std::process::id(),
            text.trim_end()
        );
        // A full or absent syslog drops the line rather than stalling the writer.
        let _ = self.socket.send(msg.as_bytes());
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
