//! One pass over a body that checks its JSON syntax and finds where the
//! members of a top-level object are: the fast path of [`Json::parse`].
//!
//! `serde_json` did the same through its `Deserialize` machinery (a visitor,
//! a `RawValue` per member), which was about an eighth of the gateway's
//! instructions per aggregated request. This scanner is a plain loop over the
//! bytes, written here because no maintained crate both validates and hands
//! back byte ranges without building values.
//!
//! It answers only where it agrees with `serde_json` by construction, and
//! leaves everything else to it ([`scan`] returns `None`): a body it refuses,
//! a key with escapes (decoded by `serde_json`, which knows the surrogate
//! rules), a top-level scalar (which `serde_json` parses as a value: a number
//! out of range or a lone surrogate is an error there). So an invalid body
//! gets `serde_json`'s message with its line and column, and a disagreement
//! can only make the scanner slower, never the answer different: the `json`
//! fuzz target and the tests below compare the two on every input.
//!
//! [`Json::parse`]: super::json::Json::parse

use std::ops::Range;

/// A top-level object's members, each key as its range in the text (`Ok`)
/// or decoded (`Err`, the key had escapes), with its value's range.
pub(super) type Members = Vec<(Result<Range<usize>, Box<str>>, Range<usize>)>;

/// The members of `text` if it is one JSON object (`Some(Some(_))`), or
/// `Some(None)` if it is a valid top-level array, its arrays and objects
/// nested at most `max_depth` deep (as [`nesting_exceeds`] counts). `None`:
/// anything else, and anything this scanner does not decide (see the
/// module's doc), for `serde_json` to answer after the depth check.
pub(super) fn scan(text: &str, max_depth: u32) -> Option<Option<Members>> {
    let mut s = Scanner {
        bytes: text.as_bytes(),
        at: 0,
        outside: 0,
        max_depth: usize::try_from(max_depth).unwrap_or(usize::MAX),
    };
    s.space();
    let found = match s.peek()? {
        b'{' => {
            s.deeper(0)?;
            s.at += 1;
            s.outside = 1;
            Some(s.members(text)?)
        }
        b'[' => {
            s.value()?;
            None
        }
        _ => return None,
    };
    s.space();
    (s.at == s.bytes.len()).then_some(found)
}

/// Whether arrays and objects nest deeper than `max`, ignoring brackets inside
/// strings. A linear scan, run before parsing so a hostile body cannot make the
/// parser recurse deeply. Strings, most of a typical body, are skipped with
/// `memchr` to their closing quote rather than looked at byte by byte.
pub(crate) fn nesting_exceeds(bytes: &[u8], max: u32) -> bool {
    let mut depth = 0u32;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => loop {
                // To the next quote or backslash; an escape skips the byte
                // after it. An unterminated string ends the scan (the parser
                // refuses it).
                let Some(at) = bytes
                    .get(i..)
                    .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                else {
                    return false;
                };
                i += at + 1;
                if bytes[i - 1] == b'"' {
                    break;
                }
                i += 1;
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Which bytes end a run of plain string content: the quote, the backslash,
/// and the control characters JSON forbids inside strings.
static STRING_STOP: [bool; 256] = {
    let mut stop = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        stop[b] = true;
        b += 1;
    }
    stop[b'"' as usize] = true;
    stop[b'\\' as usize] = true;
    stop
};

/// How many bytes at the start of `rest` are plain string content (no
/// quote, backslash or control character). Eight bytes at a time while it
/// can (SWAR: a byte below 0x20, or equal to `"` or `\\`, sets its top bit in
/// the mask), then byte by byte.
fn plain_run(rest: &[u8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut at = 0;
    while let Some(chunk) = rest.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let quote = word ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        let stops = (control | quote | backslash) & HIGH;
        if stops != 0 {
            // The lowest flagged byte is a real stop (borrows only run
            // upwards from one), so this is exact.
            return at + stops.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + rest[at..]
        .iter()
        .position(|&b| STRING_STOP[usize::from(b)])
        .unwrap_or(rest.len() - at)
}

/// Containers open at once kept in bits; deeper ones spill to the heap.
const INLINE_DEPTH: usize = 128;

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Containers around the value being scanned (the top-level object
    /// around a member's value).
    outside: usize,
    max_depth: usize,
}

/// The open containers around the scanner: whether each is an object.
struct Open {
    inline: u128,
    spill: Vec<bool>,
    depth: usize,
}

impl Open {
    fn push(&mut self, object: bool) {
        if self.depth < INLINE_DEPTH {
            let bit = 1u128 << self.depth;
            if object {
                self.inline |= bit;
            } else {
                self.inline &= !bit;
            }
        } else {
            self.spill.push(object);
        }
        self.depth += 1;
    }

    /// Whether the innermost open container is an object; `None` at the top.
    fn innermost(&self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        if top < INLINE_DEPTH {
            Some(self.inline & (1u128 << top) != 0)
        } else {
            self.spill.last().copied()
        }
    }

    fn pop(&mut self) {
        if self.depth > INLINE_DEPTH {
            self.spill.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// `Some` if a container opened inside `open` more (around it, within
    /// the value) is within the depth allowed.
    fn deeper(&self, open: usize) -> Option<()> {
        (self.outside + open < self.max_depth).then_some(())
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Expects `byte` (after whitespace) and steps over it.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.space();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The rest of a string whose opening quote is behind; whether it had
    /// escapes.
    fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.at += plain_run(self.bytes.get(self.at..)?);
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A key (its quote next, after whitespace) and the colon after it.
    fn key(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.string()?;
        self.expect(b':')
    }

    /// One whole value, after whitespace. Iterative: nesting costs a bit per
    /// level, never stack.
    fn value(&mut self) -> Option<()> {
        let mut open = Open {
            inline: 0,
            spill: Vec::new(),
            depth: 0,
        };
        loop {
            self.space();
            match self.peek()? {
                b'{' => {
                    self.deeper(open.depth)?;
                    self.at += 1;
                    self.space();
                    if self.peek()? == b'}' {
                        self.at += 1;
                    } else {
                        open.push(true);
                        self.key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.deeper(open.depth)?;
                    self.at += 1;
                    self.space();
                    if self.peek()? == b']' {
                        self.at += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                b'"' => {
                    self.at += 1;
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // A value ended: the containers it ends, then a comma before the
            // next value (and its key, in an object).
            loop {
                let Some(object) = open.innermost() else {
                    return Some(());
                };
                self.space();
                match (self.peek()?, object) {
                    (b',', true) => {
                        self.at += 1;
                        self.key()?;
                        break;
                    }
                    (b',', false) => {
                        self.at += 1;
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        self.at += 1;
                        open.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// The members of an object whose `{` is behind, through its `}`.
    fn members(&mut self, text: &str) -> Option<Members> {
        let mut members = Vec::with_capacity(8);
        self.space();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(members);
        }
        loop {
            self.expect(b'"')?;
            let start = self.at;
            let escaped = self.string()?;
            let key = if escaped {
                // With its quotes; `serde_json` applies the escape rules.
                let decoded: String = serde_json::from_str(text.get(start - 1..self.at)?).ok()?;
                Err(decoded.into_boxed_str())
            } else {
                Ok(start..self.at - 1)
            };
            self.expect(b':')?;
            self.space();
            let value = self.at;
            self.value()?;
            members.push((key, value..self.at));
            self.space();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(members);
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{nesting_exceeds, scan};
    use crate::shape::json::assert_scan_agrees;

    /// Valid bodies the scanner decides, each agreeing with `serde_json` on
    /// every member's key and value.
    #[test]
    fn valid_bodies_are_decided_as_serde_json_reads_them() {
        for text in [
            "{}",
            " { } ",
            r#"{"a":1}"#,
            "\n\t{ \"a\" : [ 1 , 2.5e-3 , -0 , 0.0 , 1E+2 ] , \"b\" : { \"c\" : null } }\r\n",
            r#"{"a":"x\"y\\z\/\b\f\n\r\t\u00e9\uD83D\uDE00","b":true,"c":false}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"k\u0065y":1,"k\"":2,"k\\":3}"#,
            r#"{"é":"ü","日本":"語"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":[[[[{"b":[{}]}]]]],"c":[]}"#,
            r#"[1,{"a":[]},"x"]"#,
            "[]",
            r#"{"n":123456789012345678901234567890,"f":1e400,"g":-1.5E-400}"#,
        ] {
            assert!(scan(text, u32::MAX).is_some(), "decided: {text}");
            assert_scan_agrees(text);
        }
    }

    /// Invalid bodies the scanner refuses, each one `serde_json` refuses too
    /// (so the error says what `serde_json` says).
    #[test]
    fn invalid_bodies_are_left_to_serde_json() {
        for text in [
            "",
            "   ",
            "{",
            "}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{a:1}"#,
            r#"{'a':1}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":NaN}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\tin string\"}",
            "{\"a\":\"line\nbreak\"}",
            r#"{"a":"unterminated}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":[}"#,
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            "[1,]",
            "[",
            "\u{feff}{}",
        ] {
            assert!(scan(text, u32::MAX).is_none(), "left to serde_json: {text}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "serde_json refuses {text}"
            );
            assert_scan_agrees(text);
        }
    }

    /// Top-level scalars are `serde_json`'s to read: it parses them as
    /// values, where a number out of range is an error.
    #[test]
    fn top_level_scalars_are_left_to_serde_json() {
        for text in ["1", "1e400", r#""\ud800""#, "true", "null", r#""x""#] {
            assert!(scan(text, u32::MAX).is_none(), "{text}");
            assert_scan_agrees(text);
        }
    }

    /// The eight-bytes-at-a-time search finds the first stop wherever it is,
    /// beside every kind of filler (UTF-8 bytes, DEL, space, bytes next to
    /// the stops' values) and with more stops after it.
    #[test]
    fn plain_runs_end_at_the_first_stop() {
        let expected = |rest: &[u8]| {
            rest.iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
                .unwrap_or(rest.len())
        };
        for filler in [b'a', 0x7f, 0x80, 0xff, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0xc3] {
            for len in 0..40 {
                let plain = vec![filler; len];
                assert_eq!(super::plain_run(&plain), len);
                for stop in [0x00, 0x01, 0x1f, b'"', b'\\'] {
                    for at in 0..len {
                        let mut text = plain.clone();
                        text[at] = stop;
                        assert_eq!(super::plain_run(&text), expected(&text), "{text:?}");
                        for later in [0x00, b'"', b'\\'] {
                            let mut more = text.clone();
                            more.push(later);
                            more.extend_from_slice(&plain);
                            assert_eq!(super::plain_run(&more), at, "{more:?}");
                        }
                    }
                }
            }
        }
    }

    /// Nesting costs no stack: 100 000 levels (past the 128 kept in bits)
    /// are scanned, and a mismatched bracket at the bottom is found.
    #[test]
    fn deep_nesting_is_scanned_without_recursion() {
        let depth = 100_000;
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(scan(&deep, u32::MAX), Some(Some(members)) if members.len() == 1));
        let mixed = format!("{{\"a\":{}1{}}}", "[{\"b\":".repeat(200), "}]".repeat(200));
        assert!(scan(&mixed, u32::MAX).is_some());
        let wrong = format!("{{\"a\":{}1}}{}}}", "[".repeat(300), "]".repeat(299));
        assert!(scan(&wrong, u32::MAX).is_none());
    }

    /// A container opened deeper than the limit (empty ones too) leaves the
    /// body undecided, for the depth check before `serde_json` to refuse.
    #[test]
    fn the_scanner_decides_only_within_the_depth_allowed() {
        for (text, depth) in [
            ("[]", 1),
            ("{}", 1),
            (r#"{"a": 1}"#, 1),
            (r#"{"a": []}"#, 2),
            (r#"{"a": [{}], "b": "[[[["}"#, 3),
            ("[[1], [[]]]", 3),
        ] {
            assert!(scan(text, depth).is_some(), "{text} within {depth}");
            assert!(
                scan(text, depth - 1).is_none(),
                "{text} within {}",
                depth - 1
            );
            assert!(!nesting_exceeds(text.as_bytes(), depth), "{text}");
            assert!(nesting_exceeds(text.as_bytes(), depth - 1), "{text}");
            assert_scan_agrees(text);
        }
        let json = |text: &str, max| {
            crate::shape::Json::parse_within(text.to_owned().into(), max).map(|_| ())
        };
        assert!(json(r#"{"a": [[1]]}"#, 3).is_ok());
        for deep in [r#"{"a": [[1]]}"#, r#"{"a": [[1]], }"#, r#"[[["#] {
            let err = json(deep, 2).unwrap_err();
            assert_eq!(err.to_string(), "nested deeper than 2 levels", "{deep}");
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert!(!nesting_exceeds(br#"{"a":[{"b":"[[[[[[["}]}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[","b":{}}"#, 2));
        assert!(nesting_exceeds(br#"{"a":"\\","b":{"c":[]}}"#, 2));
        assert!(!nesting_exceeds(br#"["\"#, 1));
    }

    /// The scan as it was first written, byte by byte: the model the fast
    /// one must agree with.
    fn nesting_exceeds_bytewise(bytes: &[u8], max: u32) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
        for &b in bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    proptest::proptest! {
        #[test]
        fn the_fast_scan_agrees_with_the_bytewise_one(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"{}[]\"\\ab,:".to_vec()),
                0..64,
            ),
            max in 0u32..6,
        ) {
            proptest::prop_assert_eq!(
                nesting_exceeds(&bytes, max),
                nesting_exceeds_bytewise(&bytes, max)
            );
        }
    }
}
