//! Tables on stdout.

use serde_json::Value;

/// Prints `rows` under `headers`, each column as wide as its widest cell.
pub(crate) fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    say!(
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect()).trim_end()
    );
    for r in rows {
        say!("{}", line(r).trim_end());
    }
}

/// A JSON value as a cell: strings bare, null as `-`.
pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}
