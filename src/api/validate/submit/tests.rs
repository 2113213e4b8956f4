//! Tests of the `SubmitJobRequest` validator.

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
