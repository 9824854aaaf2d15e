//! Connections and how statements are sent on them.
//!
//! `StatementMode::Cached` prepares each statement once per connection and
//! keeps it (a named statement): one round trip per query. Named statements
//! are session state, so a pooler that shares server connections between
//! clients (RDS Proxy) pins each client to one server connection for good.
//! `StatementMode::Unnamed` sends every query as an unnamed statement with
//! its parameters' types (still one round trip, nothing left in the
//! session), for such pooled deployments.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error as PgError, Row};

/// How statements are sent (see the module's text).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatementMode {
    #[default]
    Cached,
    Unnamed,
}

impl std::str::FromStr for StatementMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "cached" => Ok(StatementMode::Cached),
            "unnamed" => Ok(StatementMode::Unnamed),
            other => Err(format!("{other:?} is neither cached nor unnamed")),
        }
    }
}

/// A connection idle this long is checked with an empty query before it is
/// handed out: a socket that died meanwhile (a Lambda frozen between
/// invocations, a NAT or proxy that dropped it) is replaced, not failed on.
pub const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(10);

/// A query parameter that knows its PostgreSQL type (sent along in the
/// unnamed mode). Implemented for every Rust type the ledger binds.
pub trait Param: ToSql + Sync {
    fn pg_type(&self) -> Type;
}

/// The PostgreSQL type of a Rust type bound as a parameter.
pub trait PgType {
    const TYPE: Type;
}

/// The PostgreSQL array type whose elements are this Rust type.
pub trait PgArrayOf {
    const ARRAY: Type;
}

impl<T: PgType + ToSql + Sync> Param for T {
    fn pg_type(&self) -> Type {
        T::TYPE
    }
}

macro_rules! pg_types {
    ($($rust:ty => $scalar:ident, $array:ident;)*) => {
        $(
            impl PgType for $rust {
                const TYPE: Type = Type::$scalar;
            }
            impl PgArrayOf for $rust {
                const ARRAY: Type = Type::$array;
            }
        )*
    };
}

pg_types! {
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f32 => FLOAT4, FLOAT4_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    String => TEXT, TEXT_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    uuid::Uuid => UUID, UUID_ARRAY;
    DateTime<Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    NaiveDate => DATE, DATE_ARRAY;
    serde_json::Value => JSONB, JSONB_ARRAY;
}

impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl<T: PgType> PgType for &T {
    const TYPE: Type = T::TYPE;
}

impl<T: PgArrayOf> PgArrayOf for &T {
    const ARRAY: Type = T::ARRAY;
}

/// Arrays may hold NULLs.
impl<T: PgArrayOf> PgArrayOf for Option<T> {
    const ARRAY: Type = T::ARRAY;
}

impl<T: PgArrayOf> PgType for Vec<T> {
    const TYPE: Type = T::ARRAY;
}

impl<T: PgArrayOf> PgType for &[T] {
    const TYPE: Type = T::ARRAY;
}

fn untyped<'a>(params: &'a [&'a dyn Param]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| *p as &(dyn ToSql + Sync)).collect()
}

fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<Typed<'a>> {
    params
        .iter()
        .map(|p| (*p as &(dyn ToSql + Sync), p.pg_type()))
        .collect()
}

/// What a connection or transaction can run statements on.
#[async_trait::async_trait]
trait Backend: GenericClient {
    async fn all_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<Vec<Row>, PgError>;
    async fn one_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<Row, PgError>;
    async fn opt_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<Option<Row>, PgError>;
    async fn count_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<u64, PgError>;
}

type Typed<'a> = (&'a (dyn ToSql + Sync), Type);

macro_rules! backend {
    ($($client:ty),*) => {
        $(
            #[async_trait::async_trait]
            impl Backend for $client {
                async fn all_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<Vec<Row>, PgError> {
                    self.query_typed(sql, params).await
                }

                async fn one_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<Row, PgError> {
                    self.query_typed_one(sql, params).await
                }

                async fn opt_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<Option<Row>, PgError> {
                    self.query_typed_opt(sql, params).await
                }

                async fn count_typed(&self, sql: &str, params: &[Typed<'_>]) -> Result<u64, PgError> {
                    let rows = self.query_typed_raw(sql, params.iter().cloned()).await?;
                    futures_util::pin_mut!(rows);
                    while rows.try_next().await?.is_some() {}
                    Ok(rows.rows_affected().unwrap_or(0))
                }
            }
        )*
    };
}

backend!(
    deadpool_postgres::Object,
    deadpool_postgres::Transaction<'_>
);

/// Statements on a pooled connection, sent as its pool's mode says.
pub struct Conn {
    object: deadpool_postgres::Object,
    mode: StatementMode,
}

/// Statements in a transaction, sent as its connection's mode says.
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    mode: StatementMode,
}

macro_rules! statements {
    ($inner:ident) => {
        /// The rows of a query.
        pub async fn q(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
            match self.mode {
                StatementMode::Cached => {
                    let statement = self.$inner.prepare_cached(sql).await?;
                    self.$inner.query(&statement, &untyped(params)).await
                }
                StatementMode::Unnamed => self.$inner.all_typed(sql, &typed(params)).await,
            }
        }

        /// The one row of a query (an error otherwise).
        pub async fn q_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
            match self.mode {
                StatementMode::Cached => {
                    let statement = self.$inner.prepare_cached(sql).await?;
                    self.$inner.query_one(&statement, &untyped(params)).await
                }
                StatementMode::Unnamed => self.$inner.one_typed(sql, &typed(params)).await,
            }
        }

        /// The row of a query, if any (an error for more than one).
        pub async fn q_opt(
            &self,
            sql: &str,
            params: &[&dyn Param],
        ) -> Result<Option<Row>, PgError> {
            match self.mode {
                StatementMode::Cached => {
                    let statement = self.$inner.prepare_cached(sql).await?;
                    self.$inner.query_opt(&statement, &untyped(params)).await
                }
                StatementMode::Unnamed => self.$inner.opt_typed(sql, &typed(params)).await,
            }
        }

        /// How many rows a statement changed.
        pub async fn exec(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
            match self.mode {
                StatementMode::Cached => {
                    let statement = self.$inner.prepare_cached(sql).await?;
                    self.$inner.execute(&statement, &untyped(params)).await
                }
                StatementMode::Unnamed => self.$inner.count_typed(sql, &typed(params)).await,
            }
        }
    };
}

impl Conn {
    pub fn new(object: deadpool_postgres::Object, mode: StatementMode) -> Self {
        Self { object, mode }
    }

    statements!(object);

    pub async fn transaction(&mut self) -> Result<Tx<'_>, PgError> {
        let mode = self.mode;
        Ok(Tx {
            tx: self.object.transaction().await?,
            mode,
        })
    }
}

impl Tx<'_> {
    statements!(tx);

    pub async fn commit(self) -> Result<(), PgError> {
        self.tx.commit().await
    }
}

impl Deref for Conn {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        &self.object
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.object
    }
}

impl<'a> Deref for Tx<'a> {
    type Target = deadpool_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}
