//! A query's answer as it travels to clients: column names and types, rows of plain values,
//! and whether the rows were cut short. Also its three renderings for the CLI (an aligned
//! table, JSON, CSV). Built from Arrow batches by `crate::sql::result`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlResult {
    pub columns: Vec<SqlColumn>,
    pub rows: Vec<Vec<SqlValue>>,
    /// Why the rows stop short of the full answer, when they do.
    pub truncated: Option<String>,
    /// The revision of the snapshot the query read.
    pub revision: u64,
    /// Stored entries the query's scans visited (live or not).
    pub rows_scanned: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlColumn {
    pub name: String,
    /// The Arrow type, as DataFusion names it (`Utf8`, `Int64`, ...).
    pub data_type: String,
}

/// One cell. Types without a variant of their own (timestamps, decimals, lists, ...) arrive as
/// their text form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// Bytes this value adds to a response, roughly: what the result size limit counts.
    pub fn size(&self) -> usize {
        match self {
            SqlValue::Text(s) => s.len() + 2,
            SqlValue::Bytes(b) => b.len() + 2,
            _ => 9,
        }
    }

    /// As shown in a table or CSV: NULL is empty, bytes are `\x` and hex (PostgreSQL's bytea).
    pub fn to_text(&self) -> String {
        match self {
            SqlValue::Null => String::new(),
            SqlValue::Bool(b) => b.to_string(),
            SqlValue::Int(i) => i.to_string(),
            SqlValue::UInt(u) => u.to_string(),
            SqlValue::Float(f) => f.to_string(),
            SqlValue::Text(s) => s.clone(),
            SqlValue::Bytes(b) => {
                let mut text = String::with_capacity(2 + 2 * b.len());
                text.push_str("\\x");
                for byte in b {
                    text.push_str(&format!("{byte:02x}"));
                }
                text
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SqlValue::Null => serde_json::Value::Null,
            SqlValue::Bool(b) => (*b).into(),
            SqlValue::Int(i) => (*i).into(),
            SqlValue::UInt(u) => (*u).into(),
            SqlValue::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            SqlValue::Text(_) | SqlValue::Bytes(_) => self.to_text().into(),
        }
    }
}

impl SqlResult {
    /// An aligned table with a header, then the truncation note if any.
    pub fn to_table(&self) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
        table.set_header(self.columns.iter().map(|c| c.name.as_str()));
        for row in &self.rows {
            table.add_row(row.iter().map(SqlValue::to_text));
        }
        let mut text = table.to_string();
        let rows = self.rows.len();
        text.push_str(&format!(
            "\n({rows} row{})",
            if rows == 1 { "" } else { "s" }
        ));
        if let Some(reason) = &self.truncated {
            text.push_str(&format!("\ntruncated: {reason}"));
        }
        text
    }

    /// `{"columns": [...], "rows": [{column: value}...], "truncated": ..., "revision": ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let object: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(column, value)| (column.name.clone(), value.to_json()))
                    .collect();
                serde_json::Value::Object(object)
            })
            .collect();
        serde_json::json!({
            "columns": self.columns.iter().map(|c| serde_json::json!({"name": c.name, "type": c.data_type})).collect::<Vec<_>>(),
            "rows": rows,
            "truncated": self.truncated,
            "revision": self.revision,
        })
    }

    /// RFC 4180 CSV with a header row. A truncated result has no marker inside the CSV; the
    /// CLI says so on stderr.
    pub fn to_csv(&self) -> Result<String, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(self.columns.iter().map(|c| c.name.as_str()))?;
        for row in &self.rows {
            writer.write_record(row.iter().map(SqlValue::to_text))?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))?;
        // Every field is a Rust string: the output is UTF-8.
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
