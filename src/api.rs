//! The gRPC services: decode requests, call the gateway, encode responses.
//!
//! - [`admin`]: the `llmjobs.v1.QueueAdminService` implementation.
//! - [`batches`]: the `llmjobs.v1.BatchService` implementation.
//! - [`jobs`]: the `llmjobs.v1.JobService` implementation.
//! - [`validate`]: one validator per request message; each turns a request into domain values
//!   (a `SubmitJobRequest` into a [`crate::job::NewJob`]) or field violations.
//! - [`convert`]: maps domain types to wire types (events and progress both ways).
//! - [`event_codec`]: the protobuf encoding of job events and progress snapshots that the
//!   event logs store and watchers are sent ([`crate::events::Codec`]).

use crate::{audit::Auditor, job::PromptStorage, ratelimit::Limiter};

/// What every service needs beyond its core: the audit log, the per-key client limits, and
/// how prompts are stored. The caller itself ([`crate::auth::Principal`]) comes with each
/// request, from [`crate::auth::layer`].
#[derive(Clone)]
pub struct Guard {
    /// Writes audit events.
    pub auditor: Auditor,
    /// Unfinished-job limits per key (request rates are applied by the auth layer).
    pub limiter: Limiter,
    /// How prompts are stored.
    pub prompt_storage: PromptStorage,
}

impl Guard {
    /// Applies the prompt storage mode to a validated job before it is stored.
    pub fn store_prompt_as_configured(&self, job: &mut crate::job::NewJob) {
        match self.prompt_storage {
            PromptStorage::Full => {}
            PromptStorage::Redacted => {
                for m in &mut job.messages {
                    if let std::borrow::Cow::Owned(masked) = crate::redact::redact(&m.content) {
                        m.content = masked;
                    }
                }
            }
            PromptStorage::None => job.discard_prompt = true,
        }
    }
}

/// The W3C trace headers of a call (`traceparent`, `tracestate`): gRPC metadata, where
/// grpc-web's HTTP headers arrive too. A value that is not visible ASCII counts as absent.
pub fn trace_headers(metadata: &tonic::metadata::MetadataMap) -> crate::trace::Headers<'_> {
    let get = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
    crate::trace::Headers::new(
        get(crate::trace::TRACEPARENT),
        get(crate::trace::TRACESTATE),
    )
}

pub mod admin;
pub mod batches;
pub mod codec;
pub mod convert;
mod disconnect;
pub mod event_codec;
pub mod frames;
pub mod jobs;
pub mod validate;
