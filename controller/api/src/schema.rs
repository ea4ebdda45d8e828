//! Schema shaping shared by the metal3 types, so the generated CRD says what metal3's
//! controller-gen output says.
//!
//! Two differences between what schemars derives and what kubebuilder writes need fixing:
//! - an `Option<T>` field is optional in Go (`omitempty`), not nullable: kubebuilder emits no
//!   `nullable` unless the Go field carries `+nullable`. [`strip_null`] removes the `null`
//!   that schemars adds for `Option`, and the few fields metal3 marks nullable say so with
//!   `extend("nullable" = true)`.
//! - Go's `int` is `type: integer` with no `format`; Rust has no such type, so those fields use
//!   [`go_int`].

use schemars::transform::{transform_subschemas, Transform};
use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::Value;

/// Removes the `null` alternative schemars adds for `Option<T>`, here and in every subschema.
///
/// Used as `#[schemars(transform = crate::schema::strip_null)]` on every metal3 struct.
pub fn strip_null(schema: &mut Schema) {
    struct Strip;
    impl Transform for Strip {
        fn transform(&mut self, schema: &mut Schema) {
            strip_one(schema);
            transform_subschemas(self, schema);
        }
    }
    Strip.transform(schema);
}

fn is_null_schema(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("type") == Some(&Value::String("null".into()))
                || (m.len() == 1 && m.get("const") == Some(&Value::Null))
                || m.get("enum") == Some(&Value::Array(vec![Value::Null]))
        }
        _ => false,
    }
}

fn strip_one(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    // `type: [T, "null"]` → `type: T`
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types.remove(0);
            obj.insert("type".into(), t);
        }
    }
    // `enum: [..., null]` → `enum: [...]`
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    // `anyOf: [S, {type: null}]` → S merged into this schema
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alts)) = obj.get_mut(key) else {
            continue;
        };
        let before = alts.len();
        alts.retain(|a| !is_null_schema(a));
        if alts.len() == 1 && before == 2 {
            if let Some(Value::Object(inner)) = alts.pop() {
                obj.remove(key);
                for (k, v) in inner {
                    // The field's own description wins over the type's.
                    obj.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// Go's `int`: `type: integer`, no `format`.
pub fn go_int(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer" })
}

/// A string with no enum: metal3 declares `provisioning.state` as a plain string.
pub fn plain_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string" })
}

/// metav1 `Time`: RFC 3339 string.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// metav1 `Condition` list, as controller-gen writes it for `[]metav1.Condition` with
/// `+listType=map`, `+listMapKey=type` and `+kubebuilder:validation:MaxItems=32`.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Conditions describe the state of the host: Manageable, AvailableForProvisioning, Provisioned, Ready, Progressing, Healthy.",
        "type": "array",
        "maxItems": 32,
        "x-kubernetes-list-map-keys": ["type"],
        "x-kubernetes-list-type": "map",
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "lastTransitionTime is the last time the condition transitioned from one status to another.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "message is a human readable message indicating details about the transition.",
                    "type": "string",
                    "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "observedGeneration represents the .metadata.generation that the condition was set based upon.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition.",
                    "type": "string",
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {
                    "description": "status of the condition, one of True, False, Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strip_null_table() {
        let cases = [
            (
                json!({"type": ["string", "null"]}),
                json!({"type": "string"}),
            ),
            (
                json!({"type": ["string", "null"], "enum": ["a", null]}),
                json!({"type": "string", "enum": ["a"]}),
            ),
            (
                json!({"description": "field", "anyOf": [{"type": "object", "description": "type", "properties": {}}, {"type": "null"}]}),
                json!({"description": "field", "type": "object", "properties": {}}),
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": ["integer", "null"]}}}),
                json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            ),
            // A real union is left alone.
            (
                json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
                json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            ),
        ];
        for (input, want) in cases {
            let mut s: Schema = serde_json::from_value(input.clone()).unwrap();
            strip_null(&mut s);
            assert_eq!(s.as_value(), &want, "input {input}");
        }
    }
}
