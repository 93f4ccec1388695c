//! Text extraction and chunking: what of an approved object the index holds. Plain text, Markdown
//! and CSV are read as UTF-8; JSON is flattened to `key: value` lines; PDF gives its text layer.
//! Other types are found by filename and metadata only.

use futures::TryStreamExt;

use crate::blobs::{BlobError, Blobs};

/// Extracted text kept per object (SPEC appendix: 10 MiB of text).
pub const MAX_TEXT_BYTES: usize = 10 * 1024 * 1024;
/// PDFs are parsed in memory; larger ones are indexed by filename and metadata only.
pub const MAX_PDF_BYTES: usize = 64 * 1024 * 1024;
/// Characters per chunk; a chunk ends at whitespace where one is near.
pub const CHUNK_CHARS: usize = 1000;

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

/// The object's text, or `None` when its type carries none we read (or the PDF has no usable
/// text layer). A missing blob (deleted after approval, seen again during a rebuild) is `None`.
pub async fn extract(
    blobs: &Blobs,
    object_id: &str,
    sha256: &str,
    content_type: &str,
) -> Result<Option<String>, BlobError> {
    let Some(kind) = Kind::of(content_type) else {
        return Ok(None);
    };
    let limit = match kind {
        Kind::Text | Kind::Json => MAX_TEXT_BYTES,
        Kind::Pdf => MAX_PDF_BYTES,
    };
    let (total, _, mut stream) = match blobs.read(object_id, sha256, None).await {
        Ok(read) => read,
        Err(BlobError::NotFound) => return Ok(None),
        Err(other) => return Err(other),
    };
    if kind == Kind::Pdf && total as usize > limit {
        return Ok(None);
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
    let text = tokio::task::spawn_blocking(move || match kind {
        Kind::Text => Some(utf8_prefix(bytes)),
        Kind::Json => Some(flatten_json(bytes)),
        Kind::Pdf => pdf_text(&bytes),
    })
    .await
    .unwrap_or(None);
    Ok(text.map(|t| truncate(t, MAX_TEXT_BYTES)))
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

/// The text layer of a PDF; `None` for a PDF that cannot be read. The parser runs behind
/// `catch_unwind`: a malformed file must not take the indexer down.
fn pdf_text(bytes: &[u8]) -> Option<String> {
    let outcome = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match outcome {
        Ok(Ok(text)) if !text.trim().is_empty() => Some(text),
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
    let mut out = Vec::new();
    let mut rest = text;
    let mut start = 0;
    while !rest.is_empty() {
        let mut cut = rest.len();
        let mut taken = 0;
        let mut last_space = None;
        for (i, c) in rest.char_indices() {
            if taken == CHUNK_CHARS {
                cut = i;
                break;
            }
            taken += 1;
            if c.is_whitespace() && taken > CHUNK_CHARS * 4 / 5 {
                last_space = Some((i + c.len_utf8(), taken));
            }
        }
        if cut < rest.len() {
            if let Some((at, n)) = last_space {
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
    }
}
