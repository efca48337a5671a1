//! Does an object need applying? The desired object (as built, serialized) is compared with
//! the observed one: when every field the operator sets already has its value, nothing is
//! sent, so a steady state writes nothing (and reads its objects from the watch caches). Fields the API server or others add (defaults,
//! status, managedFields) are ignored; a field changed or removed means apply (drift repair).
use serde::Serialize;
use serde_json::Value;

/// Whether every field set in `desired` has the same value in `observed`. Arrays must have
/// the same length and match element by element; `null` in `desired` means "not set".
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(o)) => d
            .iter()
            .all(|(k, dv)| dv.is_null() || o.get(k).is_some_and(|ov| is_subset(dv, ov))),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(dv, ov)| is_subset(dv, ov))
        }
        (Value::Number(d), Value::Number(o)) => d == o || d.as_f64() == o.as_f64(),
        (d, o) => d == o,
    }
}

/// Whether `observed` lacks anything `desired` sets (`true` when it does not exist).
pub fn needs_apply<K: Serialize>(
    desired: &K,
    observed: Option<&K>,
) -> Result<bool, serde_json::Error> {
    let Some(observed) = observed else {
        return Ok(true);
    };
    Ok(!is_subset(
        &serde_json::to_value(desired)?,
        &serde_json::to_value(observed)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_added_by_the_server_do_not_trigger_an_apply() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 5672}]}});
        let observed = json!({
            "metadata": {"name": "a", "labels": {"x": "1", "extra": "y"}, "resourceVersion": "7"},
            "spec": {"ports": [{"port": 5672, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
            "status": {}
        });
        assert!(is_subset(&desired, &observed));
    }

    #[test]
    fn a_changed_removed_or_extra_list_element_triggers_an_apply() {
        let desired = json!({"spec": {"ports": [{"port": 5672}], "probe": {"timeoutSeconds": 5}}});
        let changed = json!({"spec": {"ports": [{"port": 5672}], "probe": {"timeoutSeconds": 1}}});
        let removed = json!({"spec": {"ports": [{"port": 5672}]}});
        let extra = json!({"spec": {"ports": [{"port": 5672}, {"port": 1}], "probe": {"timeoutSeconds": 5}}});
        assert!(!is_subset(&desired, &changed));
        assert!(!is_subset(&desired, &removed));
        assert!(!is_subset(&desired, &extra));
    }

    #[test]
    fn a_missing_object_needs_applying() {
        assert!(needs_apply(&json!({"a": 1}), None).unwrap());
        assert!(!needs_apply(&json!({"a": 1}), Some(&json!({"a": 1.0, "b": 2}))).unwrap());
    }
}
