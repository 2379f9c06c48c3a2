use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn path(s: &str) -> FieldPath {
    FieldPath::parse(s).unwrap()
}

fn paths(list: &[&str]) -> Vec<FieldPath> {
    list.iter().map(|s| path(s)).collect()
}

/// Serialized form, so that assertions also pin key order (`Value`'s
/// equality ignores it).
fn bytes(value: &Value) -> String {
    serde_json::to_string(value).unwrap()
}

fn select(list: &[&str]) -> Shape {
    Shape {
        select: Some(paths(list)),
        ..Shape::default()
    }
}

fn drop(list: &[&str]) -> Shape {
    Shape {
        drop: paths(list),
        ..Shape::default()
    }
}

fn rename(list: &[(&str, &str)]) -> Shape {
    Shape {
        rename: list
            .iter()
            .map(|(from, to)| (path(from), (*to).to_owned()))
            .collect(),
        ..Shape::default()
    }
}

fn merged(parts: Vec<Part>) -> Value {
    Value::Object(merge(parts))
}

fn part(value: Value) -> Part {
    Part::new(value, None)
}

// ---- paths ----

#[test]
fn path_parses_segments_and_displays_dotted() {
    let p = path("a.b.c");
    assert_eq!(p.segments(), ["a", "b", "c"]);
    assert_eq!(p.to_string(), "a.b.c");
    assert_eq!(format!("{p:?}"), r#"FieldPath("a.b.c")"#);
    assert_eq!(path("data").segments(), ["data"]);
    assert_eq!("x.y".parse::<FieldPath>().unwrap(), path("x.y"));
}

#[test]
fn path_errors_say_what_is_wrong_and_quote_the_input() {
    let message = |s: &str| FieldPath::parse(s).unwrap_err().to_string();
    assert_eq!(FieldPath::parse(""), Err(PathError::Empty));
    assert_eq!(
        message(""),
        r#"invalid field path "": a path needs at least one key, like `data` or `address.city`"#
    );
    assert_eq!(
        message(".a"),
        r#"invalid field path ".a": it starts with a dot (write `a.b`, not `.a.b`)"#
    );
    assert_eq!(
        message("a."),
        r#"invalid field path "a.": it ends with a dot (write `a.b`, not `a.b.`)"#
    );
    assert_eq!(
        message("a..b"),
        r#"invalid field path "a..b": two dots in a row at byte 2 leave an empty key"#
    );
    assert!(matches!(
        FieldPath::parse("."),
        Err(PathError::LeadingDot { .. })
    ));
    assert_eq!(
        FieldPath::parse("ab...c"),
        Err(PathError::EmptySegment {
            input: "ab...c".to_owned(),
            offset: 3
        })
    );
}

#[test]
fn path_deserializes_from_its_dotted_string_and_validates() {
    let p: FieldPath = serde_json::from_str(r#""address.city""#).unwrap();
    assert_eq!(p, path("address.city"));
    assert_eq!(serde_json::to_string(&p).unwrap(), r#""address.city""#);
    let err = serde_json::from_str::<FieldPath>(r#""a..b""#).unwrap_err();
    assert!(
        err.to_string().contains(r#"invalid field path "a..b""#),
        "{err}"
    );
}

// ---- extract ----

#[test]
fn extract_takes_the_value_at_a_nested_path() {
    let shape = Shape {
        extract: Some(path("data.items")),
        ..Shape::default()
    };
    let body = json!({"meta": 1, "data": {"items": [{"id": 1}], "next": null}});
    assert_eq!(shape.apply(body).unwrap(), json!([{"id": 1}]));
}

#[test]
fn extract_of_a_present_null_is_not_missing() {
    let shape = Shape {
        extract: Some(path("data")),
        ..Shape::default()
    };
    assert_eq!(shape.apply(json!({"data": null})).unwrap(), Value::Null);
}

#[test]
fn extract_missing_is_an_error_naming_the_path() {
    let shape = Shape {
        extract: Some(path("data.items")),
        ..Shape::default()
    };
    let expected = ShapeError::ExtractMissing {
        path: path("data.items"),
    };
    // A missing key, a scalar on the way, an array on the way, a scalar body.
    for body in [
        json!({"data": {}}),
        json!({"data": 3}),
        json!({"data": [{"items": 1}]}),
        json!("text"),
    ] {
        assert_eq!(shape.apply(body).unwrap_err(), expected);
    }
    assert_eq!(
        expected.to_string(),
        "extract path \"data.items\" does not exist in the body \
         (a key is missing or a value on the way is not an object)"
    );
}

// ---- select ----

#[test]
fn select_keeps_nested_structure() {
    let body = json!({"id": 1, "name": "x", "address": {"city": "P", "zip": "1"}});
    assert_eq!(
        bytes(&select(&["id", "address.city"]).apply(body).unwrap()),
        r#"{"id":1,"address":{"city":"P"}}"#
    );
}

#[test]
fn select_key_order_follows_the_body_not_the_list() {
    let body = json!({"z": 1, "a": 2, "m": {"y": 1, "b": 2, "q": 3}, "k": 4});
    let out = select(&["m.b", "k", "m.y", "z"]).apply(body).unwrap();
    assert_eq!(bytes(&out), r#"{"z":1,"m":{"y":1,"b":2},"k":4}"#);
}

#[test]
fn select_goes_through_arrays_at_any_level() {
    assert_eq!(
        bytes(
            &select(&["id"])
                .apply(json!([{"id": 1, "x": 2}, {"id": 3}]))
                .unwrap()
        ),
        r#"[{"id":1},{"id":3}]"#
    );
    assert_eq!(
        bytes(
            &select(&["items.id"])
                .apply(json!({"items": [{"id": 1, "x": 2}], "other": 1}))
                .unwrap()
        ),
        r#"{"items":[{"id":1}]}"#
    );
    // Arrays of arrays, and elements keep their places even when emptied.
    assert_eq!(
        bytes(
            &select(&["a.b.c"])
                .apply(json!({"a": [[{"b": {"c": 1, "d": 2}}], {"x": 1}]}))
                .unwrap()
        ),
        r#"{"a":[[{"b":{"c":1}}],{}]}"#
    );
}

#[test]
fn select_leaves_out_missing_paths_and_emptied_parents() {
    let body = json!({"a": {"c": 1}, "b": 1, "e": {"f": {"g": 1}}});
    assert_eq!(
        bytes(
            &select(&["a.b", "b.c", "x", "e.f.h", "e.f.g"])
                .apply(body)
                .unwrap()
        ),
        r#"{"e":{"f":{"g":1}}}"#
    );
    assert_eq!(select(&[]).apply(json!({"a": 1})).unwrap(), json!({}));
}

#[test]
fn select_shorter_path_keeps_the_whole_value() {
    let body = json!({"a": {"b": 1, "c": 2}, "d": 3});
    let expected = json!({"a": {"b": 1, "c": 2}});
    assert_eq!(select(&["a", "a.b"]).apply(body.clone()).unwrap(), expected);
    assert_eq!(select(&["a.b", "a"]).apply(body).unwrap(), expected);
}

// ---- drop ----

#[test]
fn drop_removes_nested_paths_through_arrays_and_ignores_missing_ones() {
    let body = json!({
        "id": 1,
        "address": {"city": "P", "zip": "1"},
        "items": [{"id": 1, "x": 2}, {"x": 3}, 4],
        "n": 5
    });
    let out = drop(&["address.zip", "items.x", "missing", "n.deeper", "id.x"])
        .apply(body)
        .unwrap();
    assert_eq!(
        bytes(&out),
        r#"{"id":1,"address":{"city":"P"},"items":[{"id":1},{},4],"n":5}"#
    );
}

#[test]
fn drop_keeps_the_order_of_the_remaining_keys() {
    let body = json!({"a": 1, "b": 2, "c": 3, "d": 4});
    assert_eq!(
        bytes(&drop(&["b"]).apply(body).unwrap()),
        r#"{"a":1,"c":3,"d":4}"#
    );
}

// ---- rename ----

#[test]
fn rename_keeps_the_key_position() {
    let body = json!({"a": 1, "b": 2, "c": 3});
    assert_eq!(
        bytes(&rename(&[("b", "x")]).apply(body).unwrap()),
        r#"{"a":1,"x":2,"c":3}"#
    );
}

#[test]
fn rename_onto_an_existing_key_replaces_it() {
    let body = json!({"a": 1, "b": 2, "c": 3});
    assert_eq!(
        bytes(&rename(&[("a", "c")]).apply(body).unwrap()),
        r#"{"c":1,"b":2}"#
    );
}

#[test]
fn rename_of_a_missing_path_changes_nothing() {
    let body = json!({"b": 1, "n": 2});
    let shape = rename(&[("a", "b"), ("n.x", "y"), ("z.a", "b")]);
    assert_eq!(bytes(&shape.apply(body).unwrap()), r#"{"b":1,"n":2}"#);
}

#[test]
fn rename_goes_through_nested_objects_and_arrays() {
    let body = json!({"user": {"first": "A", "id": 1}, "items": [{"sku": 1, "q": 2}, "s"]});
    let out = rename(&[("user.first", "given"), ("items.sku", "id")])
        .apply(body)
        .unwrap();
    assert_eq!(
        bytes(&out),
        r#"{"user":{"given":"A","id":1},"items":[{"id":1,"q":2},"s"]}"#
    );
}

#[test]
fn renames_run_one_after_the_other() {
    let body = json!({"a": 1, "x": 0});
    let shape = rename(&[("a", "b"), ("b", "c")]);
    assert_eq!(bytes(&shape.apply(body).unwrap()), r#"{"c":1,"x":0}"#);
    // A new name with a dot is a literal key, not a path.
    let out = rename(&[("a", "p.q")]).apply(json!({"a": 1})).unwrap();
    assert_eq!(out, json!({"p.q": 1}));
}

// ---- into ----

#[test]
fn into_nests_under_a_dotted_path() {
    let shape = Shape {
        into: Some(path("a.b")),
        ..Shape::default()
    };
    assert_eq!(
        shape.apply(json!({"x": 1})).unwrap(),
        json!({"a": {"b": {"x": 1}}})
    );
    let shape = Shape {
        into: Some(path("profile")),
        ..Shape::default()
    };
    assert_eq!(
        shape.apply(json!([1, 2])).unwrap(),
        json!({"profile": [1, 2]})
    );
}

// ---- the pipeline ----

#[test]
fn steps_run_extract_select_drop_rename_into() {
    let shape = Shape {
        // select and drop paths are relative to the extracted body ...
        extract: Some(path("data")),
        select: Some(paths(&["user", "token"])),
        // ... drop runs after select, so it can trim inside a selected value ...
        drop: paths(&["user.secret"]),
        // ... rename sees the backend's names, after select and drop ...
        rename: vec![(path("user"), "profile".to_owned())],
        // ... and into wraps the finished result.
        into: Some(path("out")),
    };
    let body = json!({
        "data": {"token": "t", "user": {"name": "n", "secret": "s"}, "x": 1},
        "user": "outer"
    });
    assert_eq!(
        bytes(&shape.apply(body).unwrap()),
        r#"{"out":{"token":"t","profile":{"name":"n"}}}"#
    );
}

#[test]
fn select_uses_names_from_before_the_rename() {
    let body = json!({"name": "n", "id": 1});
    let by_old = Shape {
        select: Some(paths(&["name"])),
        rename: vec![(path("name"), "title".to_owned())],
        ..Shape::default()
    };
    assert_eq!(by_old.apply(body.clone()).unwrap(), json!({"title": "n"}));
    let by_new = Shape {
        select: Some(paths(&["title"])),
        ..by_old
    };
    assert_eq!(by_new.apply(body).unwrap(), json!({}));
}

#[test]
fn drop_after_select_wins_over_it() {
    let shape = Shape {
        select: Some(paths(&["a", "b"])),
        drop: paths(&["a"]),
        ..Shape::default()
    };
    assert_eq!(
        shape.apply(json!({"a": 1, "b": 2, "c": 3})).unwrap(),
        json!({"b": 2})
    );
}

#[test]
fn scalar_bodies_pass_select_drop_and_rename_unchanged() {
    let shape = Shape {
        select: Some(paths(&["a"])),
        drop: paths(&["a"]),
        rename: vec![(path("a"), "b".to_owned())],
        ..Shape::default()
    };
    for body in [json!("s"), json!(1.5), json!(null), json!(true)] {
        assert_eq!(shape.apply(body.clone()).unwrap(), body);
    }
    // Scalars inside arrays are left alone too.
    assert_eq!(
        shape.apply(json!([1, {"a": 2, "c": 3}])).unwrap(),
        json!([1, {}])
    );
    let nested = Shape {
        into: Some(path("v")),
        ..shape
    };
    assert_eq!(nested.apply(json!(3)).unwrap(), json!({"v": 3}));
}

#[test]
fn default_shape_is_the_identity() {
    let body = json!({"z": [1, {"a": null}], "a": "x"});
    assert_eq!(
        bytes(&Shape::default().apply(body.clone()).unwrap()),
        bytes(&body)
    );
}

#[test]
fn apply_part_carries_the_shapes_into() {
    let shape = Shape {
        into: Some(path("p")),
        ..Shape::default()
    };
    let part = shape.apply_part(json!([1])).unwrap();
    assert_eq!(part, Part::new(json!({"p": [1]}), Some(path("p"))));
}

// ---- merge ----

#[test]
fn non_object_part_without_into_goes_under_collection() {
    assert_eq!(
        merged(vec![part(json!([1, 2])), part(json!({"a": 1}))]),
        json!({"collection": [1, 2], "a": 1})
    );
    assert_eq!(COLLECTION_KEY, "collection");
    assert_eq!(merged(vec![part(json!("s"))]), json!({"collection": "s"}));
    assert_eq!(merged(vec![part(json!(null))]), json!({"collection": null}));
    // Two collections do not concatenate: the later one wins.
    assert_eq!(
        merged(vec![part(json!([1])), part(json!([2, 3]))]),
        json!({"collection": [2, 3]})
    );
}

#[test]
fn array_body_with_into_is_nested_not_collected() {
    let shape = Shape {
        into: Some(path("orders")),
        ..Shape::default()
    };
    let part = shape.apply_part(json!([1, 2])).unwrap();
    assert_eq!(merged(vec![part]), json!({"orders": [1, 2]}));
    // A hand-built part that skipped the shape still lands under its into.
    let raw = Part::new(json!([3]), Some(path("a.b")));
    assert_eq!(merged(vec![raw]), json!({"a": {"b": [3]}}));
}

#[test]
fn merge_is_deep_and_later_parts_win_at_every_depth() {
    let out = merged(vec![
        part(json!({"a": {"x": 1, "y": {"p": 1, "q": 1}}, "b": 1})),
        part(json!({"a": {"y": {"q": 2, "r": 2}, "z": 2}, "b": {"o": 2}})),
        part(json!({"a": {"x": [3], "y": {"p": null}}, "b": 3})),
    ]);
    assert_eq!(
        bytes(&out),
        r#"{"a":{"x":[3],"y":{"p":null,"q":2,"r":2},"z":2},"b":3}"#
    );
}

#[test]
fn merge_keys_keep_their_first_appearance() {
    let out = merged(vec![
        part(json!({"m": 1, "c": {"k": 1, "b": 1}})),
        part(json!({"a": 2, "c": {"a": 2, "k": 2}, "m": 2})),
        part(json!({"b": 3, "a": 3})),
    ]);
    assert_eq!(
        bytes(&out),
        r#"{"m":2,"c":{"k":2,"b":1,"a":2},"a":3,"b":3}"#
    );
}

#[test]
fn merge_replaces_across_kinds_in_both_directions() {
    let out = merged(vec![
        part(json!({"a": {"x": 1}, "b": 1})),
        part(json!({"a": 2, "b": {"y": 2}})),
    ]);
    assert_eq!(out, json!({"a": 2, "b": {"y": 2}}));
}

#[test]
fn merge_of_nothing_is_an_empty_object() {
    assert_eq!(merge(Vec::new()), Map::new());
}

// ---- properties ----

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(&KEYS[..]).prop_map(str::to_owned)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(Value::from),
        prop::sample::select(&["", "s", "t"][..]).prop_map(Value::from),
    ];
    // Depth 4, with the five keys colliding often between parts.
    leaf.prop_recursive(4, 64, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), json_value()), 0..6)
        .prop_map(|entries| entries.into_iter().collect())
}

fn field_path() -> impl Strategy<Value = FieldPath> {
    prop::collection::vec(key(), 1..4).prop_map(|keys| path(&keys.join(".")))
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop::option::of(field_path()),
        prop::option::of(prop::collection::vec(field_path(), 0..4)),
        prop::collection::vec(field_path(), 0..3),
        prop::collection::vec((field_path(), key()), 0..3),
        prop::option::of(field_path()),
    )
        .prop_map(|(extract, select, drop, rename, into)| Shape {
            extract,
            select,
            drop,
            rename,
            into,
        })
}

/// A part as the gateway makes it: some body through some `into`.
fn shaped_part() -> impl Strategy<Value = Part> {
    (json_value(), prop::option::of(field_path())).prop_map(|(body, into)| {
        Shape {
            into,
            ..Shape::default()
        }
        .apply_part(body)
        .unwrap()
    })
}

/// Whether `segments` reach something in `value`, looking through arrays the
/// way select, drop and rename do.
fn contains(value: &Value, segments: &[String]) -> bool {
    match (value, segments) {
        (Value::Array(items), _) => items.iter().any(|item| contains(item, segments)),
        (Value::Object(map), [last]) => map.contains_key(last),
        (Value::Object(map), [first, rest @ ..]) => {
            map.get(first).is_some_and(|child| contains(child, rest))
        }
        _ => false,
    }
}

/// Every chain of object keys from the top, arrays being transparent.
fn key_paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| key_paths(item, prefix, out)),
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(key.clone());
                out.push(prefix.clone());
                key_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The value at `segments`, through objects only.
fn lookup<'v>(value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(value, |value, segment| value.as_object()?.get(segment))
}

fn top_keys(map: &Map<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_deterministic(parts in prop::collection::vec(shaped_part(), 0..5)) {
        let first = serde_json::to_vec(&merge(parts.clone())).unwrap();
        let second = serde_json::to_vec(&merge(parts)).unwrap();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn dropped_paths_are_gone(
        body in json_value(),
        selected in prop::option::of(prop::collection::vec(field_path(), 0..4)),
        dropped in prop::collection::vec(field_path(), 1..4),
    ) {
        let shape = Shape { select: selected, drop: dropped.clone(), ..Shape::default() };
        let out = shape.apply(body).unwrap();
        for path in &dropped {
            prop_assert!(!contains(&out, path.segments()), "{} still in {}", path, out);
        }
    }

    #[test]
    fn select_keeps_only_keys_on_the_paths(
        body in json_value(),
        selected in prop::collection::vec(field_path(), 0..4),
    ) {
        let shape = Shape { select: Some(selected.clone()), ..Shape::default() };
        let out = shape.apply(body.clone()).unwrap();
        let mut found = Vec::new();
        key_paths(&out, &mut Vec::new(), &mut found);
        for keys in found {
            let on_a_path = selected.iter().any(|path| {
                let segments = path.segments();
                segments.starts_with(&keys) || keys.starts_with(segments)
            });
            prop_assert!(on_a_path, "{:?} is on no selected path in {}", keys, out);
        }
        // And what was there to select is kept as it was.
        for path in &selected {
            if let Some(value) = lookup(&body, path.segments()) {
                prop_assert_eq!(lookup(&out, path.segments()), Some(value));
            }
        }
    }

    #[test]
    fn merging_one_object_returns_it(object in json_object()) {
        let out = merge([part(Value::Object(object.clone()))]);
        prop_assert_eq!(top_keys(&out), top_keys(&object));
        prop_assert_eq!(serde_json::to_vec(&out).unwrap(), serde_json::to_vec(&object).unwrap());
    }

    #[test]
    fn merging_a_part_twice_is_merging_it_once(x in shaped_part()) {
        let twice = serde_json::to_vec(&merge([x.clone(), x.clone()])).unwrap();
        let once = serde_json::to_vec(&merge([x])).unwrap();
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn merged_top_keys_are_in_first_appearance_order(
        objects in prop::collection::vec(json_object(), 0..5),
    ) {
        let mut expected: Vec<&str> = Vec::new();
        for object in &objects {
            for key in object.keys() {
                if !expected.contains(&key.as_str()) {
                    expected.push(key);
                }
            }
        }
        let out = merge(objects.iter().cloned().map(|object| part(Value::Object(object))));
        prop_assert_eq!(top_keys(&out), expected);
    }

    #[test]
    fn apply_never_panics(shape in shape(), body in json_value()) {
        // Only extract can fail, and only with its own path.
        if let Err(ShapeError::ExtractMissing { path }) = shape.apply(body) {
            prop_assert_eq!(Some(path), shape.extract);
        }
    }

    #[test]
    fn parse_never_panics_and_round_trips(
        chars in prop::collection::vec(prop::sample::select(&['a', 'b', '.', ' ', 'é'][..]), 0..8),
    ) {
        let input: String = chars.into_iter().collect();
        match FieldPath::parse(&input) {
            Ok(path) => prop_assert_eq!(path.to_string(), input),
            Err(err) => prop_assert!(
                err.to_string().contains(&format!("{input:?}")),
                "{} does not quote {:?}", err, input
            ),
        }
    }
}

// ---- bodies merged as received (`Json`) ----

/// The merge as it was written on `Value`s before bodies could stay text:
/// the model the text path must agree with.
fn reference_merge(parts: Vec<(Value, Option<FieldPath>)>) -> Value {
    fn merge_into(target: &mut Map<String, Value>, source: Map<String, Value>) {
        for (key, value) in source {
            match target.get_mut(&key) {
                Some(Value::Object(old)) if value.is_object() => {
                    let Value::Object(new) = value else {
                        unreachable!()
                    };
                    merge_into(old, new);
                }
                Some(old) => *old = value,
                None => {
                    target.insert(key, value);
                }
            }
        }
    }
    let mut merged = Map::new();
    for (value, into) in parts {
        let shaped = Shape {
            into,
            ..Shape::default()
        }
        .apply(value)
        .unwrap();
        let object = match shaped {
            Value::Object(map) => map,
            other => Map::from_iter([(COLLECTION_KEY.to_owned(), other)]),
        };
        merge_into(&mut merged, object);
    }
    Value::Object(merged)
}

fn json(text: &str) -> Json {
    Json::parse(text.to_owned().into()).unwrap()
}

fn merged_text(bodies: &[Json]) -> String {
    let bodies: Vec<Body> = bodies.iter().cloned().map(Body::Json).collect();
    let mut merged = Merged::default();
    for body in &bodies {
        merged.add(body, None);
    }
    String::from_utf8(merged.to_vec()).unwrap()
}

#[test]
fn json_refuses_what_is_not_json_and_says_why() {
    let err = Json::parse(bytes::Bytes::from_static(b"{\"a\": \"\xff\"}")).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let err = Json::parse(bytes::Bytes::from_static(b"{\"a\": 1,}")).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    assert!(Json::parse(bytes::Bytes::from_static(b"[1] 2")).is_err());
    assert!(Json::parse(bytes::Bytes::from_static(b"")).is_err());
    assert!(!json(" [1, {\"a\": 2}] ").is_object());
}

#[test]
fn values_pass_through_byte_for_byte_apart_from_whitespace() {
    // Numbers beyond f64 and escapes stay exactly as the backend wrote them.
    assert_eq!(
        merged_text(&[json(
            "{ \"id\" : 12345678901234567890123 ,\n \"f\": 1.50, \"s\": \"a \\u00e9 \\\" [ }\",\"l\": [ 1 , { \"b\" : null } ] }"
        )]),
        r#"{"id":12345678901234567890123,"f":1.50,"s":"a \u00e9 \" [ }","l":[1,{"b":null}]}"#
    );
}

#[test]
fn whitespace_inside_strings_and_after_escapes_is_kept() {
    assert_eq!(
        merged_text(&[json(
            "{\"a\" :\t[ \"x\\\\ \" , \"\\\" y \" ,\r\n {} ] , \"b\" : \" \" }"
        )]),
        r#"{"a":["x\\ ","\" y ",{}],"b":" "}"#
    );
}

#[test]
fn escaped_keys_are_the_same_keys_as_plain_ones() {
    assert_eq!(
        merged_text(&[
            json(r#"{"a\u0062": 1, "c": {"x": 1}, "q\"": 0}"#),
            json(r#"{"ab": 2, "c": {"y": 2}}"#),
        ]),
        r#"{"ab":2,"c":{"x":1,"y":2},"q\"":0}"#
    );
}

#[test]
fn a_key_repeated_in_one_body_means_its_last_value() {
    // RFC 8259 leaves repeated names undefined. One rule everywhere (issue
    // 16): the last value, at the first place, as serde_json reads it, so a
    // body means the same merged as received or reshaped. (This used to
    // deep-merge the repetitions, unlike a reshaped body: the fuzzer's json
    // target found the difference.)
    let body = r#"{"a": 1, "b": 2, "a": {"x": 1}, "a": {"y": 2}}"#;
    assert_eq!(merged_text(&[json(body)]), r#"{"a":{"y":2},"b":2}"#);
    let value: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        serde_json::to_string(&value).unwrap(),
        r#"{"a":{"y":2},"b":2}"#
    );
}

#[test]
fn non_object_bodies_go_under_collection_or_into() {
    let array = Body::Json(json(" [1, 2] "));
    let into = path("a.b");
    let mut merged = Merged::default();
    merged.add(&array, None);
    merged.add(&array, Some(&into));
    let errors = json!({"x": {"kind": "timeout"}});
    merged.insert_errors(&errors);
    assert_eq!(
        merged.to_vec(),
        br#"{"collection":[1,2],"a":{"b":[1,2]},"_errors":{"x":{"kind":"timeout"}}}"#
    );
}

#[test]
fn lookup_reads_nested_fields_without_parsing_the_rest() {
    let body = json(r#"{"user": {"id": 7, "tags": ["a"], "x\u0079": true}, "n": null}"#);
    assert_eq!(body.lookup(&path("user.id")), Some(json!(7)));
    assert_eq!(body.lookup(&path("user.tags")), Some(json!(["a"])));
    assert_eq!(body.lookup(&path("user.xy")), Some(json!(true)));
    assert_eq!(body.lookup(&path("n")), Some(Value::Null));
    assert_eq!(body.lookup(&path("user.missing")), None);
    assert_eq!(body.lookup(&path("n.deeper")), None);
    assert_eq!(
        body.lookup(&path("user.tags.0")),
        None,
        "arrays are not indexed"
    );
    let repeated = json(r#"{"a": {"b": 1, "b": 2}, "a": {"b": 3, "b": 4}}"#);
    assert_eq!(
        repeated.lookup(&path("a.b")),
        Some(json!(4)),
        "the last value, as serde_json reads it"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Bodies merged as received (and pretty-printed, so whitespace must be
    /// dropped) give the very bytes the `Value` merge gives.
    #[test]
    fn text_merge_matches_the_value_model(
        parts in prop::collection::vec((json_value(), prop::option::of(field_path())), 0..5),
    ) {
        let expected = serde_json::to_vec(&reference_merge(parts.clone())).unwrap();
        let bodies: Vec<(Body, Option<FieldPath>)> = parts
            .iter()
            .map(|(value, into)| {
                let text = serde_json::to_string_pretty(value).unwrap();
                (Body::Json(Json::parse(text.into()).unwrap()), into.clone())
            })
            .collect();
        let mut merged = Merged::default();
        for (body, into) in &bodies {
            merged.add(body, into.as_ref());
        }
        prop_assert_eq!(String::from_utf8(merged.to_vec()).unwrap(), String::from_utf8(expected.clone()).unwrap());
        // And the `Value` parts through the same engine agree too.
        let values = merge(parts.into_iter().map(|(value, into)| {
            Shape { into, ..Shape::default() }.apply_part(value).unwrap()
        }));
        prop_assert_eq!(serde_json::to_vec(&values).unwrap(), expected);
    }
}

// The examples that used to be doc tests, when the module was public.

#[test]
fn example_shape_each_body_then_merge() -> Result<(), Box<dyn std::error::Error>> {
    use serde_json::{Value, json};

    let path = |s: &str| FieldPath::parse(s).unwrap();
    let user = Shape {
        extract: Some(path("data")),
        select: Some(vec![path("id"), path("name"), path("address.city")]),
        rename: vec![(path("name"), "full_name".to_owned())],
        ..Shape::default()
    };
    let orders = Shape {
        drop: vec![path("internal")],
        into: Some(path("orders")),
        ..Shape::default()
    };

    let user_body = json!({
        "data": {"id": 7, "name": "Ada", "email": "a@x", "address": {"city": "P", "zip": "1"}}
    });
    let orders_body = json!([{"id": 1, "internal": true}, {"id": 2, "internal": false}]);

    let response = merge([user.apply_part(user_body)?, orders.apply_part(orders_body)?]);
    assert_eq!(
        serde_json::to_string(&Value::Object(response))?,
        r#"{"id":7,"full_name":"Ada","address":{"city":"P"},"orders":[{"id":1},{"id":2}]}"#,
    );
    Ok(())
}

#[test]
fn example_select_then_nest_into() -> Result<(), Box<dyn std::error::Error>> {
    use serde_json::json;

    let path = |s: &str| FieldPath::parse(s).unwrap();
    let shape = Shape {
        select: Some(vec![path("id"), path("address.city")]),
        into: Some(path("user")),
        ..Shape::default()
    };
    let body = json!({"id": 1, "name": "x", "address": {"city": "P", "zip": "1"}});
    assert_eq!(
        shape.apply(body)?,
        json!({"user": {"id": 1, "address": {"city": "P"}}}),
    );
    Ok(())
}

#[test]
fn example_json_is_kept_as_received() -> Result<(), Box<dyn std::error::Error>> {
    let body = Json::parse(r#"{"id": 7, "tags": ["a"]}"#.into())?;
    assert_eq!(body.text(), r#"{"id": 7, "tags": ["a"]}"#);
    assert_eq!(body.lookup(&path("id")), Some(serde_json::json!(7)));
    assert!(Json::parse("{\"id\": ".into()).is_err());
    Ok(())
}

#[test]
fn example_merge_deeply_in_declaration_order() -> Result<(), Box<dyn std::error::Error>> {
    use serde_json::{Value, json};

    let merged = merge([
        Part::new(json!({"user": {"id": 1, "name": "old"}}), None),
        Part::new(json!({"user": {"name": "new"}, "count": 2}), None),
        Part::new(json!([1, 2]), None),
    ]);
    assert_eq!(
        Value::Object(merged),
        json!({"user": {"id": 1, "name": "new"}, "count": 2, "collection": [1, 2]}),
    );
    Ok(())
}

#[test]
fn example_merged_writes_compact_bytes() -> Result<(), Box<dyn std::error::Error>> {
    let one = Body::Json(Json::parse(r#"{"a": {"x": 1}, "b": [1, 2]}"#.into())?);
    let two = Body::Json(Json::parse(r#"{"a": {"y": 2}}"#.into())?);
    let mut merged = Merged::default();
    merged.add(&one, None);
    merged.add(&two, None);
    assert_eq!(merged.to_vec(), br#"{"a":{"x":1,"y":2},"b":[1,2]}"#);
    Ok(())
}

#[test]
fn example_field_paths_are_dotted() -> Result<(), Box<dyn std::error::Error>> {
    let path = FieldPath::parse("address.city")?;
    assert_eq!(path.segments(), ["address", "city"]);
    assert_eq!(path.to_string(), "address.city");
    Ok(())
}

// ---- append and root ----

/// The body a backend answers with `value` becomes: as received (`raw`),
/// or reshaped, which applies its `into`.
fn answer(value: &Value, into: &FieldPath, raw: bool) -> Body {
    if raw {
        Body::Json(Json::from_value(value))
    } else {
        Body::Value(
            Shape {
                into: Some(into.clone()),
                ..Shape::default()
            }
            .apply(value.clone())
            .unwrap(),
        )
    }
}

fn object_at<'v>(value: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    lookup(value, path.segments())
}

#[test]
fn append_concatenates_in_the_order_of_the_calls() {
    let into = path("feed.items");
    let (a, b, c) = (json!([1, {"x": 2}]), json!([]), json!(["three"]));
    let bodies = [
        answer(&a, &into, true),
        answer(&b, &into, false),
        answer(&c, &into, true),
    ];
    let mut merged = Merged::default();
    merged.add(&bodies[0], Some(&into));
    merged.append(&bodies[1], &into).unwrap();
    merged.append(&bodies[2], &into).unwrap();
    let out: Value = serde_json::from_slice(&merged.to_vec()).unwrap();
    assert_eq!(out, json!({"feed": {"items": [1, {"x": 2}, "three"]}}));
    assert_eq!(
        merged.root_to_vec(&into, None).unwrap(),
        br#"[1,{"x":2},"three"]"#
    );
}

#[test]
fn append_starts_the_array_and_refuses_what_is_not_one() {
    let into = path("a.b");
    let mut merged = Merged::default();
    let first = answer(&json!([1]), &into, true);
    merged.append(&first, &into).unwrap();
    let scalar = answer(&json!(7), &into, false);
    assert_eq!(
        merged.append(&scalar, &into).unwrap_err().to_string(),
        "append: the answer is a number, not an array"
    );
    let blocker = Body::Json(Json::from_value(&json!({"a": 5})));
    merged.add(&blocker, None);
    let second = answer(&json!([2]), &into, true);
    assert_eq!(
        merged.append(&second, &into).unwrap_err().to_string(),
        "append: `a` already holds a number, which an array cannot be appended to"
    );
    assert_eq!(
        merged.to_vec(),
        br#"{"a":5}"#,
        "a later object wins, as in any merge"
    );
}

#[test]
fn a_root_reaches_into_raw_answers_and_carries_errors_only_in_an_object() {
    let body = Body::Json(Json::from_value(&json!({"page": {"items": [1], "n": 1}})));
    let mut merged = Merged::default();
    merged.add(&body, None);
    let errors = json!({"b": {"kind": "timeout"}});
    assert_eq!(
        merged
            .root_to_vec(&path("page.items"), Some(&errors))
            .unwrap(),
        b"[1]"
    );
    assert_eq!(
        merged.root_to_vec(&path("page"), Some(&errors)).unwrap(),
        br#"{"items":[1],"n":1,"_errors":{"b":{"kind":"timeout"}}}"#
    );
    assert_eq!(merged.root_to_vec(&path("page.n.x"), None), None);
    assert_eq!(merged.root_to_vec(&path("nope"), None), None);
}

proptest! {
    /// Whatever was there and whatever comes, appending never panics and
    /// the merge is still one JSON object; two arrays concatenate.
    #[test]
    fn append_never_panics_on_any_pair_of_values(
        first in json_value(),
        second in json_value(),
        into in field_path(),
        first_into in prop::option::of(field_path()),
        raw in any::<bool>(),
    ) {
        let first_body = Body::Json(Json::from_value(&first));
        let second_body = answer(&second, &into, raw);
        let mut merged = Merged::default();
        merged.add(&first_body, first_into.as_ref());
        let appended = merged.append(&second_body, &into);
        let out: Value = serde_json::from_slice(&merged.to_vec()).unwrap();
        prop_assert!(out.is_object());
        if let (Some(Value::Array(before)), Value::Array(added)) = (
            first_into.as_ref().filter(|p| **p == into).map(|_| &first),
            &second,
        ) {
            prop_assert!(appended.is_ok());
            let mut expected = before.clone();
            expected.extend(added.iter().cloned());
            prop_assert_eq!(object_at(&out, &into), Some(&Value::Array(expected)));
        }
        if !second.is_array() {
            prop_assert!(appended.is_err());
        }
    }
}

/// Keys are written as `serde_json` writes them, whether copied as they are
/// (no escaping needed) or escaped, from a backend's text and from a value.
#[test]
fn merged_keys_are_escaped_as_serde_json_escapes_them() {
    let text = r#"{"plain": 1, "a\"b": 2, "tab\t": 3, "é": 4, "\u0001": 5, "back\\slash": 6, "del\u007f": 7, "\u00e9\/": 8}"#;
    let parsed: Map<String, Value> = serde_json::from_str(text).unwrap();
    let expected = serde_json::to_string(&parsed).unwrap();
    let from_text = Body::Json(Json::parse(text.into()).unwrap());
    let from_value = Body::Value(Value::Object(parsed));
    for body in [&from_text, &from_value] {
        let mut merged = Merged::default();
        merged.add(body, None);
        assert_eq!(String::from_utf8(merged.to_vec()).unwrap(), expected);
    }
}
