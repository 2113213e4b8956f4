//! Fixed SQL texts that diesel keeps prepared, for the statements every job runs (both SQL
//! backends).
//!
//! diesel caches a prepared statement only when its query builder says it is safe, and it
//! never says so for an `UPDATE`, an `IN (…)` list, a multi-row `INSERT … VALUES` or
//! `sql_query`: each such call is parsed and planned again, and on Postgres it also costs one
//! more round trip (the prepare before the execute). A [`Fixed`] statement is a constant text
//! whose type is diesel's cache key, so each connection prepares it once. Many rows go through
//! one such text as arrays (`unnest`), never as a text that grows with the row count.
//!
//! Each backend names the values it binds ([`Bind`], implemented by `sqlite::fixed` and
//! `postgres::fixed`).

use std::marker::PhantomData;

use diesel::{
    QueryResult, RunQueryDsl,
    backend::Backend,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::Untyped,
};

/// A statement's text, one type per statement (the type is its cache key). `?` marks each
/// bound value, in the order of the statement's binds; the text holds no other `?`. On
/// Postgres each `?` becomes `$1`, `$2`, … in order.
pub(crate) trait Sql: 'static {
    /// The SQL text.
    const SQL: &'static str;
}

/// A value a backend binds to one `?` of a [`Sql`] text.
pub(crate) trait Bind<DB: Backend> {
    /// Pushes the value as the next bind parameter.
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

/// The statement `S` with its bound values `B`, run with diesel's `execute`, or `load` into
/// a `QueryableByName` row type.
pub(crate) struct Fixed<'a, S, B> {
    binds: &'a [B],
    sql: PhantomData<fn() -> S>,
}

impl<'a, S: Sql, B> Fixed<'a, S, B> {
    /// `S` with `binds`, one per `?` of its text (a different count is an error when run).
    pub(crate) fn new(binds: &'a [B]) -> Self {
        Fixed {
            binds,
            sql: PhantomData,
        }
    }
}

impl<S: Sql, B> QueryId for Fixed<'_, S, B> {
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Sql, B> Query for Fixed<'_, S, B> {
    type SqlType = Untyped;
}

impl<S: Sql, DB: Backend, B: Bind<DB>> QueryFragment<DB> for Fixed<'_, S, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut parts = S::SQL.split('?');
        out.push_sql(parts.next().unwrap_or_default());
        let mut binds = self.binds.iter();
        for part in parts {
            let Some(bind) = binds.next() else {
                return Err(miscounted::<S>(self.binds.len()));
            };
            bind.push(&mut out)?;
            out.push_sql(part);
        }
        if binds.next().is_some() {
            return Err(miscounted::<S>(self.binds.len()));
        }
        Ok(())
    }
}

impl<S: Sql, B, Conn> RunQueryDsl<Conn> for Fixed<'_, S, B> {}

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
