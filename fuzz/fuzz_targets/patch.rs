//! Fuzz target: the patch engine (strategic merge, JSON merge, JSON patch, apply) on
//! arbitrary patch bodies against a realistic Service. Run with
//! `cargo +nightly fuzz run patch` from the repo root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pier_api::patch;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let base = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubia", "namespace": "default", "labels": {"app": "kubia"}},
        "spec": {"selector": {"app": "kubia"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    });
    let _ = match selector % 4 {
        0 => patch::strategic_merge_patch("Service", &base, body).map(|_| ()),
        1 => patch::merge_patch(&base, body).map(|_| ()),
        2 => patch::json_patch(&base, body).map(|_| ()),
        _ => patch::parse_apply_body(body).map(|v| {
            let _ = patch::server_side_apply("Service", Some(&base), &v, "fuzz", false, Default::default());
        }),
    };
});
