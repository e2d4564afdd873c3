//! Fuzz target: request body decoding for every resource and media type, as the create and
//! update handlers run it. Run with `cargo +nightly fuzz run decode_request` from the repo root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pier_api::resources::RESOURCES;
use pier_apiserver::handlers::decode_object_body;
use pier_apiserver::request::ResourceRequest;

const CONTENT_TYPES: &[&str] = &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "text/plain"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let resource = &RESOURCES[usize::from(selector) % RESOURCES.len()];
    let content_type = CONTENT_TYPES[usize::from(selector / 16) % CONTENT_TYPES.len()];
    let rr = ResourceRequest {
        resource,
        namespace: resource.namespaced.then(|| "default".to_string()),
        name: None,
        subresource: None,
    };
    for strict in [true, false] {
        if let Err(e) = decode_object_body(&rr, content_type, body, strict) {
            // Every refusal must be a client error with a Status body.
            assert!((400..500).contains(&e.code), "{} {}", e.code, e.message);
            assert!(e.status()["kind"] == "Status");
        }
    }
});
