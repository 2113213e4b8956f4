//! Validation of `SubmitJobRequest`: every violation is collected with its field path, so a
//! client learns everything wrong with a request at once. [`filters`] checks list filters;
//! [`id`] reads every job or batch id a client sends.

pub mod filters;

use std::collections::BTreeMap;

use crate::{
    error::FieldViolation,
    job::{ChatMessage, GenerationParams, Limits, NewJob, Priority, StreamingMode, queue_name},
    proto::v1,
};

/// What validation needs from the server's configuration.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Accepted job types.
    pub job_types: Vec<String>,
    /// Model used when the request names none.
    pub default_model: String,
    /// Attempts per job.
    pub max_attempts: u32,
    /// Input limits.
    pub limits: Limits,
    /// Whether non-simulated models can be served: an API key is set, or the base URL is not
    /// OpenAI's (self-hosted servers often need no key).
    pub upstream_configured: bool,
}

const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
const MAX_MODEL_BYTES: usize = 256;

/// Checks `req` and builds the job, or returns every violation found.
pub fn submit(req: v1::SubmitJobRequest, rules: &Rules) -> Result<NewJob, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let limits = &rules.limits;

    // NUL cannot be stored (Postgres text) and is never meaningful in a prompt.
    const NUL_FREE: &str = "must not contain NUL characters";
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

    let has_prompt = !req.prompt.trim().is_empty();
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

    let job_type = if req.job_type.is_empty() {
        "general".to_owned()
    } else {
        req.job_type.clone()
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

    let priority = match v1::Priority::try_from(req.priority) {
        Ok(v1::Priority::Urgent) => Priority::Urgent,
        Ok(v1::Priority::High) => Priority::High,
        Ok(v1::Priority::Normal | v1::Priority::Unspecified) => Priority::Normal,
        Ok(v1::Priority::Low) => Priority::Low,
        Err(_) => {
            v.push(FieldViolation::new(
                "priority",
                format!("unknown value {}", req.priority),
            ));
            Priority::Normal
        }
    };
    let streaming_mode = match v1::StreamingMode::try_from(req.streaming_mode) {
        Ok(v1::StreamingMode::Buffered) => StreamingMode::Buffered,
        Ok(_) => StreamingMode::Realtime,
        Err(_) => {
            v.push(FieldViolation::new(
                "streaming_mode",
                format!("unknown value {}", req.streaming_mode),
            ));
            StreamingMode::Realtime
        }
    };

    let mut g = req.generation_config.unwrap_or_default();
    let model = if g.model.is_empty() {
        rules.default_model.clone()
    } else {
        g.model
    };
    if model.len() > MAX_MODEL_BYTES || model.chars().any(char::is_control) {
        v.push(FieldViolation::new(
            "generation_config.model",
            format!("at most {MAX_MODEL_BYTES} bytes, no control characters"),
        ));
    }
    if !limits.allows_model(&model) {
        v.push(FieldViolation::new(
            "generation_config.model",
            format!(
                "model {:?} is not allowed on this server; allowed: {}",
                truncate(&model),
                limits.allowed_models.join(", ")
            ),
        ));
    } else if !rules.upstream_configured && !crate::provider::Providers::is_simulated_model(&model)
    {
        v.push(FieldViolation::new(
            "generation_config.model",
            format!(
                "{:?} needs an upstream, but OPENAI_API_KEY is not set; use the simulated model \"sim\"",
                truncate(&model)
            ),
        ));
    }
    if let Some(m) = g.max_tokens
        && (m == 0 || m > limits.max_output_tokens)
    {
        v.push(FieldViolation::new(
            "generation_config.max_tokens",
            format!("must be within 1..={}", limits.max_output_tokens),
        ));
    }
    if let Some(t) = g.temperature
        && !(0.0..=2.0).contains(&t)
    {
        v.push(FieldViolation::new(
            "generation_config.temperature",
            "must be within 0..=2",
        ));
    }
    if let Some(p) = g.top_p
        && !(0.0..=1.0).contains(&p)
    {
        v.push(FieldViolation::new(
            "generation_config.top_p",
            "must be within 0..=1",
        ));
    }
    if g.stop.len() > limits.max_stop_sequences {
        v.push(FieldViolation::new(
            "generation_config.stop",
            format!("at most {} stop sequences", limits.max_stop_sequences),
        ));
    }
    if g.stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        v.push(FieldViolation::new(
            "generation_config.stop",
            "stop sequences must be 1..=256 bytes",
        ));
    }
    let response_format = match g.response_format.take() {
        None => None,
        Some(f) => match response_format(f, limits) {
            Ok(f) => f,
            Err(violation) => {
                v.push(violation);
                None
            }
        },
    };

    if req.metadata.len() > limits.max_metadata_entries {
        v.push(FieldViolation::new(
            "metadata",
            format!("at most {} entries", limits.max_metadata_entries),
        ));
    }
    if req.metadata.iter().any(|(k, val)| {
        k.is_empty() || k.len() > limits.max_metadata_bytes || val.len() > limits.max_metadata_bytes
    }) {
        v.push(FieldViolation::new(
            "metadata",
            format!(
                "keys must be 1..={0} bytes and values at most {0} bytes",
                limits.max_metadata_bytes
            ),
        ));
    }
    // Metadata is shown back to people (dashboards, logs): nothing that moves a cursor,
    // rewrites a terminal or reorders text. Values may hold tabs and line breaks. (NUL has
    // its own violation above.)
    if let Some((k, _)) = req
        .metadata
        .iter()
        .find(|(k, val)| !metadata_printable(k, val))
    {
        v.push(FieldViolation::new(
            "metadata",
            format!(
                "entry {:?}: keys may hold no control characters and values none but tab and \
                 line breaks; neither may hold bidirectional controls",
                truncate(k)
            ),
        ));
    }
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES
        // (NUL is reported above.)
        || (!printable(&req.idempotency_key) && !req.idempotency_key.contains('\0'))
    {
        v.push(FieldViolation::new(
            "idempotency_key",
            format!(
                "at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes, without control or bidirectional \
                 characters"
            ),
        ));
    }

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

    if req.tags.len() > limits.max_tags {
        v.push(FieldViolation::new(
            "tags",
            format!("at most {} tags", limits.max_tags),
        ));
    }
    if req
        .tags
        .iter()
        .any(|t| t.is_empty() || t.len() > limits.max_tag_bytes || !printable(t))
    {
        v.push(FieldViolation::new(
            "tags",
            format!(
                "tags must be 1..={} bytes without control or bidirectional characters",
                limits.max_tag_bytes
            ),
        ));
    }

    // A tag is a label a job has or not; a repeat is a client's mistake, and would count
    // twice against the tag limit.
    if let Some(repeated) = req
        .tags
        .iter()
        .enumerate()
        .find(|(i, t)| req.tags[..*i].contains(t))
        .map(|(_, t)| t)
    {
        v.push(FieldViolation::new(
            "tags",
            format!("tag {:?} is given more than once", truncate(repeated)),
        ));
    }

    if !v.is_empty() {
        return Err(v);
    }

    let mut messages = Vec::with_capacity(req.messages.len() + 2);
    if !req.system_prompt.trim().is_empty() {
        messages.push(ChatMessage {
            role: "system".into(),
            content: req.system_prompt,
        });
    }
    if has_prompt {
        messages.push(ChatMessage {
            role: "user".into(),
            content: req.prompt,
        });
    }
    messages.extend(req.messages.into_iter().map(|m| ChatMessage {
        role: m.role,
        content: m.content,
    }));
    Ok(NewJob {
        id: uuid::Uuid::now_v7(),
        queue: queue_name(&job_type, priority),
        job_type,
        priority,
        messages,
        params: GenerationParams {
            model,
            max_tokens: g.max_tokens,
            temperature: g.temperature,
            top_p: g.top_p,
            stop: g.stop,
            seed: g.seed,
            response_format,
        },
        streaming_mode,
        metadata: req.metadata.into_iter().collect::<BTreeMap<_, _>>(),
        idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
        max_attempts: req.max_attempts.unwrap_or(rules.max_attempts).max(1),
        tags: req.tags,
        tenant: crate::auth::DEFAULT_TENANT.into(),
        discard_prompt: false,
        trace_context: None,
        timeout: req
            .timeout_seconds
            .map(|s| std::time::Duration::from_secs(u64::from(s))),
    })
}

/// Reads `raw`, the job or batch id a client sent in `field`: a UUID in the hyphenated form
/// the API writes, in either case (RFC 9562 §4: UUIDs are case-insensitive on input, and some
/// platforms print them in upper case). Other spellings (braces, `urn:uuid:`, no hyphens)
/// would read as the same job under a second name in logs and clients' maps, so they are
/// refused, naming the form to send.
pub fn id(field: impl Into<String>, raw: &str) -> Result<uuid::Uuid, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    match uuid::Uuid::try_parse(raw) {
        Ok(id) if id.hyphenated().to_string().eq_ignore_ascii_case(raw) => Ok(id),
        Ok(id) => Err(FieldViolation::new(
            field,
            format!("must be a UUID as the API writes it (with hyphens): {id}"),
        )),
        Err(_) => Err(FieldViolation::new(field, "must be a UUID")),
    }
}

/// Quotes at most 64 characters of client input in error messages.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Longest `response_format.schema_name` (the OpenAI API's limit).
const MAX_SCHEMA_NAME_CHARS: usize = 64;

/// A checked response format (`None` for plain text). Errors: the violation naming
/// `generation_config.response_format.*`.
fn response_format(
    f: v1::ResponseFormat,
    limits: &crate::job::Limits,
) -> Result<Option<crate::job::ResponseFormat>, FieldViolation> {
    use v1::response_format::Type;
    let field = |name: &str| format!("generation_config.response_format.{name}");
    match Type::try_from(f.r#type) {
        Ok(Type::Unspecified | Type::Text) => Ok(None),
        Ok(Type::JsonObject) => Ok(Some(crate::job::ResponseFormat::JsonObject)),
        Ok(Type::JsonSchema) => {
            let name_ok = (1..=MAX_SCHEMA_NAME_CHARS).contains(&f.schema_name.chars().count())
                && f.schema_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(FieldViolation::new(
                    field("schema_name"),
                    format!("1..={MAX_SCHEMA_NAME_CHARS} characters of a-z, A-Z, 0-9, '_' and '-'"),
                ));
            }
            let Some(schema) = f.schema.as_ref() else {
                return Err(FieldViolation::new(
                    field("schema"),
                    "required for TYPE_JSON_SCHEMA",
                ));
            };
            let schema = super::convert::struct_json(schema);
            let size = serde_json::to_vec(&schema).map_or(usize::MAX, |b| b.len());
            if size > limits.max_schema_bytes {
                return Err(FieldViolation::new(
                    field("schema"),
                    format!("at most {} bytes as JSON", limits.max_schema_bytes),
                ));
            }
            if let Err(e) = crate::structured::check_schema(&schema) {
                return Err(FieldViolation::new(
                    field("schema"),
                    format!("not a usable JSON Schema: {}", truncate(&e)),
                ));
            }
            if f.description.len() > 1024 {
                return Err(FieldViolation::new(
                    field("description"),
                    "at most 1024 bytes",
                ));
            }
            Ok(Some(crate::job::ResponseFormat::JsonSchema {
                name: f.schema_name,
                schema,
                strict: f.strict,
                description: f.description,
            }))
        }
        Err(_) => Err(FieldViolation::new(field("type"), "unknown type")),
    }
}

/// True when `text` holds no control characters (terminal escapes among them) and no
/// bidirectional controls: what identifiers and labels shown to people may hold.
pub fn printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// True when a metadata entry may be shown to people: a key with no control characters, a
/// value with none but tab and line breaks, neither with bidirectional controls (NUL is
/// reported on its own, so it passes here).
pub fn metadata_printable(key: &str, value: &str) -> bool {
    !key.chars()
        .any(|c| (c.is_control() && c != '\0') || is_bidi_control(c))
        && !value.chars().any(|c| {
            (c.is_control() && !matches!(c, '\0' | '\t' | '\n' | '\r')) || is_bidi_control(c)
        })
}

/// Unicode's bidirectional formatting characters (marks, embeddings, overrides, isolates),
/// which can make text display in another order than it is stored ("Trojan Source",
/// CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            job_types: vec!["general".into(), "code_review".into()],
            default_model: "sim".into(),
            max_attempts: 3,
            limits: Limits::default(),
            upstream_configured: true,
        }
    }

    fn fields(req: v1::SubmitJobRequest) -> Vec<String> {
        submit(req, &rules())
            .expect_err("invalid")
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn an_id_is_read_only_in_the_form_the_api_writes() {
        let canonical = "0190b4d2-5e6f-7000-8abc-0123456789ab";
        assert_eq!(
            id("job_id", canonical).map(|u| u.to_string()).as_deref(),
            Ok(canonical)
        );
        assert_eq!(
            id("job_id", &canonical.to_uppercase())
                .map(|u| u.to_string())
                .as_deref(),
            Ok(canonical)
        );
        for other in [
            "{0190b4d2-5e6f-7000-8abc-0123456789ab}",
            "urn:uuid:0190b4d2-5e6f-7000-8abc-0123456789ab",
            "0190b4d25e6f70008abc0123456789ab",
        ] {
            let v = id("job_ids[2]", other).expect_err(other);
            assert_eq!(v.field, "job_ids[2]");
            assert!(v.description.ends_with(canonical), "{other}: {v:?}");
        }
        for (bad, description) in [("", "must not be empty"), ("x", "must be a UUID")] {
            let v = id("batch_id", bad).expect_err(bad);
            assert_eq!(
                (v.field.as_str(), v.description.as_str()),
                ("batch_id", description)
            );
        }
    }

    #[test]
    fn a_plain_prompt_becomes_a_normal_general_job_on_the_default_model() {
        let job = submit(
            v1::SubmitJobRequest {
                prompt: "hi".into(),
                system_prompt: "be brief".into(),
                ..Default::default()
            },
            &rules(),
        )
        .expect("valid");
        assert_eq!(job.queue, "openai-general");
        assert_eq!(job.params.model, "sim");
        assert_eq!(job.messages.len(), 2);
        assert_eq!(job.messages[0].role, "system");
    }

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let got = fields(v1::SubmitJobRequest {
            job_type: "nope".into(),
            generation_config: Some(v1::GenerationConfig {
                max_tokens: Some(0),
                temperature: Some(3.0),
                top_p: Some(1.5),
                stop: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            got,
            [
                "prompt",
                "job_type",
                "generation_config.max_tokens",
                "generation_config.temperature",
                "generation_config.top_p",
                "generation_config.stop"
            ]
        );
    }

    #[test]
    fn metadata_may_not_hold_terminal_escapes_or_bidi_controls() {
        let request = |k: &str, val: &str| {
            let mut req = v1::SubmitJobRequest {
                prompt: "p".into(),
                ..Default::default()
            };
            req.metadata.insert(k.into(), val.into());
            req
        };
        let with = |k: &str, val: &str| fields(request(k, val));
        for (k, val) in [("note", "line one\nline two\ttab"), ("owner", "Zoë 👋")] {
            assert!(submit(request(k, val), &rules()).is_ok(), "{k:?} = {val:?}");
        }
        for (k, val) in [
            ("a\nb", "v"),
            ("k", "\u{1b}[2J"),
            ("k", "bell\u{7}"),
            ("k", "\u{1b}]0;title\u{7}"),
            ("k", "abc\u{202E}cba"),
            ("\u{2066}k", "v"),
            ("k", "c1\u{9b}"),
        ] {
            assert_eq!(with(k, val), ["metadata"], "{k:?} = {val:?}");
        }
    }

    #[test]
    fn tags_and_idempotency_keys_may_not_hold_terminal_escapes_or_bidi_controls() {
        let tagged = |tag: &str| v1::SubmitJobRequest {
            prompt: "p".into(),
            tags: vec![tag.into()],
            ..Default::default()
        };
        let keyed = |key: &str| v1::SubmitJobRequest {
            prompt: "p".into(),
            idempotency_key: key.into(),
            ..Default::default()
        };
        assert!(submit(tagged("nightly-ü"), &rules()).is_ok());
        assert!(submit(keyed("order-42/ü"), &rules()).is_ok());
        for bad in ["\u{202E}evil", "\u{1b}[2J", "tab\there"] {
            assert_eq!(fields(tagged(bad)), ["tags"], "{bad:?}");
            assert_eq!(fields(keyed(bad)), ["idempotency_key"], "{bad:?}");
        }
    }

    #[test]
    fn nul_characters_are_rejected_where_they_appear() {
        let mut req = v1::SubmitJobRequest {
            prompt: "a\0b".into(),
            idempotency_key: "k\0".into(),
            ..Default::default()
        };
        req.metadata.insert("x".into(), "\0".into());
        req.metadata.insert("y".into(), "\0".into());
        assert_eq!(fields(req), ["prompt", "idempotency_key", "metadata"]);
    }

    #[test]
    fn only_allowed_models_pass_an_allow_list() {
        let mut rules = rules();
        rules.limits.allowed_models = vec!["sim".into(), "gpt-4o-mini".into()];
        let on = |model: &str| v1::SubmitJobRequest {
            prompt: "hi".into(),
            generation_config: Some(v1::GenerationConfig {
                model: model.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(submit(on("gpt-4o-mini"), &rules).is_ok());
        assert!(submit(on(""), &rules).is_ok(), "the default model");
        let refused = submit(on("gpt-4o"), &rules).expect_err("not allowed");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].field, "generation_config.model");
        assert!(refused[0].description.contains("sim, gpt-4o-mini"));
        rules.limits.allowed_models = vec![String::new()];
        assert!(
            submit(on("gpt-4o"), &rules).is_ok(),
            "a blank list allows any"
        );
    }

    #[test]
    fn a_conversation_needs_a_user_message() {
        let message = |role: &str| v1::ChatMessage {
            role: role.into(),
            content: "words".into(),
        };
        let assistant_only = v1::SubmitJobRequest {
            system_prompt: "be brief".into(),
            messages: vec![message("assistant"), message("assistant")],
            ..Default::default()
        };
        assert_eq!(fields(assistant_only), ["messages"]);
        let system_only = v1::SubmitJobRequest {
            messages: vec![message("system")],
            ..Default::default()
        };
        assert_eq!(fields(system_only), ["messages"]);
        let answered = v1::SubmitJobRequest {
            messages: vec![message("user"), message("assistant"), message("user")],
            ..Default::default()
        };
        assert!(submit(answered, &rules()).is_ok());
    }

    #[test]
    fn a_tag_may_be_given_once() {
        let tagged = |tags: &[&str]| v1::SubmitJobRequest {
            prompt: "p".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        };
        assert!(submit(tagged(&["a", "b"]), &rules()).is_ok());
        let refused = submit(tagged(&["a", "b", "a"]), &rules()).expect_err("a repeat");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].field, "tags");
        assert!(refused[0].description.contains("\"a\""), "{refused:?}");
    }

    #[test]
    fn nan_temperature_and_bad_roles_are_rejected() {
        let got = fields(v1::SubmitJobRequest {
            messages: vec![v1::ChatMessage {
                role: "robot".into(),
                content: "x".into(),
            }],
            generation_config: Some(v1::GenerationConfig {
                temperature: Some(f32::NAN),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            got,
            [
                "messages[0].role",
                "messages",
                "generation_config.temperature"
            ]
        );
    }
}
