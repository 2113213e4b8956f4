//! The gRPC services: decode requests, call the gateway, encode responses.
//!
//! - [`admin`]: the `llmjobs.v1.QueueAdminService` implementation.
//! - [`jobs`]: the `llmjobs.v1.JobService` implementation.
//! - [`validate`]: it turns a `SubmitJobRequest` into a [`crate::job::NewJob`] or field violations.
//! - [`convert`]: maps domain types to wire types.

pub mod admin;
pub mod convert;
pub mod jobs;
pub mod validate;
