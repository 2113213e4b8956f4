//! Fixed SQL texts that diesel keeps prepared, for the statements every job runs.
//!
//! diesel caches a prepared statement only when its query builder says it is safe, and it
//! never says so for an `UPDATE`, an `IN (…)` list or `sql_query`: each such call compiles its
//! SQL again, which was about an eighth of the embedded server's CPU on the cost benchmark
//! (BENCHMARKS.md, ninth round). A [`Fixed`] statement is a constant text whose type is its
//! cache key, so it is compiled once per connection.
//!
//! Lookups of one row use `get_result`, never `first`: `first` binds its `LIMIT 1`, and
//! SQLite (3.50, measured with `sqlite3_stmt_status(…, SQLITE_STMTSTATUS_REPREPARE)`) compiles
//! a statement with a bound `LIMIT` again at every run, the planner having read the bound
//! value. A lookup by a unique key needs no limit.

use std::marker::PhantomData;

use diesel::{
    QueryResult, RunQueryDsl,
    query_builder::{AstPass, QueryFragment, QueryId},
    sql_types::{BigInt, Integer, Nullable, Text},
    sqlite::Sqlite,
};

/// A statement's text, one type per statement (the type is its cache key). `?` marks each
/// bound value, in the order of the statement's [`Bind`]s; the text holds no other `?`.
pub(super) trait Sql: 'static {
    /// The SQL text.
    const SQL: &'static str;
}

/// A value bound to a `?` of a [`Sql`] text.
#[derive(Clone, Copy, Debug)]
pub(super) enum Bind<'a> {
    Text(&'a str),
    NullableText(Option<&'a str>),
    BigInt(i64),
    NullableBigInt(Option<i64>),
    Integer(i32),
}

/// The statement `S` with its bound values, run with diesel's `execute`.
pub(super) struct Fixed<'a, S> {
    binds: &'a [Bind<'a>],
    sql: PhantomData<fn() -> S>,
}

impl<'a, S: Sql> Fixed<'a, S> {
    /// `S` with `binds`, one per `?` of its text (a different count is an error when run).
    pub(super) fn new(binds: &'a [Bind<'a>]) -> Self {
        Fixed {
            binds,
            sql: PhantomData,
        }
    }
}

impl<S: Sql> QueryId for Fixed<'_, S> {
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Sql> QueryFragment<Sqlite> for Fixed<'_, S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let mut parts = S::SQL.split('?');
        out.push_sql(parts.next().unwrap_or_default());
        let mut binds = self.binds.iter();
        for part in parts {
            let Some(bind) = binds.next() else {
                return Err(miscounted::<S>(self.binds.len()));
            };
            match bind {
                Bind::Text(v) => out.push_bind_param::<Text, _>(v)?,
                Bind::NullableText(v) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                Bind::BigInt(v) => out.push_bind_param::<BigInt, _>(v)?,
                Bind::NullableBigInt(v) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                Bind::Integer(v) => out.push_bind_param::<Integer, _>(v)?,
            }
            out.push_sql(part);
        }
        if binds.next().is_some() {
            return Err(miscounted::<S>(self.binds.len()));
        }
        Ok(())
    }
}

impl<S: Sql, Conn> RunQueryDsl<Conn> for Fixed<'_, S> {}

/// The error of a statement given more or fewer values than its text has `?`s (a bug).
fn miscounted<S: Sql>(given: usize) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!(
            "statement given {given} values for {} placeholders: {}",
            S::SQL.matches('?').count(),
            S::SQL
        )
        .into(),
    )
}

#[cfg(test)]
mod tests;
