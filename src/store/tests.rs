use super::Error;
use diesel::result::{DatabaseErrorKind, Error as D};

fn database_error(message: &str) -> Error {
    Error::Query(D::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(message.to_owned()),
    ))
}

#[test]
fn a_full_disk_or_a_busy_file_is_worth_retrying_and_bad_data_is_not() {
    for retry in [
        "database or disk is full",
        "could not extend file \"base/1/2\": No space left on device",
        "database is locked",
        "terminating connection due to administrator command",
    ] {
        assert!(database_error(retry).is_transient(), "{retry}");
    }
    assert!(database_error("database or disk is full").is_unavailable());
    assert!(!database_error("database is locked").is_unavailable());
    let constraint = Error::Query(D::DatabaseError(
        DatabaseErrorKind::CheckViolation,
        Box::new("CHECK constraint failed".to_owned()),
    ));
    assert!(!constraint.is_transient() && !constraint.is_unavailable());
    assert!(!Error::Corrupt("bad".into()).is_transient());
}
