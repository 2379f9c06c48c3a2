//! `${env.NAME}` and `${env.NAME:-default}` in the configuration text.
//!
//! Expansion happens on the raw text, before parsing, so it works for any value
//! (a port, a timeout, a header). It never changes line numbers: a value with a
//! line break is refused, so every later error still points at the right line.
//! `$${` writes a literal `${`.

use super::Problem;

/// Expands every `${env.…}` in `source`, looking variables up with `lookup`.
/// Returns all the problems found, not just the first.
pub(crate) fn expand(
    source: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(source.len());
    let mut problems = Vec::new();
    for (line_no, line) in source.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut column = 1;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            column += rest[..at].chars().count();
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
                column += 3;
                continue;
            }
            let Some(body) = tail.strip_prefix("${") else {
                out.push('$');
                rest = &tail[1..];
                column += 1;
                continue;
            };
            let problem = |message: String| Problem::at(line_no + 1, column, message);
            let Some(end) = body.find('}') else {
                problems.push(problem(
                    "`${` is not closed: write ${env.NAME} or ${env.NAME:-default}".into(),
                ));
                out.push_str(tail);
                rest = "";
                break;
            };
            let inner = &body[..end];
            let consumed = 2 + end + 1;
            match parse(inner) {
                Err(message) => problems.push(problem(message)),
                Ok((name, default)) => match lookup(name).or(default.map(str::to_owned)) {
                    None => problems.push(problem(format!(
                        "environment variable {name} is not set: set it, or give a default with ${{env.{name}:-value}}"
                    ))),
                    Some(value) if value.contains(['\n', '\r']) => problems.push(problem(format!(
                        "environment variable {name} contains a line break, which a config value cannot hold"
                    ))),
                    Some(value) => out.push_str(&value),
                },
            }
            column += tail[..consumed].chars().count();
            rest = &tail[consumed..];
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Splits `env.NAME` or `env.NAME:-default` into the name and the default.
fn parse(inner: &str) -> Result<(&str, Option<&str>), String> {
    let Some(spec) = inner.strip_prefix("env.") else {
        return Err(format!(
            "unknown substitution `${{{inner}}}`: only ${{env.NAME}} and ${{env.NAME:-default}} are supported (write $${{ for a literal ${{)"
        ));
    };
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a valid environment variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    Ok((name, default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USERS_KEY" => Some("s3cret".into()),
            "PORT" => Some("9101".into()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_values_and_defaults() {
        let src = "url: http://127.0.0.1:${env.PORT}\nkey: \"${env.USERS_KEY}\"\nlang: ${env.LANG_X:-en}\nempty: ${env.NOPE:-}\n";
        assert_eq!(
            expand(src, env).unwrap(),
            "url: http://127.0.0.1:9101\nkey: \"s3cret\"\nlang: en\nempty: \n"
        );
    }

    #[test]
    fn escapes_and_lone_dollars_are_kept() {
        assert_eq!(
            expand("price: $5, literal: $${env.X}", env).unwrap(),
            "price: $5, literal: ${env.X}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let src =
            "a: 1\nb: ${env.MISSING}  c: ${env.MULTI}\nd: ${home}\ne: ${env.9x}\nf: ${env.OPEN";
        let problems = expand(src, env).unwrap_err();
        let shown: Vec<_> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown.len(), 5, "{shown:#?}");
        assert!(
            shown[0].starts_with("2:4: environment variable MISSING is not set"),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].starts_with("2:23: environment variable MULTI contains a line break"),
            "{}",
            shown[1]
        );
        assert!(
            shown[2].starts_with("3:4: unknown substitution `${home}`"),
            "{}",
            shown[2]
        );
        assert!(
            shown[3].starts_with("4:4: `9x` is not a valid"),
            "{}",
            shown[3]
        );
        assert!(
            shown[4].starts_with("5:4: `${` is not closed"),
            "{}",
            shown[4]
        );
    }
}
