//! `ipto objects …`: a provider's objects (SPEC §3.4). An upload declares the file's SHA-256,
//! computed here, streams the bytes from disk to the signed URL (never whole in memory), and
//! confirms; the server recomputes the checksum and refuses a mismatch. Several files go up at
//! once, and a re-run skips files whose checksum the dataset already holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::client::api::{Api, ApiError};
use crate::client::datasets::{details, segment};
use crate::client::table::Column;
use crate::client::{ClientError, ListArgs, Output, Session};

/// `ipto objects …`
#[derive(Debug, Subcommand)]
pub enum ObjectsCommand {
    /// Uploads files (a directory's whole tree with `--recursive`), several at once.
    Upload {
        dataset_id: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Descend into directories.
        #[arg(long, short)]
        recursive: bool,
        /// The media type of every file (else guessed from each extension).
        #[arg(long)]
        content_type: Option<String>,
        /// `key=value` metadata for every file (repeatable).
        #[arg(long = "metadata", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        /// Files uploaded at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
    },
    /// A dataset's objects, newest first: ID, FILE, STATUS, SIZE.
    List {
        dataset_id: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// One object.
    Get { id: String },
    /// Downloads an object (another tenant's is charged), verifying its SHA-256.
    Download {
        id: String,
        /// Where to write it (default: its file name, here).
        #[arg(short = 'o', long = "to")]
        to: Option<PathBuf>,
        /// The most this download may cost, in USD (else any price).
        #[arg(long)]
        max_charge: Option<String>,
    },
    /// Deletes an object and its bytes.
    Delete { id: String },
}

fn key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not key=value"))
}

pub const COLUMNS: [Column; 4] = [
    ("ID", "object_id"),
    ("FILE", "filename"),
    ("STATUS", "status"),
    ("SIZE", "size_bytes"),
];

/// Runs an objects command.
pub async fn run(session: &Session, command: ObjectsCommand) -> Result<(), ClientError> {
    let api = session.api()?;
    match command {
        ObjectsCommand::Upload {
            dataset_id,
            paths,
            recursive,
            content_type,
            metadata,
            jobs,
        } => {
            let files = collect(&paths, recursive)?;
            let plan = Plan {
                dataset_id,
                content_type,
                metadata: metadata.into_iter().collect(),
            };
            upload(session, &api, &plan, files, usize::from(jobs)).await
        }
        ObjectsCommand::List { dataset_id, list } => {
            let path = format!("/datasets/{}/objects", segment(&dataset_id));
            session.print_list(list.fetch(&api, &path).await?, &COLUMNS);
            Ok(())
        }
        ObjectsCommand::Get { id } => {
            let object = api.get(&format!("/objects/{}", segment(&id))).await?;
            session.print(&object, details);
            Ok(())
        }
        ObjectsCommand::Download { id, to, max_charge } => {
            let mut path = format!("/objects/{}/download", segment(&id));
            if let Some(max) = max_charge {
                path.push_str(&format!("?max_charge={}", crate::client::api::encode(&max)));
            }
            let ticket = api.get(&path).await?;
            let target = match to {
                Some(to) => to,
                None => PathBuf::from(
                    Path::new(ticket["filename"].as_str().unwrap_or("download"))
                        .file_name()
                        .unwrap_or_else(|| std::ffi::OsStr::new("download")),
                ),
            };
            download(&api, &ticket, &target).await?;
            let summary = json!({ "path": target.display().to_string(), "ticket": ticket });
            session.print(&summary, |s| {
                format!(
                    "{} ({} bytes, SHA-256 verified), charged {} USD\n",
                    text(&s["path"]),
                    s["ticket"]["size_bytes"],
                    s["ticket"]["charged_amount"]
                )
            });
            Ok(())
        }
        ObjectsCommand::Delete { id } => {
            let object = api.delete(&format!("/objects/{}", segment(&id))).await?;
            session.print(&object, details);
            Ok(())
        }
    }
}

/// What every file of one upload shares.
struct Plan {
    dataset_id: String,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// The files named: each file, and with `recursive` every file under each directory, in path
/// order. A directory without `--recursive` is a usage error; links are not followed.
fn collect(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, ClientError> {
    let mut files = BTreeSet::new();
    let mut pending: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
        if meta.is_file() {
            files.insert(path);
        } else if meta.is_dir() {
            if !recursive {
                return Err(ClientError::Usage(format!(
                    "{} is a directory: pass --recursive",
                    path.display()
                )));
            }
            let entries = std::fs::read_dir(&path)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
                pending.push(entry.path());
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// The lowercase hex SHA-256 and length of a file, read in 1 MiB pieces.
async fn digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// How one file ended.
enum Outcome {
    Uploaded(Value),
    Skipped(String),
    Failed(String),
}

async fn upload(
    session: &Session,
    api: &Api,
    plan: &Plan,
    files: Vec<PathBuf>,
    jobs: usize,
) -> Result<(), ClientError> {
    // What the dataset already holds (a 404 here stops before anything is uploaded).
    let path = format!("/datasets/{}/objects", segment(&plan.dataset_id));
    let held: BTreeSet<String> = api
        .list(&path, "items", None, true)
        .await?
        .iter()
        .filter(|o| !matches!(o["status"].as_str(), Some("deleted" | "cancelled")))
        .filter_map(|o| o["checksum_sha256"].as_str().map(str::to_owned))
        .collect();
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress = progress_bar(session, total_bytes, files.len());
    let outcomes: Vec<(PathBuf, Outcome)> = futures::stream::iter(files)
        .map(|file| {
            let progress = progress.clone();
            let held = &held;
            async move {
                let outcome = match one(api, plan, &file, held, &progress).await {
                    Ok(outcome) => outcome,
                    Err(error) => Outcome::Failed(error.to_string()),
                };
                progress.set_message(file.display().to_string());
                (file, outcome)
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    progress.finish_and_clear();

    let mut uploaded = Vec::new();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    for (file, outcome) in outcomes {
        let name = file.display().to_string();
        match outcome {
            Outcome::Uploaded(object) => uploaded.push(json!({ "path": name, "object": object })),
            Outcome::Skipped(sha) => skipped.push(json!({ "path": name, "checksum_sha256": sha })),
            Outcome::Failed(error) => failed.push(json!({ "path": name, "error": error })),
        }
    }
    for list in [&mut uploaded, &mut skipped, &mut failed] {
        list.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    }
    let summary = json!({ "uploaded": uploaded, "skipped": skipped, "failed": failed });
    session.print(&summary, |s| {
        let mut out = String::new();
        for f in s["failed"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "failed   {}: {}\n",
                text(&f["path"]),
                text(&f["error"])
            ));
        }
        let count = |k: &str| s[k].as_array().map_or(0, Vec::len);
        out.push_str(&format!(
            "{} uploaded, {} skipped (already in the dataset), {} failed\n",
            count("uploaded"),
            count("skipped"),
            count("failed")
        ));
        out
    });
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Failed(format!(
            "{} of the files failed",
            failed.len()
        )))
    }
}

/// Uploads one file unless the dataset already holds its checksum.
async fn one(
    api: &Api,
    plan: &Plan,
    file: &Path,
    held: &BTreeSet<String>,
    progress: &indicatif::ProgressBar,
) -> Result<Outcome, ClientError> {
    let mut upload = Upload::file(file, plan.content_type.clone(), &plan.metadata).await?;
    if held.contains(&upload.checksum_sha256) {
        progress.inc(upload.size_bytes);
        return Ok(Outcome::Skipped(upload.checksum_sha256));
    }
    upload
        .metadata
        .entry("path")
        .or_insert_with(|| file.display().to_string().into());
    Ok(Outcome::Uploaded(
        upload.send(api, &plan.dataset_id, progress).await?,
    ))
}

/// Where an upload's bytes come from.
pub enum Source {
    /// A file, streamed from disk.
    File(PathBuf),
    /// Bytes already in memory (an agent's tool call).
    Memory(bytes::Bytes),
}

/// One object to upload: what is declared for it, and its bytes.
pub struct Upload {
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub checksum_sha256: String,
    pub metadata: Map<String, Value>,
    pub bytes: Source,
}

impl Upload {
    /// A file: its SHA-256 and length read from disk, its media type `content_type` or guessed
    /// from the extension.
    pub async fn file(
        file: &Path,
        content_type: Option<String>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, ClientError> {
        let (checksum_sha256, size_bytes) = digest(file)
            .await
            .map_err(|e| ClientError::Failed(format!("{}: {e}", file.display())))?;
        let filename = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            content_type: content_type.unwrap_or_else(|| guess(file)),
            filename,
            size_bytes,
            checksum_sha256,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
            bytes: Source::File(file.to_owned()),
        })
    }

    /// Bytes in memory named `filename`.
    pub fn memory(
        filename: String,
        bytes: bytes::Bytes,
        content_type: Option<String>,
        metadata: Map<String, Value>,
    ) -> Self {
        Self {
            content_type: content_type.unwrap_or_else(|| guess(Path::new(&filename))),
            filename,
            size_bytes: bytes.len() as u64,
            checksum_sha256: hex::encode(Sha256::digest(&bytes)),
            metadata,
            bytes: Source::Memory(bytes),
        }
    }

    /// Initiates the upload in `dataset_id`, sends the bytes to the signed URL and confirms; the
    /// confirmed object. An upload whose bytes did not arrive is cancelled.
    pub async fn send(
        self,
        api: &Api,
        dataset_id: &str,
        progress: &indicatif::ProgressBar,
    ) -> Result<Value, ClientError> {
        let body = json!({
            "filename": self.filename,
            "content_type": self.content_type,
            "size_bytes": self.size_bytes,
            "checksum_sha256": self.checksum_sha256,
            "metadata": self.metadata,
        });
        let path = format!("/datasets/{}/objects/upload", segment(dataset_id));
        let ticket = api.post(&path, body).await?;
        let object_id = ticket["object_id"].as_str().unwrap_or_default().to_owned();
        if let Err(error) = transfer(api, &ticket, self.bytes, progress).await {
            let _ = api
                .delete(&format!("/objects/{}/upload", segment(&object_id)))
                .await;
            return Err(error);
        }
        Ok(api
            .post(
                &format!("/objects/{}/confirm", segment(&object_id)),
                json!({}),
            )
            .await?)
    }
}

/// The media type of a file name's extension.
fn guess(file: &Path) -> String {
    mime_guess::from_path(file)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// Sends the bytes to the ticket's signed URL (a file streamed from disk), counting them on the
/// progress bar.
async fn transfer(
    api: &Api,
    ticket: &Value,
    bytes: Source,
    progress: &indicatif::ProgressBar,
) -> Result<(), ClientError> {
    let body = match bytes {
        Source::File(file) => {
            let opened = tokio::fs::File::open(&file)
                .await
                .map_err(|e| ClientError::Failed(format!("{}: {e}", file.display())))?;
            let counted = progress.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(opened, 256 * 1024).inspect(
                move |chunk| {
                    if let Ok(bytes) = chunk {
                        counted.inc(bytes.len() as u64);
                    }
                },
            );
            reqwest::Body::wrap_stream(stream)
        }
        Source::Memory(bytes) => {
            progress.inc(bytes.len() as u64);
            reqwest::Body::from(bytes)
        }
    };
    let empty = Map::new();
    api.send_signed(
        ticket["upload_method"].as_str().unwrap_or("PUT"),
        ticket["upload_url"].as_str().unwrap_or_default(),
        ticket["upload_headers"].as_object().unwrap_or(&empty),
        body,
    )
    .await
    .map_err(ApiError::into)
}

/// Streams a ticket's bytes into `target` through `target.part`, hashing them as they arrive; the
/// file appears only when its SHA-256 is the ticket's.
pub async fn download(api: &Api, ticket: &Value, target: &Path) -> Result<(), ClientError> {
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| ClientError::Failed(format!("{}: {e}", target.display()));
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut response = api
        .fetch_signed(ticket["download_url"].as_str().unwrap_or_default())
        .await?;
    let mut file = tokio::fs::File::create(&part).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let written: Result<(), ClientError> = async {
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::Failed(format!("download interrupted: {e}")))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)
    }
    .await;
    let actual = hex::encode(hasher.finalize());
    let expected = ticket["checksum_sha256"].as_str().unwrap_or_default();
    let outcome = written.and_then(|()| {
        if actual == expected {
            Ok(())
        } else {
            Err(ClientError::Failed(format!(
                "the bytes' SHA-256 is {actual}, not {expected}: not saved"
            )))
        }
    });
    match outcome {
        Ok(()) => tokio::fs::rename(&part, target).await.map_err(io),
        Err(error) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(error)
        }
    }
}

/// A bar of bytes and files on a terminal; hidden otherwise (and with `--output json`).
fn progress_bar(session: &Session, bytes: u64, files: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if session.output == Output::Json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(bytes);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ({prefix} files) {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(files.to_string());
    bar
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("-").to_owned()
}
