use super::*;

#[tokio::test]
async fn an_in_process_budget_refuses_past_its_limit_and_a_429_halves_it() {
    let budget = |penalized: bool| async move {
        let b = Budget::new(
            Backend::Memory(std::sync::Arc::default()),
            "t",
            Limits {
                requests_per_minute: 3,
                tokens_per_minute: 0,
            },
            HashMap::new(),
            Duration::from_secs(60),
        );
        if penalized {
            b.penalize("m", Some(Duration::from_secs(60))).await;
        }
        let limits = b.limits("m");
        let mut taken = 0;
        // A minute's window: a boundary passed meanwhile still counts the earlier takes.
        while b
            .try_take("m", limits, 10)
            .await
            .expect("no Redis to fail")
            .is_none()
        {
            taken += 1;
            assert!(taken <= 3, "never more than the limit");
        }
        taken
    };
    assert_eq!(budget(false).await, 3);
    assert_eq!(budget(true).await, 2, "halved, rounded up");
}

#[test]
fn limits_parse() {
    assert_eq!(
        parse_model_limits("gpt-4o=500:200000"),
        Ok((
            "gpt-4o".into(),
            Limits {
                requests_per_minute: 500,
                tokens_per_minute: 200_000
            }
        ))
    );
    assert!(Limits::parse("500").is_err());
    assert_eq!(Budget::cost(400, Some(50)), 150);
    assert_eq!(Budget::cost(0, None), DEFAULT_OUTPUT_TOKENS);
}
