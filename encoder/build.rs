//! Finds the bundled encoder's assets (weights, shapes, tokenizer) in the `pocket-encoder`
//! package that cargo has already fetched for this build, and hands their directory to the crate
//! as `ENCODER_ASSETS`. The crate checks their digests against `pocket_encoder::model_info()`
//! when it loads them, so they are the very files that package embeds.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    let assets = assets();
    for file in ["model.safetensors", "shapes.json", "tokenizer.json"] {
        let path = assets.join(file);
        assert!(
            path.is_file(),
            "the encoder asset {} is missing",
            path.display()
        );
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=ENCODER_ASSETS={}", assets.display());
}

/// The `assets` directory of the `pocket-encoder` package in this build's dependency graph.
fn assets() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // Only this target's packages: those are the ones cargo has fetched (no network here).
    let target = std::env::var("TARGET").expect("set by cargo");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(target)
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "pocket-encoder")
        .expect("pocket-encoder is a dependency of this crate");
    PathBuf::from(package["manifest_path"].as_str().expect("a manifest path"))
        .parent()
        .expect("a manifest lies in a directory")
        .join("assets")
}
