//! Text templates: literal text with `{…}` holes filled per request.

use super::{
    Var,
    names::{NAME_RULE, is_name},
};
use crate::shape::FieldPath;

/// Which part of a URL a hole is in: values are encoded differently there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Before the `?`: a value fills one path segment (a `/` in it is encoded).
    Path,
    /// After the `?`: a value fills a query component.
    Query,
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text copied as written.
    Literal(String),
    /// A hole, and where in the URL it is.
    Var(Var, Place),
}

/// A parsed template, e.g. `/orders?user={profile.account_id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a path (and query) template. `{{` is not special: a URL
    /// template holds no literal braces.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        Template::parse_with(text, false)
    }

    /// Parses a string of a JSON body template, where `{{` and `}}` stand for
    /// literal braces (a GraphQL query, say) and every other `{…}` is a hole.
    pub(crate) fn parse_text(text: &str) -> Result<Template, String> {
        Template::parse_with(text, true)
    }

    fn parse_with(text: &str, escapes: bool) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut place = Place::Path;
        let mut rest = text;
        while !rest.is_empty() {
            let literal_end = rest.find(['{', '}']).unwrap_or(rest.len());
            if literal_end > 0 {
                let piece = &rest[..literal_end];
                if piece.contains('?') {
                    place = Place::Query;
                }
                push_literal(&mut parts, piece);
                rest = &rest[literal_end..];
                continue;
            }
            if escapes && (rest.starts_with("{{") || rest.starts_with("}}")) {
                push_literal(&mut parts, &rest[..1]);
                rest = &rest[2..];
                continue;
            }
            if rest.starts_with('}') {
                return Err(format!("`}}` without `{{` in template `{text}`"));
            }
            let Some(close) = rest.find('}') else {
                return Err(format!("`{{` is not closed in template `{text}`"));
            };
            let inner = &rest[1..close];
            parts.push(Part::Var(parse_var(inner, text)?, place));
            rest = &rest[close + 1..];
        }
        Ok(Template { parts })
    }

    /// The pieces, in order.
    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the template is one hole and nothing else (`"{body.items}"`):
    /// in a JSON body, its value then keeps its JSON type.
    pub(crate) fn whole(&self) -> Option<&Var> {
        match self.parts.as_slice() {
            [Part::Var(var, _)] => Some(var),
            _ => None,
        }
    }

    /// The holes, in order.
    pub(crate) fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, _) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// Whether the template's query already names this parameter (`name=`).
    pub(crate) fn sets_query(&self, name: &str) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Literal(text) => text
                .split(['?', '&'])
                .any(|pair| pair.split('=').next() == Some(name) && pair.contains('=')),
            Part::Var(..) => false,
        })
    }
}

/// Appends literal text, joined to the literal before it if there is one.
fn push_literal(parts: &mut Vec<Part>, text: &str) {
    match parts.last_mut() {
        Some(Part::Literal(last)) => last.push_str(text),
        _ => parts.push(Part::Literal(text.to_owned())),
    }
}

/// The variable a hole names. Each namespace is one arm here.
fn parse_var(inner: &str, text: &str) -> Result<Var, String> {
    let bad = || {
        format!(
            "`{{{inner}}}` in template `{text}`: write {{param}}, {{query.name}}, {{body.field}}, {{jwt.claim}} or {{backend.field}} (names: {NAME_RULE}; fields may be dot paths)"
        )
    };
    let (first, rest) = match inner.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (inner, None),
    };
    if !is_name(first) {
        return Err(bad());
    }
    Ok(match (first, rest) {
        (namespace, None) if super::NAMESPACES.contains(&namespace) => {
            return Err(format!(
                "`{{{inner}}}` in template `{text}`: `{namespace}` names a source of values, write {{{namespace}.name}}"
            ));
        }
        (name, None) => Var::Route(name.to_owned()),
        ("query", Some(name)) if is_name(name) => Var::Query(name.to_owned()),
        ("query", Some(_)) => return Err(bad()),
        ("jwt", Some(path)) => Var::Jwt(FieldPath::parse(path).map_err(|_| bad())?),
        ("body", Some(path)) => Var::Body(FieldPath::parse(path).map_err(|_| bad())?),
        (backend, Some(path)) => Var::Field {
            backend: backend.to_owned(),
            path: FieldPath::parse(path).map_err(|_| bad())?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_know_whether_they_are_in_the_path_or_the_query() {
        let t = Template::parse("/a/{id}?x={profile.address.city}&y=1").unwrap();
        assert_eq!(
            t.parts(),
            [
                Part::Literal("/a/".into()),
                Part::Var(Var::Route("id".into()), Place::Path),
                Part::Literal("?x=".into()),
                Part::Var(
                    Var::Field {
                        backend: "profile".into(),
                        path: FieldPath::parse("address.city").unwrap(),
                    },
                    Place::Query
                ),
                Part::Literal("&y=1".into()),
            ]
        );
        let vars: Vec<_> = Template::parse("/users/{id}/orders?lang={query.lang}")
            .unwrap()
            .vars()
            .cloned()
            .collect();
        assert_eq!(vars, [Var::Route("id".into()), Var::Query("lang".into())]);
    }

    #[test]
    fn a_claim_of_the_token_is_a_jwt_hole() {
        let t = Template::parse("/t/{jwt.org.id}?u={jwt.sub}").unwrap();
        let vars: Vec<String> = t.vars().map(ToString::to_string).collect();
        assert_eq!(vars, ["{jwt.org.id}", "{jwt.sub}"]);
        assert!(Template::parse("/t/{jwt.}").is_err());
    }

    #[test]
    fn a_dashed_backend_name_can_be_referred_to() {
        let t = Template::parse("/o?u={user-profile.id}").unwrap();
        assert_eq!(t.vars().next().unwrap().to_string(), "{user-profile.id}");
    }

    #[test]
    fn bad_templates_say_why() {
        for (bad, why) in [
            ("/a/{id", "is not closed"),
            ("/a/id}", "without `{`"),
            ("/a/{}", "write {param}"),
            ("/a/{query.}", "write {param}"),
            ("/a/{x..y}", "write {param}"),
            ("/a/{9}", "write {param}"),
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn body_text_escapes_braces_and_knows_a_whole_placeholder() {
        let t = Template::parse_text("{{ user(id: {id}) {{ name }} }}").unwrap();
        assert_eq!(
            t.parts(),
            [
                Part::Literal("{ user(id: ".into()),
                Part::Var(Var::Route("id".into()), Place::Path),
                Part::Literal(") { name } }".into()),
            ]
        );
        assert_eq!(t.whole(), None);
        let t = Template::parse_text("{body.order.total}").unwrap();
        assert_eq!(
            t.whole(),
            Some(&Var::Body(FieldPath::parse("order.total").unwrap()))
        );
        assert_eq!(t.whole().unwrap().to_string(), "{body.order.total}");
        assert!(Template::parse_text("{{").unwrap().whole().is_none());
        assert!(Template::parse("/a/{{x}}").is_err(), "a URL has no escapes");
        for bad in ["{body}", "{body.}", "{body..a}", "{x", "x}"] {
            assert!(Template::parse_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_template_knows_which_query_parameters_it_sets() {
        let t = Template::parse("/s?lang=fr&q={query.q}").unwrap();
        assert!(t.sets_query("lang"));
        assert!(t.sets_query("q"), "`q=` followed by a hole sets it too");
        assert!(!t.sets_query("s"));
    }
}
