//! The plain-text log line, formatted by hand.
//!
//! `fanout serve` logs one line per request at `info`. tracing-subscriber's
//! `Full` format renders that line through general machinery: a calendar
//! conversion of the clock on every line, ANSI style wrappers around each
//! part even with colours off, and `Debug` formatting of every field. Under
//! `bench/callgrind.sh` that was most of the log's cost per request (the
//! figures are in BENCHMARKS.md). [`Plain`] writes the same line, byte
//! for byte up to escaping, with the date part of the timestamp formatted
//! once per second and per thread and the common field types written
//! directly. It is used for uncoloured text without spans (the `info`
//! default when stdout is not a terminal); coloured output and span context
//! (`debug` and more verbose) stay with tracing-subscriber's own format.
//!
//! The calendar arithmetic is a dozen lines written here: tracing-subscriber
//! keeps its own `DateTime` private, and a date crate for this one fixed,
//! UTC-only format would be a dependency to save those lines.
//!
//! One difference on purpose: every field value and message is escaped the
//! way tracing-subscriber escapes messages, and line breaks and other control
//! characters are escaped too, so a value cannot start a forged log line.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The event format of `fanout serve`'s uncoloured text log: the line of
/// tracing-subscriber's default format (`timestamp LEVEL target: message
/// field=value …`), without span context.
pub(crate) struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str(level(*meta.level()))?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The level as tracing-subscriber pads it, with the space after it.
fn level(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

thread_local! {
    /// The second last formatted on this thread and its text up to the
    /// seconds (`2026-12-06T11:20:29`).
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `2026-12-06T11:20:29.123456Z ` (UTC, microseconds, then a space), as
/// tracing-subscriber's `SystemTime` timer writes it. A clock before 1970
/// is written as 1970-01-01T00:00:00.
fn write_timestamp(writer: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            *cell = (secs, date_time(secs));
        }
        // The cache only ever holds ASCII digits and separators.
        writer.write_str(std::str::from_utf8(&cell.1).unwrap_or("1970-01-01T00:00:00"))
    })?;
    let micros = since.subsec_micros();
    let mut tail = *b".000000Z ";
    let mut rest = micros;
    for slot in tail[1..7].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    writer.write_str(std::str::from_utf8(&tail).unwrap_or(".000000Z "))
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` after the Unix epoch (UTC), with years
/// past 9999 written as 9999 (they never come from a real clock).
fn date_time(secs: u64) -> [u8; 19] {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00";
    let year = year.min(9999);
    let put = |out: &mut [u8; 19], at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(&mut out, 0, 4, year);
    put(&mut out, 5, 2, month);
    put(&mut out, 8, 2, day);
    put(&mut out, 11, 2, of_day / 3600);
    put(&mut out, 14, 2, of_day % 3600 / 60);
    put(&mut out, 17, 2, of_day % 60);
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes an event's fields: the message bare, the others as `name=value`,
/// separated by spaces, in the order the event has them.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field: the separating space, then `name=` unless it is the
    /// message (or `None` when the field is not written).
    fn begin(&mut self, field: &Field) -> Option<bool> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if name == "message" {
            return Some(true);
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        Some(false)
    }
}

impl tracing::field::Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let Some(message) = self.begin(field) else {
            return;
        };
        let mut out = Escaping(&mut *self.writer);
        self.result = self.result.and_then(|()| {
            if message {
                out.write_str(value)
            } else if value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            {
                // What `{:?}` writes for such a string, without its escaping pass.
                out.0.write_char('"')?;
                out.0.write_str(value)?;
                out.0.write_char('"')
            } else {
                write!(out, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.begin(field).is_some() {
            self.result = self.result.and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.begin(field).is_some() {
            self.result = self.result.and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.begin(field).is_some() {
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.begin(field).is_some() {
            let mut out = Escaping(&mut *self.writer);
            self.result = self.result.and_then(|()| write!(out, "{value:?}"));
        }
    }
}

/// Passes text through with control characters escaped: line breaks
/// (`\n`, `\r`) and the rest of C0 but tab as `\xNN`, DEL as `\x7f`, and
/// C1 as `\u{NN}`, as tracing-subscriber escapes ANSI sequences in
/// messages. Text without them (the usual case) is written in one piece.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let plain = |c: char| (c >= ' ' || c == '\t') && !('\x7f'..='\u{9f}').contains(&c);
        // Bytes first: C1 controls are two bytes in UTF-8, so ASCII text
        // (the usual case) needs no decoding at all.
        if s.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t') || s.chars().all(plain) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if plain(c) {
                self.0.write_char(c)?;
            } else if c < '\u{80}' {
                write!(self.0, "\\x{:02x}", c as u32)?;
            } else {
                write!(self.0, "\\u{{{:x}}}", c as u32)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[test]
    fn dates_and_times_are_utc_calendar_dates() {
        let at = |secs: u64| String::from_utf8(date_time(secs).to_vec()).unwrap();
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59");
        assert_eq!(at(1_796_556_029), "2026-12-06T11:20:29");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59");
        assert!(at(u64::MAX).starts_with("9999-"));
    }

    #[test]
    fn the_timestamp_has_microseconds_and_a_clock_before_1970_is_the_epoch() {
        let mut out = String::new();
        write_timestamp(
            &mut out,
            UNIX_EPOCH + Duration::from_micros(1_796_556_029_000_042),
        )
        .unwrap();
        assert_eq!(out, "2026-12-06T11:20:29.000042Z ");
        out.clear();
        write_timestamp(&mut out, UNIX_EPOCH - Duration::from_secs(5)).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000000Z ");
    }

    /// A writer the two formats share in the comparison test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// The lines `emit` logs, through `Plain` and through tracing-subscriber's
    /// default format, each without its timestamp.
    fn both(emit: impl Fn()) -> (String, String) {
        let lines = |plain: bool| {
            let buffer = Buffer::default();
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(buffer.clone());
            let subscriber: Box<dyn Subscriber + Send + Sync> = if plain {
                Box::new(tracing_subscriber::registry().with(layer.event_format(Plain)))
            } else {
                Box::new(tracing_subscriber::registry().with(layer))
            };
            tracing::subscriber::with_default(subscriber, &emit);
            let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|line| line.split_once(' ').unwrap().1.to_owned() + "\n")
                .collect::<String>()
        };
        (lines(true), lines(false))
    }

    #[test]
    fn a_plain_line_is_the_default_formats_line() {
        struct Shown;
        impl fmt::Display for Shown {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one=ok two=timeout")
            }
        }
        let (plain, default) = both(|| {
            tracing::info!(
                endpoint = "GET /merged",
                status = 200_u16,
                ms = 0.523_f64,
                delta = -3_i64,
                cached = false,
                backends = %Shown,
                kinds = ?["a", "b"],
                quoted = "say \"hi\" \\ é",
                "request"
            );
            tracing::warn!(r#type = "x", "a {} message", "formatted");
            tracing::error!("no fields");
            tracing::debug!(n = 1_u64, "debug");
        });
        assert_eq!(plain, default);
        assert!(
            plain.starts_with(
                " INFO fanout::log::tests: request endpoint=\"GET /merged\" status=200 ms=0.523"
            ),
            "{plain}"
        );
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let (plain, _) = both(|| {
            tracing::info!(
                shown = %"a\nb\u{1b}[31m\u{85}",
                text = "c\rd",
                "line\nINFO forged"
            );
        });
        assert_eq!(plain.lines().count(), 1, "{plain}");
        assert!(plain.contains(r"line\x0aINFO forged"), "{plain}");
        assert!(plain.contains(r"shown=a\x0ab\x1b[31m\u{85}"), "{plain}");
        assert!(plain.contains(r#"text="c\rd""#), "{plain}");
    }
}
