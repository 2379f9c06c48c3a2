//! JSON body templates: the `body:` of a backend, written as JSON (or YAML)
//! in the config, compiled once, rendered per call.
//!
//! - Keys are literal.
//! - A string that is one placeholder and nothing else (`"{body.amount}"`)
//!   is replaced by the value with its JSON type: a number stays a number,
//!   an object an object. A route capture or query value is a string.
//! - A string with placeholders among text (`"order-{id}"`) stays a string:
//!   each value is written into it as text (a string as it is, anything else
//!   as its compact JSON).
//! - `{{` and `}}` in a string are literal braces (a GraphQL query, say).
//! - Everything else is copied as written.
//!
//! Every piece is written by `serde_json`, so whatever the values hold the
//! output is JSON.

use serde_json::Value;

use super::{Found, Template, Values, Var};
use crate::config::Path;

/// A compiled body template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BodyTemplate {
    root: Node,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// JSON text with no placeholder, serialized once.
    Literal(Box<str>),
    /// A string that is one placeholder: its value, with its type.
    Whole(Var, Path),
    /// A string with placeholders among text: a string.
    Text(Template, Path),
    Array(Vec<Node>),
    /// Members, each key already serialized as a JSON string.
    Object(Vec<(Box<str>, Node)>),
}

/// A placeholder the request has no value for: which, and where in the
/// template (`charge`, `items[0].id`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no value for {var} (at `{at}` of the body)")]
pub(crate) struct Missing {
    /// The placeholder.
    pub(crate) var: Var,
    /// Where it is, from the template's root.
    pub(crate) at: Path,
}

impl BodyTemplate {
    /// Compiles a template from its JSON value.
    #[cfg(any(test, feature = "fuzzing"))]
    ///
    /// # Errors
    ///
    /// Each string that is not a valid template, with its path from the
    /// template's root.
    pub(crate) fn compile(value: &Value) -> Result<BodyTemplate, Vec<(Path, String)>> {
        let (template, problems) = BodyTemplate::compile_all(value);
        if problems.is_empty() {
            Ok(template)
        } else {
            Err(problems)
        }
    }

    /// Compiles a template, and lists the strings that are not valid
    /// templates (each with its path); those are kept as literal text, so
    /// the placeholders of the others can still be checked.
    pub(crate) fn compile_all(value: &Value) -> (BodyTemplate, Vec<(Path, String)>) {
        let mut problems = Vec::new();
        let root = node(value, &Path::root(), &mut problems);
        (BodyTemplate { root }, problems)
    }

    /// Every placeholder, with its path from the template's root.
    pub(crate) fn holes(&self) -> Vec<(&Path, &Var)> {
        fn walk<'t>(node: &'t Node, out: &mut Vec<(&'t Path, &'t Var)>) {
            match node {
                Node::Literal(_) => {}
                Node::Whole(var, at) => out.push((at, var)),
                Node::Text(template, at) => out.extend(template.vars().map(|v| (at, v))),
                Node::Array(items) => items.iter().for_each(|n| walk(n, out)),
                Node::Object(members) => members.iter().for_each(|(_, n)| walk(n, out)),
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Every placeholder's variable, in order.
    pub(crate) fn vars(&self) -> impl Iterator<Item = &Var> {
        self.holes().into_iter().map(|(_, var)| var)
    }

    /// The body for one call.
    ///
    /// # Errors
    ///
    /// The first placeholder the request has no value for.
    pub(crate) fn render(&self, values: &impl Values) -> Result<Vec<u8>, Missing> {
        let mut out = Vec::with_capacity(128);
        write(&self.root, values, &mut out)?;
        Ok(out)
    }
}

fn node(value: &Value, at: &Path, problems: &mut Vec<(Path, String)>) -> Node {
    let literal = |value: &Value| Node::Literal(value.to_string().into_boxed_str());
    match value {
        Value::String(text) => match Template::parse_text(text) {
            Err(message) => {
                problems.push((at.clone(), message));
                literal(value)
            }
            Ok(template) => match template.whole() {
                Some(var) => Node::Whole(var.clone(), at.clone()),
                None if template.vars().next().is_none() => {
                    // Only literal text, with its escapes undone.
                    let text: String = template
                        .parts()
                        .iter()
                        .filter_map(|p| match p {
                            super::Part::Literal(text) => Some(text.as_str()),
                            super::Part::Var(..) => None,
                        })
                        .collect();
                    literal(&Value::String(text))
                }
                None => Node::Text(template, at.clone()),
            },
        },
        Value::Array(items) => {
            let nodes: Vec<Node> = items
                .iter()
                .enumerate()
                .map(|(i, item)| node(item, &at.index(i), problems))
                .collect();
            match literal_texts(nodes.iter()) {
                Some(texts) => Node::Literal(format!("[{}]", texts.join(",")).into_boxed_str()),
                None => Node::Array(nodes),
            }
        }
        Value::Object(map) => {
            let members: Vec<(Box<str>, Node)> = map
                .iter()
                .map(|(key, value)| {
                    let key_text = Value::String(key.clone()).to_string().into_boxed_str();
                    (key_text, node(value, &at.key(key.as_str()), problems))
                })
                .collect();
            match literal_texts(members.iter().map(|(_, n)| n)) {
                Some(texts) => {
                    let joined: Vec<String> = members
                        .iter()
                        .zip(texts)
                        .map(|((key, _), text)| format!("{key}:{text}"))
                        .collect();
                    Node::Literal(format!("{{{}}}", joined.join(",")).into_boxed_str())
                }
                None => Node::Object(members),
            }
        }
        other => literal(other),
    }
}

/// The texts of `nodes` if every one is literal (then their parent is too).
fn literal_texts<'n>(nodes: impl Iterator<Item = &'n Node>) -> Option<Vec<&'n str>> {
    nodes
        .map(|n| match n {
            Node::Literal(text) => Some(&**text),
            _ => None,
        })
        .collect()
}

fn write(node: &Node, values: &impl Values, out: &mut Vec<u8>) -> Result<(), Missing> {
    let missing = |var: &Var, at: &Path| Missing {
        var: var.clone(),
        at: at.clone(),
    };
    match node {
        Node::Literal(text) => out.extend_from_slice(text.as_bytes()),
        Node::Whole(var, at) => match values.get(var).ok_or_else(|| missing(var, at))? {
            // Writing JSON to a Vec cannot fail.
            Found::Text(text) => {
                let _ = serde_json::to_writer(&mut *out, text);
            }
            Found::Json(value) => {
                let _ = serde_json::to_writer(&mut *out, value);
            }
        },
        Node::Text(template, at) => {
            let mut text = String::new();
            for part in template.parts() {
                match part {
                    super::Part::Literal(literal) => text.push_str(literal),
                    super::Part::Var(var, _) => {
                        match values.get(var).ok_or_else(|| missing(var, at))? {
                            Found::Text(value) => text.push_str(value),
                            Found::Json(Value::String(value)) => text.push_str(value),
                            Found::Json(value) => text.push_str(&value.to_string()),
                        }
                    }
                }
            }
            let _ = serde_json::to_writer(&mut *out, &text);
        }
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, values, out)?;
            }
            out.push(b']');
        }
        Node::Object(members) => {
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key.as_bytes());
                out.push(b':');
                write(value, values, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::template::lookup;

    /// Route capture `id`, query `lang`, the client's body, and one
    /// dependency `payment` whose answer is `dep`.
    struct Request {
        id: String,
        body: Value,
        dep: Value,
    }

    impl Values for Request {
        fn get(&self, var: &Var) -> Option<Found<'_>> {
            match var {
                Var::Route(name) if name == "id" => Some(Found::Text(&self.id)),
                Var::Query(name) if name == "lang" => Some(Found::Text("fr")),
                Var::Body(path) => lookup(&self.body, path).map(Found::Json),
                Var::Field { backend, path } if backend == "payment" => {
                    lookup(&self.dep, path).map(Found::Json)
                }
                _ => None,
            }
        }
    }

    fn request(body: Value) -> Request {
        Request {
            id: "7".into(),
            body,
            dep: json!({"id": "ch_1", "fee": 0.3}),
        }
    }

    fn render(template: Value, values: &Request) -> Result<Value, Missing> {
        let bytes = BodyTemplate::compile(&template).unwrap().render(values)?;
        Ok(serde_json::from_slice(&bytes).expect("a rendered body is JSON"))
    }

    #[test]
    fn a_whole_placeholder_keeps_its_type_an_embedded_one_is_text() {
        let body = json!({"amount": 12.5, "items": [{"sku": "a"}], "gift": true, "note": null,
                          "user": {"id": 3}});
        let out = render(
            json!({
                "amount": "{body.amount}",
                "items": "{body.items}",
                "gift": "{body.gift}",
                "note": "{body.note}",
                "user": "{body.user}",
                "user_id": "{body.user.id}",
                "order": "order-{id}",
                "id": "{id}",
                "lang": "{query.lang}",
                "charge": "{payment.id}",
                "fee": "{payment.fee}",
                "summary": "{body.amount} for {body.user} ({body.gift})",
                "fixed": [1, "two", {"three": 3.0}],
                "{id}": "keys are literal",
            }),
            &request(body),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "amount": 12.5,
                "items": [{"sku": "a"}],
                "gift": true,
                "note": null,
                "user": {"id": 3},
                "user_id": 3,
                "order": "order-7",
                "id": "7",
                "lang": "fr",
                "charge": "ch_1",
                "fee": 0.3,
                "summary": "12.5 for {\"id\":3} (true)",
                "fixed": [1, "two", {"three": 3.0}],
                "{id}": "keys are literal",
            })
        );
    }

    #[test]
    fn the_output_keeps_the_templates_key_order_and_escapes() {
        let template = json!({"z": "{id}", "a": 1, "q": "{{ user(id: {id}) {{ name }} }}"});
        let bytes = BodyTemplate::compile(&template)
            .unwrap()
            .render(&request(json!({})))
            .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"z":"7","a":1,"q":"{ user(id: 7) { name } }"}"#
        );
    }

    #[test]
    fn a_template_without_placeholders_is_one_literal() {
        let template = BodyTemplate::compile(&json!({"a": [1, {"b": "{{x}}"}]})).unwrap();
        assert!(matches!(template.root, Node::Literal(_)));
        let bytes = template.render(&request(json!(null))).unwrap();
        assert_eq!(bytes, br#"{"a":[1,{"b":"{x}"}]}"#);
    }

    #[test]
    fn a_missing_value_is_named_with_its_place() {
        let err = render(
            json!({"order": {"lines": ["{body.lines}", "x-{body.nope}"]}}),
            &request(json!({"lines": []})),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no value for {body.nope} (at `order.lines[1]` of the body)"
        );
    }

    #[test]
    fn bad_strings_are_reported_each_at_its_path() {
        let problems =
            BodyTemplate::compile(&json!({"a": "{x", "b": [1, "{query.}"], "c": "{ok}"}))
                .unwrap_err();
        let at: Vec<String> = problems.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(at, ["a", "b[1]"]);
    }

    #[test]
    fn holes_are_listed_with_their_places() {
        let template =
            BodyTemplate::compile(&json!({"a": "{body.x}", "b": ["{id}-{payment.id}"]})).unwrap();
        let holes: Vec<String> = template
            .holes()
            .into_iter()
            .map(|(at, var)| format!("{at}={var}"))
            .collect();
        assert_eq!(holes, ["a={body.x}", "b[0]={id}", "b[0]={payment.id}"]);
    }

    // ---- properties ----

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-c]", inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// Template strings: placeholders, escapes, and text that needs escaping
    /// in JSON.
    fn template_string() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(
            &[
                "{body.a}",
                "{body.b.c}",
                "{id}",
                "{query.lang}",
                "{payment.id}",
                "{{",
                "}}",
                "\"",
                "\\",
                "\n",
                "é",
                "\u{0}",
                "x",
            ][..],
        );
        prop::collection::vec(piece, 0..4).prop_map(|pieces| pieces.concat())
    }

    fn template() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            3 => template_string().prop_map(Value::from),
            1 => json_value(),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the template and whatever the values, a render that
        /// succeeds is JSON; one that fails names a placeholder of the template.
        #[test]
        fn a_body_template_never_renders_invalid_json(
            template in template(),
            a in json_value(),
            c in json_value(),
            id in any::<String>(),
            missing_a in any::<bool>(),
        ) {
            let body = if missing_a { json!({"b": {"c": c}}) } else { json!({"a": a, "b": {"c": c}}) };
            let values = Request { id, body, dep: json!({"id": "ch"}) };
            // Strings with stray braces are refused when compiled, as they
            // are by `fanout check`.
            let Ok(compiled) = BodyTemplate::compile(&template) else { return Ok(()) };
            match compiled.render(&values) {
                Ok(bytes) => {
                    let text = std::str::from_utf8(&bytes).unwrap();
                    prop_assert!(serde_json::from_str::<Value>(text).is_ok(), "{}", text);
                }
                Err(missing) => prop_assert!(compiled.vars().any(|v| *v == missing.var)),
            }
        }

        /// A whole placeholder's value arrives as it was, whatever its type:
        /// the very bytes `serde_json` writes for it.
        #[test]
        fn a_whole_placeholder_keeps_any_value(value in json_value(), key in "k[a-z\"\\\\{}]{0,3}") {
            let template = BodyTemplate::compile(&json!({ key.clone(): "{body.a}", "list": ["{body.a}"] }))
                .unwrap();
            let bytes = template.render(&request(json!({"a": value.clone()}))).unwrap();
            let (key, value) = (serde_json::to_string(&key).unwrap(), value.to_string());
            prop_assert_eq!(
                String::from_utf8(bytes).unwrap(),
                format!(r#"{{{key}:{value},"list":[{value}]}}"#)
            );
        }
    }
}
