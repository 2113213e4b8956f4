//! The JSON body of one streaming chat-completions request.

use serde_json::{Value, json};

use crate::provider::Request;

/// Request body of `POST /chat/completions`: streaming on, usage requested.
pub(super) fn request_body(request: &Request) -> Value {
    let p = &request.params;
    let mut body = json!({
        "model": p.model,
        "messages": request.messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    let obj = body.as_object_mut().expect("json! object literal");
    if let Some(v) = p.max_tokens {
        obj.insert("max_tokens".into(), json!(v));
    }
    if let Some(v) = p.temperature {
        obj.insert("temperature".into(), json!(v));
    }
    if let Some(v) = p.top_p {
        obj.insert("top_p".into(), json!(v));
    }
    if !p.stop.is_empty() {
        obj.insert("stop".into(), json!(p.stop));
    }
    if let Some(v) = p.seed {
        obj.insert("seed".into(), json!(v));
    }
    match &p.response_format {
        None => {}
        Some(crate::job::ResponseFormat::JsonObject) => {
            obj.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(crate::job::ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
            description,
        }) => {
            let mut spec = json!({"name": name, "schema": schema, "strict": strict});
            if !description.is_empty() {
                spec["description"] = json!(description);
            }
            obj.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": spec}),
            );
        }
    }
    body
}
