//! networking.k8s.io/v1 Ingress and IngressClass: `SetDefaults_IngressClass` and the
//! validators of `pkg/apis/networking/validation`.

use serde_json::{Value, json};

use super::meta;
use super::names::{self, NameKind};
use super::net;
use super::render::quote;
use super::service::lb_hostname;
use super::value::{self, get, s};
use super::{FieldError, pc, pi};

const ANNOTATION_INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
const MAX_CONTROLLER_LEN: usize = 250;
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];

/// SetDefaults_IngressClass: a parameters reference without scope is cluster-scoped.
pub fn apply_ingress_class_defaults(obj: &mut Value) {
    if let Some(params) = obj.get_mut("spec").and_then(|sp| sp.get_mut("parameters")).and_then(Value::as_object_mut)
        && value::missing(params, "scope")
    {
        params.insert("scope".into(), json!("Cluster"));
    }
}

/// Backwards-compatibility switches upstream derives from the stored object on update.
#[derive(Default, Clone, Copy)]
struct Opts {
    allow_invalid_secret_name: bool,
    allow_invalid_wildcard_host_rule: bool,
}

/// ValidateIngressCreate.
pub fn validate_ingress_create(ing: &Value) -> Vec<FieldError> {
    let mut errs = validate_ingress(ing, Opts::default());
    let annotation = value::at(ing, &["metadata", "annotations", ANNOTATION_INGRESS_CLASS]).and_then(Value::as_str);
    let class = value::at(ing, &["spec", "ingressClassName"]).and_then(Value::as_str);
    if let (Some(a), Some(c)) = (annotation, class)
        && a != c
    {
        errs.push(FieldError::invalid(
            pc("annotations", ANNOTATION_INGRESS_CLASS),
            quote(a),
            "must match `ingressClassName` when both are specified",
        ));
    }
    errs
}

/// ValidateIngressUpdate.
pub fn validate_ingress_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    let old_tls = value::at(old, &["spec", "tls"]).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let old_rules = value::at(old, &["spec", "rules"]).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let opts = Opts {
        allow_invalid_secret_name: old_tls.iter().any(|t| !tls_secret_name_errors(s(t, "secretName")).is_empty()),
        allow_invalid_wildcard_host_rule: old_rules
            .iter()
            .any(|r| s(r, "host").contains('*') && !rule_value_errors(r, "").is_empty()),
    };
    errs.extend(validate_ingress(new, opts));
    errs
}

/// ValidateIngressStatusUpdate.
pub fn validate_ingress_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    let ingress = value::at(new, &["status", "loadBalancer", "ingress"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        let path = pi("status.loadBalancer.ingress", i);
        let ip = s(ing, "ip");
        if !ip.is_empty() {
            errs.extend(net::valid_ip_errors(&pc(&path, "ip"), ip));
        }
        errs.extend(lb_hostname(&pc(&path, "hostname"), s(ing, "hostname")));
    }
    errs
}

fn validate_ingress(ing: &Value, opts: Opts) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(get(ing, "metadata"), true, NameKind::Subdomain, "metadata");
    let null = Value::Null;
    let spec = get(ing, "spec").unwrap_or(&null);
    let rules_value = get(spec, "rules");
    let rules = value::arr(spec, "rules");
    let default_backend = get(spec, "defaultBackend");
    if rules.is_empty() && default_backend.is_none() {
        let repr = if rules_value.is_some() { "[]networking.IngressRule{}" } else { "[]networking.IngressRule(nil)" };
        errs.push(FieldError::invalid("spec", repr, "either `defaultBackend` or `rules` must be specified"));
    }
    if let Some(b) = default_backend {
        errs.extend(backend_errors(b, "spec.defaultBackend"));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rpath = pi("spec.rules", i);
        let host = s(rule, "host");
        let mut wildcard = false;
        if !host.is_empty() {
            if net::parse_ip(host).is_some() {
                errs.push(FieldError::invalid(
                    pc(&rpath, "host"),
                    quote(host),
                    "must be a DNS name, not an IP address",
                ));
            }
            if host.contains('*') {
                errs.extend(
                    names::wildcard_dns1123_subdomain(host)
                        .into_iter()
                        .map(|m| FieldError::invalid(pc(&rpath, "host"), quote(host), m)),
                );
                wildcard = true;
            } else {
                errs.extend(names::subdomain_errors(&pc(&rpath, "host"), host));
            }
        }
        if !wildcard || !opts.allow_invalid_wildcard_host_rule {
            errs.extend(rule_value_errors(rule, &rpath));
        }
    }
    for (ti, tls) in value::arr(spec, "tls").iter().enumerate() {
        let tpath = pi("spec.tls", ti);
        for (hi, host) in value::str_list(tls, "hosts").iter().enumerate() {
            let hpath = pi(&pc(&tpath, "hosts"), hi);
            if host.contains('*') {
                errs.extend(
                    names::wildcard_dns1123_subdomain(host)
                        .into_iter()
                        .map(|m| FieldError::invalid(&hpath, quote(host), m)),
                );
            } else {
                errs.extend(names::subdomain_errors(&hpath, host));
            }
        }
        if !opts.allow_invalid_secret_name {
            let secret = s(tls, "secretName");
            errs.extend(
                tls_secret_name_errors(secret)
                    .into_iter()
                    .map(|m| FieldError::invalid(pc(&tpath, "secretName"), quote(secret), m)),
            );
        }
    }
    if let Some(class) = value::opt_s(spec, "ingressClassName") {
        errs.extend(names::subdomain_errors("spec.ingressClassName", class));
    }
    errs
}

fn tls_secret_name_errors(name: &str) -> Vec<String> {
    if name.is_empty() { Vec::new() } else { names::dns1123_subdomain(name) }
}

/// validateIngressRuleValue: an `http` rule needs paths, each path a type, a valid path and a
/// backend.
fn rule_value_errors(rule: &Value, rpath: &str) -> Vec<FieldError> {
    let Some(http) = get(rule, "http") else { return Vec::new() };
    let hpath = pc(rpath, "http");
    let paths = value::arr(http, "paths");
    let mut errs = Vec::new();
    if paths.is_empty() {
        errs.push(FieldError::required(pc(&hpath, "paths"), ""));
    }
    for (i, p) in paths.iter().enumerate() {
        let ppath = pi(&pc(&hpath, "paths"), i);
        let Some(path_type) = value::opt_s(p, "pathType") else {
            errs.push(FieldError::required(pc(&ppath, "pathType"), "pathType must be specified"));
            continue;
        };
        let path = s(p, "path");
        match path_type {
            "Exact" | "Prefix" => {
                if !path.starts_with('/') {
                    errs.push(FieldError::invalid(pc(&ppath, "path"), quote(path), "must be an absolute path"));
                }
                if !path.is_empty() {
                    for seq in INVALID_PATH_SEQUENCES {
                        if path.contains(seq) {
                            errs.push(FieldError::invalid(
                                pc(&ppath, "path"),
                                quote(path),
                                format!("must not contain '{seq}'"),
                            ));
                        }
                    }
                    for suffix in INVALID_PATH_SUFFIXES {
                        if path.ends_with(suffix) {
                            errs.push(FieldError::invalid(
                                pc(&ppath, "path"),
                                quote(path),
                                format!("cannot end with '{suffix}'"),
                            ));
                        }
                    }
                }
            }
            "ImplementationSpecific" => {
                if !path.is_empty() && !path.starts_with('/') {
                    errs.push(FieldError::invalid(pc(&ppath, "path"), quote(path), "must be an absolute path"));
                }
            }
            other => errs.push(FieldError::not_supported(
                pc(&ppath, "pathType"),
                quote(other),
                &["Exact", "ImplementationSpecific", "Prefix"],
            )),
        }
        errs.extend(backend_errors(get(p, "backend").unwrap_or(&Value::Null), &pc(&ppath, "backend")));
    }
    errs
}

/// validateIngressBackend.
fn backend_errors(b: &Value, path: &str) -> Vec<FieldError> {
    let resource = get(b, "resource");
    let service = get(b, "service");
    match (resource, service) {
        (Some(_), Some(_)) => {
            vec![FieldError::invalid(path, quote(""), "cannot set both resource and service backends")]
        }
        (Some(r), None) => typed_reference_errors(r, &pc(path, "resource")),
        (None, Some(svc)) => {
            let mut errs = Vec::new();
            let name = s(svc, "name");
            let npath = pc(&pc(path, "service"), "name");
            if name.is_empty() {
                errs.push(FieldError::required(npath, ""));
            } else {
                errs.extend(
                    NameKind::Dns1035
                        .check(name, false)
                        .into_iter()
                        .map(|m| FieldError::invalid(&npath, quote(name), m)),
                );
            }
            let port = get(svc, "port").unwrap_or(&Value::Null);
            let port_name = s(port, "name");
            let number = value::i(port, "number");
            let port_path = pc(&pc(path, "service"), "port");
            if !port_name.is_empty() && number != 0 {
                errs.push(FieldError::invalid(path, quote(""), "cannot set both port name & port number"));
            } else if !port_name.is_empty() {
                errs.extend(
                    names::iana_svc_name(port_name)
                        .into_iter()
                        .map(|m| FieldError::invalid(pc(&port_path, "name"), quote(port_name), m)),
                );
            } else if number != 0 {
                errs.extend(
                    names::port_num(number)
                        .into_iter()
                        .map(|m| FieldError::invalid(pc(&port_path, "number"), number.to_string(), m)),
                );
            } else {
                errs.push(FieldError::required(path, "port name or number is required"));
            }
            errs
        }
        (None, None) => vec![FieldError::invalid(path, quote(""), "resource or service backend is required")],
    }
}

/// validateIngressTypedLocalObjectReference.
fn typed_reference_errors(r: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(group) = value::opt_s(r, "apiGroup") {
        errs.extend(names::subdomain_errors(&pc(path, "apiGroup"), group));
    }
    for (field, required_msg) in [("kind", "kind is required"), ("name", "name is required")] {
        let v = s(r, field);
        if v.is_empty() {
            errs.push(FieldError::required(pc(path, field), required_msg));
        } else {
            errs.extend(
                names::path_segment_name(v).into_iter().map(|m| FieldError::invalid(pc(path, field), quote(v), m)),
            );
        }
    }
    errs
}

/// ValidateIngressClass.
pub fn validate_ingress_class(ic: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(get(ic, "metadata"), false, NameKind::Subdomain, "metadata");
    let null = Value::Null;
    let spec = get(ic, "spec").unwrap_or(&null);
    let controller = s(spec, "controller");
    if controller.len() > MAX_CONTROLLER_LEN {
        errs.push(FieldError::too_long("spec.controller", MAX_CONTROLLER_LEN));
    }
    errs.extend(names::domain_prefixed_path("spec.controller", controller));
    if let Some(params) = get(spec, "parameters") {
        let path = "spec.parameters";
        errs.extend(typed_reference_errors(params, path));
        match value::opt_s(params, "scope") {
            None => errs.push(FieldError::required(pc(path, "scope"), "")),
            Some(scope) if scope != "Cluster" && scope != "Namespace" => {
                errs.push(FieldError::not_supported(pc(path, "scope"), quote(scope), &["Cluster", "Namespace"]));
            }
            Some(scope) => {
                let ns = value::opt_s(params, "namespace");
                if scope == "Namespace" {
                    match ns {
                        None => errs.push(FieldError::required(
                            pc(path, "namespace"),
                            "`parameters.scope` is set to 'Namespace'",
                        )),
                        Some(ns) => errs.extend(
                            names::dns1123_label(ns)
                                .into_iter()
                                .map(|m| FieldError::invalid(pc(path, "namespace"), quote(ns), m)),
                        ),
                    }
                }
                if scope == "Cluster" && ns.is_some() {
                    errs.push(FieldError::forbidden(pc(path, "namespace"), "`parameters.scope` is set to 'Cluster'"));
                }
            }
        }
    }
    errs
}

/// ValidateIngressClassUpdate: the controller is immutable.
pub fn validate_ingress_class_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    let (n, o) = (
        value::at(new, &["spec", "controller"]).and_then(Value::as_str).unwrap_or_default(),
        value::at(old, &["spec", "controller"]).and_then(Value::as_str).unwrap_or_default(),
    );
    if n != o {
        errs.push(FieldError::invalid("spec.controller", quote(n), "field is immutable"));
    }
    errs.extend(validate_ingress_class(new));
    errs
}
