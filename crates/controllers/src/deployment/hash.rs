//! The `pod-template-hash`: upstream's `controller.ComputeHash` — FNV-32a over the printed pod
//! template, then the collision count as 8 little-endian bytes (a `uint32` in an 8-byte
//! buffer), the decimal value rendered with `rand.SafeEncodeString` (each digit mapped into
//! `bcdfghjklmnpqrstvwxz2456789`, so hashes look like `79c4f99955`).
//!
//! The printed form differs: upstream hashes `spew`'s dump of the Go struct, which no other
//! language can reproduce; here it is the template's canonical JSON (keys sorted, nulls and
//! empty collections dropped). The hash is stable for a template and changes when it changes,
//! which is what the controller needs, but it is not the value a kube-controller-manager
//! would compute for the same template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::objects;

/// `apps.DefaultDeploymentUniqueLabelKey`.
pub const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.chars().map(|c| SAFE_ALPHABET[(c as usize) % SAFE_ALPHABET.len()] as char).collect()
}

/// FNV-1a, 32 bits.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `ComputeHash(template, collisionCount)`.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut printed = String::new();
    canonical(&objects::normalized(&objects::to_value(template)), &mut printed);
    let mut bytes = printed.into_bytes();
    if let Some(c) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(c as u32).to_le_bytes());
        bytes.extend_from_slice(&buf);
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// `EqualIgnoreHash`: templates equal apart from the `pod-template-hash` label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(LABEL_POD_TEMPLATE_HASH);
        }
        t
    };
    objects::semantic_eq(&strip(a), &strip(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_maps_digits_like_upstream() {
        // '0'..'9' are 48..57; 48 % 27 = 21 -> '4', ..., 54 % 27 = 0 -> 'b'.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn hash_is_stable_and_sensitive_to_template_and_collisions() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("run".to_string(), "httpd".to_string())].into()),
                ..ObjectMeta::default()
            }),
            spec: None,
        };
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t.clone(), None));
        assert!(h.chars().all(|c| "456789bcdf".contains(c)), "{h}");
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        let mut other = t.clone();
        if let Some(m) = other.metadata.as_mut() {
            m.labels = Some([("run".to_string(), "nginx".to_string())].into());
        }
        assert_ne!(h, pod_template_hash(&other, None));
        // The hash label itself does not count as a template change.
        let mut labelled = t.clone();
        if let Some(l) = labelled.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(LABEL_POD_TEMPLATE_HASH.into(), h.clone());
        }
        assert!(equal_ignore_hash(&t, &labelled));
        assert!(!equal_ignore_hash(&t, &other));
    }
}
