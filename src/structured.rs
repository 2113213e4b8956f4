//! Structured output: the JSON `response_format` of a job, checked at submit and applied to the
//! final content.
//!
//! Schemas are compiled with the `jsonschema` crate without remote reference resolution: a
//! schema that points at `http://…` or a file is refused at submit, so a client cannot make the
//! service fetch anything.

use serde_json::Value;

use crate::job::{ResponseFormat, StructuredOutput};

/// At most this many schema violations are kept in a result.
pub const MAX_ERRORS: usize = 32;

/// Checks that a `response_format` schema compiles. Errors: the compiler's message.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err("must be a JSON object".to_owned());
    }
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parses `content` as JSON and, for a schema, validates it. `None` for plain-text jobs.
///
/// Models often wrap JSON in a Markdown code fence despite being asked not to; a single
/// surrounding fence is tolerated.
pub fn evaluate(format: Option<&ResponseFormat>, content: &str) -> Option<StructuredOutput> {
    let format = format?;
    let parsed: Value = match serde_json::from_str(unfence(content)) {
        Ok(v) => v,
        Err(e) => {
            return Some(StructuredOutput {
                valid: false,
                json: None,
                errors: vec![(String::new(), format!("not valid JSON: {e}"))],
            });
        }
    };
    let errors = match format {
        ResponseFormat::JsonObject if !parsed.is_object() => {
            vec![(String::new(), "not a JSON object".to_owned())]
        }
        ResponseFormat::JsonObject => Vec::new(),
        ResponseFormat::JsonSchema { schema, .. } => match jsonschema::validator_for(schema) {
            Ok(validator) => validator
                .iter_errors(&parsed)
                .take(MAX_ERRORS)
                .map(|e| (e.instance_path().as_str().to_owned(), e.to_string()))
                .collect(),
            // Checked at submit; a schema stored before a library upgrade could still fail.
            Err(e) => vec![(String::new(), format!("the schema does not compile: {e}"))],
        },
    };
    Some(StructuredOutput {
        valid: errors.is_empty(),
        json: Some(parsed),
        errors,
    })
}

/// The text inside one surrounding Markdown code fence (```json … ```), or `s` trimmed.
fn unfence(s: &str) -> &str {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("```")
        && let Some(body) = rest.strip_suffix("```")
    {
        // Skip the info string ("json") on the opening line.
        return body.split_once('\n').map_or(body, |(_, b)| b).trim();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ResponseFormat {
        ResponseFormat::JsonSchema {
            name: "person".into(),
            schema: json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
                "required": ["name", "age"]
            }),
            strict: false,
            description: String::new(),
        }
    }

    #[test]
    fn valid_content_is_parsed() {
        let out = evaluate(Some(&schema()), r#"{"name": "Ada", "age": 36}"#)
            .expect("a JSON format gives an evaluation");
        assert!(out.valid);
        assert_eq!(out.json, Some(json!({"name": "Ada", "age": 36})));
        assert!(out.errors.is_empty());
    }

    #[test]
    fn violations_name_their_path() {
        let out = evaluate(Some(&schema()), r#"{"name": "Ada", "age": -1}"#)
            .expect("a JSON format gives an evaluation");
        assert!(!out.valid);
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert_eq!(out.errors[0].0, "/age");
        assert!(out.json.is_some(), "invalid but parsed content is kept");
    }

    #[test]
    fn unparsable_content_is_invalid_without_json() {
        let out = evaluate(Some(&ResponseFormat::JsonObject), "Sure! {name: Ada}")
            .expect("a JSON format gives an evaluation");
        assert!(!out.valid);
        assert_eq!(out.json, None);
        assert_eq!(out.errors[0].0, "");
        assert!(out.errors[0].1.starts_with("not valid JSON"));
    }

    #[test]
    fn json_object_needs_an_object_and_fences_are_tolerated() {
        assert!(
            !evaluate(Some(&ResponseFormat::JsonObject), "[1, 2]")
                .expect("a JSON format gives an evaluation")
                .valid
        );
        let fenced = "```json\n{\"a\": 1}\n```";
        assert!(
            evaluate(Some(&ResponseFormat::JsonObject), fenced)
                .expect("a JSON format gives an evaluation")
                .valid
        );
        assert_eq!(evaluate(None, "{}"), None, "plain text jobs have none");
    }

    #[test]
    fn schemas_that_do_not_compile_or_fetch_are_refused() {
        assert!(check_schema(&json!({"type": "object"})).is_ok());
        assert!(check_schema(&json!({"type": 12})).is_err());
        assert!(check_schema(&json!("string")).is_err());
        assert!(
            check_schema(&json!({"$ref": "http://127.0.0.1:1/schema.json"})).is_err(),
            "remote references are not resolved"
        );
    }
}
