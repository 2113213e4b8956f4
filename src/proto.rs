//! Code generated from `proto/llmjobs/v1` by `build.rs` (prost messages, tonic client and server).
//!
//! Nothing here is written by hand; the lint allowances cover generated code only.

#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]

/// Package `llmjobs.v1`.
pub mod v1 {
    tonic::include_proto!("llmjobs.v1");
}

/// Encoded `FileDescriptorSet` of every `.proto` file, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("llmjobs_descriptor");
