use super::*;

#[test]
fn operator_patterns_must_compile_and_match_something() {
    let patterns = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        compile(&patterns(&["acct-[0-9]+", ""])).map(|c| c.len()),
        Ok(1)
    );
    for bad in [".*", "a?", "x*|y", "^"] {
        let e = compile(&patterns(&[bad])).expect_err(bad);
        assert!(e.contains("matches the empty string"), "{e}");
    }
    let e = compile(&patterns(&["(unclosed"])).expect_err("a bad regex");
    assert!(e.contains("(unclosed"), "{e}");
}

#[test]
fn passwords_are_hidden_from_urls_and_nothing_else() {
    assert_eq!(
        redact_url("postgres://u:secret@h/db"),
        "postgres://u:***@h/db"
    );
    assert_eq!(
        redact_url("postgres://postgres@h/db"),
        "postgres://postgres@h/db"
    );
    assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
}
#[test]
fn secrets_are_redacted_and_plain_text_is_kept() {
    let text = "key sk-proj-abcdefghijklmnop, header Authorization: Bearer abc.def-ghi_jkl, \
                    ours llmj_0123456789ab_00112233445566778899aabbccddeeff, \
                    aws AKIAIOSFODNN7EXAMPLE, \
                    -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- end";
    let out = redact(text);
    for secret in [
        "abcdefghijklmnop",
        "abc.def-ghi_jkl",
        "00112233445566778899",
        "IOSFODNN7EXAMPLE",
        "MIIEow",
    ] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert!(out.contains("llmj_0123456789ab_[redacted]"), "{out}");
    assert!(out.ends_with(" end"), "{out}");
    assert!(matches!(
        redact("nothing secret, sk-short"),
        Cow::Borrowed(_)
    ));
}

#[test]
fn the_log_writer_redacts_what_is_logged() {
    use tracing_subscriber::layer::SubscriberExt;
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = buf.clone();
    let make = move || Sink(sink.clone());
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(MakeWriter(make)),
    );
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(prompt = "use sk-live1234567890abcdef please", "submitted");
    });
    let logged = String::from_utf8(buf.lock().expect("lock").clone()).expect("utf-8");
    assert!(logged.contains("submitted"), "{logged}");
    assert!(logged.contains("sk-[redacted]"), "{logged}");
    assert!(!logged.contains("live1234567890abcdef"), "{logged}");
}

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
