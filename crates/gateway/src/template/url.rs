//! Filling a template with request values. Every value is percent-encoded for
//! the place it goes, so no value can add a path segment, a query parameter, a
//! fragment, or change the host: the origin is fixed text from the config.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{Found, Part, Place, Template, Values, Var};

/// Everything but RFC 3986 "unreserved" characters is encoded, in the path and
/// the query alike: `/`, `?`, `#`, `%`, `@`, `&`, `=`, `+` and spaces included.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Renders `origin` + template, then the forwarded query parameters the
/// template does not set itself. A value that is missing or cannot fill its
/// place is an error naming it ([`fill`]).
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
                let value = fill(var, values.get(var), *place)?;
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

/// The text `var`'s value puts in a URL at `place`, not yet encoded: a
/// string, a number or a boolean, and never empty in a path segment
/// (`/echo//tail` would change the path's meaning).
///
/// # Errors
///
/// Why it cannot: no value, a value that is not a scalar, an empty segment.
pub(crate) fn fill<'a>(
    var: &Var,
    found: Option<Found<'a>>,
    place: Place,
) -> Result<Cow<'a, str>, String> {
    let found = found.ok_or_else(|| format!("no value for {var}"))?;
    let text = found
        .scalar_text()
        .ok_or_else(|| format!("{var} is {}, which cannot fill a URL", found.kind()))?;
    if text.is_empty() && place == Place::Path {
        return Err(format!(
            "{var} is empty, and would leave an empty path segment"
        ));
    }
    Ok(text)
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

    use serde_json::{Value, json};

    struct V(Value);
    impl Values for V {
        fn get(&self, var: &Var) -> Option<Found<'_>> {
            match var {
                Var::Route(name) => match name.as_str() {
                    "id" => Some("../admin"),
                    "dot" => Some(".."),
                    "email" => Some("a@evil.com"),
                    "smuggle" => Some("x?y#z"),
                    "encoded" => Some("%2e%2e"),
                    _ => None,
                }
                .map(Found::Text),
                Var::Query(name) => (name == "lang").then_some(Found::Text("en&admin=1")),
                Var::Field { path, .. } | Var::Body(path) | Var::Jwt(path) => {
                    super::super::lookup(&self.0, path).map(Found::Json)
                }
            }
        }
    }

    fn v() -> V {
        V(
            json!({"account_id": 42, "flag": true, "list": [1], "none": null, "obj": {}, "sub": "ada/../x"}),
        )
    }

    fn r(t: &str) -> String {
        render(
            "http://127.0.0.1:9101",
            &Template::parse(t).unwrap(),
            &v(),
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
            render("http://h", &t, &v(), &fwd).unwrap(),
            "http://h/s?lang=fr&q=a%20b"
        );
        let t = Template::parse("/s").unwrap();
        assert_eq!(
            render("http://h", &t, &v(), &fwd[1..]).unwrap(),
            "http://h/s?q=a%20b"
        );
    }

    #[test]
    fn an_empty_value_never_fills_a_path_segment() {
        struct Empty;
        impl Values for Empty {
            fn get(&self, var: &Var) -> Option<Found<'_>> {
                var.given_by_client().then_some(Found::Text(""))
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
            render("http://h", &t, &v(), &[]).unwrap_err(),
            "no value for {nope}"
        );
    }

    #[test]
    fn a_json_value_fills_a_url_only_as_a_scalar() {
        assert_eq!(
            r("/f/{body.flag}?n={body.account_id}"),
            "http://127.0.0.1:9101/f/true?n=42"
        );
        for (t, kind) in [
            ("/l/{body.list}", "an array"),
            ("/o/{body.obj}", "an object"),
            ("/n?x={body.none}", "null"),
        ] {
            let err = render("http://h", &Template::parse(t).unwrap(), &v(), &[]).unwrap_err();
            assert!(
                err.ends_with(&format!("is {kind}, which cannot fill a URL")),
                "{err}"
            );
        }
    }
}
