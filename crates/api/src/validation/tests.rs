//! Table-driven tests with the exact messages upstream v1.32 produces for the same input.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Defaults then validates a new object, returning the messages.
fn create(kind: &str, mut obj: Value) -> Vec<String> {
    default_object(kind, &mut obj);
    validate_create(kind, &obj).iter().map(FieldError::message).collect()
}

/// Defaults and prepares an update, then validates it.
fn update(kind: &str, old: Value, mut new: Value) -> Vec<String> {
    let mut old = old;
    default_object(kind, &mut old);
    default_object(kind, &mut new);
    prepare_update(kind, &mut new, &old);
    validate_update(kind, &new, &old).iter().map(FieldError::message).collect()
}

fn defaulted(kind: &str, mut obj: Value) -> Value {
    default_object(kind, &mut obj);
    obj
}

fn svc(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn port80() -> Value {
    json!([{"port": 80}])
}

/// Asserts a table of (object, expected messages) for one kind.
fn check_create(kind: &str, cases: Vec<(Value, Vec<&str>)>) {
    for (i, (obj, want)) in cases.into_iter().enumerate() {
        let got = create(kind, obj.clone());
        let want: Vec<String> = want.into_iter().map(str::to_string).collect();
        assert_eq!(got, want, "case {i}: {obj}");
    }
}

// ---------------------------------------------------------------------------------------------
// Names and formatting

#[test]
fn name_validators_return_upstream_messages() {
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (dns1035_label("Customer-api-service"), vec![DNS1035_MSG.into()]),
        (dns1035_label("1abc"), vec![DNS1035_MSG.into()]),
        (dns1035_label(&"a".repeat(64)), vec!["must be no more than 63 characters".into()]),
        (dns1035_label("my-name"), vec![]),
        (dns1123_label("a.b"), vec!["must not contain dots".into()]),
        (dns1123_label("Abc"), vec![DNS1123_LABEL_MSG.into()]),
        (dns1123_label("123-abc"), vec![]),
        (dns1123_subdomain("Foo"), vec![DNS1123_SUBDOMAIN_MSG.into()]),
        (dns1123_subdomain("a..b"), vec![DNS1123_SUBDOMAIN_MSG.into()]),
        (dns1123_subdomain("example.com"), vec![]),
        (qualified_name("app"), vec![]),
        (qualified_name("example.com/MyName"), vec![]),
        (qualified_name("-a"), vec![QUALIFIED_NAME_PART_MSG.into()]),
        (qualified_name("/a"), vec!["prefix part must be non-empty".into()]),
        (qualified_name("Foo/a"), vec![format!("prefix part {DNS1123_SUBDOMAIN_MSG}")]),
        (qualified_name("a/"), vec!["name part must be non-empty".into(), QUALIFIED_NAME_PART_MSG.into()]),
        (
            qualified_name("a/b/c"),
            vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into()],
        ),
        (label_value(""), vec![]),
        (label_value("-x"), vec![LABEL_VALUE_MSG.into()]),
        (label_value(&"x".repeat(64)), vec!["must be no more than 63 characters".into()]),
        (iana_svc_name("http"), vec![]),
        (iana_svc_name("8080"), vec!["must contain at least one letter (a-z)".into()]),
        (iana_svc_name("my--port"), vec!["must not contain consecutive hyphens".into()]),
        (iana_svc_name("-abc"), vec!["must not begin or end with a hyphen".into()]),
        (iana_svc_name("abcdefghijklmnop"), vec!["must be no more than 15 characters".into()]),
        (
            iana_svc_name("HTTP"),
            vec!["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(), "must contain at least one letter (a-z)".into()],
        ),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn field_error_formatting_matches_field_errors_go() {
    let cases = vec![
        (
            FieldError::invalid("spec.ports[0].port", "0", "must be between 1 and 65535, inclusive"),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "FieldValueInvalid",
        ),
        (FieldError::required("spec.ports[1].name", ""), "spec.ports[1].name: Required value", "FieldValueRequired"),
        (
            FieldError::required("metadata.name", "name or generateName is required"),
            "metadata.name: Required value: name or generateName is required",
            "FieldValueRequired",
        ),
        (
            FieldError::duplicate("spec.ports[1].name", go_quote("http")),
            "spec.ports[1].name: Duplicate value: \"http\"",
            "FieldValueDuplicate",
        ),
        (
            FieldError::not_supported("spec.type", go_quote("Foo"), &["ClusterIP", "NodePort"]),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\"",
            "FieldValueNotSupported",
        ),
        (FieldError::forbidden("spec.x", "nope"), "spec.x: Forbidden: nope", "FieldValueForbidden"),
        (FieldError::too_long("", 1048576), ": Too long: must have at most 1048576 bytes", "FieldValueTooLong"),
        (
            FieldError::too_many("endpoints", 1001, 1000),
            "endpoints: Too many: 1001: must have at most 1000 items",
            "FieldValueTooMany",
        ),
        (
            FieldError::not_found("spec.containers[0].volumeMounts[0].name", go_quote("data")),
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
            "FieldValueNotFound",
        ),
        (FieldError::internal("spec", "boom"), "spec: Internal error: boom", "InternalError"),
    ];
    for (e, msg, reason) in cases {
        assert_eq!(e.message(), msg);
        assert_eq!(e.reason(), reason);
        assert_eq!(format!("{}: {}", e.field, e.cause_message()), msg);
    }
    assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
}

#[test]
fn invalid_message_aggregates_like_new_invalid() {
    let one = vec![FieldError::required("spec.ports", "")];
    assert_eq!(invalid_message("Service", "web", &one), "Service \"web\" is invalid: spec.ports: Required value");
    let dup = vec![FieldError::required("spec.ports", ""), FieldError::required("spec.ports", "")];
    assert_eq!(invalid_message("Service", "web", &dup), "Service \"web\" is invalid: spec.ports: Required value");
    let two = vec![FieldError::required("spec.ports[0].name", ""), FieldError::required("spec.ports[1].name", "")];
    assert_eq!(
        invalid_message("Service", "web", &two),
        "Service \"web\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value]"
    );
    assert_eq!(
        invalid_message("Deployment", "d", &one),
        "Deployment.apps \"d\" is invalid: spec.ports: Required value"
    );
    assert_eq!(invalid_message("Ingress", "i", &[]), "Ingress.networking.k8s.io \"i\" is invalid");
    assert_eq!(
        invalid_message("EndpointSlice", "e", &one),
        "EndpointSlice.discovery.k8s.io \"e\" is invalid: spec.ports: Required value"
    );
}

// ---------------------------------------------------------------------------------------------
// Metadata

#[test]
fn object_meta_rules() {
    check_create(
        "ConfigMap",
        vec![
            (
                json!({"metadata": {"namespace": "default"}}),
                vec!["metadata.name: Required value: name or generateName is required"],
            ),
            (json!({"metadata": {"name": "cm"}}), vec!["metadata.namespace: Required value"]),
            (
                json!({"metadata": {"name": "Cm", "namespace": "default"}}),
                vec![&format!("metadata.name: Invalid value: \"Cm\": {DNS1123_SUBDOMAIN_MSG}")],
            ),
            (
                json!({"metadata": {"name": "cm", "namespace": "Default"}}),
                vec![&format!("metadata.namespace: Invalid value: \"Default\": {DNS1123_LABEL_MSG}")],
            ),
            (
                json!({"metadata": {"name": "cm", "namespace": "default", "labels": {"-bad": "ok", "good": "-bad"}}}),
                vec![
                    &format!("metadata.labels: Invalid value: \"-bad\": {QUALIFIED_NAME_PART_MSG}"),
                    &format!("metadata.labels: Invalid value: \"-bad\": {LABEL_VALUE_MSG}"),
                ],
            ),
            (
                json!({"metadata": {"name": "cm", "namespace": "default", "annotations": {"Example.com/Key": "v", "a b": "v"}}}),
                vec![&format!("metadata.annotations: Invalid value: \"a b\": {QUALIFIED_NAME_PART_MSG}")],
            ),
            (
                json!({"metadata": {"name": "cm", "namespace": "default", "finalizers": ["custom"]}}),
                vec![
                    "metadata.finalizers[0]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
                ],
            ),
            (
                json!({"metadata": {"generateName": "Web-", "namespace": "default"}}),
                vec![
                    &format!("metadata.generateName: Invalid value: \"Web-\": {DNS1123_SUBDOMAIN_MSG}"),
                    "metadata.name: Required value: name or generateName is required",
                ],
            ),
        ],
    );
}

#[test]
fn metadata_update_immutability() {
    let old = json!({"metadata": {"name": "cm", "namespace": "default", "uid": "1"}});
    let new = json!({"metadata": {"name": "cm2", "namespace": "default", "uid": "2"}});
    assert_eq!(
        update("ConfigMap", old, new),
        vec![
            "metadata.name: Invalid value: \"cm2\": field is immutable",
            "metadata.uid: Invalid value: \"2\": field is immutable",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Service defaults

#[test]
fn service_defaults_cluster_ip() {
    let got = defaulted("Service", svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})));
    assert_eq!(
        got["spec"],
        json!({
            "selector": {"app": "web"},
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
            "sessionAffinity": "None",
            "type": "ClusterIP",
            "internalTrafficPolicy": "Cluster",
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv4"]
        })
    );
}

#[test]
fn service_defaults_by_type() {
    let lb = defaulted("Service", svc(json!({"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": "http"}]})));
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], "http");

    let ext = defaulted("Service", svc(json!({"type": "ExternalName", "externalName": "example.com"})));
    assert_eq!(ext["spec"], json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"}));

    let ips = defaulted("Service", svc(json!({"ports": port80(), "externalIPs": ["1.2.3.4"]})));
    assert_eq!(ips["spec"]["externalTrafficPolicy"], "Cluster");

    let affinity = defaulted("Service", svc(json!({"ports": port80(), "sessionAffinity": "ClientIP"})));
    assert_eq!(affinity["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));

    let none = defaulted(
        "Service",
        svc(json!({"ports": port80(), "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}})),
    );
    assert!(none["spec"].get("sessionAffinityConfig").is_none());

    let singular = defaulted("Service", svc(json!({"ports": port80(), "clusterIP": "10.0.0.5"})));
    assert_eq!(singular["spec"]["clusterIPs"], json!(["10.0.0.5"]));

    let headless = defaulted("Service", svc(json!({"clusterIP": "None", "selector": {"a": "b"}})));
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4"]));
    let selectorless = defaulted("Service", svc(json!({"clusterIP": "None"})));
    assert_eq!(selectorless["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(selectorless["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));

    let mut with_status = svc(json!({"type": "LoadBalancer", "ports": port80()}));
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}]}});
    let with_status = defaulted("Service", with_status);
    assert_eq!(
        with_status["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "1.2.3.4", "ipMode": "VIP"}, {"hostname": "lb.example.com"}])
    );
}

#[test]
fn default_object_is_idempotent() {
    for (kind, obj) in [
        ("Service", svc(json!({"type": "NodePort", "ports": [{"port": 80}]}))),
        (
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx", "readinessProbe": {"httpGet": {"port": 80}}}]}}),
        ),
        (
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        ),
        ("Namespace", json!({"metadata": {"name": "ns"}})),
        ("Secret", json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}})),
    ] {
        let once = defaulted(kind, obj);
        let twice = defaulted(kind, once.clone());
        assert_eq!(once, twice, "{kind}");
    }
}

// ---------------------------------------------------------------------------------------------
// Service validation

#[test]
fn service_seed_cases() {
    check_create(
        "Service",
        vec![
            // A quoted "8080" is a port name, and names need a letter.
            (
                svc(json!({"ports": [{"port": 80, "targetPort": "8080"}]})),
                vec!["spec.ports[0].targetPort: Invalid value: \"8080\": must contain at least one letter (a-z)"],
            ),
            (
                json!({"metadata": {"name": "Customer-api-service", "namespace": "default"}, "spec": {"ports": port80()}}),
                vec![&format!("metadata.name: Invalid value: \"Customer-api-service\": {DNS1035_MSG}")],
            ),
            (
                svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
                vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
            ),
            (
                svc(
                    json!({"ports": port80(), "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
                ),
                vec![
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400",
                ],
            ),
            (
                svc(
                    json!({"ports": port80(), "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}}),
                ),
                vec![
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400",
                ],
            ),
            // Every unnamed port of a multi-port Service is reported, not only the second.
            (
                svc(json!({"ports": [{"port": 80}, {"port": 443}]})),
                vec!["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"],
            ),
            (
                svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
                vec![
                    "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
                ],
            ),
            (
                svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})),
                vec!["spec.ports[1].name: Duplicate value: \"a\""],
            ),
        ],
    );
}

/// What `kubectl create svc clusterip two-ports --tcp 80:80,443,443` sends, and the message a
/// real v1.3x API server returned for it.
#[test]
fn service_duplicate_ports_match_a_real_transcript() {
    let mut obj = json!({"metadata": {"name": "two-ports", "namespace": "default"}, "spec": {"selector": {"app": "two-ports"}, "ports": [
        {"name": "80-80", "port": 80, "targetPort": 80},
        {"name": "443", "port": 443, "targetPort": 443},
        {"name": "443", "port": 443, "targetPort": 443}
    ]}});
    default_object("Service", &mut obj);
    let errs = validate_create("Service", &obj);
    assert_eq!(
        invalid_message("Service", "two-ports", &errs),
        "Service \"two-ports\" is invalid: [spec.ports[2].name: Duplicate value: \"443\", spec.ports[2]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:443, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}]"
    );
    assert_eq!(errs[1].reason(), "FieldValueDuplicate");
    assert_eq!(errs[1].field, "spec.ports[2]");
}

#[test]
fn service_port_rules() {
    check_create(
        "Service",
        vec![
            (svc(json!({"selector": {"a": "b"}})), vec!["spec.ports: Required value"]),
            (svc(json!({"clusterIP": "None"})), vec![]),
            (
                svc(json!({"ports": [{"port": 0}]})),
                vec![
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                svc(json!({"ports": [{"port": 80, "targetPort": 70000}]})),
                vec!["spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"],
            ),
            (
                svc(json!({"ports": [{"port": 80, "protocol": "HTTP"}]})),
                vec![
                    "spec.ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (
                svc(json!({"ports": [{"name": "Web", "port": 80}]})),
                vec![&format!("spec.ports[0].name: Invalid value: \"Web\": {DNS1123_LABEL_MSG}")],
            ),
            (
                svc(json!({"ports": [{"port": 80, "appProtocol": "-h2c"}]})),
                vec![&format!("spec.ports[0].appProtocol: Invalid value: \"-h2c\": {QUALIFIED_NAME_PART_MSG}")],
            ),
            (
                svc(
                    json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}]}),
                ),
                vec![],
            ),
            (
                svc(
                    json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30001}, {"name": "b", "port": 81, "nodePort": 30001}]}),
                ),
                vec!["spec.ports[1].nodePort: Duplicate value: 30001"],
            ),
            (
                svc(json!({"type": "LoadBalancer", "ports": [{"port": 10250}]})),
                vec![
                    "spec.ports[0]: Invalid value: 10250: may not expose port 10250 externally since it is used by kubelet",
                ],
            ),
        ],
    );
}

#[test]
fn service_type_and_affinity_rules() {
    check_create(
        "Service",
        vec![
            (
                svc(json!({"type": "Foo", "ports": port80()})),
                vec![
                    "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                ],
            ),
            (
                svc(json!({"ports": port80(), "sessionAffinity": "Sticky"})),
                vec!["spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""],
            ),
            (
                svc(json!({"ports": port80(), "selector": {"app": "-x"}})),
                vec![&format!("spec.selector: Invalid value: \"-x\": {LABEL_VALUE_MSG}")],
            ),
            (
                svc(json!({"type": "NodePort", "clusterIP": "None", "ports": port80()})),
                vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"],
            ),
            (
                svc(json!({"type": "LoadBalancer", "clusterIP": "None", "ports": port80()})),
                vec!["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"],
            ),
            (
                json!({"metadata": {"name": "web", "namespace": "default", "annotations": {
                    "service.kubernetes.io/topology-mode": "Auto", "service.kubernetes.io/topology-aware-hints": "Disabled"}},
                    "spec": {"ports": port80()}}),
                vec![
                    "metadata.annotations[service.kubernetes.io/topology-mode]: Invalid value: \"Auto\": must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
                ],
            ),
        ],
    );
}

#[test]
fn service_external_name_rules() {
    check_create(
        "Service",
        vec![
            (svc(json!({"type": "ExternalName", "externalName": "db.example.com."})), vec![]),
            (svc(json!({"type": "ExternalName"})), vec!["spec.externalName: Required value"]),
            (
                svc(json!({"type": "ExternalName", "externalName": "DB.example.com"})),
                vec![&format!("spec.externalName: Invalid value: \"DB.example.com\": {DNS1123_SUBDOMAIN_MSG}")],
            ),
            (
                svc(json!({"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "10.0.0.1"})),
                vec!["spec.clusterIPs: Forbidden: may not be set for ExternalName services"],
            ),
            (
                svc(
                    json!({"type": "ExternalName", "externalName": "db.example.com", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}),
                ),
                vec![
                    "spec.ipFamilies: Forbidden: may not be set for ExternalName services",
                    "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
                ],
            ),
        ],
    );
}

#[test]
fn service_cluster_ip_rules() {
    check_create(
        "Service",
        vec![
            (svc(json!({"ports": port80(), "clusterIP": "10.0.0.5"})), vec![]),
            // Allocation runs first upstream and returns its errors alone: no name error here.
            (
                json!({"metadata": {"name": "Bad", "namespace": "default"}, "spec": {"ports": port80(), "clusterIP": "abc"}}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"abc\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ],
            ),
            (
                svc(json!({"ports": port80(), "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"]})),
                vec!["spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: first value must match `clusterIP`"],
            ),
            (
                svc(json!({"ports": port80(), "clusterIPs": ["10.0.0.2"]})),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: must be empty when `clusterIP` is not specified",
                ],
            ),
            (
                svc(json!({"ports": port80(), "clusterIP": "None", "clusterIPs": ["None", "10.0.0.1"]})),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"None\", \"10.0.0.1\"}: 'None' must be the first and only value",
                ],
            ),
            (
                svc(
                    json!({"ports": port80(), "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "10.0.0.2"], "ipFamilyPolicy": "PreferDualStack"}),
                ),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\", \"10.0.0.2\"}: may specify no more than one IP for each IP family",
                ],
            ),
            (
                svc(
                    json!({"ports": port80(), "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1", "10.0.0.3"]}),
                ),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\", \"fd00::1\", \"10.0.0.3\"}: may only hold up to 2 values",
                ],
            ),
            (
                svc(json!({"ports": port80(), "clusterIP": "10.0.0.5", "ipFamilies": ["IPv6"]})),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"10.0.0.5\": expected an IPv6 value as indicated by `ipFamilies[0]`",
                ],
            ),
            (
                svc(json!({"ports": port80(), "ipFamilyPolicy": "RequireDualStack"})),
                vec![
                    "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
                ],
            ),
            (svc(json!({"ports": port80(), "ipFamilyPolicy": "PreferDualStack"})), vec![]),
            (
                svc(json!({"ports": port80(), "ipFamilies": ["IPv6"]})),
                vec!["spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"],
            ),
            (
                svc(json!({"ports": port80(), "clusterIP": "fd00::5"})),
                vec![
                    "spec.clusterIPs[0]: Invalid value: []string{\"fd00::5\"}: IPv6 is not configured on this cluster",
                ],
            ),
            (
                svc(json!({"ports": port80(), "ipFamilyPolicy": "Both"})),
                vec![
                    "spec.ipFamilyPolicy: Unsupported value: \"Both\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
                ],
            ),
            (
                svc(json!({"ports": port80(), "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv4"]})),
                vec!["spec.ipFamilies[1]: Duplicate value: \"IPv4\""],
            ),
            (
                svc(json!({"ports": port80(), "ipFamilies": ["IPv5"]})),
                vec!["spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\""],
            ),
        ],
    );
}

#[test]
fn service_external_ip_rules() {
    let cases = [
        ("1.2.3.4", None),
        ("foo", Some("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
        ("0.0.0.0", Some("may not be unspecified (0.0.0.0)")),
        ("::", Some("may not be unspecified (::)")),
        ("127.0.0.1", Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")),
        ("::1", Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")),
        ("169.254.169.254", Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")),
        ("fe80::1", Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")),
        ("224.0.0.1", Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")),
        ("ff02::1", Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")),
    ];
    for (ip, want) in cases {
        let got = create("Service", svc(json!({"ports": port80(), "externalIPs": [ip]})));
        let want: Vec<String> =
            want.map(|m| format!("spec.externalIPs[0]: Invalid value: \"{ip}\": {m}")).into_iter().collect();
        assert_eq!(got, want, "{ip}");
    }
}

#[test]
fn service_load_balancer_and_traffic_policy_rules() {
    check_create(
        "Service",
        vec![
            (
                svc(json!({"ports": port80(), "loadBalancerSourceRanges": ["10.0.0.0/8"]})),
                vec!["spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"],
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "ports": port80(), "loadBalancerSourceRanges": [" 10.0.0.0/8 ", "10.0.0.0"]}),
                ),
                vec![
                    "spec.LoadBalancerSourceRanges[1]: Invalid value: \"10.0.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ],
            ),
            (
                json!({"metadata": {"name": "web", "namespace": "default", "annotations": {"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8"}},
                    "spec": {"ports": port80()}}),
                vec![
                    "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]: Forbidden: may only be used when `type` is 'LoadBalancer'",
                ],
            ),
            (
                svc(json!({"ports": port80(), "allocateLoadBalancerNodePorts": true})),
                vec!["spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'"],
            ),
            (
                svc(json!({"ports": port80(), "loadBalancerClass": "example.com/lb"})),
                vec!["spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'"],
            ),
            (
                svc(json!({"type": "LoadBalancer", "ports": port80(), "loadBalancerClass": "-lb"})),
                vec![&format!("spec.loadBalancerClass: Invalid value: \"-lb\": {QUALIFIED_NAME_PART_MSG}")],
            ),
            (
                svc(json!({"ports": port80(), "externalTrafficPolicy": "Local"})),
                vec![
                    "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
                ],
            ),
            (
                svc(json!({"type": "NodePort", "ports": port80(), "externalTrafficPolicy": "Global"})),
                vec![
                    "spec.externalTrafficPolicy: Unsupported value: \"Global\": supported values: \"Cluster\", \"Local\"",
                ],
            ),
            (
                svc(json!({"type": "NodePort", "ports": port80(), "healthCheckNodePort": 30000})),
                vec![
                    "spec.healthCheckNodePort: Invalid value: 30000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
                ],
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "ports": port80(), "externalTrafficPolicy": "Local", "healthCheckNodePort": 30000}),
                ),
                vec![],
            ),
            (
                svc(json!({"ports": port80(), "internalTrafficPolicy": "Node"})),
                vec![
                    "spec.internalTrafficPolicy: Unsupported value: \"Node\": supported values: \"Cluster\", \"Local\"",
                ],
            ),
            (
                svc(json!({"ports": port80(), "trafficDistribution": "PreferSameZone"})),
                vec![
                    "spec.trafficDistribution: Unsupported value: \"PreferSameZone\": supported values: \"PreferClose\"",
                ],
            ),
            (svc(json!({"ports": port80(), "trafficDistribution": "PreferClose"})), vec![]),
        ],
    );
}

#[test]
fn service_required_fields_without_defaults() {
    // Validation alone (no defaulting) reports what defaulting would have filled.
    let raw = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 80}]}));
    let got: Vec<String> = validate_create("Service", &raw).iter().map(FieldError::message).collect();
    assert_eq!(
        got,
        vec![
            "spec.ports[0].protocol: Required value",
            "spec.sessionAffinity: Required value",
            "allocateLoadBalancerNodePorts: Required value",
            "spec.externalTrafficPolicy: Required value",
            "spec.internalTrafficPolicy: Required value",
        ]
    );
}

#[test]
fn service_rules_that_defaulting_normally_hides() {
    let msgs = |v: &Value| validate_create("Service", v).iter().map(FieldError::message).collect::<Vec<_>>();
    let base = |extra: Value| {
        let mut spec = json!({"type": "ClusterIP", "internalTrafficPolicy": "Cluster", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        svc(spec)
    };
    assert_eq!(
        msgs(&base(json!({"sessionAffinity": "ClientIP"}))),
        vec!["spec.sessionAffinityConfig: Required value: when session affinity type is ClientIP"]
    );
    assert_eq!(
        msgs(&base(json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {}}}))),
        vec![
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Required value: when session affinity type is ClientIP"
        ]
    );
    assert_eq!(
        msgs(&base(json!({"sessionAffinity": "None", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}))),
        vec!["spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None"]
    );
    // Unsetting the primary address (not reachable through prepare_update, which carries it over).
    let old = defaulted("Service", svc(json!({"ports": port80(), "clusterIP": "10.0.0.1"})));
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("");
    new["spec"]["clusterIPs"] = json!([]);
    assert_eq!(
        validate_update("Service", &new, &old).iter().map(FieldError::message).collect::<Vec<_>>(),
        vec!["spec.clusterIPs[0]: Invalid value: []string{}: primary clusterIP can not be unset"]
    );
}

#[test]
fn service_updates() {
    let base = || svc(json!({"ports": port80(), "clusterIP": "10.0.0.1"}));
    // Changing the allocated address.
    let mut changed = base();
    changed["spec"]["clusterIP"] = json!("10.0.0.2");
    assert_eq!(
        update("Service", base(), changed),
        vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set"]
    );
    // Omitting it keeps it.
    let mut old = defaulted("Service", base());
    let mut new = svc(json!({"ports": port80()}));
    default_object("Service", &mut new);
    default_object("Service", &mut old);
    prepare_update("Service", &mut new, &old);
    assert_eq!(new["spec"]["clusterIP"], "10.0.0.1");
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.0.0.1"]));
    assert!(validate_update("Service", &new, &old).is_empty());
}

#[test]
fn service_type_changes_clear_dependent_fields() {
    let node_port = defaulted(
        "Service",
        svc(json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "nodePort": 30080}]})),
    );
    // NodePort -> ClusterIP: node ports and the external traffic policy go.
    let mut to_cluster_ip = node_port.clone();
    to_cluster_ip["spec"]["type"] = json!("ClusterIP");
    prepare_update("Service", &mut to_cluster_ip, &node_port);
    assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    assert!(to_cluster_ip["spec"].get("externalTrafficPolicy").is_none());
    assert!(
        validate_update("Service", &to_cluster_ip, &node_port).is_empty(),
        "{:?}",
        validate_update("Service", &to_cluster_ip, &node_port)
    );

    // -> ExternalName: the cluster IPs and families go too.
    let mut to_external = node_port.clone();
    to_external["spec"]["type"] = json!("ExternalName");
    to_external["spec"]["externalName"] = json!("example.com");
    prepare_update("Service", &mut to_external, &node_port);
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "externalTrafficPolicy"] {
        assert!(to_external["spec"].get(field).is_none(), "{field}");
    }
    assert!(validate_update("Service", &to_external, &node_port).is_empty());

    // The port is carried over when a NodePort client omits it.
    let mut resubmit = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
    default_object("Service", &mut resubmit);
    prepare_update("Service", &mut resubmit, &node_port);
    assert_eq!(resubmit["spec"]["ports"][0]["nodePort"], 30080);

    // eTP Local -> Cluster on a LoadBalancer drops the health check port.
    let local = defaulted(
        "Service",
        svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
    );
    let mut cluster = local.clone();
    cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
    prepare_update("Service", &mut cluster, &local);
    assert!(cluster["spec"].get("healthCheckNodePort").is_none());

    // While Local, the health check port is immutable.
    let mut moved = local.clone();
    moved["spec"]["healthCheckNodePort"] = json!(31001);
    prepare_update("Service", &mut moved, &local);
    assert_eq!(
        validate_update("Service", &moved, &local).iter().map(FieldError::message).collect::<Vec<_>>(),
        vec!["spec.healthCheckNodePort: Forbidden: field is immutable"]
    );

    // The load balancer class may not change while the type stays LoadBalancer.
    let mut lb = local.clone();
    lb["spec"]["loadBalancerClass"] = json!("example.com/a");
    let mut lb2 = lb.clone();
    lb2["spec"]["loadBalancerClass"] = json!("example.com/b");
    prepare_update("Service", &mut lb2, &lb);
    assert_eq!(
        validate_update("Service", &lb2, &lb).iter().map(FieldError::message).collect::<Vec<_>>(),
        vec!["spec.loadBalancerClass: Invalid value: \"example.com/b\": may not change once set"]
    );
}

#[test]
fn service_status_rules() {
    let cluster_ip = defaulted("Service", svc(json!({"ports": port80()})));
    let mut with_ingress = cluster_ip.clone();
    with_ingress["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
    assert_eq!(
        validate_status("Service", &with_ingress, &cluster_ip).iter().map(FieldError::message).collect::<Vec<_>>(),
        vec!["status.loadBalancer.ingress: Forbidden: may only be used when `spec.type` is 'LoadBalancer'"]
    );

    let lb = defaulted("Service", svc(json!({"type": "LoadBalancer", "ports": port80()})));
    let cases = vec![
        (json!([{"ip": "1.2.3.4", "ipMode": "VIP"}, {"hostname": "lb.example.com"}]), vec![]),
        (
            json!([{"ip": "1.2.3.4"}]),
            vec!["status.loadBalancer.ingress[0].ipMode: Required value: must be specified when `ip` is set"],
        ),
        (
            json!([{"hostname": "lb.example.com", "ipMode": "VIP"}]),
            vec!["status.loadBalancer.ingress[0].ipMode: Forbidden: may not be specified when `ip` is not set"],
        ),
        (
            json!([{"ip": "1.2.3.4", "ipMode": "Direct"}]),
            vec![
                "status.loadBalancer.ingress[0].ipMode: Unsupported value: \"Direct\": supported values: \"Proxy\", \"VIP\"",
            ],
        ),
        (
            json!([{"ip": "1.2.3", "ipMode": "VIP"}]),
            vec![
                "status.loadBalancer.ingress[0].ip: Invalid value: \"1.2.3\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ],
        ),
        (
            json!([{"hostname": "1.2.3.4"}]),
            vec![
                "status.loadBalancer.ingress[0].hostname: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address",
            ],
        ),
    ];
    for (ingress, want) in cases {
        let mut new = lb.clone();
        new["status"] = json!({"loadBalancer": {"ingress": ingress}});
        let got: Vec<String> = validate_status("Service", &new, &lb).iter().map(FieldError::message).collect();
        assert_eq!(got, want, "{ingress}");
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints and EndpointSlices

fn endpoints(subsets: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": subsets})
}

#[test]
fn endpoints_rules() {
    assert_eq!(
        defaulted("Endpoints", endpoints(json!([{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}])))["subsets"]
            [0]["ports"][0]["protocol"],
        "TCP"
    );
    check_create(
        "Endpoints",
        vec![
            (endpoints(json!([{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}])), vec![]),
            (
                endpoints(json!([{"ports": [{"port": 80}]}])),
                vec!["subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`"],
            ),
            (
                endpoints(json!([{"addresses": [{"ip": "nope"}]}])),
                vec![
                    "subsets[0].addresses[0].ip: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    "subsets[0].addresses[0].ip: Invalid value: \"nope\": must be a valid IP address",
                ],
            ),
            (
                endpoints(json!([{"notReadyAddresses": [{"ip": "127.0.0.1", "hostname": "A"}]}])),
                vec![
                    &format!("subsets[0].notReadyAddresses[0].hostname: Invalid value: \"A\": {DNS1123_LABEL_MSG}"),
                    "subsets[0].notReadyAddresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
                ],
            ),
            (
                endpoints(
                    json!([{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}, {"name": "b", "port": 0, "protocol": "ICMP"}]}]),
                ),
                vec![
                    "subsets[0].ports[0].name: Required value",
                    "subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "subsets[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
        ],
    );
}

fn slice(address_type: Value, endpoints: Value, ports: Value) -> Value {
    json!({"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": address_type, "endpoints": endpoints, "ports": ports})
}

#[test]
fn endpoint_slice_rules() {
    let d = defaulted("EndpointSlice", slice(json!("IPv4"), json!([]), json!([{"port": 80}])));
    assert_eq!(d["ports"], json!([{"port": 80, "name": "", "protocol": "TCP"}]));
    check_create(
        "EndpointSlice",
        vec![
            (slice(json!("IPv4"), json!([{"addresses": ["10.1.0.1"]}]), json!([{"name": "http", "port": 80}])), vec![]),
            (slice(Value::Null, json!([]), json!([])), vec!["addressType: Required value"]),
            (
                slice(json!("IPv5"), json!([]), json!([])),
                vec!["addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""],
            ),
            (
                slice(json!("IPv4"), json!([{"addresses": []}, {"addresses": ["fd00::1", "127.0.0.1"]}]), json!([])),
                vec![
                    "endpoints[0].addresses: Required value: must contain at least 1 address",
                    "endpoints[1].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
                    "endpoints[1].addresses[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
                ],
            ),
            (
                slice(json!("FQDN"), json!([{"addresses": ["example.com", "localhost"]}]), json!([])),
                vec![
                    "endpoints[0].addresses[1]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots",
                ],
            ),
            (
                slice(
                    json!("IPv4"),
                    json!([]),
                    json!([{"port": 80}, {"port": 81}, {"name": "x", "port": 82, "protocol": "ICMP"}]),
                ),
                vec![
                    "ports[1].name: Duplicate value: \"\"",
                    "ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
        ],
    );
    let old = slice(json!("IPv4"), json!([]), json!([]));
    let new = slice(json!("IPv6"), json!([]), json!([]));
    assert_eq!(update("EndpointSlice", old, new), vec!["addressType: Invalid value: \"IPv6\": field is immutable"]);
}

// ---------------------------------------------------------------------------------------------
// Pods

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn ctr(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "nginx:1.27"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

#[test]
fn pod_defaults() {
    let got = defaulted(
        "Pod",
        pod(json!({"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": 80}}}]})),
    );
    assert_eq!(
        got["spec"],
        json!({
            "containers": [{
                "name": "app", "image": "nginx",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "imagePullPolicy": "Always",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "resources": {}
            }],
            "dnsPolicy": "ClusterFirst",
            "restartPolicy": "Always",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true
        })
    );
    let host_net = defaulted(
        "Pod",
        pod(json!({"hostNetwork": true, "containers": [ctr(json!({"ports": [{"containerPort": 8080}]}))]})),
    );
    assert_eq!(host_net["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    let vols = defaulted(
        "Pod",
        pod(
            json!({"containers": [ctr(json!({}))], "volumes": [{"name": "a"}, {"name": "b", "secret": {"secretName": "s"}}]}),
        ),
    );
    assert_eq!(
        vols["spec"]["volumes"],
        json!([{"name": "a", "emptyDir": {}}, {"name": "b", "secret": {"secretName": "s", "defaultMode": 420}}])
    );
}

#[test]
fn image_pull_policy_follows_the_tag() {
    for (image, want) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry.k8s.io/pause:3.10", "IfNotPresent"),
        ("localhost:5000/app", "Always"),
        ("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "IfNotPresent"),
        ("Nginx", "IfNotPresent"),
    ] {
        let p = defaulted("Pod", pod(json!({"containers": [{"name": "c", "image": image}]})));
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], want, "{image}");
    }
}

#[test]
fn pod_container_rules() {
    check_create(
        "Pod",
        vec![
            (pod(json!({"containers": [ctr(json!({}))]})), vec![]),
            (pod(json!({"containers": []})), vec!["spec.containers: Required value"]),
            (
                pod(json!({"containers": [{"name": "App", "image": ""}]})),
                vec![
                    &format!("spec.containers[0].name: Invalid value: \"App\": {DNS1123_LABEL_MSG}"),
                    "spec.containers[0].image: Required value",
                ],
            ),
            (
                pod(json!({"containers": [ctr(json!({})), ctr(json!({}))]})),
                vec!["spec.containers[1].name: Duplicate value: \"app\""],
            ),
            (
                pod(json!({"containers": [ctr(json!({"image": " nginx"}))]})),
                vec![
                    "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace",
                ],
            ),
            (
                pod(json!({"containers": [ctr(json!({"ports": [
                    {"name": "8080", "containerPort": 8080},
                    {"name": "http", "containerPort": 0},
                    {"name": "http", "containerPort": 70000, "protocol": "ICMP"}
                ]}))]})),
                vec![
                    "spec.containers[0].ports[0].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
                    "spec.containers[0].ports[1].containerPort: Required value",
                    "spec.containers[0].ports[2].name: Duplicate value: \"http\"",
                    "spec.containers[0].ports[2].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (
                pod(
                    json!({"containers": [ctr(json!({"ports": [{"containerPort": 80, "hostPort": 8080}]})), {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]}]}),
                ),
                vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//8080\""],
            ),
            (
                pod(json!({"containers": [ctr(json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}))]})),
                vec!["spec.containers[0].volumeMounts[0].name: Not found: \"data\""],
            ),
            (
                pod(
                    json!({"containers": [ctr(json!({"env": [{"name": "A=B", "value": "x"}, {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.foo"}}}, {"name": "Y", "valueFrom": {}}]}))]}),
                ),
                vec![
                    "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                    "spec.containers[0].env[2].valueFrom.fieldRef.fieldPath: Invalid value: \"spec.foo\": error converting fieldPath: field label not supported: spec.foo",
                    "spec.containers[0].env[3].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                ],
            ),
        ],
    );
}

#[test]
fn pod_probe_rules() {
    check_create(
        "Pod",
        vec![
            (
                pod(json!({"containers": [ctr(json!({"readinessProbe": {"periodSeconds": 5}}))]})),
                vec!["spec.containers[0].readinessProbe: Required value: must specify a handler type"],
            ),
            (
                pod(
                    json!({"containers": [ctr(json!({"livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}}))]}),
                ),
                vec!["spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"],
            ),
            (
                pod(
                    json!({"containers": [ctr(json!({"livenessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 2, "initialDelaySeconds": -1}}))]}),
                ),
                vec![
                    "spec.containers[0].livenessProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0",
                    "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                ],
            ),
            (
                pod(
                    json!({"containers": [ctr(json!({"readinessProbe": {"httpGet": {"port": "8080", "scheme": "FTP"}, "terminationGracePeriodSeconds": 5}}))]}),
                ),
                vec![
                    "spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"8080\": must contain at least one letter (a-z)",
                    "spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
                    "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes",
                ],
            ),
            (
                pod(json!({"containers": [ctr(json!({"startupProbe": {"grpc": {"port": 0}}}))]})),
                vec![
                    "spec.containers[0].startupProbe.grpc.port: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                pod(
                    json!({"initContainers": [{"name": "init", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}}], "containers": [ctr(json!({}))]}),
                ),
                vec![
                    "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                ],
            ),
            (
                pod(json!({"initContainers": [{"name": "app", "image": "busybox"}], "containers": [ctr(json!({}))]})),
                vec!["spec.initContainers[0].name: Duplicate value: \"app\""],
            ),
        ],
    );
}

#[test]
fn pod_spec_policy_rules() {
    check_create(
        "Pod",
        vec![
            (
                pod(json!({"restartPolicy": "Sometimes", "containers": [ctr(json!({}))]})),
                vec![
                    "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                ],
            ),
            (
                pod(json!({"dnsPolicy": "Custom", "containers": [ctr(json!({}))]})),
                vec![
                    "spec.dnsPolicy: Unsupported value: \"Custom\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
                ],
            ),
            (
                pod(json!({"dnsPolicy": "None", "containers": [ctr(json!({}))]})),
                vec!["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"],
            ),
            (
                pod(json!({"dnsPolicy": "None", "dnsConfig": {"searches": ["a.b"]}, "containers": [ctr(json!({}))]})),
                vec![
                    "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None",
                ],
            ),
            (
                pod(
                    json!({"dnsConfig": {"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9", "x"], "searches": ["Svc.local."], "options": [{"value": "1"}]}, "containers": [ctr(json!({}))]}),
                ),
                vec![
                    "spec.dnsConfig.nameservers: Invalid value: []string{\"1.1.1.1\", \"8.8.8.8\", \"9.9.9.9\", \"x\"}: must not have more than 3 nameservers",
                    "spec.dnsConfig.nameservers[3]: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    &format!("spec.dnsConfig.searches[0]: Invalid value: \"Svc.local\": {DNS1123_SUBDOMAIN_MSG}"),
                    "spec.dnsConfig.options[0]: Required value: must not be empty",
                ],
            ),
            (
                pod(json!({"hostname": "Web", "activeDeadlineSeconds": 0, "containers": [ctr(json!({}))]})),
                vec![
                    "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
                    &format!("spec.hostname: Invalid value: \"Web\": {DNS1123_LABEL_MSG}"),
                ],
            ),
            (
                pod(json!({"tolerations": [{"operator": "Equal", "value": "x"}], "containers": [ctr(json!({}))]})),
                vec![
                    "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                ],
            ),
            (
                pod(
                    json!({"ephemeralContainers": [{"name": "debug", "image": "busybox"}], "containers": [ctr(json!({}))]}),
                ),
                vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"],
            ),
            (
                pod(
                    json!({"volumes": [{"name": "a", "secret": {}, "configMap": {"name": "c"}}, {"name": "a", "emptyDir": {}}], "containers": [ctr(json!({}))]}),
                ),
                vec![
                    "spec.volumes[0].secret.secretName: Required value",
                    "spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type",
                ],
            ),
        ],
    );
}

#[test]
fn pod_updates() {
    let old = pod(json!({"containers": [ctr(json!({"ports": [{"containerPort": 80}]}))]}));
    let mut image = old.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    assert_eq!(update("Pod", old.clone(), image), Vec::<String>::new());

    let mut added = old.clone();
    added["spec"]["containers"] = json!([ctr(json!({})), {"name": "b", "image": "x"}]);
    assert_eq!(
        update("Pod", old.clone(), added),
        vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );

    let mut ports = old.clone();
    ports["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
    let got = update("Pod", old, ports);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"),
        "{got:?}"
    );
    assert!(got[0].contains("containerPort"), "{got:?}");
}

#[test]
fn pod_status_rules() {
    let old = defaulted("Pod", pod(json!({"containers": [ctr(json!({}))]})));
    let mut new = old.clone();
    new["status"] = json!({"podIPs": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}], "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.2"}]});
    let got: Vec<String> = validate_status("Pod", &new, &old).iter().map(FieldError::message).collect();
    assert_eq!(
        got,
        vec![
            "status.podIPs: Invalid value: []core.PodIP{core.PodIP{IP:\"10.1.0.1\"}, core.PodIP{IP:\"10.1.0.2\"}}: may specify no more than one IP for each IP family",
            "status.hostIPs[0].ip: Invalid value: \"10.0.0.2\": must be equal to `hostIP`",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Deployments and ReplicaSets

fn deployment(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn template(labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
}

#[test]
fn deployment_defaults() {
    let d = defaulted(
        "Deployment",
        deployment(json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}))})),
    );
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert!(d["spec"].get("minReadySeconds").is_none());
    let tspec = &d["spec"]["template"]["spec"];
    assert_eq!(tspec["restartPolicy"], "Always");
    assert_eq!(tspec["dnsPolicy"], "ClusterFirst");
    assert_eq!(tspec["terminationGracePeriodSeconds"], 30);
    // SetDefaults_Pod's fields are not template defaults.
    assert!(tspec.get("enableServiceLinks").is_none());
    assert_eq!(tspec["containers"][0]["imagePullPolicy"], "Always");

    let recreate = defaulted("Deployment", deployment(json!({"strategy": {"type": "Recreate"}})));
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    let rs = defaulted("ReplicaSet", json!({"metadata": {"name": "rs"}, "spec": {"template": template(json!({}))}}));
    assert_eq!(rs["spec"]["replicas"], 1);
}

#[test]
fn deployment_rules() {
    let sel = |labels: Value| json!({"matchLabels": labels});
    check_create(
        "Deployment",
        vec![
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "template": template(json!({"app": "x", "tier": "web"}))}),
                ),
                vec![],
            ),
            (
                deployment(json!({"template": template(json!({"app": "x"}))})),
                vec![
                    "spec.selector: Required value",
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`",
                ],
            ),
            (
                deployment(json!({"selector": sel(json!({"app": "y"})), "template": template(json!({"app": "x"}))})),
                vec![
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`",
                ],
            ),
            (
                deployment(json!({"selector": {"matchLabels": {}}, "template": template(json!({"app": "x"}))})),
                vec![
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
                ],
            ),
            (
                deployment(
                    json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Is", "values": ["x"]}]}, "template": template(json!({"app": "x"}))}),
                ),
                vec![
                    "spec.selector.matchExpressions[0].operator: Invalid value: \"Is\": not a valid selector operator",
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"Is\", Values:[]string{\"x\"}}}}: invalid label selector",
                ],
            ),
            (
                deployment(
                    json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "y"]}]}, "template": template(json!({"app": "y"}))}),
                ),
                vec![],
            ),
            (
                deployment(
                    json!({"replicas": -1, "selector": sel(json!({"app": "x"})), "template": template(json!({"app": "x"}))}),
                ),
                vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "template": template(json!({"app": "x", "-bad": "v"}))}),
                ),
                vec![&format!("spec.template.labels: Invalid value: \"-bad\": {QUALIFIED_NAME_PART_MSG}")],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "strategy": {"type": "BlueGreen"}, "template": template(json!({"app": "x"}))}),
                ),
                vec![
                    "spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\"",
                ],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "strategy": {"type": "Recreate", "rollingUpdate": {}}, "template": template(json!({"app": "x"}))}),
                ),
                vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "strategy": {"rollingUpdate": {"maxUnavailable": "abc", "maxSurge": 0}}, "template": template(json!({"app": "x"}))}),
                ),
                vec![
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"abc\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"abc\"}: may not be 0 when `maxSurge` is 0",
                ],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "strategy": {"rollingUpdate": {"maxUnavailable": "120%"}}, "template": template(json!({"app": "x"}))}),
                ),
                vec![
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"120%\"}: must not be greater than 100%",
                ],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "minReadySeconds": 10, "progressDeadlineSeconds": 10, "template": template(json!({"app": "x"}))}),
                ),
                vec!["spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds"],
            ),
            (
                deployment(
                    json!({"selector": sel(json!({"app": "x"})), "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "nginx"}]}}}),
                ),
                vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""],
            ),
        ],
    );
}

#[test]
fn deployment_selector_is_immutable() {
    let old = deployment(
        json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x", "v": "2"}))}),
    );
    let new = deployment(
        json!({"selector": {"matchLabels": {"app": "x", "v": "2"}}, "template": template(json!({"app": "x", "v": "2"}))}),
    );
    let got = update("Deployment", old, new);
    assert_eq!(
        got,
        vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        ]
    );
    let errs = vec![FieldError::invalid("spec.selector", "x", "field is immutable")];
    assert_eq!(
        invalid_message("Deployment", "web", &errs),
        "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: x: field is immutable"
    );
}

#[test]
fn replica_set_rules() {
    let rs = |spec: Value| json!({"metadata": {"name": "web-1", "namespace": "default"}, "spec": spec});
    check_create(
        "ReplicaSet",
        vec![
            (rs(json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}))})), vec![]),
            (
                rs(
                    json!({"replicas": -2, "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "y"}))}),
                ),
                vec![
                    "spec.replicas: Invalid value: -2: must be greater than or equal to 0",
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"y\"}: `selector` does not match template `labels`",
                ],
            ),
        ],
    );
}

#[test]
fn apps_status_rules() {
    let old = defaulted(
        "Deployment",
        deployment(json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}))})),
    );
    let mut new = old.clone();
    new["status"] = json!({"replicas": 1, "readyReplicas": 2, "availableReplicas": 1, "updatedReplicas": -1});
    let got: Vec<String> = validate_status("Deployment", &new, &old).iter().map(FieldError::message).collect();
    assert_eq!(
        got,
        vec![
            "status.updatedReplicas: Invalid value: -1: must be greater than or equal to 0",
            "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Ingress and IngressClass

fn ingress(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn rule(host: &str, paths: Value) -> Value {
    json!({"host": host, "http": {"paths": paths}})
}

fn backend() -> Value {
    json!({"service": {"name": "web", "port": {"number": 80}}})
}

#[test]
fn ingress_rules() {
    let path = |p: &str, t: &str| json!({"path": p, "pathType": t, "backend": backend()});
    check_create(
        "Ingress",
        vec![
            (ingress(json!({"rules": [rule("example.com", json!([path("/", "Prefix")]))]})), vec![]),
            (ingress(json!({"defaultBackend": backend()})), vec![]),
            (
                ingress(json!({})),
                vec![
                    "spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified",
                ],
            ),
            (
                ingress(
                    json!({"rules": [rule("1.2.3.4", json!([path("/", "Prefix")])), rule("*foo.com", json!([path("/", "Exact")]))]}),
                ),
                vec![
                    "spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address",
                    "spec.rules[1].host: Invalid value: \"*foo.com\": a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ],
            ),
            (ingress(json!({"rules": [rule("*.example.com", json!([path("/", "Prefix")]))]})), vec![]),
            (
                ingress(json!({"rules": [rule("example.com", json!([]))]})),
                vec!["spec.rules[0].http.paths: Required value"],
            ),
            (
                ingress(json!({"rules": [rule("", json!([{"path": "/", "backend": backend()}]))]})),
                vec!["spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"],
            ),
            (
                ingress(
                    json!({"rules": [rule("", json!([path("api", "Prefix"), path("/a//b", "Exact"), path("/a/..", "Prefix"), path("x", "ImplementationSpecific"), path("/", "Regex")]))]}),
                ),
                vec![
                    "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
                    "spec.rules[0].http.paths[1].path: Invalid value: \"/a//b\": must not contain '//'",
                    "spec.rules[0].http.paths[2].path: Invalid value: \"/a/..\": cannot end with '/..'",
                    "spec.rules[0].http.paths[3].path: Invalid value: \"x\": must be an absolute path",
                    "spec.rules[0].http.paths[4].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
                ],
            ),
            (
                ingress(json!({"defaultBackend": {}})),
                vec!["spec.defaultBackend: Invalid value: \"\": resource or service backend is required"],
            ),
            (
                ingress(
                    json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}}}),
                ),
                vec!["spec.defaultBackend: Invalid value: \"\": cannot set both resource and service backends"],
            ),
            (
                ingress(
                    json!({"defaultBackend": {"service": {"name": "web", "port": {"name": "http", "number": 80}}}}),
                ),
                vec!["spec.defaultBackend: Invalid value: \"\": cannot set both port name & port number"],
            ),
            (
                ingress(json!({"defaultBackend": {"service": {"name": "Web"}}})),
                vec![
                    &format!("spec.defaultBackend.service.name: Invalid value: \"Web\": {DNS1035_MSG}"),
                    "spec.defaultBackend: Required value: port name or number is required",
                ],
            ),
            (
                ingress(json!({"defaultBackend": {"service": {"name": "web", "port": {"name": "8080"}}}})),
                vec![
                    "spec.defaultBackend.service.port.name: Invalid value: \"8080\": must contain at least one letter (a-z)",
                ],
            ),
            (
                ingress(
                    json!({"defaultBackend": {"resource": {"apiGroup": "Example.com", "kind": "", "name": "a/b"}}}),
                ),
                vec![
                    &format!(
                        "spec.defaultBackend.resource.apiGroup: Invalid value: \"Example.com\": {DNS1123_SUBDOMAIN_MSG}"
                    ),
                    "spec.defaultBackend.resource.kind: Required value: kind is required",
                    "spec.defaultBackend.resource.name: Invalid value: \"a/b\": may not contain '/'",
                ],
            ),
            (
                ingress(
                    json!({"defaultBackend": backend(), "tls": [{"hosts": ["Example.com"], "secretName": "Tls"}], "ingressClassName": "Nginx"}),
                ),
                vec![
                    &format!("spec.tls[0].hosts[0]: Invalid value: \"Example.com\": {DNS1123_SUBDOMAIN_MSG}"),
                    &format!("spec.tls[0].secretName: Invalid value: \"Tls\": {DNS1123_SUBDOMAIN_MSG}"),
                    &format!("spec.ingressClassName: Invalid value: \"Nginx\": {DNS1123_SUBDOMAIN_MSG}"),
                ],
            ),
            (
                json!({"metadata": {"name": "web", "namespace": "default", "annotations": {"kubernetes.io/ingress.class": "nginx"}}, "spec": {"defaultBackend": backend(), "ingressClassName": "traefik"}}),
                vec![
                    "annotations.kubernetes.io/ingress.class: Invalid value: \"nginx\": must match `ingressClassName` when both are specified",
                ],
            ),
        ],
    );
    let old = defaulted("Ingress", ingress(json!({"defaultBackend": backend()})));
    let mut new = old.clone();
    new["status"] = json!({"loadBalancer": {"ingress": [{"ip": "x"}, {"hostname": "10.0.0.1"}]}});
    assert_eq!(
        validate_status("Ingress", &new, &old).iter().map(FieldError::message).collect::<Vec<_>>(),
        vec![
            "status.loadBalancer.ingress[0].ip: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "status.loadBalancer.ingress[1].hostname: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
        ]
    );
}

#[test]
fn ingress_class_rules() {
    let ic = |spec: Value| json!({"metadata": {"name": "nginx"}, "spec": spec});
    let d = defaulted(
        "IngressClass",
        ic(json!({"controller": "k8s.io/ingress-nginx", "parameters": {"kind": "Params", "name": "p"}})),
    );
    assert_eq!(d["spec"]["parameters"]["scope"], "Cluster");
    check_create(
        "IngressClass",
        vec![
            (ic(json!({"controller": "k8s.io/ingress-nginx"})), vec![]),
            (ic(json!({})), vec!["spec.controller: Required value"]),
            (
                ic(json!({"controller": "nginx"})),
                vec![
                    "spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")",
                ],
            ),
            (
                ic(json!({"controller": format!("example.com/{}", "a".repeat(250))})),
                vec!["spec.controller: Too long: must have at most 250 bytes"],
            ),
            (
                ic(json!({"controller": "k8s.io/x", "parameters": {"kind": "P", "name": "p", "scope": "Namespace"}})),
                vec!["spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'"],
            ),
            (
                ic(
                    json!({"controller": "k8s.io/x", "parameters": {"kind": "P", "name": "p", "scope": "Cluster", "namespace": "default"}}),
                ),
                vec!["spec.parameters.namespace: Forbidden: `parameters.scope` is set to 'Cluster'"],
            ),
            (
                ic(json!({"controller": "k8s.io/x", "parameters": {"kind": "P", "name": "p", "scope": "Global"}})),
                vec![
                    "spec.parameters.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespace\"",
                ],
            ),
        ],
    );
    assert_eq!(
        update("IngressClass", ic(json!({"controller": "k8s.io/a"})), ic(json!({"controller": "k8s.io/b"}))),
        vec!["spec.controller: Invalid value: \"k8s.io/b\": field is immutable"]
    );
}

// ---------------------------------------------------------------------------------------------
// Namespaces, ConfigMaps, Secrets and the rest

#[test]
fn namespace_rules() {
    let d = defaulted("Namespace", json!({"metadata": {"name": "team-a"}}));
    assert_eq!(d["metadata"]["labels"], json!({"kubernetes.io/metadata.name": "team-a"}));
    assert_eq!(d["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(d["status"]["phase"], "Active");
    check_create(
        "Namespace",
        vec![
            (json!({"metadata": {"name": "team-a"}}), vec![]),
            (
                json!({"metadata": {"name": "team.a"}}),
                vec!["metadata.name: Invalid value: \"team.a\": must not contain dots"],
            ),
            (
                json!({"metadata": {"name": "ns"}, "spec": {"finalizers": ["custom"]}}),
                vec![
                    "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
                ],
            ),
        ],
    );
    let mut new =
        json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": []}, "status": {"phase": "Terminating"}});
    prepare_update("Namespace", &mut new, &d);
    assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(new["status"]["phase"], "Active");
    let mut terminating = d.clone();
    terminating["status"]["phase"] = json!("Terminating");
    assert_eq!(
        validate_status("Namespace", &terminating, &d).iter().map(FieldError::message).collect::<Vec<_>>(),
        vec!["status.Phase: Invalid value: \"Terminating\": may only be 'Active' if `deletionTimestamp` is empty"]
    );
}

#[test]
fn config_map_and_secret_rules() {
    check_create(
        "ConfigMap",
        vec![
            (json!({"metadata": {"name": "cm", "namespace": "default"}, "data": {"app.conf": "x"}}), vec![]),
            (
                json!({"metadata": {"name": "cm", "namespace": "default"}, "data": {"a b": "x", "..x": "y"}, "binaryData": {"..x": "eQ=="}}),
                vec![
                    &format!("data[a b]: Invalid value: \"a b\": {CONFIG_KEY_MSG}"),
                    "data[..x]: Invalid value: \"..x\": must not start with '..'",
                    "data[..x]: Invalid value: \"..x\": duplicate of key present in binaryData",
                    "binaryData[..x]: Invalid value: \"..x\": must not start with '..'",
                ],
            ),
            (
                json!({"metadata": {"name": "cm", "namespace": "default"}, "data": {"big": "x".repeat(1024 * 1024 + 1)}}),
                vec![": Too long: must have at most 1048576 bytes"],
            ),
        ],
    );
    let s = defaulted(
        "Secret",
        json!({"metadata": {"name": "s", "namespace": "default"}, "stringData": {"user": "admin"}, "data": {"pass": "cHc="}}),
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"], json!({"pass": "cHc=", "user": "YWRtaW4="}));
    assert!(s.get("stringData").is_none());
    check_create(
        "Secret",
        vec![
            (
                json!({"metadata": {"name": "s", "namespace": "default"}, "data": {"a/b": "eA=="}}),
                vec![&format!("data[a/b]: Invalid value: \"a/b\": {CONFIG_KEY_MSG}")],
            ),
            (
                json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
                vec!["data[tls.key]: Required value"],
            ),
            (
                json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "W10="}}),
                vec![
                    "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}",
                ],
            ),
            (
                json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/service-account-token"}),
                vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"],
            ),
        ],
    );
    let old = json!({"metadata": {"name": "s", "namespace": "default"}, "immutable": true, "data": {"a": "eA=="}});
    let new = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"a": "eQ==", "tls.crt": "eA==", "tls.key": "eA=="}});
    assert_eq!(
        update("Secret", old, new),
        vec![
            "type: Invalid value: \"kubernetes.io/tls\": field is immutable",
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
}

#[test]
fn minimal_kinds_check_names() {
    check_create(
        "ServiceAccount",
        vec![(
            json!({"metadata": {"name": "Default", "namespace": "default"}}),
            vec![&format!("metadata.name: Invalid value: \"Default\": {DNS1123_SUBDOMAIN_MSG}")],
        )],
    );
    check_create(
        "Event",
        vec![
            (
                json!({"metadata": {"name": "web.17a1b2c3", "namespace": "default"}, "involvedObject": {"namespace": "default"}}),
                vec![],
            ),
            // Only a path segment is required of an Event's name.
            (json!({"metadata": {"name": "Web_1", "namespace": "default"}}), vec![]),
            (
                json!({"metadata": {"name": "a/b", "namespace": "default"}}),
                vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"],
            ),
            (
                json!({"metadata": {"name": "e", "namespace": "team"}, "involvedObject": {"namespace": "other"}}),
                vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"],
            ),
        ],
    );
    check_create(
        "Node",
        vec![
            (json!({"metadata": {"name": "node-1"}}), vec![]),
            (
                json!({"metadata": {"name": "node-1"}, "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}]}}),
                vec![
                    "metadata.taints[1]: Duplicate value: core.Taint{Key:\"a\", Value:\"\", Effect:\"NoSchedule\", TimeAdded:(*v1.Time)(nil)}: taints must be unique by key and effect pair",
                ],
            ),
        ],
    );
    let node = defaulted("Node", json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4"}}}));
    assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #[test]
    fn validators_never_panic(s in "\\PC{0,80}") {
        let _ = (dns1035_label(&s), dns1123_label(&s), dns1123_subdomain(&s), qualified_name(&s), label_value(&s), iana_svc_name(&s));
        let obj = svc(json!({"ports": [{"port": 80, "name": s, "targetPort": s}], "clusterIP": s, "externalIPs": [s]}));
        let mut d = obj.clone();
        default_object("Service", &mut d);
        let _ = validate_create("Service", &d);
        let mut n = d.clone();
        prepare_update("Service", &mut n, &obj);
        let _ = validate_update("Service", &n, &d);
    }

    #[test]
    fn every_label_is_a_subdomain_and_every_1035_label_a_label(s in "[a-z0-9.-]{0,70}") {
        if dns1035_label(&s).is_empty() {
            prop_assert!(dns1123_label(&s).is_empty());
        }
        if dns1123_label(&s).is_empty() {
            prop_assert!(dns1123_subdomain(&s).is_empty());
        }
    }

    #[test]
    fn service_defaulting_is_idempotent_and_valid(port in 1i64..65536, ty in prop::sample::select(vec!["ClusterIP", "NodePort", "LoadBalancer"])) {
        let once = defaulted("Service", svc(json!({"type": ty, "ports": [{"port": port}]})));
        let twice = defaulted("Service", once.clone());
        prop_assert_eq!(&once, &twice);
        let errs: Vec<String> = validate_create("Service", &once).iter().map(FieldError::message).collect();
        let expected: Vec<String> = if ty == "LoadBalancer" && port == 10250 {
            vec!["spec.ports[0]: Invalid value: 10250: may not expose port 10250 externally since it is used by kubelet".to_string()]
        } else {
            Vec::new()
        };
        prop_assert_eq!(errs, expected);
    }
}
