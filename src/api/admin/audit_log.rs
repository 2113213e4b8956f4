//! `ListAuditEvents`: one page of the audit log, scoped to the caller's tenant.

use tonic::Status;

use super::AdminApi;
use crate::{api::convert, auth::Principal, error::Error, proto::v1};

impl AdminApi {
    /// A page of the audit log as `req` asks, limited to `who`'s tenant unless it is an
    /// operator (a tenant filter naming another tenant then finds nothing). Errors:
    /// INVALID_ARGUMENT (outcome, since, page token), UNAVAILABLE.
    pub(super) async fn audit_page(
        &self,
        who: &Principal,
        req: v1::ListAuditEventsRequest,
    ) -> Result<v1::ListAuditEventsResponse, Status> {
        let outcome =
            match req.outcome.as_str() {
                "" => None,
                o => Some(crate::audit::Outcome::parse(o).ok_or_else(|| {
                    Error::invalid("outcome", "one of ok, denied, error (or empty)")
                })?),
            };
        let parts =
            crate::api::validate::filters::audit_events(&req).map_err(Error::InvalidArgument)?;
        let tenant = match who.scope() {
            None => parts.tenant,
            Some(own) if parts.tenant.as_ref().is_some_and(|t| *t != own) => {
                return Ok(v1::ListAuditEventsResponse::default());
            }
            own => own,
        };
        let filter = crate::audit::Filter {
            tenant,
            actor: parts.actor,
            action: parts.action,
            outcome,
            since: parts.since,
        };
        // Audit tokens belong to the audit log (its filters may change between pages).
        let (limit, before) =
            crate::paging::page_by_position(req.page_size, &req.page_token, "audit")
                .map_err(Error::from)?;
        let events = self
            .admin
            .store
            .audit_events(&filter, before, limit)
            .await
            .map_err(Error::from)?;
        let next_page_token = if events.len() as i64 == limit {
            events
                .last()
                .map(|e| crate::paging::position_token(e.id, "audit"))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::ListAuditEventsResponse {
            audit_events: events
                .into_iter()
                .map(|e| v1::AuditEvent {
                    id: e.id,
                    time: Some(convert::timestamp(e.time)),
                    actor: e.actor,
                    tenant: e.tenant,
                    action: e.action,
                    target: e.target,
                    peer: e.peer,
                    outcome: e.outcome.as_str().to_owned(),
                    detail: e.detail,
                })
                .collect(),
            next_page_token,
        })
    }
}
