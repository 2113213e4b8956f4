//! Pagination as in Google AIP-158: `page_size` (0 means the default) and an opaque
//! `page_token`. Lists are ordered newest first by UUID v7 id, so a token is the last id of
//! the previous page: pages never skip or repeat a job, however many are added meanwhile.

use crate::{error::Error, job::JobId};

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The limit and the id to continue below, from a request's `page_size` and `page_token`.
/// Errors: `InvalidArgument` naming `page_size` or `page_token`.
pub fn page(page_size: i32, page_token: &str) -> Result<(i64, Option<JobId>), Error> {
    let limit = match i64::from(page_size) {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        _ => {
            return Err(Error::invalid(
                "page_size",
                format!("must be within 0..={MAX_PAGE_SIZE}"),
            ));
        }
    };
    let before =
        if page_token.is_empty() {
            None
        } else {
            Some(JobId::parse_str(page_token).map_err(|_| {
                Error::invalid("page_token", "not a token from a previous response")
            })?)
        };
    Ok((limit, before))
}

/// The token of the page after `ids` (empty when this page was the last).
pub fn next_token(ids: &[JobId], limit: i64) -> String {
    if ids.len() as i64 == limit {
        ids.last().map(ToString::to_string).unwrap_or_default()
    } else {
        String::new()
    }
}

/// The limit and the position to continue after, for lists ordered by a stored position
/// (oldest first) instead of a job id. Errors: `InvalidArgument` naming `page_size` or
/// `page_token`.
pub fn page_by_position(page_size: i32, page_token: &str) -> Result<(i64, Option<i64>), Error> {
    let (limit, _) = page(page_size, "")?;
    if page_token.is_empty() {
        return Ok((limit, None));
    }
    let after = page_token
        .strip_prefix("p")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::invalid("page_token", "not a token from a previous response"))?;
    Ok((limit, Some(after)))
}

/// The page token that continues after stored position `position`.
pub fn position_token(position: i64) -> String {
    format!("p{position}")
}
