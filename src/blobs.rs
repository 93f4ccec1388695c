//! Blob storage: objects' bytes never pass through the JSON API. Through the `object_store` crate,
//! either the local file store (default; this server serves HMAC-signed, expiring upload and
//! download URLs itself under `/storage/…`) or any S3-compatible store (S3 presigned URLs).
//!
//! Every operation streams: uploads are written part by part (bounded buffers), checksums are
//! computed over a streamed read, and downloads are streamed with `Range` support.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::signing::SigningKey;

/// Bytes buffered per part of a streamed upload.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts in flight at once during a streamed upload.
const PARTS_IN_FLIGHT: usize = 2;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The blob does not exist.
    #[error("blob not found")]
    NotFound,
    /// A streamed upload went past its limit; nothing was stored.
    #[error("upload longer than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The requested range cannot be served.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// The store or the client's stream failed.
    #[error("blob store: {0}")]
    Store(String),
}

impl From<object_store::Error> for BlobError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            other => BlobError::Store(other.to_string()),
        }
    }
}

/// Which kind of store holds the blobs.
#[derive(Clone)]
enum Backend {
    /// Files under a directory; URLs are served by this server.
    Local,
    /// An S3-compatible bucket; URLs are S3 presigned URLs.
    S3(Arc<AmazonS3>),
}

/// A signed URL and the headers its client must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The blob store of the service.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    prefix: String,
    public_url: String,
    key: SigningKey,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.store)
    }
}

impl Blobs {
    /// Opens the store named by `storage_url` (`file://DIR` or `s3://bucket[/prefix]`, the latter
    /// configured by the `AWS_*` variables, including `AWS_ENDPOINT_URL`).
    pub fn open(storage_url: &str, public_url: &str, key: SigningKey) -> Result<Self, BlobError> {
        let public_url = public_url.trim_end_matches('/').to_owned();
        if let Some(dir) = storage_url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).map_err(|e| BlobError::Store(format!("{dir}: {e}")))?;
            let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
            return Ok(Self {
                store: Arc::new(store),
                backend: Backend::Local,
                prefix: String::new(),
                public_url,
                key,
            });
        }
        if let Some(rest) = storage_url.strip_prefix("s3://") {
            install_crypto_provider();
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BlobError::Store("s3:// needs a bucket".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                builder = builder
                    .with_endpoint(&endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            let s3 = Arc::new(builder.build()?);
            return Ok(Self {
                store: s3.clone(),
                backend: Backend::S3(s3),
                prefix: prefix.trim_matches('/').to_owned(),
                public_url,
                key,
            });
        }
        Err(BlobError::Store(format!(
            "unsupported storage URL {storage_url}: use file:// or s3://"
        )))
    }

    /// `local` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Local => "local",
            Backend::S3(_) => "s3",
        }
    }

    fn location(&self, object_id: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(format!("objects/{object_id}"))
        } else {
            Path::from(format!("{}/objects/{object_id}", self.prefix))
        }
    }

    /// A URL to PUT the object's bytes to, valid until `expires_at`.
    pub async fn upload_url(
        &self,
        object_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        self.signed(object_id, "PUT", now, expires_at).await
    }

    /// A URL to GET the object's bytes from, valid until `expires_at`.
    pub async fn download_url(
        &self,
        object_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        self.signed(object_id, "GET", now, expires_at).await
    }

    async fn signed(
        &self,
        object_id: &str,
        method: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let url = match &self.backend {
            Backend::Local => {
                let path = storage_path(object_id);
                let expires = expires_at.timestamp();
                let signature = self
                    .key
                    .hmac_hex(signed_message(method, &path, expires).as_bytes());
                format!(
                    "{}{path}?expires={expires}&signature={signature}",
                    self.public_url
                )
            }
            Backend::S3(s3) => {
                let ttl = (expires_at - now)
                    .to_std()
                    .unwrap_or(Duration::from_secs(1));
                let method = if method == "PUT" {
                    object_store::signer::Method::PUT
                } else {
                    object_store::signer::Method::GET
                };
                s3.signed_url(method, &self.location(object_id), ttl)
                    .await?
                    .to_string()
            }
        };
        Ok(SignedUrl { url, expires_at })
    }

    /// Checks a local storage signature (constant time) and its expiry.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let Ok(tag) = hex::decode(signature) else {
            return false;
        };
        tag.len() == 32
            && expires > now.timestamp()
            && self
                .key
                .verify(signed_message(method, path, expires).as_bytes(), &tag)
    }

    /// The stored size, or `None` when there is no blob.
    pub async fn size(&self, object_id: &str) -> Result<Option<u64>, BlobError> {
        match self.store.head(&self.location(object_id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Streams the blob through SHA-256: `(length, lowercase hex digest)`.
    pub async fn digest(&self, object_id: &str) -> Result<(u64, String), BlobError> {
        let mut stream = self
            .store
            .get(&self.location(object_id))
            .await?
            .into_stream();
        let mut hasher = Sha256::new();
        let mut length = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            length += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((length, hex::encode(hasher.finalize())))
    }

    /// Stores a streamed upload, refusing more than `limit` bytes (then nothing is stored). Only a
    /// completed stream replaces the blob. Returns `(length, sha256 hex)`.
    pub async fn write<S, E>(
        &self,
        object_id: &str,
        body: S,
        limit: u64,
    ) -> Result<(u64, String), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.store.put_multipart(&self.location(object_id)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut body = body;
        let mut hasher = Sha256::new();
        let mut length = 0u64;
        let outcome = loop {
            match body.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(BlobError::Store(format!("upload stream: {e}"))),
                Some(Ok(chunk)) => {
                    length += chunk.len() as u64;
                    if length > limit {
                        break Err(BlobError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        break Err(e.into());
                    }
                    writer.put(chunk);
                }
            }
        };
        match outcome {
            Ok(()) => {
                writer.finish().await?;
                Ok((length, hex::encode(hasher.finalize())))
            }
            Err(error) => {
                let _ = writer.abort().await;
                Err(error)
            }
        }
    }

    /// Streams the blob, or the byte range `range` of it (inclusive bounds as in HTTP).
    pub async fn read(
        &self,
        object_id: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<
        (
            u64,
            std::ops::Range<u64>,
            futures::stream::BoxStream<'static, Result<Bytes, BlobError>>,
        ),
        BlobError,
    > {
        let options = GetOptions {
            range: range.map(|(start, end)| match end {
                // An end past the blob means its remainder (RFC 9110 §14.1.2): object_store
                // clamps a bounded range, and an end of u64::MAX has no exclusive bound.
                Some(end) => match end.checked_add(1) {
                    Some(after) => GetRange::Bounded(start..after),
                    None => GetRange::Offset(start),
                },
                None => GetRange::Offset(start),
            }),
            ..GetOptions::default()
        };
        let result = match self
            .store
            .get_opts(&self.location(object_id), options)
            .await
        {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound),
            Err(object_store::Error::NotModified { .. }) => {
                return Err(BlobError::RangeNotSatisfiable)
            }
            Err(e) if range.is_some() && e.to_string().to_lowercase().contains("range") => {
                return Err(BlobError::RangeNotSatisfiable)
            }
            Err(other) => return Err(other.into()),
        };
        let total = result.meta.size;
        let served = result.range.clone();
        let stream = result.into_stream().map_err(BlobError::from).boxed();
        Ok((total, served, stream))
    }

    /// Removes the blob; a missing blob is not an error.
    pub async fn delete(&self, object_id: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.location(object_id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

/// reqwest is built without a default TLS provider (object_store would otherwise pull in a second
/// crypto library); HTTPS clients in this process use ring. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The path of an object's bytes under this server's `/storage` routes.
pub fn storage_path(object_id: &str) -> String {
    format!("/storage/objects/{object_id}")
}

fn signed_message(method: &str, path: &str, expires: i64) -> String {
    format!("{method}\n{path}\n{expires}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (Blobs, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("ipto-blobs-{}", uuid::Uuid::new_v4().simple()));
        let key = SigningKey::load(Some(crate::signing::TEST_KEY), &dir).unwrap();
        let blobs = Blobs::open(
            &format!("file://{}", dir.display()),
            "http://127.0.0.1:1/",
            key,
        )
        .unwrap();
        (blobs, dir)
    }

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_streamed_upload_is_stored_with_its_digest() {
        let (blobs, dir) = local();
        let (length, sha) = blobs
            .write("obj_a", chunks(&[b"hello ", b"world"]), 11)
            .await
            .unwrap();
        assert_eq!(length, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(blobs.size("obj_a").await.unwrap(), Some(11));
        assert_eq!(blobs.digest("obj_a").await.unwrap(), (11, sha));
        let (total, served, stream) = blobs.read("obj_a", Some((6, Some(10)))).await.unwrap();
        let body: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!((total, served), (11, 6..11));
        assert_eq!(body.concat(), b"world");
        blobs.delete("obj_a").await.unwrap();
        assert_eq!(blobs.size("obj_a").await.unwrap(), None);
        blobs.delete("obj_a").await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_upload_over_its_limit_leaves_nothing_behind() {
        let (blobs, dir) = local();
        blobs.write("obj_b", chunks(&[b"old"]), 3).await.unwrap();
        let refused = blobs.write("obj_b", chunks(&[b"too ", b"long"]), 5).await;
        assert!(matches!(refused, Err(BlobError::TooLarge { limit: 5 })));
        assert_eq!(
            blobs.digest("obj_b").await.unwrap().0,
            3,
            "the previous blob stays"
        );
        let leftovers: Vec<_> = walk(&dir);
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The same flow against a real S3-compatible server, when the environment names one.
    #[tokio::test]
    async fn s3_stores_streams_and_presigns() {
        let Ok(bucket) = std::env::var("IPTO_TEST_S3_BUCKET") else {
            return;
        };
        let key = SigningKey::load(
            Some(crate::signing::TEST_KEY),
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let prefix = uuid::Uuid::new_v4().simple().to_string();
        let blobs = Blobs::open(&format!("s3://{bucket}/{prefix}"), "http://unused", key).unwrap();
        assert_eq!(blobs.kind(), "s3");
        let now = Utc::now();
        let put = blobs
            .upload_url("obj_s3", now, now + chrono::Duration::hours(1))
            .await
            .unwrap();
        install_crypto_provider();
        let client = reqwest::Client::new();
        let response = client
            .put(&put.url)
            .body("presigned bytes")
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
        assert_eq!(blobs.size("obj_s3").await.unwrap(), Some(15));
        assert_eq!(
            blobs.digest("obj_s3").await.unwrap(),
            (15, hex::encode(Sha256::digest(b"presigned bytes")))
        );
        let get = blobs
            .download_url("obj_s3", now, now + chrono::Duration::minutes(15))
            .await
            .unwrap();
        let body = client
            .get(&get.url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&body[..], b"presigned bytes");
        let tampered = get.url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
        assert!(!client
            .get(&tampered)
            .send()
            .await
            .unwrap()
            .status()
            .is_success());
        blobs.delete("obj_s3").await.unwrap();
        assert_eq!(blobs.size("obj_s3").await.unwrap(), None);
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                files.extend(walk(&entry.path()));
            } else {
                files.push(entry.path());
            }
        }
        files
    }

    #[tokio::test]
    async fn local_urls_verify_only_for_their_method_path_and_time() {
        let (blobs, dir) = local();
        let now = Utc::now();
        let signed = blobs
            .upload_url("obj_c", now, now + chrono::Duration::hours(1))
            .await
            .unwrap();
        let url = url::Url::parse(&signed.url).unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let expires: i64 = query["expires"].parse().unwrap();
        let signature = &query["signature"];
        assert_eq!(url.path(), "/storage/objects/obj_c");
        assert!(blobs.verify("PUT", url.path(), expires, signature, now));
        assert!(!blobs.verify("GET", url.path(), expires, signature, now));
        assert!(!blobs.verify("PUT", "/storage/objects/obj_d", expires, signature, now));
        assert!(!blobs.verify("PUT", url.path(), expires + 1, signature, now));
        assert!(!blobs.verify(
            "PUT",
            url.path(),
            expires,
            signature,
            now + chrono::Duration::hours(2)
        ));
        assert!(!blobs.verify("PUT", url.path(), expires, "zz", now));
        let _ = std::fs::remove_dir_all(dir);
    }
}
