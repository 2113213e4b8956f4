use super::output_tokens;
use crate::proto::v1;

#[test]
fn output_tokens_name_a_total_only_when_there_is_an_estimate() {
    let unknown = v1::JobProgress {
        output_tokens: 12,
        estimated_output_tokens: None,
        estimate_basis: v1::EstimateBasis::None.into(),
        ..Default::default()
    };
    assert_eq!(output_tokens(&unknown), "12");
    let recent = v1::JobProgress {
        output_tokens: 12,
        estimated_output_tokens: Some(200),
        estimate_basis: v1::EstimateBasis::RecentJobs.into(),
        estimate_sample_size: 30,
        ..Default::default()
    };
    assert_eq!(output_tokens(&recent), "12 of ~200 (recent_jobs, 30 jobs)");
    let bound = v1::JobProgress {
        output_tokens: 0,
        estimated_output_tokens: Some(64),
        estimate_basis: v1::EstimateBasis::MaxTokens.into(),
        ..Default::default()
    };
    assert_eq!(output_tokens(&bound), "0 of ~64 (max_tokens)");
}
