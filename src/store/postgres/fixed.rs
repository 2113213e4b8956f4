//! Postgres's values for [`crate::store::fixed`]'s statements kept prepared: the group
//! commit's statements bind one array per column and `unnest` them, so one constant text
//! serves a batch of any size and each connection parses and plans it once.

use chrono::{DateTime, Utc};
use diesel::{
    QueryResult,
    pg::Pg,
    query_builder::AstPass,
    sql_types::{Array, Bool, Bytea, Float8, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid},
};

pub(super) use crate::store::fixed::Sql;

/// A value bound to a `?` of a [`Sql`] text: one array per column of the rows a statement
/// writes (`…s`), or one scalar.
#[derive(Clone, Copy, Debug)]
pub(super) enum Bind<'a> {
    Uuids(&'a [uuid::Uuid]),
    Texts(&'a [&'a str]),
    NullableTexts(&'a [Option<&'a str>]),
    Jsonbs(&'a [&'a serde_json::Value]),
    NullableJsonbs(&'a [Option<&'a serde_json::Value>]),
    Bools(&'a [bool]),
    Int4s(&'a [i32]),
    NullableInt4s(&'a [Option<i32>]),
    Int8s(&'a [i64]),
    NullableInt8s(&'a [Option<i64>]),
    Float8s(&'a [f64]),
    NullableFloat8s(&'a [Option<f64>]),
    Byteas(&'a [&'a [u8]]),
    Timestamptzs(&'a [DateTime<Utc>]),
    Timestamptz(DateTime<Utc>),
}

/// The statement `S` with Postgres's bound values (see [`crate::store::fixed::Fixed`]).
pub(super) type Fixed<'a, S> = crate::store::fixed::Fixed<'a, S, Bind<'a>>;

impl crate::store::fixed::Bind<Pg> for Bind<'_> {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            Bind::Uuids(v) => out.push_bind_param::<Array<Uuid>, _>(*v),
            Bind::Texts(v) => out.push_bind_param::<Array<Text>, _>(*v),
            Bind::NullableTexts(v) => out.push_bind_param::<Array<Nullable<Text>>, _>(*v),
            Bind::Jsonbs(v) => out.push_bind_param::<Array<Jsonb>, _>(*v),
            Bind::NullableJsonbs(v) => out.push_bind_param::<Array<Nullable<Jsonb>>, _>(*v),
            Bind::Bools(v) => out.push_bind_param::<Array<Bool>, _>(*v),
            Bind::Int4s(v) => out.push_bind_param::<Array<Int4>, _>(*v),
            Bind::NullableInt4s(v) => out.push_bind_param::<Array<Nullable<Int4>>, _>(*v),
            Bind::Int8s(v) => out.push_bind_param::<Array<Int8>, _>(*v),
            Bind::NullableInt8s(v) => out.push_bind_param::<Array<Nullable<Int8>>, _>(*v),
            Bind::Float8s(v) => out.push_bind_param::<Array<Float8>, _>(*v),
            Bind::NullableFloat8s(v) => out.push_bind_param::<Array<Nullable<Float8>>, _>(*v),
            Bind::Byteas(v) => out.push_bind_param::<Array<Bytea>, _>(*v),
            Bind::Timestamptzs(v) => out.push_bind_param::<Array<Timestamptz>, _>(*v),
            Bind::Timestamptz(v) => out.push_bind_param::<Timestamptz, _>(v),
        }
    }
}
