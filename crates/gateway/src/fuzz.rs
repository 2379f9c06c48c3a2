//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not part
//! of the API). Each takes arbitrary bytes, drives one part of the gateway
//! with them, and panics if an invariant breaks; a panic, a hang or an
//! allocation past the limits is a finding.

use serde_json::Value;

use crate::{
    Plan,
    config::Format,
    run::fuzzing as run,
    shape::{Body, FieldPath, Merged, Shape},
    template::{BodyTemplate, Found, Part, Template, Values, Var, lookup, url},
};

/// The deepest nesting the gateway accepts (`max_json_depth` at most).
const DEPTH: u32 = 127;

/// Splits `data` at NUL bytes into `n` text parts (missing ones empty).
fn parts(data: &[u8], n: usize) -> Vec<String> {
    let mut parts: Vec<String> = data
        .splitn(n, |&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.resize(n, String::new());
    parts
}

/// A configuration in the format the first byte picks, checked and
/// compiled: any problem is a located error, never a panic; a plan that
/// compiles describes its own config again.
pub fn config(data: &[u8]) {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let format = [Format::Yaml, Format::Toml, Format::Json][pick as usize % 3];
    let text = String::from_utf8_lossy(text);
    match Plan::parse(&text, format, "fuzz", |name| {
        (name == "SET").then(|| "v".into())
    }) {
        Ok(plan) => {
            let json = serde_json::to_string(plan.config()).expect("a config serializes");
            Plan::parse(&json, Format::Json, "again", |_| None)
                .expect("a compiled config, written as JSON, compiles again");
        }
        Err(err) => {
            assert!(!err.problems.is_empty());
            for p in &err.problems {
                assert!(p.line >= 1 && p.column >= 1, "{p}");
            }
        }
    }
}

/// A path template filled with hostile values: whatever they are, the URL
/// stays on its origin.
pub fn template(data: &[u8]) {
    let p = parts(data, 4);
    let Ok(template) = Template::parse(&p[0]) else {
        return;
    };
    let origin = "http://h:1/base";
    let field = Value::from(p[3].as_str());
    let values = Fixed {
        route: &p[1],
        query: &p[2],
        field: &field,
    };
    let forwarded = [("q".to_owned(), p[2].clone())];
    let Ok(url) = url::render(origin, &template, &values, &forwarded) else {
        return;
    };
    assert!(url.starts_with(origin), "{url}");
    let rest = &url[origin.len()..];
    // Values are percent-encoded: none of their bytes can end the path or
    // start a new authority, whatever the template's own literals hold.
    let literals: String = template
        .parts()
        .iter()
        .filter_map(|part| match part {
            Part::Literal(text) => Some(text.as_str()),
            Part::Var(..) => None,
        })
        .collect();
    for c in ['#', '@', ' '] {
        assert!(
            !rest.contains(c) || literals.contains(c),
            "{c:?} from a value in {url}"
        );
    }
    if let Ok(uri) = url.parse::<http::Uri>() {
        assert_eq!(uri.authority().map(|a| a.as_str()), Some("h:1"), "{url}");
    }
}

/// Fixed values for every variable: each route capture is `route`, each
/// query value `query`, each body or dependency field `field`.
struct Fixed<'a> {
    route: &'a str,
    query: &'a str,
    field: &'a Value,
}

impl Values for Fixed<'_> {
    fn get(&self, var: &Var) -> Option<Found<'_>> {
        Some(match var {
            Var::Route(_) => Found::Text(self.route),
            Var::Query(_) => Found::Text(self.query),
            Var::Body(_) | Var::Jwt(_) | Var::Field { .. } => Found::Json(self.field),
        })
    }
}

/// A backend body through the depth scan, the parser, a lookup and the
/// merge: what is accepted is merged into valid JSON equal to the body.
pub fn json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::shape::assert_scan_agrees(text);
    }
    let Some(json) = run::decode_body(data, DEPTH) else {
        return;
    };
    let path = FieldPath::parse("a.b").expect("a valid path");
    let _ = json.lookup(&path);
    let body = Body::Json(json.clone());
    let mut merged = Merged::default();
    merged.add(&body, None);
    let bytes = merged.to_vec();
    assert_is_json(&bytes);
    // Where the body is a value (no number out of range, no lone surrogate),
    // the merge means the same value.
    if let (Ok(Value::Object(mut map)), Ok(Value::Object(out))) =
        (json.to_value(), serde_json::from_slice::<Value>(&bytes))
    {
        map.shift_remove("_errors");
        assert_eq!(map, out, "the merge keeps every member");
    }
}

/// Two bodies, the first shaped by paths taken from the input, merged: never
/// a panic, always a JSON object.
pub fn merge(data: &[u8]) {
    let p = parts(data, 4);
    crate::shape::assert_scan_agrees(&p[0]);
    crate::shape::assert_scan_agrees(&p[1]);
    let decode = |text: &str| run::decode_body(text.as_bytes(), DEPTH);
    let (Some(first), Some(second)) = (decode(&p[0]), decode(&p[1])) else {
        return;
    };
    let paths: Vec<FieldPath> = p[2]
        .split(',')
        .filter_map(|s| FieldPath::parse(s).ok())
        .take(8)
        .collect();
    let into = FieldPath::parse(&p[3])
        .ok()
        .filter(|p| p.segments()[0] != "_errors");
    let shape = Shape {
        select: (!paths.is_empty()).then(|| paths.clone()),
        drop: paths.iter().rev().take(2).cloned().collect(),
        rename: paths
            .first()
            .map(|p| (p.clone(), "renamed".to_owned()))
            .into_iter()
            .collect(),
        into: into.clone(),
        ..Shape::default()
    };
    let shaped = match first.to_value() {
        Ok(value) => shape.apply(value).map(Body::Value).ok(),
        Err(_) => None,
    };
    let second = Body::Json(second);
    let mut merged = Merged::default();
    if let Some(shaped) = &shaped {
        merged.add(shaped, into.as_ref());
    }
    merged.add(&second, None);
    let bytes = merged.to_vec();
    assert_is_json(&bytes);
    assert!(bytes.starts_with(b"{"), "the merge writes an object");
}

/// The fixed public keys of the `jwt` target (an RSA and a P-256 key; their
/// private halves were dropped once the seed tokens were signed).
const FUZZ_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"fuzz-rsa","use":"sig","alg":"RS256","n":"uTHaZwhqA4KgWUNs6uDxMYgTsFC_evQPBL68kgNzRvfmS0SmOIDXHTblqAEexn_10DoUOd9gdsbj_51rRfMoSgEnGE3cF37G6QuvY_az7YSN2o-rohy1B26EOkQFOmh8Huq89QnicCrMjyEB75kR-u8znDmOakgsljRVSt7KtKJfT8cr-FgETzZ2OuZC_q1_U1CtJfziTvXopFsn89-d_IW8Frqk_uYgwPCRo2RKR-Tg5UfoHPUWO5ZUjUupC6EIYfENl8m7wAYZ9zEG7iHitDKYjRq9eLJzUPUMr9uJdtWaOMWupk0yEqbLd5jU5SiaiyXRS4xb48RgMidfFKKMThA8HzYduvgADnRwwbbU-9Bg1lhhjqQuO-957JxOwNBt2iGiCFZup-SpnD4LmW0SrordpYPmTbD7a7Kkg68u3AA-wbtpgu06icq6fOPr97zgbCrRnfiv4bO6cL5sXcurza-vOvPKDMflkxbwGhNPOKOSUnv3dgt4PzQjavDZmozn","e":"AQAB"},{"kty":"EC","kid":"fuzz-ec","use":"sig","alg":"ES256","crv":"P-256","x":"tU0ujZZ7caxAyPxEBu9ihLrUIUfTQHwo8Ni65mzNKDc","y":"zSaaXkFoXsbWylJREvpdTvZeAAcAvdw9gTbT1ZU2AaE"}]}"#;

/// The claims of the seed corpus's valid tokens (`exp` in 2100).
fn fuzz_claims() -> Value {
    serde_json::json!({
        "iss": "https://issuer.fuzz/", "aud": "fuzz", "sub": "fuzzer",
        "exp": 4102444800u64, "scope": "a b",
    })
}

/// Any bytes as a bearer token against a fixed key set (RS256, ES256,
/// and HS256 asked for but never accepted): never a panic, and whatever
/// passes carries exactly the claims the keys' owner signed.
pub fn jwt(data: &[u8]) {
    let (scheme, keys) = fuzz_scheme();
    let token = String::from_utf8_lossy(data);
    if let Ok(claims) = scheme.verify_now(token.trim(), keys) {
        assert_eq!(
            Value::Object(claims),
            fuzz_claims(),
            "a token passed that its keys' owner did not sign: {token}"
        );
    }
}

/// The `jwt` target's scheme and its fixed keys, made once.
fn fuzz_scheme() -> &'static (crate::auth::JwtScheme, crate::auth::jwks::KeySet) {
    use std::sync::{Arc, LazyLock};

    use crate::auth::{
        JwtScheme,
        jwks::{Jwks, KeySet},
    };

    static SCHEME: LazyLock<(JwtScheme, KeySet)> = LazyLock::new(|| {
        assert!(crate::auth::install_crypto());
        let keys = KeySet::parse(FUZZ_JWKS.as_bytes()).expect("the fuzz JWKS parses");
        let scheme = JwtScheme::new(
            Arc::new(Jwks::fixed(keys.clone())),
            "https://issuer.fuzz/",
            &["fuzz".to_owned()],
            &[
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256,
            ],
            std::time::Duration::from_secs(60),
        );
        (scheme, keys)
    });
    &SCHEME
}

/// A JSON body template (the first part) and a client's body (the second):
/// the template compiles, or each of its problems has a message; a render
/// writes JSON, or names a placeholder of the template the request has no
/// value for. Route and query values are hostile text; `{body.…}` and
/// dependency fields are looked up in the client's body.
pub fn body_template(data: &[u8]) {
    let p = parts(data, 2);
    let Ok(template) = serde_json::from_str::<Value>(&p[0]) else {
        return;
    };
    let template = match BodyTemplate::compile(&template) {
        Ok(template) => template,
        Err(problems) => {
            assert!(!problems.is_empty());
            for (_, message) in &problems {
                assert!(message.contains("template"), "{message}");
            }
            return;
        }
    };
    struct Request(Option<Value>);
    impl Values for Request {
        fn get(&self, var: &Var) -> Option<Found<'_>> {
            match var {
                Var::Route(_) => Some(Found::Text("r\"\\{x}\u{0}")),
                Var::Query(_) => Some(Found::Text("é&=")),
                Var::Body(path) | Var::Jwt(path) | Var::Field { path, .. } => {
                    lookup(self.0.as_ref()?, path).map(Found::Json)
                }
            }
        }
    }
    let request = Request(serde_json::from_str(&p[1]).ok());
    match template.render(&request) {
        Ok(bytes) => {
            assert_is_json(&bytes);
            serde_json::from_slice::<Value>(&bytes).expect("a rendered body is a value");
        }
        Err(missing) => assert!(
            template.vars().any(|v| *v == missing.var),
            "{missing} is not a placeholder of the template"
        ),
    }
}

/// The merge's output is JSON text (checked for syntax: a backend's `1e400`
/// passes through as it came, which is JSON but not a `serde_json` value).
fn assert_is_json(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("the merge writes UTF-8");
    serde_json::from_str::<&serde_json::value::RawValue>(text)
        .unwrap_or_else(|e| panic!("the merge wrote invalid JSON ({e}): {text}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_point_runs_on_simple_input() {
        config(b"\x00endpoints:\n  - { route: GET /a, backends: [{ name: a, url: \"http://127.0.0.1:1/\" }] }\n");
        config(b"\x02{\"endpoints\": []}");
        template(b"/u/{id}?q={query.q}\x00../x\x00a&b=c\x00f");
        json(br#"{"a":{"b":[1,2]},"c":"d"}"#);
        merge(b"{\"a\":1,\"b\":{\"c\":2}}\x00{\"b\":{\"d\":3}}\x00a,b.c\x00x.y");
        json(br#"{"n":1e400,"s":"\ud800"}"#);
        jwt(b"a.b.c");
        body_template(
            b"{\"a\":\"{body.x}\",\"b\":[\"n-{id}\",\"{q.y}\"]}\x00{\"x\":[1,{\"y\":null}]}",
        );
    }

    /// The seed tokens signed by the fixed keys pass, and the hostile ones
    /// do not (so the target's assertion has something to guard).
    #[test]
    fn the_jwt_seeds_that_should_pass_do() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/jwt");
        let (scheme, keys) = fuzz_scheme();
        for (file, passes) in [
            ("valid-rs256", true),
            ("valid-es256", true),
            ("alg-none", false),
            ("hs256-key-confusion", false),
            ("expired", false),
        ] {
            let token = std::fs::read_to_string(root.join(file)).unwrap();
            assert_eq!(
                scheme.verify_now(token.trim(), keys).is_ok(),
                passes,
                "{file}"
            );
        }
    }

    /// The committed corpus of each target (`fuzz/corpus/<target>/`), replayed
    /// on the stable toolchain: what libFuzzer found once stays fixed.
    #[test]
    fn the_fuzz_corpus_replays_without_a_finding() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 6] = [
            ("config", config),
            ("template", template),
            ("json", json),
            ("merge", merge),
            ("jwt", jwt),
            ("body_template", body_template),
        ];
        for (name, target) in targets {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut count = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(
                    outcome.is_ok(),
                    "fuzz target `{name}` fails on {}",
                    path.display()
                );
                count += 1;
            }
            assert!(count > 0, "no corpus for `{name}` in {}", dir.display());
        }
    }
}
