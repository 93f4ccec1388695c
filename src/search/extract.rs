//! Text extraction and chunking: what of an approved object the index holds. Plain text, Markdown
//! and CSV are read as UTF-8; JSON is flattened to `key: value` lines; PDF gives its text layer,
//! read by a child process (`ipto extract-pdf`) with its own time and memory limits, because a
//! hostile PDF can make the parser loop, recurse until its stack overflows or allocate without
//! end, and a thread can be neither stopped nor capped. Other types are found by filename and
//! metadata only.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::blobs::{BlobError, Blobs};
use crate::config::Config;

/// Extracted text kept per object (SPEC appendix: 10 MiB of text).
pub const MAX_TEXT_BYTES: usize = 10 * 1024 * 1024;
/// PDFs are parsed in memory; larger ones are indexed by filename and metadata only.
pub const MAX_PDF_BYTES: usize = 64 * 1024 * 1024;
/// Characters per chunk; a chunk ends at whitespace where one is near.
pub const CHUNK_CHARS: usize = 1000;
/// Characters per passage, the dense leg's unit: a chunk is cut into passages that fit the
/// encoder's window (128 WordPiece tokens hold some 500 characters of English prose).
pub const PASSAGE_CHARS: usize = 500;
/// What `ipto extract-pdf` writes before the text: output without it is not an extraction (it
/// may be another program's, e.g. a test binary run in its place).
const PDF_TEXT_HEADER: &[u8] = b"ipto-pdf-text/1\n";
/// The start of the extractor's standard error kept to explain a failure.
const STDERR_KEPT: usize = 4096;

/// The kinds of content whose text is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Json,
    Pdf,
}

impl Kind {
    /// The kind of a content type (parameters such as `charset` ignored), if its text is indexed.
    pub fn of(content_type: &str) -> Option<Kind> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" | "text/markdown" | "text/csv" => Some(Kind::Text),
            "application/json" => Some(Kind::Json),
            "application/pdf" => Some(Kind::Pdf),
            _ => None,
        }
    }
}

/// How PDFs are read: the program run as `PROGRAM extract-pdf`, and its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdfExtractor {
    pub program: PathBuf,
    /// Wall-clock deadline, and the child's CPU time limit.
    pub timeout: Duration,
    /// The child's address space limit, in MiB.
    pub memory_mb: u64,
}

impl PdfExtractor {
    /// The extractor the configuration names: `IPTO_PDF_EXTRACTOR`, else this executable.
    pub fn from_config(config: &Config) -> Self {
        Self {
            program: config
                .pdf_extractor
                .clone()
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("ipto")),
            timeout: Duration::from_secs(config.pdf_timeout_seconds),
            memory_mb: config.pdf_memory_mb,
        }
    }
}

/// Why a PDF's text could not be had within its budget.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PdfFailure {
    /// Still running at the deadline, or stopped at its CPU time limit.
    #[error("PDF extraction ran past its time limit")]
    Timeout,
    /// Stopped when an allocation went past its address space limit.
    #[error("PDF extraction ran past its memory limit")]
    Memory,
    /// Ended by a signal, or with a non-zero status, or without the expected output.
    #[error("PDF extraction failed: {0}")]
    Crashed(String),
    /// The extractor could not be started.
    #[error("PDF extractor could not start: {0}")]
    Unavailable(String),
}

impl PdfFailure {
    /// Every [`PdfFailure::reason`].
    pub const REASONS: [&'static str; 4] = ["timeout", "memory", "crashed", "unavailable"];

    /// A short name, for `/health` and the metrics' `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Crashed(_) => "crashed",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// What was extracted of an object.
#[derive(Debug, Default)]
pub struct Extracted {
    /// The text, if the content type has any and it could be read.
    pub text: Option<String>,
    /// Set when a PDF's extraction failed (its text is then `None`).
    pub failure: Option<PdfFailure>,
}

/// The object's text, `None` when its type carries none we read (or the PDF has no usable text
/// layer, or its extraction failed: see [`Extracted::failure`]). A missing blob (deleted after
/// approval, seen again during a rebuild) has no text.
pub async fn extract(
    blobs: &Blobs,
    object_id: &str,
    sha256: &str,
    content_type: &str,
    pdf: &PdfExtractor,
) -> Result<Extracted, BlobError> {
    let Some(kind) = Kind::of(content_type) else {
        return Ok(Extracted::default());
    };
    let limit = match kind {
        Kind::Text | Kind::Json => MAX_TEXT_BYTES,
        Kind::Pdf => MAX_PDF_BYTES,
    };
    let (total, _, mut stream) = match blobs.read(object_id, sha256, None).await {
        Ok(read) => read,
        Err(BlobError::NotFound) => return Ok(Extracted::default()),
        Err(other) => return Err(other),
    };
    if kind == Kind::Pdf && total as usize > limit {
        return Ok(Extracted::default());
    }
    let mut bytes = Vec::with_capacity((total as usize).min(limit));
    while let Some(chunk) = stream.try_next().await? {
        let room = limit - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() >= limit {
            break;
        }
    }
    drop(stream);
    let extracted = match kind {
        Kind::Pdf => match run_pdf_extractor(pdf, bytes).await {
            Ok(text) => Extracted {
                text: Some(text).filter(|t| !t.trim().is_empty()),
                failure: None,
            },
            Err(failure) => Extracted {
                text: None,
                failure: Some(failure),
            },
        },
        Kind::Text | Kind::Json => Extracted {
            text: tokio::task::spawn_blocking(move || match kind {
                Kind::Json => flatten_json(bytes),
                _ => utf8_prefix(bytes),
            })
            .await
            .ok(),
            failure: None,
        },
    };
    Ok(Extracted {
        text: extracted.text.map(|t| truncate(t, MAX_TEXT_BYTES)),
        ..extracted
    })
}

/// Runs `PROGRAM extract-pdf` on `bytes`: the PDF on its standard input, its text on its
/// standard output. It is killed at the deadline (and stops itself at its CPU limit); it gets no
/// environment, so none of the service's secrets.
async fn run_pdf_extractor(pdf: &PdfExtractor, bytes: Vec<u8>) -> Result<String, PdfFailure> {
    let mut child = tokio::process::Command::new(&pdf.program)
        .arg("extract-pdf")
        .arg("--memory-mb")
        .arg(pdf.memory_mb.to_string())
        .arg("--cpu-seconds")
        .arg(pdf.timeout.as_secs().max(1).to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| PdfFailure::Unavailable(format!("{}: {e}", pdf.program.display())))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(PdfFailure::Unavailable("no pipes to the extractor".into()));
    };
    let exchange = async {
        let feed = async move {
            // A child that stopped early closes its end: its exit status says why.
            let _ = stdin.write_all(&bytes).await;
            drop(stdin);
        };
        let cap = PDF_TEXT_HEADER.len() + MAX_TEXT_BYTES;
        let (_, text, errors) = tokio::join!(
            feed,
            read_capped(stdout, cap),
            read_capped(stderr, STDERR_KEPT)
        );
        let status = child.wait().await;
        (status, text, errors)
    };
    let (status, text, errors) = match tokio::time::timeout(pdf.timeout, exchange).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(PdfFailure::Timeout);
        }
    };
    let status = status.map_err(|e| PdfFailure::Crashed(e.to_string()))?;
    let errors = String::from_utf8_lossy(&errors);
    if !status.success() {
        return Err(classify(status, &errors));
    }
    match text.strip_prefix(PDF_TEXT_HEADER) {
        Some(body) => Ok(utf8_prefix(body.to_vec())),
        None => Err(PdfFailure::Crashed("unexpected output".into())),
    }
}

/// Why the extractor ended unsuccessfully, from its exit status and the start of its stderr.
fn classify(status: std::process::ExitStatus, stderr: &str) -> PdfFailure {
    use std::os::unix::process::ExitStatusExt;
    // Rust's allocation failure handler reports and aborts.
    if stderr.contains("memory allocation of") {
        return PdfFailure::Memory;
    }
    match status.signal() {
        Some(signal) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| format!("signal {signal}"));
            // SIGXCPU at the soft CPU limit, SIGKILL at the hard one.
            if signal == nix::libc::SIGXCPU || signal == nix::libc::SIGKILL {
                PdfFailure::Timeout
            } else {
                PdfFailure::Crashed(format!("killed by {name}"))
            }
        }
        None => PdfFailure::Crashed(format!("exit status {}", status.code().unwrap_or(-1))),
    }
}

/// Reads `from` to its end, keeping the first `cap` bytes (the rest is read and dropped, so the
/// writer never blocks on a full pipe).
async fn read_capped(mut from: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}

/// `ipto extract-pdf`: caps its own address space and CPU time (and core dumps), then reads a
/// PDF on stdin and writes [`PDF_TEXT_HEADER`] and its text on stdout. Exit 0 also for a PDF
/// without text or that the parser rejects; 2 if the limits cannot be set, 3 on unreadable
/// input. A panic, a stack overflow or a failed allocation ends it otherwise.
///
/// The limits are set, then the program runs itself again under them: an allocator reserves its
/// address space when the process starts, before `main`, and a limit only bounds mappings made
/// after it is set, so only an image started under the limit is held to it.
pub fn extract_pdf_command(memory_mb: u64, cpu_seconds: u64) -> ExitCode {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let memory = memory_mb.saturating_mul(1024 * 1024);
    let limits = [
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_AS, memory, memory),
        (
            Resource::RLIMIT_CPU,
            cpu_seconds,
            cpu_seconds.saturating_add(1),
        ),
    ];
    let in_force = limits
        .iter()
        .all(|(resource, soft, _)| getrlimit(*resource).is_ok_and(|(current, _)| current <= *soft));
    if !in_force {
        for (resource, soft, hard) in limits {
            if let Err(e) = setrlimit(resource, soft, hard) {
                eprintln!("extract-pdf: cannot limit {resource:?}: {e}");
                return ExitCode::from(2);
            }
        }
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(e) => {
                eprintln!("extract-pdf: {e}");
                return ExitCode::from(2);
            }
        };
        // Only returns on failure.
        let error = std::process::Command::new(program)
            .args(std::env::args_os().skip(1))
            .exec();
        eprintln!("extract-pdf: cannot run under its limits: {error}");
        return ExitCode::from(2);
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin()
        .lock()
        .take(MAX_PDF_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
    {
        eprintln!("extract-pdf: {e}");
        return ExitCode::from(3);
    }
    let text = pdf_text(&bytes).unwrap_or_default();
    let text = truncate(text, MAX_TEXT_BYTES);
    let mut out = std::io::stdout().lock();
    match out
        .write_all(PDF_TEXT_HEADER)
        .and_then(|()| out.write_all(text.as_bytes()))
        .and_then(|()| out.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extract-pdf: {e}");
            ExitCode::from(3)
        }
    }
}

/// UTF-8 text, tolerating a character cut at the end of a truncated read and invalid bytes.
fn utf8_prefix(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// JSON as `key: value` lines of its scalar leaves (arrays keep their parent's key); text that is
/// not JSON is indexed as it is.
fn flatten_json(bytes: Vec<u8>) -> String {
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value) => {
            let mut out = String::new();
            flatten_into(&value, "", &mut out);
            out
        }
        Err(_) => utf8_prefix(bytes),
    }
}

fn flatten_into(value: &serde_json::Value, key: &str, out: &mut String) {
    use serde_json::Value;
    let mut line = |text: &str| {
        if !key.is_empty() {
            out.push_str(key);
            out.push_str(": ");
        }
        out.push_str(text);
        out.push('\n');
    };
    match value {
        Value::Null => {}
        Value::Bool(b) => line(if *b { "true" } else { "false" }),
        Value::Number(n) => line(&n.to_string()),
        Value::String(s) => line(s),
        Value::Array(items) => items.iter().for_each(|v| flatten_into(v, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten_into(v, k, out)),
    }
}

/// The text layer of a PDF; `None` for a PDF that the parser rejects or that has no text. Only
/// ever called in `ipto extract-pdf`: a panic there ends that process, never the service.
fn pdf_text(bytes: &[u8]) -> Option<String> {
    match pdf_extract::extract_text_from_mem(bytes) {
        Ok(text) if !text.trim().is_empty() => Some(text),
        _ => None,
    }
}

fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A piece of the extracted text and where it sits, in Unicode scalar offsets (end exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub start: usize,
    pub end: usize,
    pub text: &'a str,
}

/// Splits text into consecutive chunks of at most [`CHUNK_CHARS`] characters, preferring to end
/// each at whitespace in its last fifth. Chunks cover the text exactly, without overlap.
pub fn chunks(text: &str) -> Vec<Chunk<'_>> {
    split(text, CHUNK_CHARS, false)
}

/// Splits one chunk's text into passages of at most [`PASSAGE_CHARS`] characters, preferring to
/// end each at a sentence's end, else at whitespace, in its second half; offsets are from the
/// chunk's start. Passages cover the chunk exactly, without overlap, so a chunk alone tells where
/// its passages are.
pub fn passages(text: &str) -> Vec<Chunk<'_>> {
    split(text, PASSAGE_CHARS, true)
}

/// Consecutive pieces of at most `max` characters that cover `text` exactly: each ends (with
/// `sentences`) after the last sentence end (`.`, `!`, `?` or a line break, then whitespace) in
/// its second half, else at whitespace in its last fifth, else at `max`.
fn split(text: &str, max: usize, sentences: bool) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut start = 0;
    while !rest.is_empty() {
        let mut cut = rest.len();
        let mut taken = 0;
        let mut last_space = None;
        let mut last_sentence = None;
        let mut previous = ' ';
        for (i, c) in rest.char_indices() {
            if taken == max {
                cut = i;
                break;
            }
            taken += 1;
            if c.is_whitespace() {
                let at = Some((i + c.len_utf8(), taken));
                if taken > max * 4 / 5 {
                    last_space = at;
                }
                if sentences
                    && taken > max / 2
                    && (matches!(previous, '.' | '!' | '?') || c == '\n')
                {
                    last_sentence = at;
                }
            }
            previous = c;
        }
        if cut < rest.len() {
            if let Some((at, n)) = last_sentence.or(last_space) {
                cut = at;
                taken = n;
            }
        }
        let (head, tail) = rest.split_at(cut);
        out.push(Chunk {
            start,
            end: start + taken,
            text: head,
        });
        start += taken;
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_types_choose_the_extractor() {
        assert_eq!(Kind::of("text/plain; charset=utf-8"), Some(Kind::Text));
        assert_eq!(Kind::of("Text/Markdown"), Some(Kind::Text));
        assert_eq!(Kind::of("text/csv"), Some(Kind::Text));
        assert_eq!(Kind::of("application/json"), Some(Kind::Json));
        assert_eq!(Kind::of("application/pdf"), Some(Kind::Pdf));
        assert_eq!(Kind::of("image/png"), None);
    }

    #[test]
    fn json_becomes_key_value_lines() {
        let text = flatten_json(
            br#"{"vendor":"Acme","lines":[{"amount":12.5},{"amount":3}],"paid":false,"x":null}"#
                .to_vec(),
        );
        assert_eq!(text, "amount: 12.5\namount: 3\npaid: false\nvendor: Acme\n");
        assert_eq!(flatten_json(b"not json".to_vec()), "not json");
    }

    #[test]
    fn an_extractor_that_ends_badly_is_classified_by_its_status_and_stderr() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        let signalled = |signal: i32| ExitStatus::from_raw(signal);
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(classify(signalled(24), ""), PdfFailure::Timeout);
        assert_eq!(classify(signalled(9), ""), PdfFailure::Timeout);
        assert_eq!(
            classify(signalled(6), "memory allocation of 33396608 bytes failed\n"),
            PdfFailure::Memory
        );
        assert_eq!(
            classify(signalled(11), ""),
            PdfFailure::Crashed("killed by SIGSEGV".into())
        );
        assert_eq!(
            classify(exited(101), "thread 'main' panicked"),
            PdfFailure::Crashed("exit status 101".into())
        );
    }

    #[tokio::test]
    async fn a_missing_or_foreign_extractor_fails_without_text() {
        let extractor = |program: &str| PdfExtractor {
            program: program.into(),
            timeout: Duration::from_secs(5),
            memory_mb: 512,
        };
        let missing = run_pdf_extractor(&extractor("/nonexistent/ipto"), b"%PDF".to_vec()).await;
        assert!(
            matches!(missing, Err(PdfFailure::Unavailable(_))),
            "{missing:?}"
        );
        // A program that exits 0 without the header did not extract anything.
        let foreign = run_pdf_extractor(&extractor("echo"), b"%PDF".to_vec()).await;
        assert_eq!(
            foreign,
            Err(PdfFailure::Crashed("unexpected output".into()))
        );
    }

    #[test]
    fn a_pdf_that_is_not_one_gives_no_text() {
        assert_eq!(pdf_text(b"%PDF-1.4 garbage"), None);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
    }

    proptest! {
        #[test]
        fn chunks_cover_the_text_exactly_with_scalar_offsets(text in "(\\PC|\\s){0,3000}") {
            let pieces = chunks(&text);
            let joined: String = pieces.iter().map(|c| c.text).collect();
            prop_assert_eq!(&joined, &text);
            let mut at = 0;
            for piece in &pieces {
                prop_assert_eq!(piece.start, at);
                prop_assert_eq!(piece.end - piece.start, piece.text.chars().count());
                prop_assert!(piece.end - piece.start <= CHUNK_CHARS);
                prop_assert!(!piece.text.is_empty());
                at = piece.end;
            }
            prop_assert_eq!(at, text.chars().count());
        }

        #[test]
        fn passages_cover_a_chunk_exactly(text in "(\\PC|\\s|[.?!] ){0,1200}") {
            let pieces = passages(&text);
            let joined: String = pieces.iter().map(|c| c.text).collect();
            prop_assert_eq!(&joined, &text);
            let mut at = 0;
            for piece in &pieces {
                prop_assert_eq!(piece.start, at);
                prop_assert_eq!(piece.end - piece.start, piece.text.chars().count());
                prop_assert!(piece.end - piece.start <= PASSAGE_CHARS);
                at = piece.end;
            }
            prop_assert_eq!(at, text.chars().count());
        }
    }

    #[test]
    fn passages_end_at_sentences() {
        let sentence = "The port of Rotterdam reports congestion at the container terminals. ";
        let text = sentence.repeat(12);
        let pieces = passages(&text);
        assert!(pieces.len() >= 2);
        for piece in &pieces[..pieces.len() - 1] {
            assert!(piece.text.ends_with(". "), "{:?}", piece.text);
        }
    }
}
