use super::*;

fn fields(req: v1::ListJobsRequest) -> Vec<String> {
    list_jobs(&req, &Limits::default())
        .expect_err("invalid")
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn at(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

#[test]
fn timestamps_must_be_real_instants() {
    let ok = list_jobs(
        &v1::ListJobsRequest {
            created_after: at(0, 0),
            created_before: at(1_900_000_000, 999_999_999),
            ..Default::default()
        },
        &Limits::default(),
    )
    .expect("valid");
    assert!(ok.created_after.is_some() && ok.created_before.is_some());
    for (seconds, nanos) in [
        (0, -1),
        (0, 1_000_000_000),
        (i64::MAX, 0),
        (-62_135_596_801, 0),
        (253_402_300_800, 0),
    ] {
        let req = v1::ListJobsRequest {
            created_after: at(seconds, nanos),
            created_before: at(seconds, nanos),
            ..Default::default()
        };
        assert_eq!(
            fields(req),
            ["created_after", "created_before"],
            "{seconds} s {nanos} ns"
        );
    }
}

#[test]
fn text_filters_are_bounded_and_printable() {
    let limits = Limits::default();
    let long_tag = "t".repeat(limits.max_tag_bytes + 1);
    assert_eq!(
        fields(v1::ListJobsRequest {
            tag: long_tag,
            job_type: "j".repeat(MAX_FILTER_BYTES + 1),
            ..Default::default()
        }),
        ["job_type", "tag"]
    );
    assert_eq!(
        fields(v1::ListJobsRequest {
            tag: "\u{1b}[2J".into(),
            ..Default::default()
        }),
        ["tag"]
    );
    let fine = list_jobs(
        &v1::ListJobsRequest {
            tag: "t".repeat(limits.max_tag_bytes),
            ..Default::default()
        },
        &limits,
    )
    .expect("a tag as long as a job's may be");
    assert!(fine.tag.is_some() && fine.job_type.is_none());

    let failed = v1::ListFailedJobsRequest {
        error_code: "e".repeat(MAX_FILTER_BYTES + 1),
        ..Default::default()
    };
    let got = failed_jobs(Some(&failed), "filter.").expect_err("too long");
    assert_eq!(got[0].field, "filter.error_code");

    let audit = v1::ListAuditEventsRequest {
        actor: "a".repeat(MAX_FILTER_BYTES + 1),
        since: at(0, -5),
        ..Default::default()
    };
    let got: Vec<_> = audit_events(&audit)
        .expect_err("invalid")
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(got, ["actor", "since"]);
}
