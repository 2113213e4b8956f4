//! Pagination as in Google AIP-158: `page_size` (0 means the default) and an opaque
//! `page_token`. Lists are ordered newest first by UUID v7 id, so a token is the last id of
//! the previous page: pages never skip or repeat a job, however many are added meanwhile.

use crate::job::JobId;

/// A page size or token a list request cannot use; the API answers INVALID_ARGUMENT naming
/// [`Error::field`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct Error {
    /// The request field at fault: `page_size` or `page_token`.
    pub field: &'static str,
    /// What is wrong with it.
    pub description: String,
}

impl Error {
    fn invalid(field: &'static str, description: impl Into<String>) -> Error {
        Error {
            field,
            description: description.into(),
        }
    }
}

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
/// instead of a job id. `scope` names the list (a job id, say): a token only continues the
/// list it came from (AIP-158: a token used with other parameters is an error).
/// Errors: `InvalidArgument` naming `page_size` or `page_token`.
pub fn page_by_position(
    page_size: i32,
    page_token: &str,
    scope: &str,
) -> Result<(i64, Option<i64>), Error> {
    let (limit, _) = page(page_size, "")?;
    if page_token.is_empty() {
        return Ok((limit, None));
    }
    let (position, token_scope) = page_token
        .strip_prefix("p")
        .and_then(|t| t.split_once('.'))
        .and_then(|(n, s)| Some((n.parse::<i64>().ok().filter(|n| *n > 0)?, s)))
        .ok_or_else(|| Error::invalid("page_token", "not a token from a previous response"))?;
    if token_scope != scope {
        return Err(Error::invalid(
            "page_token",
            "belongs to another list (a token continues only the list it came from)",
        ));
    }
    Ok((limit, Some(position)))
}

/// The page token that continues list `scope` after stored position `position`.
pub fn position_token(position: i64, scope: &str) -> String {
    format!("p{position}.{scope}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_token_continues_only_its_own_list() {
        let token = position_token(42, "job-a");
        assert_eq!(
            page_by_position(10, &token, "job-a").ok(),
            Some((10, Some(42)))
        );
        for (token, scope) in [
            (token.as_str(), "job-b"),
            ("p42", "job-a"),
            ("p0.job-a", "job-a"),
            ("x42.job-a", "job-a"),
        ] {
            assert!(
                page_by_position(10, token, scope).is_err(),
                "{token} for {scope}"
            );
        }
        assert_eq!(page_by_position(0, "", "job-a").ok(), Some((50, None)));
    }
}
