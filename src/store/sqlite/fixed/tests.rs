use diesel::{Connection, SqliteConnection, connection::SimpleConnection};

use super::*;

struct Insert;
impl Sql for Insert {
    const SQL: &'static str = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)";
}

fn conn() -> SqliteConnection {
    let mut conn = SqliteConnection::establish(":memory:").expect("in-memory SQLite");
    conn.batch_execute("CREATE TABLE t (a text, b integer, c text)")
        .expect("table");
    conn
}

#[test]
fn binds_each_value_in_order() {
    let mut conn = conn();
    let binds = [Bind::Text("x"), Bind::BigInt(7), Bind::NullableText(None)];
    let n = Fixed::<Insert>::new(&binds)
        .execute(&mut conn)
        .expect("insert");
    assert_eq!(n, 1);
    let row: (String, i64, Option<String>) = diesel::sql_query("SELECT a, b, c FROM t")
        .get_result::<Row>(&mut conn)
        .map(|r| (r.a, r.b, r.c))
        .expect("row");
    assert_eq!(row, ("x".into(), 7, None));
}

#[test]
fn a_wrong_count_of_values_is_an_error_not_a_statement() {
    let mut conn = conn();
    let few = [Bind::Text("x")];
    let err = Fixed::<Insert>::new(&few)
        .execute(&mut conn)
        .expect_err("too few values");
    assert!(
        err.to_string().contains("1 values for 3 placeholders"),
        "{err}"
    );
    let many = [
        Bind::Text("x"),
        Bind::Integer(1),
        Bind::Text("y"),
        Bind::Text("z"),
    ];
    let err = Fixed::<Insert>::new(&many)
        .execute(&mut conn)
        .expect_err("too many values");
    assert!(
        err.to_string().contains("4 values for 3 placeholders"),
        "{err}"
    );
    let count: i64 = diesel::dsl::select(diesel::dsl::sql::<BigInt>("(SELECT count(*) FROM t)"))
        .get_result(&mut conn)
        .expect("count");
    assert_eq!(count, 0);
}

#[test]
fn is_compiled_once_per_connection() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use diesel::connection::InstrumentationEvent;

    let mut conn = conn();
    let cached = Arc::new(AtomicUsize::new(0));
    let seen = cached.clone();
    conn.set_instrumentation(move |e: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::CacheQuery { .. } = e {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    for b in 0..3 {
        let binds = [
            Bind::Text("x"),
            Bind::BigInt(b),
            Bind::NullableText(Some("y")),
        ];
        Fixed::<Insert>::new(&binds)
            .execute(&mut conn)
            .expect("insert");
    }
    assert_eq!(cached.load(Ordering::Relaxed), 1);
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = BigInt)]
    b: i64,
    #[diesel(sql_type = Nullable<Text>)]
    c: Option<String>,
}
