//! The build queue's command-line client (VCAP's client.rb, grown up):
//! `package-cache build` submits a remote build or uploads a local file, and
//! `package-cache inbox add` hands a file in through the inbox directory.
//! With `--wait` both follow the job and show its stages. Talks to the API
//! over HTTP only; prints the artifact's name on stdout for scripts.

use crate::builds::inbox::hand_in;
use crate::cli::{ApiArgs, BuildCmd};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What went wrong, for the exit status and the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or answered.
    #[error("{0}")]
    Transport(String),
    /// The API refused the request.
    #[error("the API answered {status}: {message}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// Its message.
        message: String,
    },
    /// The build ended without an artifact.
    #[error("the build {state}: {message}")]
    Failed {
        /// `failed` or `cancelled`.
        state: String,
        /// Why.
        message: String,
    },
    /// A local file problem.
    #[error("{0}")]
    Io(String),
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(args: &ApiArgs) -> Result<Api, Error> {
        let token = match &args.token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|err| Error::Io(format!("reading {}: {err}", file.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Api {
            base: args.url.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Value), Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| Error::Transport(err.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(600), self.client.request(request))
            .await
            .map_err(|_| Error::Transport(format!("{}: no answer in time", self.base)))?
            .map_err(|err| {
                Error::Transport(format!(
                    "cannot reach the build API at {}: {err} (is the server running, with --api on?)",
                    self.base
                ))
            })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| Error::Transport(err.to_string()))?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            Ok((status, value))
        } else {
            let message = match &value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Err(Error::Refused { status, message })
        }
    }
}

/// `package-cache build`: prints the artifact name; with `--wait`, once built.
pub async fn build(cmd: &BuildCmd, out: &mut impl Write) -> Result<(), Error> {
    let api = Api::new(&cmd.api)?;
    let request = match &cmd.local {
        Some(file) => {
            let source = file.clone();
            let (sha1, bytes) = tokio::task::spawn_blocking(move || read_and_hash(&source))
                .await
                .map_err(|err| Error::Io(err.to_string()))??;
            let (_, answer) = api
                .call(Method::PUT, &format!("/api/v1/inbox/{sha1}"), bytes)
                .await?;
            let upload = answer["upload"].as_str().unwrap_or_default().to_string();
            serde_json::json!({"location": "local", "type": cmd.kind, "name": sha1,
                "runtime": cmd.runtime, "upload": upload})
        }
        None => {
            let mut request = serde_json::json!({"location": "remote", "type": cmd.kind,
                "name": cmd.name, "version": cmd.version, "runtime": cmd.runtime});
            if let Some(platform) = &cmd.platform {
                request["platform"] = Value::String(platform.clone());
            }
            request
        }
    };
    submit(&api, request, cmd.api.wait, out).await
}

/// `package-cache inbox add`: copies `file` into `<cache>/.package-cache/build/inbox/public/`
/// under a random name (readable by the server; nobody can list the directory), then submits.
pub async fn inbox_add(
    file: &Path,
    kind: &str,
    runtime: &str,
    cache: &Path,
    args: &ApiArgs,
    out: &mut impl Write,
) -> Result<(), Error> {
    let api = Api::new(args)?;
    let public = crate::store::Layout::new(cache).inbox_public();
    let (dir, source) = (public.clone(), file.to_path_buf());
    let handed = tokio::task::spawn_blocking(move || hand_in(&dir, &source))
        .await
        .map_err(|err| Error::Io(err.to_string()))?
        .map_err(|err| {
            // The inbox is there, open to local users, only while builds are on.
            let open = std::fs::metadata(&public)
                .is_ok_and(|meta| meta.is_dir() && meta.permissions().mode() & 0o002 != 0);
            let off = if open {
                ""
            } else {
                " (the inbox is not open: builds are off on this server, or --cache names another cache)"
            };
            Error::Io(format!(
                "handing {} in to {}: {err}{off}",
                file.display(),
                public.display()
            ))
        })?;
    let (sha1, entry) = (handed.sha1, handed.entry);
    let path = public.join(&entry);
    let request = serde_json::json!({"location": "local", "type": kind, "name": sha1,
        "runtime": runtime, "inbox": entry});
    let result = submit(&api, request, args.wait, out).await;
    if matches!(result, Err(Error::Refused { .. } | Error::Transport(_))) {
        // Not taken in: do not leave it to the sweeper.
        let _ = tokio::fs::remove_file(&path).await;
    }
    result
}

fn read_and_hash(file: &Path) -> Result<(String, Bytes), Error> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|err| Error::Io(format!("reading {}: {err}", file.display())))?;
    Ok((hex::encode(Sha1::digest(&bytes)), Bytes::from(bytes)))
}

async fn submit(api: &Api, request: Value, wait: bool, out: &mut impl Write) -> Result<(), Error> {
    let body = Bytes::from(serde_json::to_vec(&request).expect("a JSON value serialises"));
    let (status, job) = api.call(Method::POST, "/api/v1/builds", body).await?;
    let artifact = job["artifact"].as_str().unwrap_or_default().to_string();
    if status == StatusCode::OK {
        eprintln!("already built: {artifact}");
        let _ = writeln!(out, "{artifact}");
        return Ok(());
    }
    let id = job["id"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "job {id}: {}{}",
        job["state"].as_str().unwrap_or("?"),
        if job["waiters"].as_u64().unwrap_or(1) > 1 {
            " (joined an identical build)"
        } else {
            ""
        }
    );
    if !wait {
        let _ = writeln!(out, "{artifact}");
        return Ok(());
    }
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let (_, job) = api
            .call(Method::GET, &format!("/api/v1/builds/{id}"), Bytes::new())
            .await?;
        let state = job["state"].as_str().unwrap_or("?").to_string();
        if state != last {
            eprintln!("[{:>5.1}s] {state}", started.elapsed().as_secs_f64());
            last = state.clone();
        }
        match state.as_str() {
            "complete" => {
                let _ = writeln!(out, "{artifact}");
                return Ok(());
            }
            "failed" | "cancelled" => {
                if let Some(tail) = job["log_tail"].as_str() {
                    eprintln!("--- end of the build log ---\n{tail}");
                }
                return Err(Error::Failed {
                    state,
                    message: job["error"]["message"].as_str().unwrap_or("").to_string(),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
