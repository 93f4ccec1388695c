//! The dense leg's embedders: text in, unit-length vectors out. The seam is [`Embedder`]; the
//! default is the bundled encoder (paraphrase-MiniLM-L3-v2 as `pocket-encoder` ships it, 384
//! dimensions, CPU only, no download) run on 8-bit integers by the `encoder` crate; `pocket-f32`
//! runs the same weights in `pocket-encoder`'s own f32 code (the reference, about 3× slower); a
//! deployment may instead name an OpenAI-compatible embeddings endpoint it runs itself, or switch
//! the dense leg off. Chosen by `IPTO_EMBEDDER`.
//!
//! Every embedder has an [`Embedder::identity`]: the vectors of one identity are never compared
//! with another's, and the index re-embeds everything when the configured identity changes.

use std::sync::Arc;
use std::time::Duration;

/// Why text could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedder: {0}")]
    Failed(String),
}

/// Turns passages and queries into vectors of one coordinate space.
pub trait Embedder: Send + Sync {
    /// Everything that decides the coordinates (model, revision, preprocessing), as one string:
    /// stored with the vectors, compared for exact equality.
    fn identity(&self) -> &str;
    /// Whether one call already uses every core (else callers spread calls over threads).
    fn parallel(&self) -> bool {
        false
    }
    /// One unit-length vector per text, in order. Texts are non-empty.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The embedder a configuration names: `pocket` (the default), `pocket-f32`, `none`, or
/// `openai:{url}#{model}` for an OpenAI-compatible `POST {url}` embeddings endpoint.
pub fn from_setting(setting: &str) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
    let setting = setting.trim();
    match setting {
        "" | "pocket" => Ok(Some(Arc::new(Pocket::new()?))),
        "pocket-f32" => Ok(Some(Arc::new(PocketF32::new()?))),
        "none" => Ok(None),
        other => match other.strip_prefix("openai:") {
            Some(rest) => Ok(Some(Arc::new(OpenAiCompatible::new(rest)?))),
            None => Err(EmbedError::Failed(format!(
                "unknown embedder {other:?}: expected pocket, pocket-f32, none or openai:URL#MODEL"
            ))),
        },
    }
}

/// The bundled sentence encoder on 8-bit integers (the default).
pub struct Pocket {
    encoder: encoder::Encoder,
    identity: String,
}

impl Pocket {
    /// Loads the compiled-in weights (once per process).
    pub fn new() -> Result<Self, EmbedError> {
        let encoder = encoder::Encoder::new().map_err(|e| EmbedError::Failed(e.to_string()))?;
        Ok(Self {
            encoder,
            identity: encoder::Encoder::identity(),
        })
    }
}

impl Embedder for Pocket {
    fn identity(&self) -> &str {
        &self.identity
    }

    /// Already spread over every core.
    fn parallel(&self) -> bool {
        true
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.encoder
            .embed(texts)
            .map_err(|e| EmbedError::Failed(e.to_string()))
    }
}

/// The bundled sentence encoder in `pocket-encoder`'s own f32 code, one text at a time.
pub struct PocketF32 {
    encoder: pocket_encoder::Encoder,
    identity: String,
}

impl PocketF32 {
    /// Loads the compiled-in weights (once per process).
    pub fn new() -> Result<Self, EmbedError> {
        let encoder =
            pocket_encoder::Encoder::new().map_err(|e| EmbedError::Failed(e.to_string()))?;
        let info = pocket_encoder::model_info();
        let identity = serde_json::to_string(&info).expect("model info serialises");
        Ok(Self { encoder, identity })
    }
}

impl Embedder for PocketF32 {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.encoder
            .embed(texts)
            .map_err(|e| EmbedError::Failed(e.to_string()))
    }
}

/// An OpenAI-compatible embeddings endpoint (`{"model", "input": [..]}` →
/// `{"data": [{"index", "embedding"}]}`) that the deployment runs itself. Its identity is the
/// model name (the endpoint may move without re-embedding); the vectors are normalised here. Called from blocking threads of the
/// server's runtime.
pub struct OpenAiCompatible {
    url: String,
    model: String,
    identity: String,
    /// The length of the endpoint's vectors, once seen: it may not change while running.
    width: std::sync::OnceLock<usize>,
    client: reqwest::Client,
}

impl OpenAiCompatible {
    /// `{url}#{model}`.
    pub fn new(spec: &str) -> Result<Self, EmbedError> {
        let usage = || EmbedError::Failed("an openai embedder is written openai:URL#MODEL".into());
        let (url, model) = spec.split_once('#').ok_or_else(usage)?;
        let parsed = url::Url::parse(url).map_err(|_| usage())?;
        if !matches!(parsed.scheme(), "http" | "https") || model.is_empty() {
            return Err(usage());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EmbedError::Failed(e.to_string()))?;
        Ok(Self {
            url: url.to_owned(),
            model: model.to_owned(),
            identity: serde_json::json!({"kind": "openai-compatible", "model": model}).to_string(),
            width: std::sync::OnceLock::new(),
            client,
        })
    }
}

#[derive(serde::Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl Embedder for OpenAiCompatible {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let failed = |e: &dyn std::fmt::Display| EmbedError::Failed(e.to_string());
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| failed(&"the openai embedder runs on the server's runtime"))?;
        let request = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({"model": self.model, "input": texts}));
        let response: EmbeddingsResponse = runtime.block_on(async {
            let response = request.send().await.map_err(|e| failed(&e))?;
            if !response.status().is_success() {
                return Err(failed(&format!("status {}", response.status())));
            }
            response.json().await.map_err(|e| failed(&e))
        })?;
        let mut out = vec![Vec::new(); texts.len()];
        for item in response.data {
            let slot = out
                .get_mut(item.index)
                .ok_or_else(|| failed(&"an embedding for an input not sent"))?;
            *slot = normalised(item.embedding).ok_or_else(|| failed(&"an unusable embedding"))?;
        }
        let width = out.first().map_or(0, Vec::len);
        if out.iter().any(|v| v.is_empty() || v.len() != width) {
            return Err(failed(&"embeddings missing or of different lengths"));
        }
        let known = *self.width.get_or_init(|| width);
        if known != width {
            return Err(failed(&"the endpoint changed its embeddings' length"));
        }
        Ok(out)
    }
}

/// `v` scaled to unit length, if it is finite and not zero.
pub fn normalised(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut v {
        *x = (f64::from(*x) / norm) as f32;
    }
    Some(v)
}
