//! Logging set-up: `tracing` to stderr (text or JSON) or to the local syslog,
//! with `-v`/`-vv` picking the level unless `RUST_LOG` says otherwise.

use crate::cli::LogFormat;
use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(verbose: u8, format: LogFormat, syslog: Option<&Path>) -> io::Result<()> {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,package_cache={default}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if let Some(socket) = syslog {
        let writer = Syslog::connect(socket)?;
        builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(writer)
            .init();
    } else {
        match format {
            LogFormat::Json => builder.json().with_writer(io::stderr).init(),
            LogFormat::Text => builder
                .with_ansi(io::stderr().is_terminal())
                .with_writer(io::stderr)
                .init(),
        }
    }
    Ok(())
}

/// Writes each log line as one RFC 3164 datagram to the syslog socket, facility daemon.
struct Syslog {
    socket: Mutex<UnixDatagram>,
}

impl Syslog {
    fn connect(path: &Path) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Syslog {
            socket: Mutex::new(socket),
        })
    }
}

/// One buffered line; sent on drop.
struct SyslogLine<'a> {
    syslog: &'a Syslog,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf);
        let line = line.trim_end();
        // <30> = facility daemon (3) * 8 + severity info (6); the level is in the text.
        let msg = format!("<30>package-cache[{}]: {line}", std::process::id());
        if let Ok(socket) = self.syslog.socket.lock() {
            let _ = socket.send(msg.as_bytes());
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            syslog: self,
            buf: Vec::new(),
        }
    }
}
