//! Gateway writes that finish even when their call is dropped.

use tracing::Instrument;

use super::Error;

/// Runs `work` in a task of its own and waits for it: dropping the returned future does not
/// stop `work` (a write and its follow-ups happen together or not at all, whatever the
/// caller does). A panic in `work` resumes in the caller, as if it had run inline.
pub async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    match tokio::spawn(work.in_current_span()).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime shuts down under it.
        Err(_) => Err(Error::Events(crate::events::Error::Unavailable(
            "the server is shutting down".into(),
        ))),
    }
}
