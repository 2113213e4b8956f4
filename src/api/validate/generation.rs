//! The `GenerationConfig` validator (inside a `SubmitJobRequest`): the model, the sampling
//! settings and the response format, each violation named `generation_config.*`.

use super::{
    Rules,
    text::{truncate, truncate_to},
};
use crate::{
    error::FieldViolation,
    job::{GenerationParams, Limits, ResponseFormat},
    proto::v1,
};

const MAX_MODEL_BYTES: usize = 256;

/// Longest `response_format.schema_name` (the OpenAI API's limit).
const MAX_SCHEMA_NAME_CHARS: usize = 64;
/// Most characters of a JSON Schema validator's message quoted in an error (it quotes the
/// client's schema, so it is bounded too).
const MAX_SCHEMA_ERROR_CHARS: usize = 300;

/// The generation parameters of `config` (none: the defaults, on the default model), with
/// every violation found pushed onto `v`.
pub(super) fn params(
    config: Option<v1::GenerationConfig>,
    rules: &Rules,
    v: &mut Vec<FieldViolation>,
) -> GenerationParams {
    let limits = &rules.limits;
    let mut g = config.unwrap_or_default();
    let model = if g.model.is_empty() {
        rules.default_model.clone()
    } else {
        std::mem::take(&mut g.model)
    };
    check_model(&model, rules, v);
    check_sampling(&g, limits, v);
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
    GenerationParams {
        model,
        max_tokens: g.max_tokens,
        temperature: g.temperature,
        top_p: g.top_p,
        stop: g.stop,
        seed: g.seed,
        response_format,
    }
}

/// Checks the model's name, that this server allows it, and that it can be served (a model
/// other than a simulated one needs an upstream).
fn check_model(model: &str, rules: &Rules, v: &mut Vec<FieldViolation>) {
    let limits = &rules.limits;
    if model.len() > MAX_MODEL_BYTES || model.chars().any(char::is_control) {
        v.push(FieldViolation::new(
            "generation_config.model",
            format!("at most {MAX_MODEL_BYTES} bytes, no control characters"),
        ));
    }
    if !limits.allows_model(model) {
        v.push(FieldViolation::new(
            "generation_config.model",
            format!(
                "model {:?} is not allowed on this server; allowed: {}",
                truncate(model),
                limits.allowed_models.join(", ")
            ),
        ));
    } else if !rules.upstream_configured && !crate::provider::Providers::is_simulated_model(model) {
        v.push(FieldViolation::new(
            "generation_config.model",
            format!(
                "{:?} needs an upstream, but OPENAI_API_KEY is not set; use the simulated model \"sim\"",
                truncate(model)
            ),
        ));
    }
}

/// Checks `max_tokens`, `temperature`, `top_p` and the stop sequences against their ranges.
fn check_sampling(g: &v1::GenerationConfig, limits: &Limits, v: &mut Vec<FieldViolation>) {
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
}

/// The `generation_config.response_format.*` field named `name`.
fn field(name: &str) -> String {
    format!("generation_config.response_format.{name}")
}

/// A checked response format (`None` for plain text). Errors: the violation naming
/// `generation_config.response_format.*`.
fn response_format(
    f: v1::ResponseFormat,
    limits: &Limits,
) -> Result<Option<ResponseFormat>, FieldViolation> {
    use v1::response_format::Type;
    match Type::try_from(f.r#type) {
        Ok(Type::Unspecified | Type::Text) => Ok(None),
        Ok(Type::JsonObject) => Ok(Some(ResponseFormat::JsonObject)),
        Ok(Type::JsonSchema) => json_schema(f, limits).map(Some),
        Err(_) => Err(FieldViolation::new(field("type"), "unknown type")),
    }
}

/// A checked `TYPE_JSON_SCHEMA` format: its name, a usable schema within the size limit, and
/// its description. Errors: the first violation found.
fn json_schema(f: v1::ResponseFormat, limits: &Limits) -> Result<ResponseFormat, FieldViolation> {
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
    let schema = crate::api::convert::struct_json(schema);
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
            // The validator's own words, which quote the schema: enough of them to act on.
            format!(
                "not a usable JSON Schema: {}",
                truncate_to(&e, MAX_SCHEMA_ERROR_CHARS)
            ),
        ));
    }
    if f.description.len() > 1024 {
        return Err(FieldViolation::new(
            field("description"),
            "at most 1024 bytes",
        ));
    }
    Ok(ResponseFormat::JsonSchema {
        name: f.schema_name,
        schema,
        strict: f.strict,
        description: f.description,
    })
}
