//! A JSON client for the build API: one request per connection, every
//! exchange bounded in time.

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;

/// One answer: status, headers and the body as JSON (`Null` when empty,
/// a string when not JSON).
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The body.
    pub json: Value,
    /// The raw body.
    pub bytes: Bytes,
}

/// Sends `method url` with `body` and `headers`, within `limit`.
pub async fn call_with(
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
    limit: Duration,
) -> Answer {
    let uri: http::Uri = url.parse().expect("API URL");
    let authority = uri.authority().expect("authority").to_string();
    let body = body.into();
    tokio::time::timeout(limit, async {
        let stream = TcpStream::connect(&authority)
            .await
            .expect("connect to the API");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header("host", &authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(body)).expect("request"))
            .await
            .expect("API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("API body")
            .to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            json,
            bytes,
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {url}: no answer within {limit:?}"))
}

/// As `call_with`, within 30 s.
pub async fn call(
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Answer {
    call_with(method, url, body, headers, Duration::from_secs(30)).await
}

/// POSTs `json` to `url`.
pub async fn post(url: &str, json: &Value) -> Answer {
    call("POST", url, serde_json::to_vec(json).expect("json"), &[]).await
}
