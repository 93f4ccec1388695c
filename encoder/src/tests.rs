use super::*;
use proptest::prelude::*;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Texts of every kind the index embeds: short, long past 128 tokens, non-Latin, repeated.
fn texts() -> Vec<String> {
    vec![
        "Send a document".into(),
        "Transfer a file".into(),
        "A volcano erupts".into(),
        "The dog chased the cat".into(),
        "The cat chased the dog".into(),
        "Containers from Rotterdam arrive late because of port congestion.".into(),
        "Quarterly revenue of the northern region fell by 4% after the price change.".into(),
        "日本語 中文 مرحبا café 🦀".into(),
        "word ".repeat(200),
        "The present study is a history of the DEWEY Decimal Classification. The first \
         edition of the DDC was published in 1876, the eighteenth edition in 1971, and future \
         editions will continue to appear as needed. In spite of the DDC's long and healthy \
         life, however, its full story has never been told."
            .into(),
    ]
}

#[test]
fn vectors_agree_with_the_f32_reference_and_rank_alike() {
    let reference = pocket_encoder::Encoder::new().unwrap();
    let encoder = Encoder::new().unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = reference.embed(&refs).unwrap();
    let got = encoder.embed(&refs).unwrap();
    for ((text, e), g) in texts.iter().zip(&expected).zip(&got) {
        assert_eq!(g.len(), 384);
        let norm: f32 = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let c = cosine(e, g);
        assert!(c > 0.999, "cosine {c} for {text:?}");
    }
    let rank = |query: &[f32], rows: &[Vec<f32>]| {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| cosine(query, &rows[b]).total_cmp(&cosine(query, &rows[a])));
        order.truncate(3);
        order
    };
    for query in [
        "I need to transfer a file",
        "why are shipments delayed",
        "an erupting volcano",
    ] {
        let q_ref = &reference.embed(&[query]).unwrap()[0];
        let q = &encoder.embed(&[query]).unwrap()[0];
        assert_eq!(rank(q, &got), rank(q_ref, &expected), "{query}");
    }
}

#[test]
fn a_text_has_the_same_vector_alone_and_in_any_batch() {
    let encoder = Encoder::new().unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let together = encoder.embed(&refs).unwrap();
    let reversed: Vec<&str> = refs.iter().rev().copied().collect();
    let backwards = encoder.embed(&reversed).unwrap();
    for (i, text) in refs.iter().enumerate() {
        let alone = encoder.embed(&[text]).unwrap();
        assert_eq!(alone[0], together[i], "{text:?}");
        assert_eq!(backwards[refs.len() - 1 - i], together[i], "{text:?}");
    }
}

#[test]
fn blank_or_oversized_input_is_refused_not_embedded() {
    let encoder = Encoder::new().unwrap();
    for texts in [vec![""], vec!["ok", "  \n"]] {
        assert!(matches!(encoder.embed(&texts), Err(EncoderError::Input(_))));
    }
    let big = "a".repeat(MAX_TEXT_BYTES + 1);
    assert!(matches!(
        encoder.embed(&[&big]),
        Err(EncoderError::Input(_))
    ));
    let many = vec!["a"; MAX_TEXTS + 1];
    assert!(matches!(encoder.embed(&many), Err(EncoderError::Input(_))));
    assert_eq!(encoder.embed(&[]).unwrap(), Vec::<Vec<f32>>::new());
}

#[test]
fn the_identity_names_the_reference_model_and_the_integer_arithmetic() {
    let identity: serde_json::Value = serde_json::from_str(&Encoder::identity()).unwrap();
    let reference = serde_json::to_value(pocket_encoder::model_info()).unwrap();
    assert_eq!(identity["revision"], reference["revision"]);
    assert!(identity["compute"].as_str().unwrap().starts_with("int8"));
    assert_ne!(identity, reference);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Each output of a quantised layer is within the error its two roundings allow: half an
    /// input step times the weights' magnitudes, plus half a weight step times the inputs'.
    #[test]
    fn a_quantised_layer_is_within_its_rounding_of_the_exact_product(
        (inputs, outputs, rows, weights, x) in (1usize..40, 1usize..24, 1usize..20)
            .prop_flat_map(|(i, o, r)| (
                Just(i), Just(o), Just(r),
                proptest::collection::vec(-2.0f32..2.0, i * o),
                proptest::collection::vec(-50.0f32..50.0, i * r),
            ))
    ) {
        let gemm = GemmExecutor::<u8, i8, i32>::default();
        let weight_max = if gemm.may_saturate() { 63.0 } else { 127.0 };
        let bias: Vec<f32> = (0..outputs).map(|c| c as f32 * 0.5 - 3.0).collect();
        let layer = Linear::new(&gemm, &weights, bias.clone(), inputs, weight_max);
        let y = layer.forward(&gemm, &x);
        prop_assert_eq!(y.len(), rows * outputs);
        for r in 0..rows {
            let row = &x[r * inputs..][..inputs];
            let (lo, hi) = row.iter().fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            for c in 0..outputs {
                let w = &weights[c * inputs..][..inputs];
                let exact: f32 = bias[c] + row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
                let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())) / weight_max;
                let bound = step / 2.0 * w.iter().map(|v| v.abs()).sum::<f32>()
                    + scale / 2.0 * row.iter().map(|v| v.abs()).sum::<f32>()
                    + step * scale * inputs as f32 / 4.0
                    + 1e-3 * (1.0 + exact.abs());
                let got = y[r * outputs + c];
                prop_assert!((got - exact).abs() <= bound, "row {} col {}: {} vs {} (bound {})", r, c, got, exact, bound);
            }
        }
    }
}
