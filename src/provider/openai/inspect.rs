//! The HTTP service under async-openai: one request, then a look at the answer before
//! async-openai's, keeping error answers whole and noting the upstream's request id.

use std::{future::Future, pin::Pin, time::Duration};

use async_openai::{
    error::OpenAIError,
    middleware::{HttpRequestFactory, ReqwestService},
};

use super::refused::Refused;

/// Longest error body read from the upstream (bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Longest upstream request id kept (bytes); longer header values are ignored.
const MAX_REQUEST_ID_BYTES: usize = 200;

tokio::task_local! {
    /// Where [`Inspect`] puts the `x-request-id` of the response it sees.
    pub(super) static REQUEST_ID: std::sync::Arc<std::sync::Mutex<Option<String>>>;
}

/// `Retry-After` (seconds or HTTP date, RFC 9110 §10.2.3) or OpenAI's `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The HTTP service under async-openai: one request, then a look at the answer.
#[derive(Clone)]
pub(super) struct Inspect {
    pub(super) inner: ReqwestService,
}

impl tower::Service<HttpRequestFactory> for Inspect {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), OpenAIError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if let Some(id) = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
            {
                let _ = REQUEST_ID.try_with(|slot| {
                    *slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id.to_owned());
                });
            }
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            // Only a content type that clearly says "not a stream" is refused: servers label
            // event streams text/plain, octet-stream or nothing at all.
            let streams = !(content_type.starts_with("application/json")
                || content_type.starts_with("text/html"));
            if response.status().is_success() && streams {
                return Ok(response);
            }
            let retry_after = retry_after(response.headers());
            let body = read_limited(response).await;
            Err(OpenAIError::Boxed(Box::new(Refused {
                status,
                content_type: if content_type.is_empty() {
                    "no content type".into()
                } else {
                    content_type
                },
                retry_after,
                body,
            })))
        })
    }
}

async fn read_limited(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            body.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_dates_and_ms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(60);
        h.insert("retry-after", later.to_rfc2822().parse().expect("header"));
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(50)));
        h.insert("retry-after-ms", "1500".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }
}
