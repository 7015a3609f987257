//! State that replicas must share, written once for both engines: SQLite
//! (one instance, the embedded default) and PostgreSQL (`catalog.url`).
//!
//! Statements are written in the SQL both accept, with SQLite's `?N`
//! placeholders (PostgreSQL's `$N` are made from them). Values cross as
//! [`Val`]: PostgreSQL wants each parameter in its column's exact type, so
//! a value is converted to the type the prepared statement asks for. A
//! parameter PostgreSQL cannot type by its use (`?1 IS NULL`) is written
//! `CAST(?1 AS TEXT)`.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use postgres::types::{ToSql, Type};

use crate::pg::PgCatalog;

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Val::Int(v as i64)
    }
}

impl From<u32> for Val {
    fn from(v: u32) -> Self {
        Val::Int(i64::from(v))
    }
}

/// Booleans are stored as 0 and 1 on both engines.
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::Real(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}

impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// Parameters from a list of values of mixed types.
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => { [$($crate::sql::Val::from($v)),*] };
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Val>);

impl Row {
    fn at(&self, i: usize) -> anyhow::Result<&Val> {
        self.0.get(i).with_context(|| format!("no column {i}"))
    }

    pub fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.at(i)? {
            Val::Null => Ok(None),
            Val::Int(v) => Ok(Some(*v)),
            other => anyhow::bail!("column {i}: {other:?} is not an integer"),
        }
    }

    pub fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.opt_int(i)?.with_context(|| format!("column {i} is NULL"))
    }

    pub fn u64(&self, i: usize) -> anyhow::Result<u64> {
        Ok(self.int(i)? as u64)
    }

    pub fn opt_bool(&self, i: usize) -> anyhow::Result<Option<bool>> {
        Ok(self.opt_int(i)?.map(|v| v != 0))
    }

    pub fn bool(&self, i: usize) -> anyhow::Result<bool> {
        Ok(self.int(i)? != 0)
    }

    pub fn real(&self, i: usize) -> anyhow::Result<f64> {
        match self.at(i)? {
            Val::Real(v) => Ok(*v),
            Val::Int(v) => Ok(*v as f64),
            other => anyhow::bail!("column {i}: {other:?} is not a number"),
        }
    }

    pub fn opt_real(&self, i: usize) -> anyhow::Result<Option<f64>> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.real(i).map(Some),
        }
    }

    pub fn opt_text(&self, i: usize) -> anyhow::Result<Option<String>> {
        match self.at(i)? {
            Val::Null => Ok(None),
            Val::Text(v) => Ok(Some(v.clone())),
            other => anyhow::bail!("column {i}: {other:?} is not text"),
        }
    }

    pub fn text(&self, i: usize) -> anyhow::Result<String> {
        self.opt_text(i)?.with_context(|| format!("column {i} is NULL"))
    }
}

/// Statements inside one transaction.
pub trait Tx {
    fn query(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<Vec<Row>>;
    /// Rows changed.
    fn execute(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<u64>;
    /// Holds `key` until the transaction ends, against other replicas
    /// (PostgreSQL's advisory lock; one SQLite connection is alone already).
    fn serialize(&mut self, key: i64) -> anyhow::Result<()>;

    fn query_one(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// A database that shared state lives in.
#[derive(Clone)]
pub enum Db {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Arc<PgCatalog>),
}

impl Db {
    /// A SQLite database in memory.
    pub fn in_memory() -> anyhow::Result<Self> {
        Ok(Db::Sqlite(Arc::new(Mutex::new(rusqlite::Connection::open_in_memory()?))))
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    pub fn transaction<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        match self {
            Db::Sqlite(conn) => {
                let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                let tx = conn.transaction()?;
                let out = f(&mut SqliteTx(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Db::Postgres(pg) => pg.call(move |c| {
                let mut tx = c.transaction()?;
                let out = f(&mut PgTx(&mut tx))?;
                tx.commit()?;
                Ok(out)
            }),
        }
    }

    /// One query on its own.
    pub fn query(&self, sql: &'static str, params: &[Val]) -> anyhow::Result<Vec<Row>> {
        let params = params.to_vec();
        self.transaction(move |tx| tx.query(sql, &params))
    }

    /// As [`Db::query`], for a query built at run time.
    pub fn query_owned(&self, sql: String, params: &[Val]) -> anyhow::Result<Vec<Row>> {
        let params = params.to_vec();
        self.transaction(move |tx| tx.query(&sql, &params))
    }
}

struct SqliteTx<'a>(&'a rusqlite::Transaction<'a>);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(v) => ValueRef::Integer(*v),
            Val::Real(v) => ValueRef::Real(*v),
            Val::Text(v) => ValueRef::Text(v.as_bytes()),
        }))
    }
}

impl Tx for SqliteTx<'_> {
    fn query(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<Vec<Row>> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
            (0..columns)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(v) => Val::Int(v),
                        ValueRef::Real(v) => Val::Real(v),
                        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    })
                })
                .collect::<rusqlite::Result<Vec<Val>>>()
                .map(Row)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn execute(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<u64> {
        Ok(self.0.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn serialize(&mut self, _key: i64) -> anyhow::Result<()> {
        Ok(())
    }
}

struct PgTx<'a, 'b>(&'a mut postgres::Transaction<'b>);

/// `?N` placeholders as PostgreSQL's `$N`.
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) { '$' } else { c });
    }
    out
}

/// `v` as the type PostgreSQL expects for a parameter.
fn pg_param(v: &Val, ty: &Type) -> anyhow::Result<Box<dyn ToSql + Sync>> {
    Ok(match (v, ty) {
        (Val::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Val::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
        (Val::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
        (Val::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (Val::Null, _) => Box::new(None::<String>),
        (Val::Int(v), t) if *t == Type::INT8 => Box::new(*v),
        (Val::Int(v), t) if *t == Type::INT4 => Box::new(i32::try_from(*v)?),
        (Val::Int(v), t) if *t == Type::FLOAT8 => Box::new(*v as f64),
        (Val::Int(v), t) if *t == Type::BOOL => Box::new(*v != 0),
        (Val::Real(v), t) if *t == Type::FLOAT8 => Box::new(*v),
        (Val::Text(v), t) if *t == Type::TEXT || *t == Type::VARCHAR => Box::new(v.clone()),
        (v, t) => anyhow::bail!("{v:?} cannot be a parameter of type {t}"),
    })
}

fn pg_row(r: &postgres::Row) -> anyhow::Result<Row> {
    let vals = r
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = c.type_();
            let v = if *t == Type::INT8 {
                r.try_get::<_, Option<i64>>(i)?.map(Val::Int)
            } else if *t == Type::INT4 {
                r.try_get::<_, Option<i32>>(i)?.map(|v| Val::Int(i64::from(v)))
            } else if *t == Type::BOOL {
                r.try_get::<_, Option<bool>>(i)?.map(|v| Val::Int(i64::from(v)))
            } else if *t == Type::FLOAT8 {
                r.try_get::<_, Option<f64>>(i)?.map(Val::Real)
            } else if *t == Type::TEXT || *t == Type::VARCHAR {
                r.try_get::<_, Option<String>>(i)?.map(Val::Text)
            } else {
                anyhow::bail!("column {} is of type {t}, which this layer does not read", c.name())
            };
            Ok(v.unwrap_or(Val::Null))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Row(vals))
}

impl PgTx<'_, '_> {
    fn prepared(
        &mut self,
        sql: &str,
        params: &[Val],
    ) -> anyhow::Result<(postgres::Statement, Vec<Box<dyn ToSql + Sync>>)> {
        let stmt = self.0.prepare(&dollars(sql))?;
        anyhow::ensure!(stmt.params().len() == params.len(), "{} parameters for {sql}", params.len());
        let values = params.iter().zip(stmt.params()).map(|(v, t)| pg_param(v, t)).collect::<anyhow::Result<_>>()?;
        Ok((stmt, values))
    }
}

impl Tx for PgTx<'_, '_> {
    fn query(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<Vec<Row>> {
        let (stmt, values) = self.prepared(sql, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        self.0.query(&stmt, &refs)?.iter().map(pg_row).collect()
    }

    fn execute(&mut self, sql: &str, params: &[Val]) -> anyhow::Result<u64> {
        let (stmt, values) = self.prepared(sql, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        Ok(self.0.execute(&stmt, &refs)?)
    }

    fn serialize(&mut self, key: i64) -> anyhow::Result<()> {
        self.0.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            dollars("a = ?1 AND (?12 IS NULL OR b = ?12) AND c = '?'"),
            "a = $1 AND ($12 IS NULL OR b = $12) AND c = '?'"
        );
    }

    #[test]
    fn sqlite_answers_with_the_values_it_was_given() {
        let db = Db::in_memory().unwrap();
        db.transaction(|tx| {
            tx.execute("CREATE TABLE t (a BIGINT, b TEXT, c DOUBLE PRECISION)", &[])?;
            tx.execute("INSERT INTO t VALUES (?1, ?2, ?3)", &vals![7_i64, "x", 0.5])?;
            tx.execute("INSERT INTO t VALUES (?1, ?2, ?3)", &vals![None::<i64>, None::<String>, 1.0])?;
            Ok(())
        })
        .unwrap();
        let rows = db.query("SELECT a, b, c FROM t ORDER BY c", &[]).unwrap();
        assert_eq!((rows[0].int(0).unwrap(), rows[0].text(1).unwrap(), rows[0].real(2).unwrap()), (7, "x".into(), 0.5));
        assert_eq!((rows[1].opt_int(0).unwrap(), rows[1].opt_text(1).unwrap()), (None, None));
        assert!(rows[1].int(0).is_err(), "a NULL is not an integer");
        // A failed transaction leaves nothing.
        let failed = db.transaction(|tx| -> anyhow::Result<()> {
            tx.execute("INSERT INTO t VALUES (?1, ?2, ?3)", &vals![1_i64, "y", 2.0])?;
            anyhow::bail!("no")
        });
        assert!(failed.is_err());
        assert_eq!(db.query("SELECT count(*) FROM t", &[]).unwrap()[0].int(0).unwrap(), 2);
    }
}
