//! nginx in its two roles: the upstream (static files, `/slow/` throttled with `limit_rate`,
//! the only access log) and the `proxy_cache` reference that package-cache is measured against.
//! Each runs as its own master (`daemon off`) in its own prefix dir, so CPU is counted apart.

use crate::procs::{effective_uid, Server};
use anyhow::{Context, Result};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Options shared by both configs: user, workers, pid, logs, temp paths.
const HEAD: &str = r#"@USER@worker_processes @WORKERS@;
daemon off;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events { worker_connections 4096; }
"#;

const TEMP_PATHS: &str = r#"    client_body_temp_path @PREFIX@/tmp/body;
    proxy_temp_path @PREFIX@/tmp/proxy;
    fastcgi_temp_path @PREFIX@/tmp/fastcgi;
    uwsgi_temp_path @PREFIX@/tmp/uwsgi;
    scgi_temp_path @PREFIX@/tmp/scgi;
"#;

const UPSTREAM: &str = r#"http {
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { }
    default_type application/octet-stream;
    log_format bench '$request_method $uri $status $body_bytes_sent';
    access_log @PREFIX@/access.log bench;
@TEMP_PATHS@    server {
        listen @LISTEN@;
        root @ROOT@;
        location /slow/ {
            limit_rate @RATE@;
        }
    }
}
"#;

const REFERENCE: &str = r#"http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 1000000;
    types { }
    default_type application/octet-stream;
@TEMP_PATHS@    proxy_cache_path @PREFIX@/cache levels=1:2 keys_zone=bench:16m max_size=32g inactive=1d use_temp_path=off;
    upstream origin {
        server @UPSTREAM@;
        keepalive 32;
    }
    server {
        listen @LISTEN@;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_cache bench;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header X-Cache $upstream_cache_status always;
        }
    }
}
"#;

fn head(prefix: &Path, workers: usize) -> String {
    // Started as root, nginx would run its workers as nobody, who cannot enter a 0700 TempDir.
    let user = if effective_uid() == Some(0) {
        "user root;\n"
    } else {
        ""
    };
    HEAD.replace("@USER@", user)
        .replace("@WORKERS@", &workers.to_string())
        .replace("@PREFIX@", &prefix.display().to_string())
}

/// The upstream's config: `root` served on `listen`, `/slow/` limited to `rate_bytes` per second.
pub fn upstream_conf(prefix: &Path, listen: SocketAddr, root: &Path, rate_bytes: u64) -> String {
    let body = UPSTREAM
        .replace("@TEMP_PATHS@", TEMP_PATHS)
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ROOT@", &root.display().to_string())
        .replace("@RATE@", &rate_bytes.to_string())
        .replace("@PREFIX@", &prefix.display().to_string());
    head(prefix, 1) + &body
}

/// The `proxy_cache` reference: `workers` worker processes in front of `upstream`.
pub fn reference_conf(
    prefix: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    workers: usize,
) -> String {
    let body = REFERENCE
        .replace("@TEMP_PATHS@", TEMP_PATHS)
        .replace("@LISTEN@", &listen.to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@PREFIX@", &prefix.display().to_string());
    head(prefix, workers) + &body
}

/// Writes `conf` to `<prefix>/nginx.conf`, starts nginx on it and waits until `listen` accepts.
pub fn start(name: &str, prefix: &Path, conf: &str, listen: SocketAddr) -> Result<Server> {
    fs::create_dir_all(prefix.join("tmp"))
        .with_context(|| format!("creating {}", prefix.display()))?;
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let mut cmd = Command::new(binary());
    cmd.arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"));
    let mut server = Server::spawn(name, cmd, &prefix.join("stderr.log"), true)?;
    server.wait_ready(listen, Duration::from_secs(10))?;
    Ok(server)
}

/// The Debian path when it exists (sbin is not on every user's PATH), else `nginx` from PATH.
pub fn binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}
