//! Renders the `SwappoMessaging` field reference (`docs/crd-reference.md`) from the generated
//! CRD, so the documentation can never drift from what the API server enforces: every field,
//! its type, default, validation and description, and every CEL rule with its message.
//!
//! `tests/tests/crd_reference.rs` fails when the committed file differs from this rendering;
//! `make crds` rewrites it.

use serde_json::Value;
use std::fmt::Write as _;

/// Fields whose schema is a Kubernetes core type: named, not expanded.
const OPAQUE: &[(&str, &str)] = &[
    (
        "spec.broker.resources",
        "core/v1 ResourceRequirements (`requests`, `limits`)",
    ),
    (
        "status.conditions",
        "list of metav1 Condition (`type`, `status`, `reason`, `message`, `lastTransitionTime`)",
    ),
];

/// Errors reading the CRD.
#[derive(Debug)]
pub struct RenderError(pub String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RenderError {}

/// The Markdown reference for the CRD in `crd_yaml`.
pub fn render(crd_yaml: &str) -> Result<String, RenderError> {
    let crd: Value =
        serde_yaml::from_str(crd_yaml).map_err(|e| RenderError(format!("CRD YAML: {e}")))?;
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("?");
    let group = crd["spec"]["group"].as_str().unwrap_or("?");
    let version_name = version["name"].as_str().unwrap_or("?");
    let mut out = String::new();
    let _ = writeln!(out, "# `{kind}` reference ({group}/{version_name})\n");
    out.push_str(
        "<!-- Generated from crds/ by `make crds` (tests/src/crd_reference.rs); do not edit. -->\n\n",
    );
    out.push_str(
        "Every field the API server accepts, with its default and validation. Objects that break a \
         rule are refused at `kubectl apply` with the message shown.\n",
    );
    let mut rules = Vec::new();
    for section in ["spec", "status"] {
        let _ = writeln!(out, "\n## `{section}`\n");
        if let Some(d) = schema[section]["description"].as_str() {
            let _ = writeln!(out, "{}\n", one_paragraph(d));
        }
        out.push_str("| field | type | default | validation | description |\n");
        out.push_str("| --- | --- | --- | --- | --- |\n");
        collect_rules(section, &schema[section], &mut rules);
        fields(section, &schema[section], &mut out, &mut rules);
    }
    out.push_str("\n## Rules checked by the API server (CEL)\n\n");
    out.push_str("| on | rule | message |\n| --- | --- | --- |\n");
    for (path, rule, message) in rules {
        let _ = writeln!(out, "| `{path}` | `{}` | {} |", cell(&rule), cell(&message));
    }
    Ok(out)
}

fn fields(path: &str, schema: &Value, out: &mut String, rules: &mut Vec<(String, String, String)>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, field) in props {
        let here = format!("{path}.{name}");
        let opaque = OPAQUE.iter().find(|(p, _)| *p == here).map(|(_, t)| *t);
        let ty = opaque.map(str::to_string).unwrap_or_else(|| type_of(field));
        let mut checks = validation(field);
        if required.contains(&name.as_str()) {
            checks.insert(0, "required".into());
        }
        let default = field
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let description = field["description"]
            .as_str()
            .map(one_paragraph)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{here}` | {} | {} | {} | {} |",
            cell(&ty),
            cell(&default),
            cell(&checks.join("; ")),
            cell(&description)
        );
        if opaque.is_some() {
            continue;
        }
        let (child, child_path) = if field["type"] == "array" {
            (&field["items"], format!("{here}[]"))
        } else {
            (field, here.clone())
        };
        collect_rules(&here, field, rules);
        if child_path != here {
            collect_rules(&child_path, child, rules);
        }
        fields(&child_path, child, out, rules);
    }
}

fn collect_rules(path: &str, schema: &Value, rules: &mut Vec<(String, String, String)>) {
    if let Some(list) = schema["x-kubernetes-validations"].as_array() {
        for r in list {
            rules.push((
                path.to_string(),
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
}

fn type_of(field: &Value) -> String {
    let base = match field["type"].as_str() {
        Some("array") => format!("list of {}", type_of(&field["items"])),
        Some("object") if field.get("additionalProperties").is_some() => "map".to_string(),
        Some(t) => t.to_string(),
        None if field["x-kubernetes-int-or-string"] == true => "int or string".to_string(),
        None => "any".to_string(),
    };
    match field["enum"].as_array() {
        Some(values) => {
            let values: Vec<String> = values
                .iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
                .collect();
            format!("{base}: {}", values.join(", "))
        }
        None => base,
    }
}

fn validation(field: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let num = |k: &str| field.get(k).and_then(Value::as_f64).map(|n| n.to_string());
    match (num("minimum"), num("maximum")) {
        (Some(lo), Some(hi)) => v.push(format!("{lo}..={hi}")),
        (Some(lo), None) => v.push(format!(">= {lo}")),
        (None, Some(hi)) => v.push(format!("<= {hi}")),
        (None, None) => {}
    }
    match (num("minLength"), num("maxLength")) {
        (Some(lo), Some(hi)) => v.push(format!("length {lo}..={hi}")),
        (Some(lo), None) => v.push(format!("length >= {lo}")),
        (None, Some(hi)) => v.push(format!("length <= {hi}")),
        (None, None) => {}
    }
    match (num("minItems"), num("maxItems")) {
        (Some(lo), Some(hi)) => v.push(format!("{lo}..={hi} items")),
        (Some(lo), None) => v.push(format!(">= {lo} items")),
        (None, Some(hi)) => v.push(format!("<= {hi} items")),
        (None, None) => {}
    }
    if let Some(p) = field["pattern"].as_str() {
        v.push(format!("pattern `{p}`"));
    }
    if field["nullable"] == true {
        v.push("optional".into());
    }
    v
}

fn one_paragraph(text: &str) -> String {
    text.split("\n\n")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = r#"
spec:
  group: example.io
  names: { kind: Thing }
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        properties:
          spec:
            description: "What you want.\n\nMore detail."
            properties:
              size:
                type: integer
                minimum: 1
                maximum: 9
                default: 3
                description: How big.
              items:
                type: array
                maxItems: 4
                items:
                  type: object
                  required: [name]
                  x-kubernetes-validations:
                  - rule: self.name != 'x'
                    message: name must not be x
                  properties:
                    name: { type: string, pattern: '^[a-z]+$', description: "A | name" }
          status:
            properties:
              ready: { type: boolean }
"#;

    #[test]
    fn every_field_appears_with_its_default_validation_and_rules() {
        let md = render(CRD).unwrap();
        assert!(md.contains("# `Thing` reference (example.io/v1)"), "{md}");
        assert!(
            md.contains("| `spec.size` | integer | `3` | 1..=9 | How big. |"),
            "{md}"
        );
        assert!(
            md.contains("| `spec.items` | list of object |  | <= 4 items |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| `spec.items[].name` | string |  | required; pattern `^[a-z]+$` | A \\| name |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| `spec.items[]` | `self.name != 'x'` | name must not be x |"),
            "{md}"
        );
        assert!(md.contains("| `status.ready` | boolean |"), "{md}");
        assert!(
            md.contains("What you want.\n") && !md.contains("More detail"),
            "{md}"
        );
    }

    #[test]
    fn a_crd_that_is_not_yaml_is_an_error() {
        assert!(render("{not: [yaml").is_err());
    }
}
