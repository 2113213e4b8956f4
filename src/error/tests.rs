use super::*;

#[test]
fn invalid_argument_carries_bad_request_details() {
    let status: Status = Error::InvalidArgument(vec![
        FieldViolation::new("prompt", "must not be empty"),
        FieldViolation::new("generation_config.temperature", "must be within 0..=2"),
    ])
    .into();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest detail present");
    let fields: Vec<_> = bad
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["prompt", "generation_config.temperature"]);
    assert!(status.message().contains("prompt: must not be empty"));
}

#[test]
fn gateway_errors_keep_their_codes_and_messages() {
    let status: Status = jobs::Error::InvalidArgument {
        field: "page_size".to_owned(),
        reason: "must be within 0..=1000".to_owned(),
    }
    .into();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest detail present");
    assert_eq!(bad.field_violations[0].field, "page_size");
    let cases = [
        (
            jobs::Error::NotFound {
                what: "job 1".to_owned(),
            },
            Code::NotFound,
            "job 1 not found",
        ),
        (
            jobs::Error::FailedPrecondition {
                reason: "job 1 is running".to_owned(),
            },
            Code::FailedPrecondition,
            "job 1 is running",
        ),
        (
            jobs::Error::AlreadyExists {
                reason: "key reused".to_owned(),
            },
            Code::AlreadyExists,
            "key reused",
        ),
    ];
    for (err, code, message) in cases {
        let status = Status::from(err);
        assert_eq!((status.code(), status.message()), (code, message));
    }
}

#[test]
fn admin_errors_keep_their_codes_messages_and_fields() {
    let status: Status = admin::Error::InvalidArgument {
        field: "queue".to_owned(),
        reason: "must not be empty".to_owned(),
    }
    .into();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid argument: queue: must not be empty"
    );
    let bad = status
        .get_details_bad_request()
        .expect("BadRequest detail present");
    assert_eq!(bad.field_violations[0].field, "queue");
    let status: Status = admin::Error::NotFound {
        what: "queue \"x\"".to_owned(),
    }
    .into();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "queue \"x\" not found");
}
