//! The bundled sentence encoder, run on 8-bit integers.
//!
//! `pocket-encoder` ships paraphrase-MiniLM-L3-v2 (3 layers, 384 dimensions, 128 tokens) with
//! 4-bit weights, and runs it in f32, one text at a time. This crate loads the very same files
//! (their digests are checked against `pocket_encoder::model_info()`) and runs the same network
//! faster:
//! - every linear layer is one u8 × i8 → i32 matrix product over all tokens of a batch (no
//!   padding), with the weights quantised once per output channel and each token's activations
//!   quantised as they come (asymmetric, per token); VNNI on AVX-512 CPUs, else AVX2 or portable
//!   kernels, chosen at run time by `rten-gemm`;
//! - attention, layer norms, GELU and softmax stay in f32, in `rten-vecmath`'s vector kernels;
//! - a batch is split across the cores, one single-threaded part per core.
//!
//! Its vectors agree with the f32 reference to a cosine above 0.999 (tested below), but are not
//! identical to it, so [`Encoder::identity`] differs from the reference's.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix};
use rten_simd::{SimdOp, SimdUnaryOp};
use rten_tensor::NdTensorView;
use rten_vecmath::{
    ExtendInit, Gelu, MinMax, Normalize, NormalizeOptions, Quantize, Softmax, Sum, SumSquareSub,
};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

const HIDDEN: usize = 384;
const HEADS: usize = 12;
const HEAD: usize = HIDDEN / HEADS;
const INTERMEDIATE: usize = 1536;
const LAYERS: usize = 3;
const VOCABULARY: usize = 30522;
const POSITIONS: usize = 512;
/// Tokens per text, special tokens included; longer texts are cut on the right.
pub const MAX_TOKENS: usize = 128;
/// Texts per call.
pub const MAX_TEXTS: usize = 4096;
/// Bytes per text.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

const WEIGHTS: &[u8] = include_bytes!(concat!(env!("ENCODER_ASSETS"), "/model.safetensors"));
const SHAPES: &str = include_str!(concat!(env!("ENCODER_ASSETS"), "/shapes.json"));
const TOKENIZER: &[u8] = include_bytes!(concat!(env!("ENCODER_ASSETS"), "/tokenizer.json"));

/// Why texts could not be encoded. Input text is never included.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncoderError {
    /// The texts break a bound of [`Encoder::embed`] (blank, too long, too many): nothing is
    /// embedded.
    #[error("{0}")]
    Input(&'static str),
    /// The bundled model could not be loaded or run.
    #[error("encoder failed: {0}")]
    Failed(String),
}

fn failed(error: impl std::fmt::Display) -> EncoderError {
    EncoderError::Failed(error.to_string())
}

/// Cheap to clone: clones share the weights.
#[derive(Clone)]
pub struct Encoder {
    model: Arc<Model>,
}

impl Encoder {
    /// The compiled-in model, loaded once per process.
    pub fn new() -> Result<Self, EncoderError> {
        static MODEL: OnceLock<Result<Arc<Model>, EncoderError>> = OnceLock::new();
        MODEL
            .get_or_init(|| Model::load().map(Arc::new))
            .clone()
            .map(|model| Self { model })
    }

    /// What decides the coordinates: the reference model's identity plus this arithmetic.
    pub fn identity() -> String {
        let mut info = serde_json::to_value(pocket_encoder::model_info()).expect("serialisable");
        info["compute"] = "int8: weights per output channel, activations per token (u8, \
                           asymmetric); attention, norms and GELU in f32"
            .into();
        info.to_string()
    }

    pub fn dimensions(&self) -> usize {
        HIDDEN
    }

    /// One unit-length vector per text, in order, computed on every core. At most
    /// [`MAX_TEXTS`] texts of at most [`MAX_TEXT_BYTES`] each; none may be blank.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError> {
        if texts.len() > MAX_TEXTS {
            return Err(EncoderError::Input("too many texts in one call"));
        }
        if texts.iter().any(|t| t.trim().is_empty()) {
            return Err(EncoderError::Input("text must not be empty"));
        }
        if texts.iter().any(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(EncoderError::Input("text exceeds 64 KiB"));
        }
        let model = &*self.model;
        let share = texts.len().div_ceil(model.pools.len()).max(1);
        std::thread::scope(|scope| {
            let parts: Vec<_> = texts
                .chunks(share)
                .zip(&model.pools)
                .map(|(part, pool)| scope.spawn(move || pool.install(|| model.embed(part))))
                .collect();
            let mut all = Vec::with_capacity(texts.len());
            for part in parts {
                all.extend(
                    part.join()
                        .map_err(|_| failed("an encoder thread panicked"))??,
                );
            }
            Ok(all)
        })
    }
}

/// A dense layer, `y = x Wᵀ + b`, with `W` quantised per output channel.
struct Linear {
    weights: PackedBMatrix<i8>,
    inputs: usize,
    outputs: usize,
    /// Per output: the weights' scale.
    scales: Vec<f32>,
    /// Per output: the sum of its quantised weights times their scale, to take the inputs'
    /// zero points back out.
    offsets: Vec<f32>,
    bias: Vec<f32>,
}

struct Norm {
    scale: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value side by side.
    qkv: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

struct Model {
    words: Vec<f32>,
    positions: Vec<f32>,
    token_types: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    tokenizer: Tokenizer,
    /// One single-threaded pool per core (at most 8): each part of a batch runs on one.
    pools: Vec<rayon::ThreadPool>,
}

/// Every tensor of the bundled file, dequantised to f32, by name: `(shape, values)`.
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

impl Model {
    fn load() -> Result<Self, EncoderError> {
        let info = pocket_encoder::model_info();
        let digest = |bytes: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if digest(WEIGHTS) != info.revision || digest(TOKENIZER)[7..] != info.tokenizer_sha256 {
            return Err(failed("the bundled assets are not pocket-encoder's"));
        }
        let mut tensors = tensors(WEIGHTS, SHAPES)?;
        let int8 = GemmExecutor::<u8, i8, i32>::default();
        // Without VNNI, x86 adds pairs of products in saturating 16 bits: weights keep 7 bits.
        let weight_max = if int8.may_saturate() { 63.0 } else { 127.0 };
        let t = &mut tensors;
        let norm = |t: &mut Tensors, name: &str| -> Result<Norm, EncoderError> {
            Ok(Norm {
                scale: take(t, &format!("{name}.weight"), &[HIDDEN])?,
                bias: take(t, &format!("{name}.bias"), &[HIDDEN])?,
            })
        };
        let linear = |t: &mut Tensors, names: &[String], inputs: usize, outputs: usize| {
            let mut weights = Vec::new();
            let mut bias = Vec::new();
            for name in names {
                weights.extend(take(t, &format!("{name}.weight"), &[outputs, inputs])?);
                bias.extend(take(t, &format!("{name}.bias"), &[outputs])?);
            }
            Ok::<_, EncoderError>(Linear::new(&int8, &weights, bias, inputs, weight_max))
        };
        let words = take(
            t,
            "embeddings.word_embeddings.weight",
            &[VOCABULARY, HIDDEN],
        )?;
        let positions = take(
            t,
            "embeddings.position_embeddings.weight",
            &[POSITIONS, HIDDEN],
        )?;
        let token_types = take(t, "embeddings.token_type_embeddings.weight", &[2, HIDDEN])?;
        let embedding_norm = norm(t, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(LAYERS);
        for layer in 0..LAYERS {
            let p = format!("encoder.layer.{layer}");
            let qkv = ["query", "key", "value"].map(|n| format!("{p}.attention.self.{n}"));
            layers.push(Layer {
                qkv: linear(t, &qkv, HIDDEN, HIDDEN)?,
                attention_output: linear(
                    t,
                    &[format!("{p}.attention.output.dense")],
                    HIDDEN,
                    HIDDEN,
                )?,
                attention_norm: norm(t, &format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(
                    t,
                    &[format!("{p}.intermediate.dense")],
                    HIDDEN,
                    INTERMEDIATE,
                )?,
                output: linear(t, &[format!("{p}.output.dense")], INTERMEDIATE, HIDDEN)?,
                output_norm: norm(t, &format!("{p}.output.LayerNorm"))?,
            });
        }
        let mut tokenizer = Tokenizer::from_bytes(TOKENIZER).map_err(failed)?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(failed)?;
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let pools = (0..cores)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        Ok(Self {
            words,
            positions,
            token_types,
            embedding_norm,
            layers,
            tokenizer,
            pools,
        })
    }

    /// The texts' vectors, on the calling thread. (The matrix kernels are chosen per call: they
    /// cannot move between threads; choosing is a feature test.)
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let int8 = GemmExecutor::<u8, i8, i32>::default();
        let f32 = GemmExecutor::<f32>::default();
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(failed)?;
        let lengths: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
        if lengths.iter().any(|&n| n == 0 || n > MAX_TOKENS) {
            return Err(failed("a text's tokens are out of bounds"));
        }
        let starts: Vec<usize> = lengths
            .iter()
            .scan(0, |at, n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        let rows: usize = lengths.iter().sum();
        let mut hidden = Vec::with_capacity(rows * HIDDEN);
        for encoding in &encodings {
            let tokens = encoding.get_ids().iter().zip(encoding.get_type_ids());
            for (position, (&id, &kind)) in tokens.enumerate() {
                let (id, kind) = (id as usize, kind as usize);
                if id >= VOCABULARY || kind >= 2 {
                    return Err(failed("a token is out of the vocabulary"));
                }
                let word = &self.words[id * HIDDEN..][..HIDDEN];
                let kind = &self.token_types[kind * HIDDEN..][..HIDDEN];
                let place = &self.positions[position * HIDDEN..][..HIDDEN];
                hidden.extend(
                    word.iter()
                        .zip(kind)
                        .zip(place)
                        .map(|((w, k), p)| w + k + p),
                );
            }
        }
        self.embedding_norm.apply(&mut hidden);
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&int8, &hidden);
            let mut context = vec![0.0f32; rows * HIDDEN];
            let mut rest = context.as_mut_slice();
            for (&start, &n) in starts.iter().zip(&lengths) {
                let (out, tail) = rest.split_at_mut(n * HIDDEN);
                rest = tail;
                let rows = &qkv[start * 3 * HIDDEN..(start + n) * 3 * HIDDEN];
                attention(&f32, rows, n, out);
            }
            let mut attended = layer.attention_output.forward(&int8, &context);
            for (a, h) in attended.iter_mut().zip(&hidden) {
                *a += h;
            }
            layer.attention_norm.apply(&mut attended);
            let mut intermediate = layer.intermediate.forward(&int8, &attended);
            Gelu {}.map_mut(&mut intermediate);
            hidden = layer.output.forward(&int8, &intermediate);
            for (h, a) in hidden.iter_mut().zip(&attended) {
                *h += a;
            }
            layer.output_norm.apply(&mut hidden);
        }
        starts
            .iter()
            .zip(&lengths)
            .map(|(&start, &n)| {
                let mut pooled = vec![0.0f64; HIDDEN];
                for row in hidden[start * HIDDEN..(start + n) * HIDDEN].chunks_exact(HIDDEN) {
                    for (p, &v) in pooled.iter_mut().zip(row) {
                        *p += f64::from(v);
                    }
                }
                let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt();
                if !norm.is_finite() || norm <= 0.0 {
                    return Err(failed("a non-finite or zero embedding"));
                }
                Ok(pooled.iter().map(|v| (v / norm) as f32).collect())
            })
            .collect()
    }
}

/// Self-attention of one sequence: `qkv` holds its `n` rows of query, key and value side by
/// side; each head's output goes to its columns of `out` (`n` rows of [`HIDDEN`]).
fn attention(gemm: &GemmExecutor<f32>, qkv: &[f32], n: usize, out: &mut [f32]) {
    let view = |at: usize| {
        NdTensorView::from_data_with_strides([n, HEAD], &qkv[at..], [3 * HIDDEN, 1])
            .expect("the head lies within the rows")
    };
    let mut scores = vec![0.0f32; n * n];
    let mut context = vec![0.0f32; n * HEAD];
    for head in 0..HEADS {
        let query = view(head * HEAD);
        let key = view(HIDDEN + head * HEAD);
        let value = view(2 * HIDDEN + head * HEAD);
        let scaled = GemmOptions {
            alpha: 1.0 / (HEAD as f32).sqrt(),
            ..Default::default()
        };
        gemm.gemm(
            &mut scores,
            GemmInputA::Unpacked(query),
            GemmInputB::Unpacked(key.transposed()),
            scaled,
        )
        .expect("the shapes agree");
        for row in scores.chunks_exact_mut(n) {
            Softmax::new_mut(row).dispatch();
        }
        let weights = NdTensorView::from_data([n, n], scores.as_slice());
        gemm.gemm(
            &mut context,
            GemmInputA::Unpacked(weights),
            GemmInputB::Unpacked(value),
            GemmOptions::default(),
        )
        .expect("the shapes agree");
        for (row, part) in out.chunks_exact_mut(HIDDEN).zip(context.chunks_exact(HEAD)) {
            row[head * HEAD..(head + 1) * HEAD].copy_from_slice(part);
        }
    }
}

impl Norm {
    /// Layer norm of each row of [`HIDDEN`], in place.
    fn apply(&self, values: &mut [f32]) {
        for row in values.chunks_exact_mut(HIDDEN) {
            let mean = Sum::new(row).dispatch() / HIDDEN as f32;
            let variance = SumSquareSub::new(row, mean).dispatch() / HIDDEN as f32;
            let options = NormalizeOptions {
                pre_scale_bias: mean,
                scale: (variance + 1e-12).sqrt().recip(),
                element_scale: Some(&self.scale),
                bias: 0.0,
                element_bias: Some(&self.bias),
            };
            Normalize::new_mut(row, options).dispatch();
        }
    }
}

impl Linear {
    /// `weights` is `[outputs, inputs]`, row-major; each output's row is scaled to
    /// `±weight_max`.
    fn new(
        gemm: &GemmExecutor<u8, i8, i32>,
        weights: &[f32],
        bias: Vec<f32>,
        inputs: usize,
        weight_max: f32,
    ) -> Self {
        let outputs = bias.len();
        let mut scales = Vec::with_capacity(outputs);
        let mut offsets = Vec::with_capacity(outputs);
        let mut quantised = Vec::with_capacity(weights.len());
        for row in weights.chunks_exact(inputs) {
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / weight_max } else { 1.0 };
            let start = quantised.len();
            quantised.extend(
                row.iter()
                    .map(|v| (v / scale).round().clamp(-weight_max, weight_max) as i8),
            );
            let sum: i32 = quantised[start..].iter().map(|&w| i32::from(w)).sum();
            scales.push(scale);
            offsets.push(sum as f32 * scale);
        }
        // The product's right side is `inputs × outputs`: the stored rows, transposed.
        let stored = NdTensorView::from_data([outputs, inputs], quantised.as_slice());
        Self {
            weights: gemm.prepack_b(stored.transposed()),
            inputs,
            outputs,
            scales,
            offsets,
            bias,
        }
    }

    /// `input` holds rows of `inputs`; the result the same number of rows of `outputs`.
    fn forward(&self, gemm: &GemmExecutor<u8, i8, i32>, input: &[f32]) -> Vec<f32> {
        let rows = input.len() / self.inputs;
        let mut quantised: Vec<u8> = Vec::with_capacity(input.len());
        let mut steps = Vec::with_capacity(rows);
        let mut zeros = Vec::with_capacity(rows);
        for row in input.chunks_exact(self.inputs) {
            // The range always holds 0, so that 0 is exact.
            let (min, max) = MinMax::new(row).dispatch();
            let (min, max) = (min.min(0.0), max.max(0.0));
            let step = if max > min { (max - min) / 255.0 } else { 1.0 };
            let zero = (-min / step).round().clamp(0.0, 255.0) as u8;
            steps.push(step);
            zeros.push(zero);
            quantised.extend_init(|spare| {
                Quantize::new(row, &mut spare[..self.inputs], 1.0 / step, zero).dispatch()
            });
        }
        let mut sums = vec![0i32; rows * self.outputs];
        let left = NdTensorView::from_data([rows, self.inputs], quantised.as_slice());
        gemm.gemm(
            &mut sums,
            GemmInputA::Unpacked(left),
            GemmInputB::Packed(&self.weights),
            GemmOptions::default(),
        )
        .expect("the shapes agree");
        // x ≈ step · (q − zero), w ≈ scale · w₈: y = step · scale · (Σ q·w₈ − zero · Σ w₈) + b.
        let mut out = Vec::with_capacity(rows * self.outputs);
        for ((sums, &step), &zero) in sums.chunks_exact(self.outputs).zip(&steps).zip(&zeros) {
            let shift = step * f32::from(zero);
            out.extend(
                sums.iter()
                    .zip(&self.scales)
                    .zip(self.bias.iter().zip(&self.offsets))
                    .map(|((&sum, &scale), (&bias, &offset))| {
                        step * (sum as f32 * scale) + (bias - shift * offset)
                    }),
            );
        }
        out
    }
}

/// Every tensor of the bundled file, dequantised from its 4-bit groups (the file's format:
/// nibble = q + 8, low nibble first, one f16 scale per 32 values).
fn tensors(weights: &[u8], shapes: &str) -> Result<Tensors, EncoderError> {
    let file = safetensors::SafeTensors::deserialize(weights).map_err(failed)?;
    let shapes: HashMap<String, Vec<usize>> = serde_json::from_str(shapes).map_err(failed)?;
    let mut out = HashMap::new();
    for (name, shape) in shapes {
        let count: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() < 2 {
            let tensor = file.tensor(&name).map_err(failed)?;
            tensor
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            let packed = file.tensor(&format!("{name}.q4")).map_err(failed)?;
            let scales = file.tensor(&format!("{name}.scales")).map_err(failed)?;
            let scales: Vec<f32> = scales
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect();
            let packed = packed.data();
            if packed.len() * 2 < count || scales.len() * 32 < count {
                return Err(failed("a quantised tensor is too short"));
            }
            (0..count)
                .map(|i| {
                    let nibble = (packed[i / 2] >> ((i % 2) * 4)) & 15;
                    f32::from(i16::from(nibble) - 8) * scales[i / 32]
                })
                .collect()
        };
        if data.len() != count {
            return Err(failed(format!("tensor {name} does not fill its shape")));
        }
        out.insert(name, (shape, data));
    }
    Ok(out)
}

fn take(tensors: &mut Tensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
    let (found, data) = tensors
        .remove(name)
        .ok_or_else(|| failed(format!("tensor {name} is missing")))?;
    if found != shape {
        return Err(failed(format!(
            "tensor {name} has shape {found:?}, not {shape:?}"
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests;
