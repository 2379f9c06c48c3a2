//! What came back: rows, the table and the JSON.

use std::{fmt, time::Duration};

use serde::{Serialize, Serializer, ser::SerializeStruct};

/// What one URL gave.
///
/// Serialized as `{"url", "status", "latency_ms", "bytes", "error"}`, with
/// `null` for a missing status or error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The URL as given.
    pub url: String,
    /// The response status, if a response came back.
    pub status: Option<u16>,
    /// From the start of the request (not from when it was queued behind the
    /// limit) to the end of its body, or to its failure.
    #[serde(rename = "latency_ms", serialize_with = "serialize_ms")]
    pub latency: Duration,
    /// How many body bytes were read (also when the body was cut off).
    pub bytes: u64,
    /// What went wrong, e.g. `connection refused`, `timed out after 2s`,
    /// `invalid URL: ...`. `None` when a response came back in full, whatever
    /// its status.
    pub error: Option<String>,
}

impl Row {
    /// A row for a request still to be made.
    pub(crate) fn pending(url: String) -> Row {
        Row {
            url,
            status: None,
            latency: Duration::ZERO,
            bytes: 0,
            error: None,
        }
    }

    /// A row for a URL that was not requested.
    pub(crate) fn failed(url: String, error: String) -> Row {
        Row {
            error: Some(error),
            ..Row::pending(url)
        }
    }

    /// Whether the request succeeded: no error, and a 2xx or 3xx status.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..400).contains(&s))
    }
}

/// Everything [`fetch_all`](crate::fetch_all) found.
///
/// Serialized (and [`to_json`](Report::to_json)) as
/// `{"requests": [row...], "ok": n, "failed": n, "elapsed_ms": x}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One row per URL, in input order.
    pub rows: Vec<Row>,
    /// Wall-clock time of the whole fetch.
    pub elapsed: Duration,
    /// The concurrency limit the requests ran under.
    pub limit: usize,
}

impl Report {
    /// How many rows failed: an error, or a status other than 2xx/3xx.
    pub fn failed(&self) -> usize {
        self.rows.len() - self.ok()
    }

    /// How many rows succeeded ([`Row::is_ok`]).
    pub fn ok(&self) -> usize {
        self.rows.iter().filter(|row| row.is_ok()).count()
    }

    /// The report as an aligned table, then a blank line and a summary:
    ///
    /// ```text
    /// URL                    STATUS   LATENCY  BYTES  ERROR
    /// http://a.test/ok          200    12.3 ms   1234  -
    /// http://a.test/gone        404     3.1 ms      9  -
    /// https://a.test/           -       0.0 ms      0  invalid URL: ...
    ///
    /// 3 requests: 1 ok, 2 failed, in 0.02 s (limit 16)
    /// ```
    ///
    /// Status, latency and bytes are right-aligned; a missing status or error
    /// shows as `-`. Every line, the last included, ends with a newline and
    /// has no trailing spaces. [`Report`]'s `Display` gives the same text.
    pub fn render_table(&self) -> String {
        const HEADER: [&str; 5] = ["URL", "STATUS", "LATENCY", "BYTES", "ERROR"];
        const RIGHT: [bool; 5] = [false, true, true, true, false];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    one_line(&row.url),
                    row.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    tenths_of_ms(row.latency),
                    row.bytes.to_string(),
                    row.error
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), one_line),
                ]
            })
            .collect();
        let mut widths = HEADER.map(|h| h.chars().count());
        for line in &cells {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }

        let mut out = String::new();
        let header = HEADER.map(str::to_owned);
        for line in std::iter::once(&header).chain(&cells) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if RIGHT[i] {
                    text.push_str(&pad);
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&pad);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The one-line summary, e.g. `3 requests: 2 ok, 1 failed, in 1.02 s (limit 16)`.
    pub fn summary(&self) -> String {
        let n = self.rows.len();
        format!(
            "{n} request{}: {} ok, {} failed, in {:.2} s (limit {})",
            if n == 1 { "" } else { "s" },
            self.ok(),
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.limit,
        )
    }

    /// The report as JSON:
    /// `{"requests": [{"url", "status", "latency_ms", "bytes", "error"}...], "ok": n, "failed": n, "elapsed_ms": x}`.
    ///
    /// Times are in milliseconds with microsecond precision.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| {
            // Serializing plain strings and numbers cannot fail.
            serde_json::json!({ "error": e.to_string() })
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_table())
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut report = serializer.serialize_struct("Report", 4)?;
        report.serialize_field("requests", &self.rows)?;
        report.serialize_field("ok", &self.ok())?;
        report.serialize_field("failed", &self.failed())?;
        report.serialize_field("elapsed_ms", &ms(self.elapsed))?;
        report.end()
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn serialize_ms<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(ms(*d))
}

/// Milliseconds with one decimal, rounded half up on the exact microsecond
/// count (so 3.05 ms shows as `3.1 ms`), e.g. `12.3 ms`.
fn tenths_of_ms(d: Duration) -> String {
    let tenths = (d.as_micros() + 50) / 100;
    format!("{}.{} ms", tenths / 10, tenths % 10)
}

/// A table cell on one line: control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
