//! The project's JSON Schema (`nix/schema.json`), embedded at build time.
//!
//! Every rule the schema states is checked by the `jsonschema` crate against this one file, the
//! same file that `ajv` and the NixOS module read; nothing here restates those rules by hand.
//! Values the rest of the program needs from the schema (the chakra names) are read from it too.

use std::sync::LazyLock;

use serde_json::Value;

use super::Problem;

/// The schema text, as shipped in `nix/schema.json`.
pub const SCHEMA_JSON: &str = include_str!("../../nix/schema.json");

static SCHEMA: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(SCHEMA_JSON).expect("nix/schema.json is valid JSON"));

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&SCHEMA)
        .expect("nix/schema.json is a valid draft-07 schema")
});

/// Every schema violation in `document`, in document order, each with its JSON pointer.
pub(crate) fn violations(document: &Value) -> Vec<Problem> {
    VALIDATOR
        .iter_errors(document)
        .map(|error| Problem {
            pointer: error.instance_path().as_str().to_owned(),
            message: error.to_string(),
        })
        .collect()
}

/// The chakra names the schema allows (`definitions.entry.properties.chakra.enum`).
pub fn chakras() -> Vec<&'static str> {
    SCHEMA
        .pointer("/definitions/entry/properties/chakra/enum")
        .and_then(Value::as_array)
        .expect("schema lists the chakras")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// Orders the keys of a new entry (and of its nested objects) as the schema lists them; keys
/// the schema does not name keep their order, after the named ones.
pub fn order_entry_keys(entry: &mut Value) {
    if let Some(node) = SCHEMA.pointer("/definitions/entry") {
        order_keys(entry, node);
    }
}

fn order_keys(value: &mut Value, schema: &Value) {
    let (Some(object), Some(properties)) =
        (value.as_object_mut(), schema.get("properties").and_then(Value::as_object))
    else {
        return;
    };
    let mut rest = std::mem::take(object);
    for (key, child_schema) in properties {
        if let Some(mut child) = rest.shift_remove(key) {
            order_keys(&mut child, child_schema);
            object.insert(key.clone(), child);
        }
    }
    object.append(&mut rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_compiles_and_lists_chakras() {
        let chakras = chakras();
        assert!(chakras.contains(&"muladhara"));
        assert!(chakras.contains(&"jnana"));
        assert_eq!(chakras.len(), 9);
    }

    #[test]
    fn new_entries_follow_the_schema_order() {
        let mut entry =
            serde_json::json!({ "x": 1, "artifact": { "sizeBytes": 1, "filename": "f" }, "id": "abc" });
        order_entry_keys(&mut entry);
        assert_eq!(entry.to_string(), r#"{"id":"abc","artifact":{"filename":"f","sizeBytes":1},"x":1}"#);
    }

    #[test]
    fn violations_carry_json_pointers() {
        let doc = serde_json::json!({ "models": [ { "id": "x" } ], "extra": 1 });
        let found = violations(&doc);
        assert!(found.iter().any(|p| p.pointer.is_empty()), "{found:?}");
        assert!(found.iter().any(|p| p.pointer == "/models/0"), "{found:?}");
    }
}
