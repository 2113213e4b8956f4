//! The `SubmitJobRequest` validator: checks each part of the request in the order its
//! violations are reported, then builds the job.

use std::collections::BTreeMap;

use super::{Rules, generation, labels, text::truncate};
use crate::{
    error::FieldViolation,
    job::{ChatMessage, Limits, NewJob, Priority, StreamingMode, queue_name},
    proto::v1,
};

const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

/// Checks `req` and builds the job, or returns every violation found.
pub fn submit(mut req: v1::SubmitJobRequest, rules: &Rules) -> Result<NewJob, Vec<FieldViolation>> {
    let limits = &rules.limits;
    let mut v = nul_violations(&req);
    let has_prompt = !req.prompt.trim().is_empty();
    conversation(&req, has_prompt, limits, &mut v);
    let job_type = job_type(&req.job_type, rules, &mut v);
    let priority = priority(req.priority, &mut v);
    let streaming_mode = streaming_mode(req.streaming_mode, &mut v);
    let params = generation::params(req.generation_config.take(), rules, &mut v);
    labels::metadata(&req.metadata, limits, &mut v);
    labels::idempotency_key(&req.idempotency_key, &mut v);
    attempts_and_timeout(&req, limits, &mut v);
    labels::tags(&req.tags, limits, &mut v);
    if !v.is_empty() {
        return Err(v);
    }
    let timeout = req
        .timeout_seconds
        .map(|s| std::time::Duration::from_secs(u64::from(s)));
    Ok(NewJob {
        id: uuid::Uuid::now_v7(),
        queue: queue_name(&job_type, priority),
        job_type,
        priority,
        messages: messages(req.system_prompt, req.prompt, has_prompt, req.messages),
        params,
        streaming_mode,
        metadata: req.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
        max_attempts: req.max_attempts.unwrap_or(rules.max_attempts).max(1),
        tags: req.tags,
        tenant: crate::auth::DEFAULT_TENANT.into(),
        discard_prompt: false,
        trace_context: None,
        timeout,
    })
}

/// One violation per field holding NUL, which cannot be stored (Postgres text) and is never
/// meaningful in a prompt; repeats of a field (metadata) are reported once.
fn nul_violations(req: &v1::SubmitJobRequest) -> Vec<FieldViolation> {
    const NUL_FREE: &str = "must not contain NUL characters";
    let mut v = Vec::new();
    let mut nul = |field: String, s: &str| {
        if s.contains('\0') {
            v.push(FieldViolation::new(field, NUL_FREE));
        }
    };
    nul("prompt".into(), &req.prompt);
    nul("system_prompt".into(), &req.system_prompt);
    nul("idempotency_key".into(), &req.idempotency_key);
    for (i, m) in req.messages.iter().enumerate() {
        nul(format!("messages[{i}].content"), &m.content);
    }
    for (k, val) in &req.metadata {
        nul("metadata".into(), k);
        nul("metadata".into(), val);
    }
    if let Some(g) = &req.generation_config {
        for s in &g.stop {
            nul("generation_config.stop".into(), s);
        }
    }
    v.dedup();
    v
}

/// Checks what the model is asked: a prompt or messages (not both), each message's role and
/// content, a user turn to answer, and the total size.
fn conversation(
    req: &v1::SubmitJobRequest,
    has_prompt: bool,
    limits: &Limits,
    v: &mut Vec<FieldViolation>,
) {
    if has_prompt && !req.messages.is_empty() {
        v.push(FieldViolation::new(
            "prompt",
            "set either prompt or messages, not both",
        ));
    } else if !has_prompt && req.messages.is_empty() {
        v.push(FieldViolation::new(
            "prompt",
            "must not be empty (or give messages)",
        ));
    }
    if req.messages.len() > limits.max_messages {
        v.push(FieldViolation::new(
            "messages",
            format!("at most {} messages", limits.max_messages),
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            v.push(FieldViolation::new(
                format!("messages[{i}].role"),
                format!("must be one of {}", ROLES.join(", ")),
            ));
        }
        if m.content.trim().is_empty() {
            v.push(FieldViolation::new(
                format!("messages[{i}].content"),
                "must not be empty",
            ));
        }
    }
    // A conversation is answered as its user's turn: without one there is nothing to answer
    // (an assistant-only list would have the model continue its own words).
    if !has_prompt && !req.messages.is_empty() && !req.messages.iter().any(|m| m.role == "user") {
        v.push(FieldViolation::new(
            "messages",
            "must include a message with role \"user\"",
        ));
    }
    let prompt_bytes = req.prompt.len()
        + req.system_prompt.len()
        + req.messages.iter().map(|m| m.content.len()).sum::<usize>();
    if prompt_bytes > limits.max_prompt_bytes {
        v.push(FieldViolation::new(
            "prompt",
            format!(
                "prompt, system prompt and messages exceed {} bytes",
                limits.max_prompt_bytes
            ),
        ));
    }
}

/// The job type (`general` when none is given); a violation unless it is configured.
fn job_type(raw: &str, rules: &Rules, v: &mut Vec<FieldViolation>) -> String {
    let job_type = if raw.is_empty() {
        "general".to_owned()
    } else {
        raw.to_owned()
    };
    if !rules.job_types.contains(&job_type) {
        v.push(FieldViolation::new(
            "job_type",
            format!(
                "unknown job type {:?}; configured: {}",
                truncate(&job_type),
                rules.job_types.join(", ")
            ),
        ));
    }
    job_type
}

/// The priority (normal when unspecified); a violation for an unknown value.
fn priority(raw: i32, v: &mut Vec<FieldViolation>) -> Priority {
    match v1::Priority::try_from(raw) {
        Ok(v1::Priority::Urgent) => Priority::Urgent,
        Ok(v1::Priority::High) => Priority::High,
        Ok(v1::Priority::Normal | v1::Priority::Unspecified) => Priority::Normal,
        Ok(v1::Priority::Low) => Priority::Low,
        Err(_) => {
            v.push(FieldViolation::new(
                "priority",
                format!("unknown value {raw}"),
            ));
            Priority::Normal
        }
    }
}

/// The streaming mode (real time unless buffered); a violation for an unknown value.
fn streaming_mode(raw: i32, v: &mut Vec<FieldViolation>) -> StreamingMode {
    match v1::StreamingMode::try_from(raw) {
        Ok(v1::StreamingMode::Buffered) => StreamingMode::Buffered,
        Ok(_) => StreamingMode::Realtime,
        Err(_) => {
            v.push(FieldViolation::new(
                "streaming_mode",
                format!("unknown value {raw}"),
            ));
            StreamingMode::Realtime
        }
    }
}

/// Checks `max_attempts` and `timeout_seconds` against the server's caps.
fn attempts_and_timeout(req: &v1::SubmitJobRequest, limits: &Limits, v: &mut Vec<FieldViolation>) {
    if let Some(n) = req.max_attempts
        && (n == 0 || n > limits.max_attempts_cap)
    {
        v.push(FieldViolation::new(
            "max_attempts",
            format!("must be within 1..={}", limits.max_attempts_cap),
        ));
    }
    let timeout_cap = limits.timeout_cap.as_secs();
    if let Some(t) = req.timeout_seconds
        && (t == 0 || u64::from(t) > timeout_cap)
    {
        v.push(FieldViolation::new(
            "timeout_seconds",
            format!("must be within 1..={timeout_cap}"),
        ));
    }
}

/// The conversation sent upstream: the system prompt (when not blank), the prompt as the
/// user's turn (when given), then the request's messages.
fn messages(
    system_prompt: String,
    prompt: String,
    has_prompt: bool,
    rest: Vec<v1::ChatMessage>,
) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(rest.len() + 2);
    if !system_prompt.trim().is_empty() {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system_prompt,
        });
    }
    if has_prompt {
        messages.push(ChatMessage {
            role: "user".into(),
            content: prompt,
        });
    }
    messages.extend(rest.into_iter().map(|m| ChatMessage {
        role: m.role,
        content: m.content,
    }));
    messages
}

#[cfg(test)]
mod tests;
