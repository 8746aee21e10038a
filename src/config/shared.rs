//! `SharedStoreConfig`: the shared object-store tier (`--shared-store s3://BUCKET[/PREFIX]`
//! and `--shared-store-opt KEY=VALUE`), validated before anything starts.
//!
//! Endpoint and credentials come from the standard `AWS_*` environment variables, read
//! by object_store's S3 builder; `--shared-store-opt` overrides them with object_store's
//! own S3 keys (`endpoint`, `region`, `allow_http`, …) and sets the tier's own limits
//! (timeouts, circuit breaker, part size), which no environment variable covers.

use super::{parse_size, Error};
use std::str::FromStr;
use std::time::Duration;

/// Settings of the shared object-store tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStoreConfig {
    /// The bucket.
    pub bucket: String,
    /// Where in the bucket this cache lives: `/`-separated segments, no leading or
    /// trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// object_store S3 options (`AmazonS3ConfigKey` names) in the order given; they
    /// override the environment.
    pub s3_options: Vec<(String, String)>,
    /// Whether the `AWS_*` environment variables are read (false in tests, which name
    /// everything explicitly).
    pub read_env: bool,
    /// TCP connect timeout (`connect_timeout`, default 2 s).
    pub connect_timeout: Duration,
    /// Time from sending a request to its response head (`timeout`, default 5 s); a
    /// request carrying a body gets one more second per MiB it sends.
    pub timeout: Duration,
    /// A response body that sends nothing for this long fails (`idle_timeout`, default 10 s).
    pub idle_timeout: Duration,
    /// Consecutive failures that open the circuit breaker (`breaker_failures`, default 3).
    pub breaker_failures: u32,
    /// How long an open breaker skips the store before it lets one probe through
    /// (`breaker_cooldown`, default 10 s).
    pub breaker_cooldown: Duration,
    /// Size of each part of a multipart upload, and the largest body sent in a single
    /// PUT (`part_size`, default 8M; S3 needs at least 5M).
    pub part_size: usize,
    /// Multipart uploads begun longer ago than this are taken for abandoned and aborted
    /// (`stale_uploads`, default 6 h).
    pub stale_uploads: Duration,
    /// This node's name in the bucket (`node`, 1-32 of `a-z 0-9`, stable across
    /// restarts): its uploads carry it, so a restarted node aborts the ones it left at
    /// once instead of waiting for them to go stale. Unique per node.
    pub node: Option<String>,
}

/// Smallest part S3 accepts (except a last part).
const MIN_PART: usize = 5 << 20;
/// Largest part S3 accepts.
const MAX_PART: usize = 5 << 30;

impl SharedStoreConfig {
    /// The defaults for `bucket` and `prefix` (no options, environment read).
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> SharedStoreConfig {
        SharedStoreConfig {
            bucket: bucket.into(),
            prefix: prefix.into(),
            s3_options: Vec::new(),
            read_env: true,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(10),
            part_size: 8 << 20,
            stale_uploads: Duration::from_secs(6 * 3600),
            node: None,
        }
    }

    /// Parses `--shared-store URL` and its `--shared-store-opt KEY=VALUE` entries.
    pub fn try_from_args(url: &str, opts: &[String]) -> Result<SharedStoreConfig, Error> {
        let (bucket, prefix) = parse_url(url)?;
        let mut config = SharedStoreConfig::new(bucket, prefix);
        for opt in opts {
            let (key, value) = opt.split_once('=').ok_or_else(|| Error::SharedStore {
                value: opt.clone(),
                reason: "expected KEY=VALUE".into(),
            })?;
            config.set(key.trim(), value.trim())?;
        }
        Ok(config)
    }

    /// Applies one `KEY=VALUE` option: one of the tier's own, else an object_store S3 key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        let bad = |reason: &str| Error::SharedStore {
            value: format!("{key}={value}"),
            reason: reason.to_string(),
        };
        let duration =
            || parse_duration(value).ok_or_else(|| bad("expected a duration (5s, 500ms)"));
        match key {
            "connect_timeout" => self.connect_timeout = duration()?,
            "timeout" => self.timeout = duration()?,
            "idle_timeout" => self.idle_timeout = duration()?,
            "breaker_cooldown" => self.breaker_cooldown = duration()?,
            "stale_uploads" => self.stale_uploads = duration()?,
            "node" => {
                let ok = (1..=32).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !ok {
                    return Err(bad("a node name is 1-32 of a-z 0-9"));
                }
                self.node = Some(value.to_string());
            }
            "breaker_failures" => {
                self.breaker_failures = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("expected a count of at least 1"))?
            }
            "part_size" => {
                let size = parse_size(value).map_err(|_| bad("expected a size (8M)"))?;
                self.part_size = usize::try_from(size)
                    .ok()
                    .filter(|s| (MIN_PART..=MAX_PART).contains(s))
                    .ok_or_else(|| bad("a part is 5M to 5G"))?;
            }
            // The bucket comes from the URL: one more source of it would only disagree.
            "bucket" | "bucket_name" | "aws_bucket" | "aws_bucket_name" => {
                return Err(bad("name the bucket in the URL"))
            }
            _ => {
                object_store::aws::AmazonS3ConfigKey::from_str(key).map_err(|_| {
                    bad("not an option of the shared store or of object_store's S3")
                })?;
                self.s3_options.push((key.to_string(), value.to_string()));
            }
        }
        Ok(())
    }

    /// `s3://bucket/prefix`, as given.
    pub fn url(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }
}

/// `5s`, `500ms`, `2m` (humantime), or plain seconds.
fn parse_duration(raw: &str) -> Option<Duration> {
    match raw.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(raw).ok(),
    }
    .filter(|d| !d.is_zero())
}

/// `s3://BUCKET[/PREFIX]` → (bucket, prefix without surrounding slashes).
fn parse_url(url: &str) -> Result<(String, String), Error> {
    let bad = |reason: &str| Error::SharedStore {
        value: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("expected s3://BUCKET[/PREFIX]"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's bucket naming rules, which path-style requests rely on.
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !bucket_ok {
        return Err(bad("a bucket name is 3-63 of a-z 0-9 . -"));
    }
    let prefix = prefix.trim_end_matches('/');
    let segments_ok = prefix.is_empty()
        || prefix.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !segments_ok || url.contains('?') || url.contains('#') {
        return Err(bad("a prefix is segments of A-Z a-z 0-9 - _ ."));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let c = SharedStoreConfig::try_from_args("s3://pkgcache/prod/eu", &[]).unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("pkgcache", "prod/eu")
        );
        assert_eq!(c.url(), "s3://pkgcache/prod/eu");
        let c = SharedStoreConfig::try_from_args("s3://pkgcache/", &[]).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("pkgcache", ""));
        assert_eq!(c.url(), "s3://pkgcache");
        for bad in [
            "pkgcache",
            "http://pkgcache/x",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-dash",
            "s3://b_u",
            "s3://bucket//x",
            "s3://bucket/a/../b",
            "s3://bucket/a b",
            "s3://bucket/x?y",
        ] {
            assert!(SharedStoreConfig::try_from_args(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_set_limits_or_pass_to_object_store() {
        let c = SharedStoreConfig::try_from_args(
            "s3://pkgcache",
            &opts(&[
                "timeout=1500ms",
                "connect_timeout=1",
                "idle_timeout=30s",
                "breaker_failures=5",
                "breaker_cooldown=1m",
                "part_size=16M",
                "stale_uploads=1h",
                "node=cache7",
                "endpoint=http://127.0.0.1:7480",
                "aws_allow_http=true",
                "region = eu-west-1",
            ]),
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.breaker_failures, 5);
        assert_eq!(c.breaker_cooldown, Duration::from_secs(60));
        assert_eq!(c.part_size, 16 << 20);
        assert_eq!(c.stale_uploads, Duration::from_secs(3600));
        assert_eq!(c.node.as_deref(), Some("cache7"));
        assert_eq!(
            c.s3_options,
            vec![
                ("endpoint".to_string(), "http://127.0.0.1:7480".to_string()),
                ("aws_allow_http".to_string(), "true".to_string()),
                ("region".to_string(), "eu-west-1".to_string()),
            ]
        );
        for bad in [
            "timeout",
            "timeout=soon",
            "timeout=0",
            "breaker_failures=0",
            "part_size=1M",
            "part_size=6G",
            "bucket=other",
            "no_such_option=1",
            "node=Cache-7",
            "node=",
        ] {
            assert!(
                SharedStoreConfig::try_from_args("s3://pkgcache", &opts(&[bad])).is_err(),
                "{bad}"
            );
        }
    }
}
