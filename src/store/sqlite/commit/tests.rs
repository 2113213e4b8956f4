use diesel::{Connection, RunQueryDsl, connection::SimpleConnection};

use super::*;

/// An in-memory database with a table `t (v integer UNIQUE)`.
fn conn() -> Arc<tokio::sync::Mutex<SqliteConnection>> {
    let mut conn = SqliteConnection::establish(":memory:").expect("in-memory SQLite");
    conn.batch_execute("CREATE TABLE t (v integer UNIQUE)")
        .expect("table");
    Arc::new(tokio::sync::Mutex::new(conn))
}

/// A write and the receiver of its answer.
type Sent = (Box<dyn Pending>, oneshot::Receiver<Result<usize, Error>>);

/// A write inserting each of `values` in turn.
fn insert(values: &'static [i64]) -> Sent {
    let (reply, answer) = oneshot::channel();
    let op = move |c: &mut SqliteConnection| -> Result<usize, Error> {
        for v in values {
            diesel::sql_query(format!("INSERT INTO t (v) VALUES ({v})")).execute(c)?;
        }
        Ok(values.len())
    };
    let write = Write {
        op,
        outcome: None,
        reply,
    };
    (Box::new(write), answer)
}

/// Runs `writes` as one batch and returns their answers and the table's values after.
async fn batch(writes: Vec<Sent>) -> (Vec<Result<usize, Error>>, Vec<i64>) {
    let conn = conn();
    let (tx, rx) = mpsc::channel(BACKLOG);
    let mut answers = Vec::new();
    for (write, answer) in writes {
        tx.send(write).await.expect("the channel is open");
        answers.push(answer);
    }
    drop(tx);
    run(conn.clone(), rx).await;
    let mut outcomes = Vec::new();
    for a in answers {
        outcomes.push(a.await.expect("every write is answered"));
    }
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let mut guard = conn.lock().await;
    let rows: Vec<Row> = diesel::sql_query("SELECT v FROM t ORDER BY v")
        .load(&mut *guard)
        .expect("rows");
    (outcomes, rows.into_iter().map(|r| r.v).collect())
}

#[tokio::test]
async fn writes_of_one_batch_commit_together() {
    let (outcomes, values) = batch(vec![insert(&[1, 2]), insert(&[3])]).await;
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(values, [1, 2, 3]);
}

#[tokio::test]
async fn a_failing_write_fails_alone_and_leaves_nothing_half_written() {
    // The second write inserts 4, then fails on the 1 the first wrote.
    let (outcomes, values) = batch(vec![insert(&[1, 2]), insert(&[4, 1]), insert(&[3])]).await;
    assert_eq!(outcomes[0].as_ref().ok(), Some(&2));
    assert!(
        outcomes[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("UNIQUE")),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2].as_ref().ok(), Some(&1));
    assert_eq!(values, [1, 2, 3], "the failing write's 4 was rolled back");
}

#[tokio::test]
async fn a_lone_failing_write_leaves_nothing_half_written() {
    let (outcomes, values) = batch(vec![insert(&[5, 5])]).await;
    assert!(outcomes[0].is_err(), "{outcomes:?}");
    assert_eq!(values, Vec::<i64>::new());
}
