//! The one S3 call object_store does not make: ListMultipartUploads, to find uploads a
//! killed node left behind. Signed with object_store's own SigV4 signer and sent
//! through the tier's HTTP service; aborting one goes back through object_store
//! (`MultipartStore::abort_multipart`).

use super::http::Service;
use chrono::{DateTime, Utc};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpRequestBody, HttpService};
use object_store::path::Path;
use object_store::signer::Signer;
use serde::Deserialize;
use std::time::Duration;

/// Pages listed at most in one sweep (1000 uploads each).
const MAX_PAGES: usize = 100;

/// One incomplete multipart upload, as listed.
#[derive(Clone, Debug)]
pub(super) struct RawUpload {
    pub(super) key: String,
    pub(super) upload_id: String,
    pub(super) initiated: DateTime<Utc>,
}

#[derive(Debug)]
pub(super) struct RawS3 {
    service: Service,
    region: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: DateTime<Utc>,
}

fn generic(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: source.into(),
    }
}

impl RawS3 {
    pub(super) fn new(service: Service, region: String) -> RawS3 {
        RawS3 { service, region }
    }

    /// The incomplete multipart uploads whose key starts with `prefix`.
    pub(super) async fn list_uploads(
        &self,
        s3: &AmazonS3,
        prefix: &str,
    ) -> object_store::Result<Vec<RawUpload>> {
        // object_store knows how this store is addressed (path or virtual-host style,
        // endpoint, region): take the bucket's URL from a URL it signs.
        let probe = s3
            .signed_url(http::Method::GET, &Path::from("x"), Duration::from_secs(60))
            .await?;
        let mut bucket = probe.clone();
        bucket.set_query(None);
        let path = probe.path().strip_suffix("/x").unwrap_or("").to_string();
        bucket.set_path(&format!("{path}/"));
        let credential = s3.credentials().get_credential().await?;
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut url = bucket.clone();
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("uploads", "")
                    .append_pair("prefix", prefix);
                if let Some((key, id)) = &markers {
                    query
                        .append_pair("key-marker", key)
                        .append_pair("upload-id-marker", id);
                }
            }
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(url.as_str())
                .body(HttpRequestBody::empty())
                .map_err(generic)?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .try_authorize(&mut request, None)?;
            let response = self.service.call(request).await.map_err(generic)?;
            let status = response.status();
            let body = response.into_body().bytes().await.map_err(generic)?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                return Err(generic(format!("ListMultipartUploads: {status}: {text}")));
            }
            let text = std::str::from_utf8(&body).map_err(generic)?;
            let page: ListResult = quick_xml::de::from_str(text).map_err(generic)?;
            uploads.extend(page.uploads.into_iter().map(|u| RawUpload {
                key: u.key,
                upload_id: u.upload_id,
                initiated: u.initiated,
            }));
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) if !key.is_empty() => markers = Some((key, id)),
                _ => break,
            }
        }
        Ok(uploads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse() {
        // As RGW 16.2 answers (namespace, owner and storage class included).
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>fleet</Bucket><NextKeyMarker>p/bodies/u-1</NextKeyMarker><NextUploadIdMarker>2~abc</NextUploadIdMarker><MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated><Upload><Key>p/bodies/u-1</Key><UploadId>2~abc</UploadId><Initiator><ID>test</ID><DisplayName>test</DisplayName></Initiator><Owner><ID>test</ID><DisplayName>test</DisplayName></Owner><StorageClass>STANDARD</StorageClass><Initiated>2026-12-03T09:00:00.000Z</Initiated></Upload></ListMultipartUploadsResult>"#;
        let page: ListResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.uploads.len(), 1);
        assert_eq!(page.uploads[0].key, "p/bodies/u-1");
        assert_eq!(page.uploads[0].upload_id, "2~abc");
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("2~abc"));
        let empty = r#"<ListMultipartUploadsResult><Bucket>fleet</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: ListResult = quick_xml::de::from_str(empty).unwrap();
        assert!(!page.is_truncated && page.uploads.is_empty());
    }
}
