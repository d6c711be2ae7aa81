//! Output formats: aligned tables (kubectl style), or the objects as JSON or YAML.

use std::io::Write;

use anyhow::Context as _;
use clap::ValueEnum;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::failure::Failure;

/// How a reason that holds an object back reads: `failed` when its class is Failed (an
/// unknown reason included), `waiting` otherwise.
pub fn held_by(reason: &str) -> &'static str {
    match qleetos_crds::class_of(reason) {
        qleetos_crds::Class::Failed => "failed",
        qleetos_crds::Class::Waiting | qleetos_crds::Class::Done => "waiting",
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Columns.
    Table,
    /// More columns.
    Wide,
    /// The objects as a Kubernetes List in JSON.
    Json,
    /// The objects as a Kubernetes List in YAML.
    Yaml,
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("   ").trim_end()).context("writing the output")?;
    }
    Ok(())
}

/// The objects as a `List`, the shape `kubectl get -o json` prints.
pub fn objects<T: Serialize>(
    out: &mut dyn Write,
    format: Format,
    items: &[T],
) -> Result<(), Failure> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let text = match format {
        Format::Yaml => serde_norway::to_string(&list).context("encoding YAML")?,
        _ => serde_json::to_string_pretty(&list).context("encoding JSON")? + "\n",
    };
    out.write_all(text.as_bytes())
        .context("writing the output")?;
    Ok(())
}

/// `5m`, `3h`, `2d`: how long ago a timestamp was, as kubectl prints ages.
pub fn age(since: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    ago(since.map(|t| t.0))
}

/// How long ago `since` was (`<unknown>` when absent), as kubectl prints ages.
pub fn ago(since: Option<Timestamp>) -> String {
    match since {
        Some(since) => {
            let seconds = Timestamp::now().as_second() - since.as_second();
            duration(u64::try_from(seconds).unwrap_or_default())
        }
        None => "<unknown>".to_owned(),
    }
}

/// `59s`, `119s`, `2m`, `119m`, `2h`, `47h`, `2d`: seconds in kubectl's short form.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["hello".to_owned(), "True".to_owned()],
            vec!["a".to_owned(), "False".to_owned()],
        ];
        table(&mut out, &["NAME", "READY"], &rows).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "NAME    READY\nhello   True\na       False\n"
        );
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(119), "119s");
        assert_eq!(duration(180), "3m");
        assert_eq!(duration(7199), "119m");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(172_799), "47h");
        assert_eq!(duration(172_800), "2d");
    }

    #[test]
    fn an_unknown_or_future_time_has_no_negative_age() {
        assert_eq!(ago(None), "<unknown>");
        let later = Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ago(Some(later)), "0s");
    }
}
