//! The apimachinery rules an API server checks in code, beyond any schema:
//! object names (DNS subdomain; a DNS-1035 label for Services), label keys
//! and values (63 characters, alphanumerics with `-`, `_`, `.` inside),
//! annotation keys and their total size, and in Pods the container, port
//! and host names.
//!
//! Invariant: each refusal names the field and the rule, as the API
//! server's `Invalid` status does.

use regex::Regex;
use serde_json::Value;
use std::sync::OnceLock;

const DNS_LABEL_MAX: usize = 63;
const DNS_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;
const ANNOTATIONS_BYTES_MAX: usize = 256 * 1024;
const PORT_NAME_MAX: usize = 15;

fn pattern(cell: &'static OnceLock<Regex>, text: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(text).unwrap_or_else(|e| panic!("{text}: {e}")))
}

fn dns_label(value: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    value.len() <= DNS_LABEL_MAX && pattern(&RE, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").is_match(value)
}

fn dns_1035_label(value: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    value.len() <= DNS_LABEL_MAX && pattern(&RE, r"^[a-z]([-a-z0-9]*[a-z0-9])?$").is_match(value)
}

fn dns_subdomain(value: &str) -> bool {
    value.len() <= DNS_SUBDOMAIN_MAX && !value.is_empty() && value.split('.').all(dns_label)
}

/// A label value: empty, or up to 63 alphanumerics and `-_.` inside.
fn label_value(value: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    value.len() <= LABEL_VALUE_MAX
        && pattern(&RE, r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").is_match(value)
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(dns_subdomain) && !name.is_empty() && label_value(name)
}

/// An IANA service name, as container and Service port names must be.
fn port_name(value: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    value.len() <= PORT_NAME_MAX
        && pattern(&RE, r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$").is_match(value)
        && !value.contains("--")
        && value.chars().any(|c| c.is_ascii_lowercase())
}

/// Why the API server would refuse `object` of `kind` on these rules.
pub fn check(kind: &str, object: &Value) -> Result<(), String> {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let name_fits = match kind {
        "Service" | "Namespace" => {
            if kind == "Service" {
                dns_1035_label(name)
            } else {
                dns_label(name)
            }
        }
        _ => dns_subdomain(name),
    };
    if !name_fits {
        return Err(format!(
            "metadata.name '{name}' is not a valid name for a {kind}"
        ));
    }
    for (key, value) in meta["labels"].as_object().into_iter().flatten() {
        if !qualified_name(key) {
            return Err(format!(
                "metadata.labels: key '{key}' is not a qualified name"
            ));
        }
        let value = value.as_str().unwrap_or_default();
        if !label_value(value) {
            return Err(format!(
                "metadata.labels.{key}: '{value}' is not a valid label value (at most 63 alphanumerics, '-', '_' or '.' inside)"
            ));
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in meta["annotations"].as_object().into_iter().flatten() {
        if !qualified_name(key) {
            return Err(format!(
                "metadata.annotations: key '{key}' is not a qualified name"
            ));
        }
        annotation_bytes += key.len() + value.as_str().map_or(0, str::len);
    }
    if annotation_bytes > ANNOTATIONS_BYTES_MAX {
        return Err(format!(
            "metadata.annotations: {annotation_bytes} bytes, over the limit of {ANNOTATIONS_BYTES_MAX}"
        ));
    }
    match kind {
        "Pod" => pod(&object["spec"]),
        "Service" => ports(&object["spec"]["ports"], "spec.ports", false),
        _ => Ok(()),
    }
}

fn pod(spec: &Value) -> Result<(), String> {
    for field in ["hostname", "subdomain"] {
        if let Some(value) = spec[field].as_str() {
            if !dns_label(value) {
                return Err(format!("spec.{field}: '{value}' is not a DNS label"));
            }
        }
    }
    for list in ["initContainers", "containers"] {
        for (index, container) in spec[list].as_array().into_iter().flatten().enumerate() {
            let name = container["name"].as_str().unwrap_or_default();
            if !dns_label(name) {
                return Err(format!(
                    "spec.{list}[{index}].name: '{name}' is not a DNS label"
                ));
            }
            ports(
                &container["ports"],
                &format!("spec.{list}[{index}].ports"),
                true,
            )?;
        }
    }
    Ok(())
}

fn ports(ports: &Value, at: &str, container: bool) -> Result<(), String> {
    for (index, port) in ports.as_array().into_iter().flatten().enumerate() {
        if let Some(name) = port["name"].as_str() {
            let fits = if container {
                port_name(name)
            } else {
                dns_label(name)
            };
            if !fits {
                return Err(format!(
                    "{at}[{index}].name: '{name}' is not a valid port name"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_labels_follow_apimachinery() {
        assert!(label_value("") && label_value("a.b-c_d") && !label_value("-a"));
        assert!(!label_value(&"x".repeat(64)) && label_value(&"x".repeat(63)));
        assert!(qualified_name("scheduling.run.ai/queue") && !qualified_name("a/b/c"));
        assert!(port_name("http") && !port_name("8080") && !port_name("a--b"));
        let pod = |labels: Value| {
            json!({"metadata": {"name": "wf-1-a", "labels": labels},
                   "spec": {"containers": [{"name": "main"}]}})
        };
        assert_eq!(check("Pod", &pod(json!({"app": "ok"}))), Ok(()));
        let long = check("Pod", &pod(json!({"app": "x".repeat(64)}))).unwrap_err();
        assert!(long.contains("metadata.labels.app"), "{long}");
        assert!(check("Service", &json!({"metadata": {"name": "1svc"}})).is_err());
    }
}
