//! Domain types to wire types (`llmjobs.v1`); [`event`] and [`progress`] map both ways.

pub mod event;
pub mod progress;

use chrono::{DateTime, Utc};

use crate::{
    job::{GenerationParams, Job, JobError, JobStatus, Outcome, Priority, StreamingMode, Usage},
    proto::v1,
};

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a date-time (`None` when out of range; negative nanos count as 0).
pub fn datetime(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

/// A JSON value as a `google.protobuf.Value`.
pub fn json_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind as K;
    let kind = match v {
        serde_json::Value::Null => K::NullValue(0),
        serde_json::Value::Bool(b) => K::BoolValue(*b),
        serde_json::Value::Number(n) => K::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => K::StringValue(s.clone()),
        serde_json::Value::Array(items) => K::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(map) => K::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Value` as JSON. Numbers that are whole and exact in an f64 become
/// integers (protobuf has one number type; JSON Schema tells `integer` apart).
pub fn value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind as K;
    match &v.kind {
        None | Some(K::NullValue(_)) => serde_json::Value::Null,
        Some(K::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(K::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(K::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(K::ListValue(l)) => l.values.iter().map(value_json).collect(),
        Some(K::StructValue(st)) => struct_json(st),
    }
}

/// A `google.protobuf.Struct` as a JSON object.
pub fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

/// Wire status.
pub fn status(s: JobStatus) -> v1::JobStatus {
    match s {
        JobStatus::Queued => v1::JobStatus::Queued,
        JobStatus::Running => v1::JobStatus::Running,
        JobStatus::Completed => v1::JobStatus::Completed,
        JobStatus::Failed => v1::JobStatus::Failed,
        JobStatus::Cancelled => v1::JobStatus::Cancelled,
    }
}

/// Wire priority.
pub fn priority(p: Priority) -> v1::Priority {
    match p {
        Priority::Urgent => v1::Priority::Urgent,
        Priority::High => v1::Priority::High,
        Priority::Normal => v1::Priority::Normal,
        Priority::Low => v1::Priority::Low,
    }
}

/// Wire streaming mode.
pub fn streaming_mode(m: StreamingMode) -> v1::StreamingMode {
    match m {
        StreamingMode::Realtime => v1::StreamingMode::Realtime,
        StreamingMode::Buffered => v1::StreamingMode::Buffered,
    }
}

/// Wire usage.
pub fn usage(u: &Usage) -> v1::Usage {
    v1::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        total_tokens: u.total_tokens,
        estimated: u.estimated,
        cached_input_tokens: u.cached_input_tokens,
        reasoning_tokens: u.reasoning_tokens,
    }
}

/// Wire error.
pub fn job_error(e: &JobError) -> v1::JobError {
    v1::JobError {
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

/// Wire generation config.
pub fn generation_config(p: &GenerationParams) -> v1::GenerationConfig {
    v1::GenerationConfig {
        model: p.model.clone(),
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop.clone(),
        seed: p.seed,
        response_format: p.response_format.as_ref().map(response_format),
    }
}

/// Wire response format.
pub fn response_format(f: &crate::job::ResponseFormat) -> v1::ResponseFormat {
    use v1::response_format::Type;
    match f {
        crate::job::ResponseFormat::JsonObject => v1::ResponseFormat {
            r#type: Type::JsonObject.into(),
            ..Default::default()
        },
        crate::job::ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
            description,
        } => v1::ResponseFormat {
            r#type: Type::JsonSchema.into(),
            schema_name: name.clone(),
            schema: match json_value(schema).kind {
                Some(prost_types::value::Kind::StructValue(s)) => Some(s),
                _ => None,
            },
            strict: *strict,
            description: description.clone(),
        },
    }
}

/// Wire job; `output_tokens` comes from the live state (0 when unknown).
pub fn job(j: &Job, output_tokens: u64) -> v1::Job {
    v1::Job {
        id: j.id.to_string(),
        status: status(j.status).into(),
        job_type: j.job_type.clone(),
        priority: priority(j.priority).into(),
        queue: j.queue.clone(),
        attempts: j.attempts,
        output_tokens,
        generation_config: Some(generation_config(&j.params)),
        streaming_mode: streaming_mode(j.streaming_mode).into(),
        metadata: j.metadata.clone().into_iter().collect(),
        create_time: Some(timestamp(j.created_at)),
        start_time: j.started_at.map(timestamp),
        end_time: j.finished_at.map(timestamp),
        error: if j.status == JobStatus::Failed {
            j.error.as_ref().map(job_error)
        } else {
            None
        },
        last_sequence: j.last_sequence,
        tags: j.tags.clone(),
        batch_id: j.batch_id.map(|b| b.to_string()).unwrap_or_default(),
    }
}

/// Wire result of a terminal job, with the errors of its failed attempts.
pub fn job_result(
    j: &Job,
    outcome: Option<&Outcome>,
    attempt_errors: &[(u32, JobError)],
) -> v1::JobResult {
    let empty = Outcome::default();
    let o = outcome.unwrap_or(&empty);
    v1::JobResult {
        job_id: j.id.to_string(),
        status: status(j.status).into(),
        content: o.content.clone(),
        reasoning_content: o.reasoning_content.clone(),
        finish_reason: o.finish_reason.clone(),
        model: if o.model.is_empty() {
            j.params.model.clone()
        } else {
            o.model.clone()
        },
        usage: outcome.map(|o| usage(&o.usage)),
        time_to_first_token_ms: o.time_to_first_token_ms,
        duration_ms: o.duration_ms,
        output_tokens_per_second: o.output_tokens_per_second,
        queue_wait_ms: o.queue_wait_ms,
        provider: o.provider.clone(),
        simulated: o.simulated,
        attempts: j.attempts,
        cost_usd: o.cost_usd,
        error: if j.status == JobStatus::Failed {
            j.error.as_ref().map(job_error)
        } else {
            None
        },
        streaming_stats: outcome.map(|o| v1::StreamingStats {
            chunks: o.streaming.chunks,
            bytes: o.streaming.bytes,
            inter_token_latency_p50_ms: o.streaming.inter_token_p50_ms,
            inter_token_latency_p95_ms: o.streaming.inter_token_p95_ms,
        }),
        upstream_request_id: o.upstream_request_id.clone().unwrap_or_default(),
        attempt_errors: attempt_errors
            .iter()
            .map(|(attempt, e)| v1::AttemptError {
                attempt: *attempt,
                error: Some(job_error(e)),
            })
            .collect(),
        structured_output: o.structured.as_ref().map(|so| v1::StructuredOutput {
            valid: so.valid,
            json: so.json.as_ref().map(json_value),
            errors: so
                .errors
                .iter()
                .map(|(path, message)| v1::ValidationError {
                    path: path.clone(),
                    message: message.clone(),
                })
                .collect(),
        }),
    }
}
