//! The configuration file as written: one serde model for YAML, TOML and
//! JSON, `${env.NAME}` expansion, human units, and positions, so that every
//! problem can be reported with its line and column.
//!
//! Parsing here checks syntax and types only. Everything that needs the
//! whole file (references, templates, cycles, limits) is checked once, by
//! the compiler that builds the [`Plan`](crate::Plan) from it.

mod env;
mod locate;
mod model;
mod units;

use std::{fmt, path::Path as FsPath};

pub(crate) use locate::Path;
pub use model::{
    ApiKey, Audience, AuthNames, AuthScheme, Backend, BackendBody, Balance, Breaker, Cache, Config,
    Cors, Eject, Endpoint, Forward, Health, Hedge, Http2, Jwt, ListenerTls, Method, Proxy,
    RateLimit, ResponseBuffer, ResponseShape, Retry, Server, Store, Tls, Upstream, Urls,
};
pub use units::{ByteSize, Duration, Percent, Rate};

use locate::Locator;

/// The syntax of a configuration file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.toml`.
    Toml,
    /// `.json`.
    Json,
}

impl Format {
    /// The format for a file name, by its extension.
    pub fn from_path(path: &FsPath) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// One problem in a configuration, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl Problem {
    pub(crate) fn at(line: usize, column: usize, message: impl Into<String>) -> Problem {
        Problem {
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// A configuration that cannot be used: every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as named by the caller.
    pub file: String,
    /// The problems, sorted by position (at least one).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{p}", self.file)?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn new(file: &str, mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by_key(|p| (p.line, p.column));
        ConfigError {
            file: file.to_owned(),
            problems,
        }
    }
}

/// A configuration file read and parsed, still unchecked: the typed model
/// with the text it came from, so that the checks made while compiling it
/// ([`crate::Plan`]) can say where each problem is written.
#[derive(Debug)]
pub(crate) struct Document {
    /// The model.
    pub(crate) config: Config,
    /// The text after `${env.…}` expansion (line and column numbers are those
    /// of the file: expansion never adds a line).
    text: String,
    format: Format,
    /// The file, as named by the caller.
    file: String,
}

impl Document {
    /// Reads a file and parses it, with `${env.NAME}` from the process
    /// environment.
    pub(crate) fn load(path: &FsPath) -> Result<Document, ConfigError> {
        let file = path.display().to_string();
        let Some(format) = Format::from_path(path) else {
            return Err(ConfigError::new(
                &file,
                vec![Problem::at(
                    1,
                    1,
                    "unknown config format: name the file .yaml, .yml, .toml or .json",
                )],
            ));
        };
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                &file,
                vec![Problem::at(1, 1, format!("cannot read the file: {e}"))],
            )
        })?;
        Document::parse(&source, format, &file, |name| std::env::var(name).ok())
    }

    /// Expands and parses configuration text. `file` names it in errors;
    /// `env` looks up `${env.NAME}` variables. Syntax and type errors come
    /// located; nothing else is checked here.
    pub(crate) fn parse(
        source: &str,
        format: Format,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Document, ConfigError> {
        let text = env::expand(source, env).map_err(|p| ConfigError::new(file, p))?;
        let config = deserialize(&text, format).map_err(|p| ConfigError::new(file, vec![p]))?;
        Ok(Document {
            config,
            text,
            format,
            file: file.to_owned(),
        })
    }

    /// The problems found at `paths` of the document, located and sorted.
    pub(crate) fn error(&self, problems: Vec<(Path, String)>) -> ConfigError {
        let locator = Locator::new(&self.text, self.format);
        let problems = problems
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = locator.locate(&path);
                Problem::at(line, column, message)
            })
            .collect();
        ConfigError::new(&self.file, problems)
    }

    /// The folder the file is in: relative paths in it (certificates) start here.
    pub(crate) fn dir(&self) -> &FsPath {
        FsPath::new(&self.file)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(FsPath::new("."))
    }
}

impl Config {
    /// The JSON Schema of the configuration file, for editors.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
    }
}

/// Parses the text into the model; syntax and type errors come located.
fn deserialize(source: &str, format: Format) -> Result<Config, Problem> {
    match format {
        Format::Yaml => serde_saphyr::from_str(source).map_err(|e| yaml_problem(&e)),
        Format::Json => no_duplicate_keys(source)
            .and_then(|()| serde_json::from_str(source))
            .map_err(|e| json_problem(source, &e)),
        Format::Toml => toml::from_str(source).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |s| locate::line_col(source, s.start));
            Problem::at(line, column, e.message().trim().to_owned())
        }),
    }
}

/// A JSON error as a located [`Problem`].
fn json_problem(source: &str, e: &serde_json::Error) -> Problem {
    let message = e.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    let (line, mut column) = (e.line().max(1), e.column().max(1));
    if message.starts_with("duplicate key") {
        // serde_json stops at the key's closing quote: point at its start.
        let text = source.lines().nth(line - 1).unwrap_or("");
        let before: String = text.chars().take(column - 1).collect();
        if let Some(open) = before.rfind('"') {
            column = before[..open].chars().count() + 1;
        }
    }
    Problem::at(line, column, message)
}

/// Refuses a JSON document in which an object repeats a key, as YAML and
/// TOML do: serde_json would keep the last value silently, and a config must
/// mean one thing.
fn no_duplicate_keys(source: &str) -> Result<(), serde_json::Error> {
    use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};

    struct Unique;

    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Unique)
        }
    }

    impl<'de> Visitor<'de> for Unique {
        type Value = Unique;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format!("duplicate key `{key}`")));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(source);
    deserializer.deserialize_any(Unique)?;
    deserializer.end()
}

/// A YAML parse or type error as a located [`Problem`] (also used by
/// `fanout mock` for its own file).
pub fn yaml_problem(error: &serde_saphyr::Error) -> Problem {
    let (line, column) = error
        .location()
        .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
    Problem::at(line, column, first_line(&error.to_string()))
}

/// The message alone: the YAML library's text starts with its own copy of the
/// position (`error: line 3 column 5: …`), which ours replaces.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, text)) if position.contains(" column ") => text.to_owned(),
        _ => line.to_owned(),
    }
}
