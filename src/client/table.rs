//! Tables for people: a header row and one row per item, columns padded to their widest cell.

use serde_json::Value;

/// A column: its header and the field of each item it shows.
pub type Column = (&'static str, &'static str);

/// The rows of `items` under `columns`; `(none)` for an empty list.
pub fn render(columns: &[Column], items: &[Value]) -> String {
    if items.is_empty() {
        return "(none)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, name)| one_line(field(item, name)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|(h, _)| *h).collect());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A field as text: strings as they are, numbers and booleans printed, `-` for null or absent.
pub fn field(item: &Value, name: &str) -> String {
    match &item[name] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            texts.join(",")
        }
        other => other.to_string(),
    }
}

/// Control characters (a newline in a name) would break the table: shown as spaces.
fn one_line(cell: String) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let columns = [("ID", "id"), ("NAME", "name")];
        let items = [
            json!({"id": "a", "name": "first\nline"}),
            json!({"id": "bbbb", "name": null}),
        ];
        assert_eq!(
            render(&columns, &items),
            "ID    NAME\na     first line\nbbbb  -\n"
        );
        assert_eq!(render(&columns, &[]), "(none)\n");
    }
}
