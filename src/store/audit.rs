//! The audit log as stored: append-only, read back newest first.

use async_trait::async_trait;

mod record;

pub use record::{Event, Filter, Outcome};

use super::Error;

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `event` to the audit log (its `id` is assigned here).
    async fn append_audit(&self, event: &Event) -> Result<(), Error>;

    /// Audit events matching `filter`, newest first, with ids below `before` (pagination), at
    /// most `limit`.
    async fn audit_events(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Event>, Error>;
}
