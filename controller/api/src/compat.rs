//! Structural comparison of two openAPIV3 schemas: is ours a drop-in for metal3's?
//!
//! Walks metal3's schema and checks that every property path exists in ours with the same
//! validation keywords (type, format, enum, pattern, default, bounds, nullable, the
//! `x-kubernetes-*` extensions), that our `required` lists are not stricter, and that we add no
//! property metal3 lacks. Descriptions are not compared. The CRD tests use it against metal3's
//! committed CRDs; it is public so those tests (and the controller's) can call it.

use serde_json::Value;

/// Keywords that change what the API server accepts or stores, compared for equality.
pub const COMPARED_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "enum",
    "pattern",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "nullable",
    "x-kubernetes-map-type",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

/// One way in which `ours` differs from `theirs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// JSON-pointer-like path of the schema node, e.g. `.spec.bmc.address`.
    pub path: String,
    /// What differs.
    pub what: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            if self.path.is_empty() {
                "."
            } else {
                &self.path
            },
            self.what
        )
    }
}

/// Every difference between metal3's schema (`theirs`) and ours that could make a manifest
/// accepted by one and rejected (or stored differently) by the other.
pub fn compare(theirs: &Value, ours: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(theirs, ours, String::new(), &mut out);
    out
}

fn walk(theirs: &Value, ours: &Value, path: String, out: &mut Vec<Difference>) {
    let diff = |out: &mut Vec<Difference>, what: String| {
        out.push(Difference {
            path: path.clone(),
            what,
        })
    };
    for k in COMPARED_KEYWORDS {
        let (a, b) = (theirs.get(k), ours.get(k));
        if !same(a, b) {
            diff(
                out,
                format!("{k}: metal3 has {}, ours has {}", show(a), show(b)),
            );
        }
    }

    let required = |v: &Value| -> Vec<String> {
        v.get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let theirs_required = required(theirs);
    for r in required(ours) {
        if !theirs_required.contains(&r) {
            diff(
                out,
                format!("required: ours requires {r:?}, metal3 does not"),
            );
        }
    }

    let empty = serde_json::Map::new();
    let props = |v: &'_ Value| -> serde_json::Map<String, Value> {
        v.get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (tp, op) = (props(theirs), props(ours));
    for (name, t) in &tp {
        match op.get(name) {
            Some(o) => walk(t, o, format!("{path}.{name}"), out),
            None => out.push(Difference {
                path: format!("{path}.{name}"),
                what: "missing from ours".into(),
            }),
        }
    }
    for name in op.keys() {
        if !tp.contains_key(name) {
            out.push(Difference {
                path: format!("{path}.{name}"),
                what: "ours has it, metal3 does not".into(),
            });
        }
    }

    match (theirs.get("items"), ours.get("items")) {
        (Some(t), Some(o)) => walk(t, o, format!("{path}[]"), out),
        (None, None) => {}
        (t, o) => diff(
            out,
            format!("items: metal3 has {}, ours has {}", show(t), show(o)),
        ),
    }
    match (
        theirs.get("additionalProperties"),
        ours.get("additionalProperties"),
    ) {
        (Some(t), Some(o)) if t.is_object() && o.is_object() => {
            walk(t, o, format!("{path}{{}}"), out)
        }
        (t, o) if t != o => diff(
            out,
            format!(
                "additionalProperties: metal3 has {}, ours has {}",
                show(t),
                show(o)
            ),
        ),
        _ => {}
    }
}

/// Equality where `1` and `1.0` are the same number: the API server stores bounds as floats
/// (k8s-openapi's `JSONSchemaProps.minimum` is an `f64`), controller-gen writes integers.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "nothing".into(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["online"],
                    "properties": {
                        "online": {"type": "boolean"},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "list": {"type": "array", "items": {"type": "integer", "format": "int32"}}
                    }
                }
            }
        })
    }

    #[test]
    fn identical_schemas_have_no_difference() {
        assert_eq!(compare(&base(), &base()), vec![]);
    }

    #[test]
    fn each_deliberate_change_is_detected() {
        type Mutate = fn(&mut Value);
        let cases: &[(&str, Mutate, &str)] = &[
            (
                "enum changed",
                |v| v["properties"]["spec"]["properties"]["mode"]["enum"] = json!(["a"]),
                ".spec.mode",
            ),
            (
                "default dropped",
                |v| {
                    v["properties"]["spec"]["properties"]["mode"]
                        .as_object_mut()
                        .unwrap()
                        .remove("default");
                },
                ".spec.mode",
            ),
            (
                "type changed",
                |v| v["properties"]["spec"]["properties"]["online"]["type"] = json!("string"),
                ".spec.online",
            ),
            (
                "property missing",
                |v| {
                    v["properties"]["spec"]["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove("online");
                },
                ".spec.online",
            ),
            (
                "stricter required",
                |v| v["properties"]["spec"]["required"] = json!(["online", "mode"]),
                ".spec",
            ),
            (
                "item format changed",
                |v| {
                    v["properties"]["spec"]["properties"]["list"]["items"]["format"] =
                        json!("int64")
                },
                ".spec.list[]",
            ),
            (
                "extra property",
                |v| v["properties"]["spec"]["properties"]["extra"] = json!({"type": "string"}),
                ".spec.extra",
            ),
            (
                "nullable added",
                |v| v["properties"]["spec"]["properties"]["online"]["nullable"] = json!(true),
                ".spec.online",
            ),
        ];
        for (name, mutate, path) in cases {
            let mut ours = base();
            mutate(&mut ours);
            let diffs = compare(&base(), &ours);
            assert_eq!(diffs.len(), 1, "{name}: {diffs:?}");
            assert_eq!(diffs[0].path, *path, "{name}");
        }
    }

    #[test]
    fn integer_and_float_bounds_are_the_same() {
        let theirs = json!({"type": "integer", "minimum": 0, "maximum": 4094});
        let ours = json!({"type": "integer", "minimum": 0.0, "maximum": 4094.0});
        assert_eq!(compare(&theirs, &ours), vec![]);
        let ours = json!({"type": "integer", "minimum": 1.0, "maximum": 4094.0});
        assert_eq!(compare(&theirs, &ours).len(), 1);
    }

    #[test]
    fn looser_required_is_fine() {
        let mut ours = base();
        ours["properties"]["spec"]["required"] = json!([]);
        assert_eq!(compare(&base(), &ours), vec![]);
    }
}
