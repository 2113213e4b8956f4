use super::*;
use crate::job::{ChatMessage, GenerationParams};

fn request(prompt: &str, max_tokens: Option<u32>) -> Request {
    Request {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: prompt.into(),
        }],
        params: GenerationParams {
            model: "sim".into(),
            max_tokens,
            ..GenerationParams::default()
        },
        traceparent: None,
    }
}

#[test]
fn same_prompt_same_text_and_max_tokens_cuts() {
    let (a, cut_a) = answer(&request("hello", None));
    let (b, _) = answer(&request("hello", None));
    assert_eq!(a, b);
    assert!(!cut_a);
    assert_ne!(a, answer(&request("other prompt", None)).0);
    let (short, cut) = answer(&request("hello", Some(3)));
    assert_eq!(short.len(), 3);
    assert!(cut);
    assert_eq!(short[..], a[..3]);
}
