//! What servers log: the start-up line names the backends with the Redis key prefix and says
//! when the upstream is unused, and errors are never reported at INFO (an `error=` field on
//! an INFO line reads as a failure that nobody is told to act on).

/// The arguments of every `info!(…)` call in `source`: from its opening parenthesis to the
/// one that closes it, skipping parentheses inside string literals.
fn info_calls(source: &str) -> Vec<&str> {
    let mut calls = Vec::new();
    for (at, _) in source.match_indices("info!(") {
        let body = &source[at + "info!(".len()..];
        let (mut depth, mut in_string, mut escaped) = (1, false, false);
        for (i, c) in body.char_indices() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, _, '"') => in_string = !in_string,
                (false, _, '(') => depth += 1,
                (false, _, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        calls.push(&body[..i]);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    calls
}

/// No `info!` call in the source carries an error field: an error worth logging is a `warn!`
/// or an `error!`; an expected condition is said without one.
#[test]
fn no_info_line_carries_an_error_field() -> anyhow::Result<()> {
    let error = regex::Regex::new(r"\b(error|err)\s*=|[%?]e\b")?;
    let mut offenders = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut calls = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)?;
                for call in info_calls(&text) {
                    calls += 1;
                    if error.is_match(call) {
                        offenders.push(format!("{}: info!({call})", path.display()));
                    }
                }
            }
        }
    }
    assert!(calls > 10, "the scan finds the info! calls ({calls})");
    assert!(offenders.is_empty(), "{offenders:#?}");
    let sample = r#"info!(a = f(x), "b (c"); warn!(error = %e, "d");"#;
    assert_eq!(info_calls(sample), [r#"a = f(x), "b (c""#]);
    Ok(())
}

/// Tests about Redis or Postgres themselves: the embedded pass filters them out by name.
mod servers {
    use crate::{
        store::{delete_redis_keys, drop_database},
        support::{
            ChildWorker, connect_when_healthy, free_addr, needs_servers, postgres_server_url,
            redis_url,
        },
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_start_up_log_names_the_key_prefix_and_an_unused_upstream() -> anyhow::Result<()> {
        needs_servers("the log names a Redis key prefix and creates a Postgres database");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (prefix, database) = (format!("it-{id}"), format!("llmjobs_it_{id}"));
        let log_path = std::env::temp_dir().join(format!("llmjobs_it_{id}.log"));
        let addr = free_addr()?;
        // A database that does not exist yet: its creation is logged, at INFO, without error.
        let mut server = ChildWorker(
            std::process::Command::new(env!("CARGO_BIN_EXE_llm-jobs"))
                .arg("serve")
                .args(["--redis-url", &redis_url(), "--redis-prefix", &prefix])
                .args([
                    "--database-url",
                    &format!("{}/{database}", postgres_server_url()),
                ])
                .args(["--listen", &addr])
                .env_remove("OPENAI_API_KEY")
                .env_remove("OPENAI_BASE_URL")
                .env_remove("LLMJOBS_DEFAULT_MODEL")
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log_path)?)
                .spawn()?,
        );
        let outcome = async {
            connect_when_healthy(&addr).await?;
            server.signal("TERM")?;
            server.wait().await?;
            let log = std::fs::read_to_string(&log_path)?;
            assert!(log.contains("creating it"), "{log}");
            let start = log
                .lines()
                .find(|l| l.contains("backends: Redis at"))
                .unwrap_or_else(|| panic!("no start-up line: {log}"));
            assert!(
                start.contains(&format!("key prefix \"{prefix}\"")),
                "{start}"
            );
            assert!(
                start.contains("upstream=unused: no OPENAI_API_KEY")
                    && start.contains("default_model=sim"),
                "{start}"
            );
            for line in log.lines().filter(|l| l.contains(" INFO ")) {
                assert!(!line.contains("error="), "{line}");
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        drop(server);
        let _ = std::fs::remove_file(&log_path);
        drop_database(&database).await?;
        delete_redis_keys(&prefix).await?;
        outcome
    }
}
