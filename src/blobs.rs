//! Blob storage: objects' bytes never pass through the JSON API. Through the `object_store` crate,
//! either the local file store (default; this server serves HMAC-signed, expiring upload and
//! download URLs itself under `/storage/…`) or any S3-compatible store (S3 presigned URLs).
//!
//! Layout, so that the bytes an object names can never change once it is confirmed:
//! - `uploads/{object_id}`: where an upload lands; the only key a signed PUT URL can reach.
//! - `objects/{object_id}/{sha256}`: the confirmed bytes. Confirm copies the upload to a key of its
//!   own, digests that copy and seals it under its digest; downloads and the indexer read only
//!   sealed keys, named by the checksum the object's events record. A late or racing PUT can only
//!   replace `uploads/…`, which nothing serves.
//! - `objects/{object_id}` (no digest): bytes confirmed before this layout, read as a fallback.
//!
//! Every operation streams: uploads are written part by part (bounded buffers), checksums are
//! computed over a streamed read, and downloads are streamed with `Range` support.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::signing::SigningKey;

/// Bytes buffered per part of a streamed upload.
/// How long a download or preview URL stays valid.
pub const DOWNLOAD_TTL: chrono::Duration = chrono::Duration::minutes(15);

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

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Where an object's upload lands (what its signed PUT URL names).
    fn upload_location(&self, object_id: &str) -> Path {
        self.path(&format!("uploads/{object_id}"))
    }

    /// Where an object's confirmed bytes live, under their digest.
    fn sealed_location(&self, object_id: &str, sha256: &str) -> Path {
        self.path(&format!("objects/{object_id}/{sha256}"))
    }

    /// Where bytes confirmed before the sealed layout live.
    fn legacy_location(&self, object_id: &str) -> Path {
        self.path(&format!("objects/{object_id}"))
    }

    /// A URL to PUT the object's upload to, valid until `expires_at`.
    pub async fn upload_url(
        &self,
        object_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let location = self.upload_location(object_id);
        self.signed(object_id, &location, "PUT", now, expires_at)
            .await
    }

    /// A URL to GET the object's confirmed bytes (digest `sha256`) from, valid until `expires_at`.
    pub async fn download_url(
        &self,
        object_id: &str,
        sha256: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let mut location = self.sealed_location(object_id, sha256);
        if matches!(self.backend, Backend::S3(_))
            && self.store.head(&location).await.is_err()
            && self
                .store
                .head(&self.legacy_location(object_id))
                .await
                .is_ok()
        {
            location = self.legacy_location(object_id);
        }
        self.signed(object_id, &location, "GET", now, expires_at)
            .await
    }

    async fn signed(
        &self,
        object_id: &str,
        location: &Path,
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
                s3.signed_url(method, location, ttl).await?.to_string()
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

    /// The size of the object's upload, or `None` when nothing has been uploaded.
    pub async fn upload_size(&self, object_id: &str) -> Result<Option<u64>, BlobError> {
        match self.store.head(&self.upload_location(object_id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Copies the object's upload to a key of its own and digests the copy: what confirm checks
    /// is exactly what [`Blobs::seal`] keeps, whatever happens to the upload meanwhile.
    pub async fn copy_upload(&self, object_id: &str) -> Result<Candidate, BlobError> {
        let location = self.path(&format!(
            "objects/{object_id}/incoming-{}",
            uuid::Uuid::new_v4().simple()
        ));
        self.store
            .copy(&self.upload_location(object_id), &location)
            .await?;
        match self.digest(&location).await {
            Ok((length, sha256)) => Ok(Candidate {
                object_id: object_id.to_owned(),
                location,
                length,
                sha256,
            }),
            Err(error) => {
                let _ = self.store.delete(&location).await;
                Err(error)
            }
        }
    }

    /// Keeps a verified copy as the object's bytes, under its digest.
    pub async fn seal(&self, candidate: Candidate) -> Result<(), BlobError> {
        let sealed = self.sealed_location(&candidate.object_id, &candidate.sha256);
        self.store.rename(&candidate.location, &sealed).await?;
        Ok(())
    }

    /// Drops a copy that failed verification.
    pub async fn discard(&self, candidate: Candidate) -> Result<(), BlobError> {
        ignore_missing(self.store.delete(&candidate.location).await)
    }

    /// Removes the object's upload (after confirm, or when it failed verification).
    pub async fn delete_upload(&self, object_id: &str) -> Result<(), BlobError> {
        ignore_missing(self.store.delete(&self.upload_location(object_id)).await)
    }

    /// Streams a blob through SHA-256: `(length, lowercase hex digest)`.
    async fn digest(&self, location: &Path) -> Result<(u64, String), BlobError> {
        let mut stream = self.store.get(location).await?.into_stream();
        let mut hasher = Sha256::new();
        let mut length = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            length += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((length, hex::encode(hasher.finalize())))
    }

    /// Starts writing the object's upload, refusing more than `limit` bytes. Nothing replaces the
    /// upload until [`UploadWriter::finish`]; a dropped or aborted writer leaves it as it was.
    pub async fn begin_upload(
        &self,
        object_id: &str,
        limit: u64,
    ) -> Result<UploadWriter, BlobError> {
        let upload = self
            .store
            .put_multipart(&self.upload_location(object_id))
            .await?;
        Ok(UploadWriter {
            writer: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
            hasher: Sha256::new(),
            length: 0,
            limit,
        })
    }

    /// Streams the object's confirmed bytes (digest `sha256`), or the byte range `range` of them
    /// (inclusive bounds as in HTTP; an end past the last byte means the last byte).
    pub async fn read(
        &self,
        object_id: &str,
        sha256: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Served, BlobError> {
        match self
            .read_at(&self.sealed_location(object_id, sha256), range)
            .await
        {
            Err(BlobError::NotFound) => self.read_at(&self.legacy_location(object_id), range).await,
            other => other,
        }
    }

    async fn read_at(
        &self,
        location: &Path,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Served, BlobError> {
        // An end past the blob means its remainder (RFC 9110 §14.1.2). The local store clamps
        // a bounded range itself; an S3 server may refuse a huge end, so it is clamped here.
        let mut range = range;
        if let (Backend::S3(_), Some((start, Some(end)))) = (&self.backend, range) {
            let size = self.store.head(location).await?.size;
            if end >= size {
                range = Some((start, None));
            }
        }
        let options = GetOptions {
            range: range.map(|(start, end)| match end {
                Some(end) => match end.checked_add(1) {
                    Some(after) => GetRange::Bounded(start..after),
                    None => GetRange::Offset(start),
                },
                None => GetRange::Offset(start),
            }),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(location, options).await {
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

    /// Removes everything stored for the object: its upload, its sealed bytes and any copy left
    /// by an interrupted confirm. Missing blobs are not an error.
    pub async fn delete(&self, object_id: &str) -> Result<(), BlobError> {
        self.delete_upload(object_id).await?;
        let dir = self.path(&format!("objects/{object_id}"));
        let stored: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        for meta in stored {
            ignore_missing(self.store.delete(&meta.location).await)?;
        }
        // Only a blob of the earlier layout is a file there (else it was the sealed bytes' folder).
        let legacy = self.legacy_location(object_id);
        if self.store.head(&legacy).await.is_ok() {
            ignore_missing(self.store.delete(&legacy).await)?;
        }
        Ok(())
    }

    /// How many blobs are stored for the object: its upload, sealed bytes and copies.
    pub async fn count(&self, object_id: &str) -> Result<usize, BlobError> {
        let mut count = 0;
        for location in [
            self.upload_location(object_id),
            self.legacy_location(object_id),
        ] {
            if self.store.head(&location).await.is_ok() {
                count += 1;
            }
        }
        let dir = self.path(&format!("objects/{object_id}"));
        let sealed: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        Ok(count + sealed.len())
    }

    /// Every stored blob, as `(object id, kind, stored at)`, for the collector.
    pub async fn inventory(&self) -> Result<Vec<(String, Stored, DateTime<Utc>)>, BlobError> {
        let mut found = Vec::new();
        for area in ["uploads", "objects"] {
            let root = self.path(area);
            let mut listing = self.store.list(Some(&root));
            while let Some(meta) = listing.try_next().await? {
                let parts: Vec<&str> = meta
                    .location
                    .as_ref()
                    .strip_prefix(root.as_ref())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .split('/')
                    .collect();
                let stored = match (area, parts.as_slice()) {
                    ("uploads", [id]) => (id.to_string(), Stored::Upload),
                    ("objects", [id]) => (id.to_string(), Stored::Legacy),
                    ("objects", [id, name]) => (id.to_string(), Stored::Sealed(name.to_string())),
                    _ => continue,
                };
                found.push((stored.0, stored.1, meta.last_modified));
            }
        }
        Ok(found)
    }

    /// Removes one blob found by [`Blobs::inventory`].
    pub async fn remove(&self, object_id: &str, stored: &Stored) -> Result<(), BlobError> {
        let location = match stored {
            Stored::Upload => self.upload_location(object_id),
            Stored::Legacy => self.legacy_location(object_id),
            Stored::Sealed(name) => self.path(&format!("objects/{object_id}/{name}")),
        };
        ignore_missing(self.store.delete(&location).await)
    }
}

/// A read blob: its whole size, the byte range served and the bytes of that range.
pub type Served = (
    u64,
    std::ops::Range<u64>,
    futures::stream::BoxStream<'static, Result<Bytes, BlobError>>,
);

/// What kind of blob the inventory found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// An upload (`uploads/{id}`).
    Upload,
    /// Sealed bytes or an interrupted confirm's copy (`objects/{id}/{name}`).
    Sealed(String),
    /// Bytes of the layout before sealing (`objects/{id}`).
    Legacy,
}

/// A copy of an upload with its length and digest, awaiting [`Blobs::seal`] or
/// [`Blobs::discard`].
#[derive(Debug)]
pub struct Candidate {
    object_id: String,
    location: Path,
    pub length: u64,
    pub sha256: String,
}

/// An upload being written (see [`Blobs::begin_upload`]).
pub struct UploadWriter {
    writer: WriteMultipart,
    hasher: Sha256,
    length: u64,
    limit: u64,
}

impl UploadWriter {
    /// Adds the next part of the body; past the limit, [`BlobError::TooLarge`].
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.length += chunk.len() as u64;
        if self.length > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hasher.update(&chunk);
        self.writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.writer.put(chunk);
        Ok(())
    }

    /// Completes the upload, replacing any earlier one: `(length, sha256 hex)`.
    pub async fn finish(self) -> Result<(u64, String), BlobError> {
        self.writer.finish().await?;
        Ok((self.length, hex::encode(self.hasher.finalize())))
    }

    /// Abandons the upload; the earlier one, if any, stays.
    pub async fn abort(self) {
        let _ = self.writer.abort().await;
    }
}

/// The uploads this instance is receiving: one at a time per object, so that a signed URL cannot
/// hold many connections and buffers open at once.
#[derive(Debug, Default)]
pub struct UploadsInFlight(std::sync::Mutex<std::collections::HashSet<String>>);

impl UploadsInFlight {
    /// Claims the object for one upload; `None` while another holds it.
    pub fn claim(self: &Arc<Self>, object_id: &str) -> Option<UploadClaim> {
        let mut held = self.0.lock().expect("lock");
        held.insert(object_id.to_owned()).then(|| UploadClaim {
            uploads: self.clone(),
            object_id: object_id.to_owned(),
        })
    }

    /// How many uploads are being received.
    pub fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One object's upload slot, released when dropped.
#[derive(Debug)]
pub struct UploadClaim {
    uploads: Arc<UploadsInFlight>,
    object_id: String,
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        self.uploads.0.lock().expect("lock").remove(&self.object_id);
    }
}

fn ignore_missing(result: object_store::Result<()>) -> Result<(), BlobError> {
    match result {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(other) => Err(other.into()),
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

    async fn upload(
        blobs: &Blobs,
        id: &str,
        parts: &[&'static [u8]],
        limit: u64,
    ) -> Result<(u64, String), BlobError> {
        let mut writer = blobs.begin_upload(id, limit).await?;
        for part in parts {
            if let Err(e) = writer.push(Bytes::from_static(part)).await {
                writer.abort().await;
                return Err(e);
            }
        }
        writer.finish().await
    }

    async fn confirm(blobs: &Blobs, id: &str) -> String {
        let candidate = blobs.copy_upload(id).await.unwrap();
        let sha = candidate.sha256.clone();
        blobs.seal(candidate).await.unwrap();
        blobs.delete_upload(id).await.unwrap();
        sha
    }

    async fn body(blobs: &Blobs, id: &str, sha: &str) -> Vec<u8> {
        let (_, _, stream) = blobs.read(id, sha, None).await.unwrap();
        let parts: Vec<Bytes> = stream.try_collect().await.unwrap();
        parts.concat()
    }

    #[tokio::test]
    async fn an_upload_is_sealed_under_its_digest_and_read_back() {
        let (blobs, dir) = local();
        let (length, sha) = upload(&blobs, "obj_a", &[b"hello ", b"world"], 11)
            .await
            .unwrap();
        assert_eq!(length, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(blobs.upload_size("obj_a").await.unwrap(), Some(11));
        let candidate = blobs.copy_upload("obj_a").await.unwrap();
        assert_eq!(
            (candidate.length, candidate.sha256.as_str()),
            (11, sha.as_str())
        );
        blobs.seal(candidate).await.unwrap();
        blobs.delete_upload("obj_a").await.unwrap();
        assert_eq!(blobs.upload_size("obj_a").await.unwrap(), None);
        let (total, served, stream) = blobs
            .read("obj_a", &sha, Some((6, Some(10))))
            .await
            .unwrap();
        let part: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!((total, served), (11, 6..11));
        assert_eq!(part.concat(), b"world");
        blobs.delete("obj_a").await.unwrap();
        assert!(matches!(
            blobs.read("obj_a", &sha, None).await,
            Err(BlobError::NotFound)
        ));
        blobs.delete("obj_a").await.unwrap();
        assert!(
            walk(&dir).iter().all(|p| p.ends_with("signing.key")),
            "{:?}",
            walk(&dir)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn sealed_bytes_survive_any_later_upload() {
        let (blobs, dir) = local();
        upload(&blobs, "obj_s", &[b"reviewed"], 8).await.unwrap();
        let sha = confirm(&blobs, "obj_s").await;
        // A PUT that lands after confirm replaces only the upload, never what is served.
        upload(&blobs, "obj_s", &[b"replaced"], 8).await.unwrap();
        assert_eq!(body(&blobs, "obj_s", &sha).await, b"reviewed");
        // Even a second, racing confirm seals its bytes under another digest.
        let other = confirm(&blobs, "obj_s").await;
        assert_ne!(other, sha);
        assert_eq!(body(&blobs, "obj_s", &sha).await, b"reviewed");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_copy_keeps_the_bytes_it_was_digested_from() {
        let (blobs, dir) = local();
        upload(&blobs, "obj_c", &[b"first"], 5).await.unwrap();
        let candidate = blobs.copy_upload("obj_c").await.unwrap();
        upload(&blobs, "obj_c", &[b"later"], 5).await.unwrap();
        let sha = candidate.sha256.clone();
        assert_eq!(sha, hex::encode(Sha256::digest(b"first")));
        blobs.seal(candidate).await.unwrap();
        assert_eq!(body(&blobs, "obj_c", &sha).await, b"first");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_upload_over_its_limit_leaves_the_previous_one() {
        let (blobs, dir) = local();
        upload(&blobs, "obj_b", &[b"old"], 3).await.unwrap();
        let refused = upload(&blobs, "obj_b", &[b"too ", b"long"], 5).await;
        assert!(matches!(refused, Err(BlobError::TooLarge { limit: 5 })));
        assert_eq!(
            blobs.upload_size("obj_b").await.unwrap(),
            Some(3),
            "the previous upload stays"
        );
        let leftovers: Vec<_> = walk(&dir)
            .into_iter()
            .filter(|p| !p.ends_with("signing.key"))
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_inventory_names_each_blob_and_remove_takes_one() {
        let (blobs, dir) = local();
        upload(&blobs, "obj_i", &[b"bytes"], 5).await.unwrap();
        let sha = confirm(&blobs, "obj_i").await;
        upload(&blobs, "obj_i", &[b"late!"], 5).await.unwrap();
        let mut found: Vec<_> = blobs
            .inventory()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, stored, _)| (id, stored))
            .collect();
        found.sort_by_key(|(_, s)| format!("{s:?}"));
        assert_eq!(
            found,
            vec![
                ("obj_i".to_owned(), Stored::Sealed(sha.clone())),
                ("obj_i".to_owned(), Stored::Upload),
            ]
        );
        blobs.remove("obj_i", &Stored::Upload).await.unwrap();
        assert_eq!(blobs.upload_size("obj_i").await.unwrap(), None);
        assert_eq!(body(&blobs, "obj_i", &sha).await, b"bytes");
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
        assert_eq!(blobs.upload_size("obj_s3").await.unwrap(), Some(15));
        let sha = confirm(&blobs, "obj_s3").await;
        assert_eq!(sha, hex::encode(Sha256::digest(b"presigned bytes")));
        // The presigned PUT still works after confirm, but reaches only the upload key.
        let late = client
            .put(&put.url)
            .body("other bytes!!!!")
            .send()
            .await
            .unwrap();
        assert!(late.status().is_success());
        let get = blobs
            .download_url("obj_s3", &sha, now, now + chrono::Duration::minutes(15))
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
        assert_eq!(blobs.upload_size("obj_s3").await.unwrap(), None);
        assert!(matches!(
            blobs.read("obj_s3", &sha, None).await,
            Err(BlobError::NotFound)
        ));
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
