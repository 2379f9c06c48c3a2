//! Values with units, written the way people write them: `250ms`, `1MiB`, `20%`.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Implements `Deserialize` (from a string, through `FromStr`), `Serialize` (as
/// its display form) and `JsonSchema` (a string with a pattern) for a unit type.
macro_rules! string_unit {
    ($ty:ident, $expecting:literal, $pattern:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $expecting,
                })
            }
        }
    };
}

/// A duration: a number and a unit, `250ms`, `2s`, `1m30s` (ns, us, ms, s, m, h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| {
                format!("invalid duration `{s}` ({e}): write a number and a unit, like 250ms or 2s")
            })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_duration(self.0), f)
    }
}

string_unit!(
    Duration,
    "a duration such as 250ms, 2s or 1m30s",
    r"^\s*([0-9]+\s*(ns|us|µs|ms|s|sec|m|min|h|d)\s*)+$"
);

/// A size in bytes: `512KiB`, `1MiB`, `10MB`, or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|e| {
                format!("invalid size `{s}` ({e}): write a number and a unit, like 1MiB or 512KiB")
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

string_unit!(
    ByteSize,
    "a size such as 1MiB, 512KiB or 10MB",
    r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGTP]i?B|B)?\s*$"
);

/// A share of traffic, from `0%` to `100%`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl Percent {
    /// As a fraction from 0.0 to 1.0.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid percentage `{s}`: write a number from 0 to 100 and a %, like 20%");
        let number = s.trim().strip_suffix('%').ok_or_else(bad)?;
        match number.trim().parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(Percent(p)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

string_unit!(
    Percent,
    "a percentage from 0% to 100%, such as 20%",
    r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"
);

/// A rate: a count per unit of time, `10/s`, `600/m`, `1000/h`, `5/10s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// How many…
    pub count: u32,
    /// …per this much time.
    pub per: std::time::Duration,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid rate `{s}`: write a count per unit, like 10/s, 600/m or 1000/h");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        // A bare unit means one of it: `10/s` is `10/1s`.
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            per.to_owned()
        } else {
            format!("1{per}")
        };
        let per = humantime::parse_duration(&per).map_err(|_| bad())?;
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            _ if self.per.subsec_nanos() != 0 => None,
            1 => Some("s"),
            60 => Some("m"),
            3600 => Some("h"),
            86_400 => Some("d"),
            _ => None,
        };
        match unit {
            Some(unit) => write!(f, "{}/{unit}", self.count),
            None => write!(f, "{}/{}", self.count, humantime::format_duration(self.per)),
        }
    }
}

string_unit!(
    Rate,
    "a count per unit of time, such as 10/s, 600/m or 1000/h",
    r"^\s*[0-9]+\s*/\s*([0-9]+\s*)?(ms|s|sec|m|min|h|d)\s*$"
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(
            "250ms".parse::<Duration>().unwrap().0,
            Std::from_millis(250)
        );
        assert_eq!("1m30s".parse::<Duration>().unwrap().0, Std::from_secs(90));
        let err = "250".parse::<Duration>().unwrap_err();
        assert!(
            err.contains("invalid duration `250`") && err.contains("like 250ms"),
            "{err}"
        );
        assert_eq!(Duration(Std::from_millis(1500)).to_string(), "1s 500ms");
    }

    #[test]
    fn rates_are_a_count_per_unit() {
        let rate = "10/s".parse::<Rate>().unwrap();
        assert_eq!((rate.count, rate.per), (10, Std::from_secs(1)));
        assert_eq!("600 / m".parse::<Rate>().unwrap().per, Std::from_secs(60));
        assert_eq!("5/10s".parse::<Rate>().unwrap().per, Std::from_secs(10));
        for text in ["10/s", "600/m", "1000/h", "3/d", "5/10s"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        for bad in ["10", "ten/s", "10/fortnight", "-1/s", "10/"] {
            assert!(
                bad.parse::<Rate>().unwrap_err().contains("like 10/s"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_and_percentages() {
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert_eq!("10 MB".parse::<ByteSize>().unwrap().0, 10_000_000);
        assert!(
            "lots"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("invalid size `lots`")
        );
        assert_eq!("20%".parse::<Percent>().unwrap().fraction(), 0.2);
        assert!("120%".parse::<Percent>().is_err());
        assert!("20".parse::<Percent>().unwrap_err().contains("like 20%"));
    }
}
