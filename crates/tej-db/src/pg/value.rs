//! Rows and parameters as plain tej types, so the [`PgAdmin`](super::PgAdmin) trait and its
//! mock never expose driver types.

use super::DbError;
use serde::Serialize;
use std::sync::Arc;

/// One value of a result row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PgValue {
    /// SQL NULL.
    Null,
    /// `boolean`.
    Bool(bool),
    /// Any integer type or `oid`.
    Int(i64),
    /// `real` or `double precision`.
    Float(f64),
    /// Any text-like type.
    Text(String),
}

impl PgValue {
    /// The value as a number: integers, floats, numeric text; `true`/`false` as 1/0; NULL none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PgValue::Int(i) => Some(*i as f64),
            PgValue::Float(f) => Some(*f),
            PgValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            PgValue::Text(t) => t.trim().parse().ok(),
            PgValue::Null => None,
        }
    }
}

impl From<i64> for PgValue {
    fn from(v: i64) -> Self {
        PgValue::Int(v)
    }
}
impl From<i32> for PgValue {
    fn from(v: i32) -> Self {
        PgValue::Int(v.into())
    }
}
impl From<f64> for PgValue {
    fn from(v: f64) -> Self {
        PgValue::Float(v)
    }
}
impl From<bool> for PgValue {
    fn from(v: bool) -> Self {
        PgValue::Bool(v)
    }
}
impl From<&str> for PgValue {
    fn from(v: &str) -> Self {
        PgValue::Text(v.to_string())
    }
}
impl From<String> for PgValue {
    fn from(v: String) -> Self {
        PgValue::Text(v)
    }
}
impl<T: Into<PgValue>> From<Option<T>> for PgValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(PgValue::Null, Into::into)
    }
}

/// One result row: column names and values.
#[derive(Debug, Clone, PartialEq)]
pub struct PgRow {
    columns: Arc<[String]>,
    values: Vec<PgValue>,
}

impl PgRow {
    /// A row from shared column names and values (same length).
    pub fn new(columns: Arc<[String]>, values: Vec<PgValue>) -> PgRow {
        PgRow { columns, values }
    }

    /// A row from `(column, value)` pairs; handy in tests and mocks.
    pub fn from_pairs<I, K, V>(pairs: I) -> PgRow
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<PgValue>,
    {
        let (cols, vals): (Vec<String>, Vec<PgValue>) =
            pairs.into_iter().map(|(k, v)| (k.into(), v.into())).unzip();
        PgRow {
            columns: cols.into(),
            values: vals,
        }
    }

    /// Column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The value of `col`, if the column exists.
    pub fn get(&self, col: &str) -> Option<&PgValue> {
        self.columns
            .iter()
            .position(|c| c == col)
            .and_then(|i| self.values.get(i))
    }

    fn need(&self, col: &str) -> Result<&PgValue, DbError> {
        self.get(col)
            .ok_or_else(|| DbError::UnexpectedReply(format!("column {col:?} missing from reply")))
    }

    /// An integer column that may be NULL.
    pub fn opt_i64(&self, col: &str) -> Result<Option<i64>, DbError> {
        match self.need(col)? {
            PgValue::Null => Ok(None),
            PgValue::Int(v) => Ok(Some(*v)),
            PgValue::Float(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(*f as i64)),
            PgValue::Text(t) => t.trim().parse().map(Some).map_err(|_| {
                DbError::UnexpectedReply(format!("column {col:?}: {t:?} is not an integer"))
            }),
            other => Err(DbError::UnexpectedReply(format!(
                "column {col:?}: expected an integer, got {other:?}"
            ))),
        }
    }

    /// An integer column; NULL is an error.
    pub fn i64(&self, col: &str) -> Result<i64, DbError> {
        self.opt_i64(col)?
            .ok_or_else(|| DbError::UnexpectedReply(format!("column {col:?} is NULL")))
    }

    /// A number column that may be NULL (integers are widened).
    pub fn opt_f64(&self, col: &str) -> Result<Option<f64>, DbError> {
        match self.need(col)? {
            PgValue::Null => Ok(None),
            PgValue::Int(v) => Ok(Some(*v as f64)),
            PgValue::Float(f) => Ok(Some(*f)),
            PgValue::Text(t) => t.trim().parse().map(Some).map_err(|_| {
                DbError::UnexpectedReply(format!("column {col:?}: {t:?} is not a number"))
            }),
            other => Err(DbError::UnexpectedReply(format!(
                "column {col:?}: expected a number, got {other:?}"
            ))),
        }
    }

    /// A number column; NULL is an error.
    pub fn f64(&self, col: &str) -> Result<f64, DbError> {
        self.opt_f64(col)?
            .ok_or_else(|| DbError::UnexpectedReply(format!("column {col:?} is NULL")))
    }

    /// A text column that may be NULL (numbers and booleans are formatted).
    pub fn opt_str(&self, col: &str) -> Result<Option<String>, DbError> {
        Ok(match self.need(col)? {
            PgValue::Null => None,
            PgValue::Text(t) => Some(t.clone()),
            PgValue::Int(v) => Some(v.to_string()),
            PgValue::Float(v) => Some(v.to_string()),
            PgValue::Bool(b) => Some(b.to_string()),
        })
    }

    /// A text column; NULL becomes the empty string.
    pub fn str(&self, col: &str) -> Result<String, DbError> {
        Ok(self.opt_str(col)?.unwrap_or_default())
    }

    /// A boolean column that may be NULL.
    pub fn opt_bool(&self, col: &str) -> Result<Option<bool>, DbError> {
        match self.need(col)? {
            PgValue::Null => Ok(None),
            PgValue::Bool(b) => Ok(Some(*b)),
            PgValue::Text(t) if matches!(t.as_str(), "t" | "true" | "on") => Ok(Some(true)),
            PgValue::Text(t) if matches!(t.as_str(), "f" | "false" | "off") => Ok(Some(false)),
            other => Err(DbError::UnexpectedReply(format!(
                "column {col:?}: expected a boolean, got {other:?}"
            ))),
        }
    }

    /// A boolean column; NULL is false.
    pub fn bool(&self, col: &str) -> Result<bool, DbError> {
        Ok(self.opt_bool(col)?.unwrap_or(false))
    }
}

/// A query parameter. SQL must cast it (`$1::text`, `$2::int8`).
#[derive(Debug, Clone, PartialEq)]
pub enum PgParam {
    /// Text (cast with `::text`).
    Text(String),
    /// 64-bit integer (cast with `::int8`).
    Int(i64),
    /// Float (cast with `::float8`).
    Float(f64),
    /// Boolean (cast with `::bool`).
    Bool(bool),
}

impl From<&str> for PgParam {
    fn from(v: &str) -> Self {
        PgParam::Text(v.into())
    }
}
impl From<String> for PgParam {
    fn from(v: String) -> Self {
        PgParam::Text(v)
    }
}
impl From<i64> for PgParam {
    fn from(v: i64) -> Self {
        PgParam::Int(v)
    }
}

/// Quotes an SQL identifier (`users` → `"users"`, `a"b` → `"a""b"`); NUL bytes and empty names are refused.
pub fn quote_ident(name: &str) -> Result<String, DbError> {
    if name.is_empty() || name.contains('\0') {
        return Err(DbError::InvalidConfig(format!(
            "invalid SQL identifier {name:?}"
        )));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Quotes a possibly schema-qualified name given as `schema.table` or `table` (no dots inside parts).
pub fn quote_qualified(name: &str) -> Result<String, DbError> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(DbError::InvalidConfig(format!(
            "{name:?} is not a name or schema.name"
        )));
    }
    let quoted: Result<Vec<String>, DbError> = parts.iter().map(|p| quote_ident(p)).collect();
    Ok(quoted?.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn typed_getters_parse_and_reject() {
        let r = PgRow::from_pairs([
            ("a", PgValue::Int(5)),
            ("b", PgValue::Text("12".into())),
            ("c", PgValue::Null),
            ("d", PgValue::Float(2.5)),
            ("e", PgValue::Text("t".into())),
            ("f", PgValue::Text("x".into())),
        ]);
        assert_eq!(r.i64("a").unwrap(), 5);
        assert_eq!(r.i64("b").unwrap(), 12);
        assert_eq!(r.opt_i64("c").unwrap(), None);
        assert!(r.i64("c").is_err());
        assert!(r.i64("d").is_err());
        assert_eq!(r.f64("d").unwrap(), 2.5);
        assert!(r.bool("e").unwrap());
        assert!(!r.bool("c").unwrap());
        assert!(matches!(r.i64("f"), Err(DbError::UnexpectedReply(_))));
        assert!(matches!(r.i64("zz"), Err(DbError::UnexpectedReply(m)) if m.contains("zz")));
        assert_eq!(r.str("c").unwrap(), "");
        assert_eq!(r.str("a").unwrap(), "5");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("users").unwrap(), "\"users\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0").is_err());
        assert_eq!(
            quote_qualified("public.users").unwrap(),
            "\"public\".\"users\""
        );
        assert!(quote_qualified("a.b.c").is_err());
    }

    proptest! {
        #[test]
        fn quoted_identifiers_have_balanced_quotes(s in "[^\\x00]{1,40}") {
            let q = quote_ident(&s).unwrap();
            let inner = &q[1..q.len() - 1];
            prop_assert_eq!(inner.replace("\"\"", "\"") , s);
            prop_assert_eq!(inner.matches('"').count() % 2, 0);
        }
    }
}
