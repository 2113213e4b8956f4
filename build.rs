//! Compiles `proto/` into Rust (prost + tonic) and a descriptor set for server reflection.
//!
//! The `.proto` files are parsed by `protox` (pure Rust), so no system `protoc` is needed.

use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let protos = [
        "proto/llmjobs/v1/jobs.proto",
        "proto/llmjobs/v1/admin.proto",
        "proto/llmjobs/v1/batches.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    // `embed_migrations!` reads `migrations/` at compile time; a new migration must rebuild.
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("llmjobs_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        // tonic-prost's codec, with undecodable requests as INVALID_ARGUMENT (src/api/codec.rs).
        .codec_path("crate::api::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
