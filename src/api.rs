//! The gRPC services: decode requests, call the gateway, encode responses.
//!
//! - [`admin`]: the `llmjobs.v1.QueueAdminService` implementation.
//! - [`batches`]: the `llmjobs.v1.BatchService` implementation and batch validation.
//! - [`jobs`]: the `llmjobs.v1.JobService` implementation.
//! - [`validate`]: it turns a `SubmitJobRequest` into a [`crate::job::NewJob`] or field violations.
//! - [`convert`]: maps domain types to wire types.

pub mod admin;
pub mod batches;
pub mod convert;
pub mod jobs;
pub mod validate;
