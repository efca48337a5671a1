//! Does an object need applying? The desired object (as built, serialized) is compared with
//! the observed one: when every field the operator sets already has its value, nothing is
//! sent, so a steady state writes nothing (and reads its objects from the watch caches).
//! Fields the API server or others add (defaults, status, managedFields) are ignored; a field
//! changed or removed means apply (drift repair).
//!
//! The comparison is with what the API server returns, not with the text the operator sent:
//! the server rewrites resource quantities to their canonical form (`1024Mi` -> `1Gi`, `0.5`
//! -> `500m`), so quantities compare by value; and server-side apply merges `ownerReferences`
//! by `uid`, so another owner's reference beside the operator's is not drift (applying again
//! would not remove it, only write again at every reconcile).
use kube_quantity::ParsedQuantity;
use serde::Serialize;
use serde_json::Value;

/// The maps whose values are resource quantities (a container's `resources`, a claim's
/// `resources.requests`).
const QUANTITY_MAPS: [&str; 2] = ["limits", "requests"];

/// Whether every field set in `desired` has the same value in `observed`. Arrays must have
/// the same length and match element by element (but `ownerReferences`, matched by `uid`);
/// `null` in `desired` means "not set".
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    subset(desired, observed, Within::Other)
}

/// What the value being compared is, from the key that holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Within {
    /// A `limits` or `requests` map, or one of its values: quantities.
    Quantities,
    /// Anything else.
    Other,
}

fn subset(desired: &Value, observed: &Value, within: Within) -> bool {
    match (desired, observed) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, dv)| {
            if dv.is_null() {
                return true;
            }
            let Some(ov) = o.get(k) else {
                return false;
            };
            match (k.as_str(), dv, ov) {
                ("ownerReferences", Value::Array(d), Value::Array(o)) => owners_subset(d, o),
                (key, _, _) if QUANTITY_MAPS.contains(&key) => subset(dv, ov, Within::Quantities),
                // The values of a quantity map are quantities.
                _ => subset(dv, ov, within),
            }
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len()
                && d.iter()
                    .zip(o)
                    .all(|(dv, ov)| subset(dv, ov, Within::Other))
        }
        (Value::Number(d), Value::Number(o)) => d == o || d.as_f64() == o.as_f64(),
        (Value::String(d), Value::String(o)) if within == Within::Quantities => {
            d == o || same_quantity(d, o)
        }
        (d, o) => d == o,
    }
}

/// Whether two quantity strings have the same value (`1024Mi` and `1Gi`); `false` when either
/// does not parse. `kube_quantity` compares within one format (binary or decimal suffixes);
/// across formats (`1073741824` and `1Gi`) the values are compared as numbers.
fn same_quantity(a: &str, b: &str) -> bool {
    match (ParsedQuantity::try_from(a), ParsedQuantity::try_from(b)) {
        (Ok(a), Ok(b)) => {
            a == b
                || a.to_bytes_f64()
                    .is_some_and(|x| Some(x) == b.to_bytes_f64())
        }
        _ => false,
    }
}

/// Whether each desired owner reference is among the observed ones (matched by `uid`, as
/// server-side apply merges them) with the same fields.
fn owners_subset(desired: &[Value], observed: &[Value]) -> bool {
    desired.iter().all(|d| {
        observed
            .iter()
            .find(|o| o.get("uid") == d.get("uid"))
            .is_some_and(|o| subset(d, o, Within::Other))
    })
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

    #[test]
    fn quantities_the_api_server_rewrote_are_the_same_but_a_changed_one_is_drift() {
        let desired = json!({"resources": {
            "limits": {"memory": "1024Mi", "cpu": "0.5"},
            "requests": {"memory": "1073741824", "cpu": "1000m", "ephemeral-storage": "2G"}
        }});
        let normalised = json!({"resources": {
            "limits": {"memory": "1Gi", "cpu": "500m"},
            "requests": {"memory": "1Gi", "cpu": "1", "ephemeral-storage": "2G"}
        }});
        assert!(is_subset(&desired, &normalised));
        let changed = json!({"resources": {
            "limits": {"memory": "1Gi", "cpu": "600m"},
            "requests": {"memory": "1Gi", "cpu": "1", "ephemeral-storage": "2G"}
        }});
        assert!(!is_subset(&desired, &changed));
        // Only quantities compare by value: other strings stay exact.
        assert!(!is_subset(
            &json!({"image": "r:3.10"}),
            &json!({"image": "r:3.1"})
        ));
        assert!(!is_subset(
            &json!({"labels": {"v": "0.5"}}),
            &json!({"labels": {"v": "500m"}})
        ));
    }

    #[test]
    fn another_owner_reference_beside_ours_is_not_drift_but_ours_changed_or_gone_is() {
        let ours =
            json!({"uid": "u1", "kind": "SwappoMessaging", "name": "dev", "controller": true});
        let theirs = json!({"uid": "u2", "kind": "Other", "name": "x"});
        let desired = json!({"metadata": {"ownerReferences": [ours.clone()]}});
        assert!(is_subset(
            &desired,
            &json!({"metadata": {"ownerReferences": [theirs.clone(), ours.clone()]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"metadata": {"ownerReferences": [theirs]}})
        ));
        let mut changed = ours;
        changed["controller"] = json!(false);
        assert!(!is_subset(
            &desired,
            &json!({"metadata": {"ownerReferences": [changed]}})
        ));
    }
}
