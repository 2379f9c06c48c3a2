//! Filling a template with request values. Every value is percent-encoded for
//! the place it goes, so no value can add a path segment, a query parameter, a
//! fragment, or change the host: the origin is fixed text from the config.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::{
    plan::template::{Part, Place, Template, Var},
    shape::FieldPath,
};

/// Everything but RFC 3986 "unreserved" characters is encoded, in the path and
/// the query alike: `/`, `?`, `#`, `%`, `@`, `&`, `=`, `+` and spaces included.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The values a template can draw on for one request.
pub(crate) trait Values {
    fn route(&self, name: &str) -> Option<&str>;
    fn query(&self, name: &str) -> Option<&str>;
    fn field(&self, backend: &str, path: &FieldPath) -> Option<Value>;
    /// A claim of the request's verified token.
    fn jwt(&self, path: &FieldPath) -> Option<Value>;
}

/// Renders `origin` + template, then the forwarded query parameters the
/// template does not set itself. A missing value is an error naming it.
pub(crate) fn render(
    origin: &str,
    template: &Template,
    values: &impl Values,
    forward_query: &[(String, String)],
) -> Result<String, String> {
    let mut url = String::with_capacity(origin.len() + 64);
    url.push_str(origin);
    let mut in_query = false;
    for part in template.parts() {
        match part {
            Part::Literal(text) => {
                in_query |= text.contains('?');
                url.push_str(text);
            }
            Part::Var(var, place) => {
                let value = match var {
                    Var::Route(name) => values.route(name).map(str::to_owned),
                    Var::Query(name) => values.query(name).map(str::to_owned),
                    Var::Field { backend, path } => values.field(backend, path).and_then(scalar),
                    Var::Jwt(path) => values.jwt(path).and_then(scalar),
                }
                .ok_or_else(|| format!("no value for {var}"))?;
                if value.is_empty() && *place == Place::Path {
                    return Err(format!(
                        "{var} is empty, and would leave an empty path segment"
                    ));
                }
                encode_into(&mut url, &value, *place);
            }
        }
    }
    for (name, value) in forward_query {
        if template.sets_query(name) {
            continue;
        }
        url.push(if in_query { '&' } else { '?' });
        in_query = true;
        encode_into(&mut url, name, Place::Query);
        url.push('=');
        encode_into(&mut url, value, Place::Query);
    }
    Ok(url)
}

/// A value as text in a URL: a string as it is, a number or a boolean as its
/// JSON text; objects, arrays and null have none.
fn scalar(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn encode_into(url: &mut String, value: &str, place: Place) {
    // `.` and `..` as a whole path segment would be resolved by the backend's
    // router as "here" and "up": encode their dots so they stay data.
    if place == Place::Path && (value == "." || value == "..") {
        url.push_str(&value.replace('.', "%2E"));
        return;
    }
    url.extend(utf8_percent_encode(value, COMPONENT));
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Values for V {
        fn route(&self, name: &str) -> Option<&str> {
            match name {
                "id" => Some("../admin"),
                "dot" => Some(".."),
                "email" => Some("a@evil.com"),
                "smuggle" => Some("x?y#z"),
                "encoded" => Some("%2e%2e"),
                _ => None,
            }
        }
        fn query(&self, name: &str) -> Option<&str> {
            (name == "lang").then_some("en&admin=1")
        }
        fn field(&self, _: &str, path: &FieldPath) -> Option<Value> {
            (path.to_string() == "account_id").then(|| Value::from(42))
        }
        fn jwt(&self, path: &FieldPath) -> Option<Value> {
            (path.to_string() == "sub").then(|| Value::from("ada/../x"))
        }
    }

    fn r(t: &str) -> String {
        render(
            "http://127.0.0.1:9101",
            &Template::parse(t).unwrap(),
            &V,
            &[],
        )
        .unwrap()
    }

    #[test]
    fn hostile_values_stay_inside_their_segment() {
        assert_eq!(r("/users/{id}"), "http://127.0.0.1:9101/users/..%2Fadmin");
        assert_eq!(r("/users/{dot}/x"), "http://127.0.0.1:9101/users/%2E%2E/x");
        assert_eq!(
            r("/users/{email}"),
            "http://127.0.0.1:9101/users/a%40evil.com"
        );
        assert_eq!(
            r("/users/{smuggle}"),
            "http://127.0.0.1:9101/users/x%3Fy%23z"
        );
        assert_eq!(
            r("/users/{encoded}"),
            "http://127.0.0.1:9101/users/%252e%252e"
        );
        assert_eq!(
            r("/s?lang={query.lang}"),
            "http://127.0.0.1:9101/s?lang=en%26admin%3D1"
        );
        assert_eq!(
            r("/orders?user={profile.account_id}"),
            "http://127.0.0.1:9101/orders?user=42"
        );
        assert_eq!(
            r("/users/{jwt.sub}"),
            "http://127.0.0.1:9101/users/ada%2F..%2Fx",
            "a claim is a value like any other"
        );
    }

    #[test]
    fn forwarded_query_is_appended_unless_the_template_sets_it() {
        let t = Template::parse("/s?lang=fr").unwrap();
        let fwd = [
            ("lang".to_string(), "en".to_string()),
            ("q".to_string(), "a b".to_string()),
        ];
        assert_eq!(
            render("http://h", &t, &V, &fwd).unwrap(),
            "http://h/s?lang=fr&q=a%20b"
        );
        let t = Template::parse("/s").unwrap();
        assert_eq!(
            render("http://h", &t, &V, &fwd[1..]).unwrap(),
            "http://h/s?q=a%20b"
        );
    }

    #[test]
    fn an_empty_value_never_fills_a_path_segment() {
        struct Empty;
        impl Values for Empty {
            fn route(&self, _: &str) -> Option<&str> {
                Some("")
            }
            fn query(&self, _: &str) -> Option<&str> {
                Some("")
            }
            fn field(&self, _: &str, _: &FieldPath) -> Option<Value> {
                None
            }
            fn jwt(&self, _: &FieldPath) -> Option<Value> {
                None
            }
        }
        let t = Template::parse("/echo/{v}/tail").unwrap();
        assert_eq!(
            render("http://h", &t, &Empty, &[]).unwrap_err(),
            "{v} is empty, and would leave an empty path segment"
        );
        let t = Template::parse("/s?q={query.q}").unwrap();
        assert_eq!(
            render("http://h", &t, &Empty, &[]).unwrap(),
            "http://h/s?q=",
            "a query value may be empty"
        );
    }

    #[test]
    fn a_missing_value_is_named() {
        let t = Template::parse("/u/{nope}").unwrap();
        assert_eq!(
            render("http://h", &t, &V, &[]).unwrap_err(),
            "no value for {nope}"
        );
    }
}
