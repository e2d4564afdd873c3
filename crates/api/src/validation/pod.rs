//! Pods and pod templates: `SetDefaults_Pod` / `SetDefaults_PodSpec` / container, probe, volume
//! and handler defaults, and the parts of `ValidatePodSpec` that make Services work (containers,
//! ports, probes, env, volume mounts, restart and DNS policy, DNS config, tolerations, names).
//! Resource quantities, security contexts, affinity and topology spread are not validated.

use serde_json::{Map, Value, json};

use super::meta;
use super::names::{self, NameKind};
use super::net;
use super::render::{self, quote};
use super::value::{self, get, s};
use super::{FieldError, pc, pi};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MAX_INT32: i64 = 2_147_483_647;
const MAX_DNS_NAMESERVERS: usize = 3;
const MAX_DNS_SEARCH_PATHS: usize = 32;
const MAX_DNS_SEARCH_CHARS: usize = 2048;

/// The volume sources in upstream's checking order: JSON member and the name upstream uses in
/// its "more than 1 volume type" path (which has two historical spellings of its own).
const VOLUME_SOURCES: &[(&str, &str)] = &[
    ("emptyDir", "emptyDir"),
    ("hostPath", "hostPath"),
    ("gitRepo", "gitRepo"),
    ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"),
    ("flocker", "flocker"),
    ("persistentVolumeClaim", "persistentVolumeClaim"),
    ("rbd", "rbd"),
    ("cinder", "cinder"),
    ("cephfs", "cephFS"),
    ("quobyte", "quobyte"),
    ("downwardAPI", "downwarAPI"),
    ("fc", "fc"),
    ("flexVolume", "flexVolume"),
    ("configMap", "configMap"),
    ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"),
    ("photonPersistentDisk", "photonPersistentDisk"),
    ("portworxVolume", "portworxVolume"),
    ("azureDisk", "azureDisk"),
    ("storageos", "storageos"),
    ("projected", "projected"),
    ("scaleIO", "scaleIO"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

/// The downward-API fields an env var may reference (sorted, as upstream lists them).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The labels `ConvertDownwardAPIFieldLabel` accepts for pods.
const POD_FIELD_LABELS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

// ---------------------------------------------------------------------------------------------
// Defaults

/// SetDefaults_Pod plus the PodSpec defaults.
pub fn apply_pod_defaults(pod: &mut Value) {
    let Some(spec) = value::ensure_obj(pod, "spec") else { return };
    apply_pod_spec_defaults(spec);
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            // Requests default to the limits (only for Pods, not templates).
            let limits = c.get("resources").and_then(|r| r.get("limits")).and_then(Value::as_object).cloned();
            if let Some(limits) = limits
                && let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut)
            {
                let requests = resources.entry("requests").or_insert_with(|| json!({}));
                if requests.is_null() {
                    *requests = json!({});
                }
                if let Some(requests) = requests.as_object_mut() {
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
    if value::missing(spec, "enableServiceLinks") {
        spec.insert("enableServiceLinks".into(), json!(true));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for list in ["containers", "initContainers"] {
            let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
            for c in containers.iter_mut() {
                let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) else { continue };
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    if value::zero_int(p, "hostPort") {
                        let cp = p.get("containerPort").cloned().unwrap_or(json!(0));
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
}

/// The defaults of a pod template (`spec.template` of a Deployment or ReplicaSet): only the
/// PodSpec-level ones, not SetDefaults_Pod's.
pub fn apply_template_defaults(template: &mut Value) {
    if let Some(spec) = value::ensure_obj(template, "spec") {
        apply_pod_spec_defaults(spec);
    }
}

/// SetDefaults_PodSpec and the defaults of everything inside a PodSpec.
fn apply_pod_spec_defaults(spec: &mut Map<String, Value>) {
    if value::empty_str(spec, "dnsPolicy") {
        spec.insert("dnsPolicy".into(), json!("ClusterFirst"));
    }
    if value::empty_str(spec, "restartPolicy") {
        spec.insert("restartPolicy".into(), json!("Always"));
    }
    if value::missing(spec, "securityContext") {
        spec.insert("securityContext".into(), json!({}));
    }
    if value::missing(spec, "terminationGracePeriodSeconds") {
        spec.insert("terminationGracePeriodSeconds".into(), json!(30));
    }
    if value::empty_str(spec, "schedulerName") {
        spec.insert("schedulerName".into(), json!("default-scheduler"));
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                apply_container_defaults(c);
            }
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            apply_volume_defaults(v);
        }
    }
}

/// SetDefaults_Container and the defaults of its ports, probes, handlers and env references.
fn apply_container_defaults(c: &mut Map<String, Value>) {
    if value::empty_str(c, "imagePullPolicy") {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let policy = if image_tag_is_latest(image) { "Always" } else { "IfNotPresent" };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    if value::empty_str(c, "terminationMessagePath") {
        c.insert("terminationMessagePath".into(), json!("/dev/termination-log"));
    }
    if value::empty_str(c, "terminationMessagePolicy") {
        c.insert("terminationMessagePolicy".into(), json!("File"));
    }
    // Go always serialises this struct, so the API returns `resources: {}`.
    if value::missing(c, "resources") {
        c.insert("resources".into(), json!({}));
    }
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if value::empty_str(p, "protocol") {
                p.insert("protocol".into(), json!("TCP"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            for (field, default) in
                [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)]
            {
                if value::zero_int(p, field) {
                    p.insert(field.into(), json!(default));
                }
            }
            apply_http_get_defaults(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for handler in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get_mut(handler).and_then(Value::as_object_mut) {
                apply_http_get_defaults(h);
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env.iter_mut() {
            if let Some(field_ref) =
                e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")).and_then(Value::as_object_mut)
                && value::empty_str(field_ref, "apiVersion")
            {
                field_ref.insert("apiVersion".into(), json!("v1"));
            }
        }
    }
}

/// SetDefaults_HTTPGetAction on a probe or handler's `httpGet`.
fn apply_http_get_defaults(handler: &mut Map<String, Value>) {
    if let Some(h) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        if value::empty_str(h, "path") {
            h.insert("path".into(), json!("/"));
        }
        if value::empty_str(h, "scheme") {
            h.insert("scheme".into(), json!("HTTP"));
        }
    }
}

/// SetDefaults_Volume and the defaults of the common sources.
fn apply_volume_defaults(v: &mut Map<String, Value>) {
    if !VOLUME_SOURCES.iter().any(|(k, _)| !value::missing(v, k)) {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = v.get_mut(source).and_then(Value::as_object_mut)
            && value::missing(src, "defaultMode")
        {
            src.insert("defaultMode".into(), json!(420));
        }
    }
    if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut)
        && value::missing(hp, "type")
    {
        hp.insert("type".into(), json!(""));
    }
}

/// Whether the image reference's tag is `latest`, explicitly or by omission (upstream's
/// `parsers.ParseImageName`: an unparseable reference has no tag, a digest-only one neither).
pub fn image_tag_is_latest(image: &str) -> bool {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if !valid_repository(repo) || tag.is_some_and(|t| !valid_tag(t)) || digest.is_some_and(|d| !d.contains(':')) {
        return false;
    }
    match tag {
        Some(t) => t == "latest",
        None => digest.is_none(),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// The docker reference grammar, loosely: an optional domain (may contain `.`, `:` or be
/// `localhost`, any case) then lower-case path components.
fn valid_repository(repo: &str) -> bool {
    if repo.is_empty() {
        return false;
    }
    let mut components: Vec<&str> = repo.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            components.remove(0);
        }
    }
    components.iter().all(|c| {
        let b = c.as_bytes();
        !b.is_empty()
            && b.iter().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || b"._-".contains(ch))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    })
}

// ---------------------------------------------------------------------------------------------
// Validation

/// ValidatePodCreate.
pub fn validate_pod_create(pod: &Value) -> Vec<FieldError> {
    let mut errs = validate_pod_metadata_and_spec(pod);
    let spec = get(pod, "spec").unwrap_or(&Value::Null);
    if !value::arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create"));
    }
    if !s(spec, "nodeName").is_empty() && !value::arr(spec, "schedulingGates").is_empty() {
        errs.push(FieldError::forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared"));
    }
    errs
}

/// validatePodMetadataAndSpec.
fn validate_pod_metadata_and_spec(pod: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(get(pod, "metadata"), true, NameKind::Subdomain, "metadata");
    let spec = get(pod, "spec").unwrap_or(&Value::Null);
    errs.extend(validate_pod_spec(spec, "spec", true));
    for list in ["containers", "initContainers"] {
        for (i, c) in value::arr(spec, list).iter().enumerate() {
            let image = s(c, "image");
            if image.len() != image.trim().len() {
                errs.push(FieldError::invalid(
                    pc(&pi(&pc("spec", list), i), "image"),
                    quote(image),
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errs
}

/// ValidatePodTemplateSpec at `path` (`spec.template`): labels and annotations are reported at
/// `<path>.labels` / `<path>.annotations` as upstream does.
pub fn validate_pod_template_spec(template: &Value, path: &str) -> Vec<FieldError> {
    let metadata = get(template, "metadata").unwrap_or(&Value::Null);
    let mut errs = meta::validate_labels(&pc(path, "labels"), get(metadata, "labels"));
    errs.extend(meta::validate_annotations(&pc(path, "annotations"), get(metadata, "annotations")));
    let spec = get(template, "spec").unwrap_or(&Value::Null);
    errs.extend(validate_pod_spec(spec, &pc(path, "spec"), false));
    if !value::arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            pc(&pc(path, "spec"), "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// ValidatePodSpec (the subset described in the module header).
pub fn validate_pod_spec(spec: &Value, path: &str, resource_is_pod: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let grace = value::opt_i(spec, "terminationGracePeriodSeconds");
    if grace.is_none() {
        errs.push(FieldError::required(pc(path, "terminationGracePeriodSeconds"), ""));
    }
    let (volumes, vol_errs) = validate_volumes(value::arr(spec, "volumes"), &pc(path, "volumes"));
    errs.extend(vol_errs);
    let containers = value::arr(spec, "containers");
    errs.extend(validate_containers(containers, &volumes, grace, &pc(path, "containers")));
    errs.extend(validate_init_containers(
        value::arr(spec, "initContainers"),
        containers,
        &volumes,
        grace,
        &pc(path, "initContainers"),
    ));

    if value::b(spec, "hostNetwork") {
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in value::arr(c, "ports").iter().enumerate() {
                let (hp, cp) = (value::i(p, "hostPort"), value::i(p, "containerPort"));
                if (resource_is_pod || hp != 0) && hp != cp {
                    errs.push(FieldError::invalid(
                        pc(&pi(&pc(&pi(&pc(path, "containers"), i), "ports"), j), "hostPort"),
                        hp.to_string(),
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }

    let restart = s(spec, "restartPolicy");
    match restart {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(pc(path, "restartPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            pc(path, "restartPolicy"),
            quote(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns_policy = s(spec, "dnsPolicy");
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(pc(path, "dnsPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            pc(path, "dnsPolicy"),
            quote(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(meta::validate_labels(&pc(path, "nodeSelector"), get(spec, "nodeSelector")));
    errs.extend(validate_dns_config(get(spec, "dnsConfig"), dns_policy, &pc(path, "dnsConfig")));
    for (i, g) in value::arr(spec, "readinessGates").iter().enumerate() {
        errs.extend(names::qualified_name_errors(
            &pc(&pi(&pc(path, "readinessGates"), i), "conditionType"),
            s(g, "conditionType"),
        ));
    }
    let mut gates_seen: Vec<&str> = Vec::new();
    for (i, g) in value::arr(spec, "schedulingGates").iter().enumerate() {
        let gpath = pi(&pc(path, "schedulingGates"), i);
        let name = s(g, "name");
        errs.extend(names::qualified_name_errors(&gpath, name));
        if gates_seen.contains(&name) {
            errs.push(FieldError::duplicate(&gpath, quote(name)));
        }
        gates_seen.push(name);
    }
    for (field, kind) in [("serviceAccountName", NameKind::Subdomain), ("nodeName", NameKind::Subdomain)] {
        let v = s(spec, field);
        if !v.is_empty() {
            errs.extend(kind.check(v, false).into_iter().map(|m| FieldError::invalid(pc(path, field), quote(v), m)));
        }
    }
    if let Some(ads) = value::opt_i(spec, "activeDeadlineSeconds")
        && !(1..=MAX_INT32).contains(&ads)
    {
        errs.push(FieldError::invalid(
            pc(path, "activeDeadlineSeconds"),
            ads.to_string(),
            names::inclusive_range_error(1, MAX_INT32),
        ));
    }
    for field in ["hostname", "subdomain"] {
        let v = s(spec, field);
        if !v.is_empty() {
            errs.extend(names::label_errors(&pc(path, field), v));
        }
    }
    errs.extend(validate_tolerations(value::arr(spec, "tolerations"), &pc(path, "tolerations")));
    for (i, alias) in value::arr(spec, "hostAliases").iter().enumerate() {
        let apath = pi(&pc(path, "hostAliases"), i);
        errs.extend(net::valid_ip_errors(&pc(&apath, "ip"), s(alias, "ip")));
        for (j, h) in value::str_list(alias, "hostnames").iter().enumerate() {
            errs.extend(names::subdomain_errors(&pi(&pc(&apath, "hostnames"), j), h));
        }
    }
    let priority_class = s(spec, "priorityClassName");
    if !priority_class.is_empty() {
        errs.extend(names::subdomain_errors(&pc(path, "priorityClassName"), priority_class));
    }
    if let Some(rc) = value::opt_s(spec, "runtimeClassName") {
        errs.extend(names::subdomain_errors(&pc(path, "runtimeClassName"), rc));
    }
    if let Some(pp) = value::opt_s(spec, "preemptionPolicy") {
        match pp {
            "PreemptLowerPriority" | "Never" => {}
            "" => errs.push(FieldError::required(pc(path, "preemptionPolicy"), "")),
            other => errs.push(FieldError::not_supported(
                pc(path, "preemptionPolicy"),
                quote(other),
                &["PreemptLowerPriority", "Never"],
            )),
        }
    }
    if let Some(os) = get(spec, "os") {
        let name = s(os, "name");
        if name.is_empty() {
            errs.push(FieldError::required(pc(&pc(path, "os"), "name"), "cannot be empty"));
        } else if name != "linux" && name != "windows" {
            errs.push(FieldError::not_supported(pc(path, "os"), quote(name), &["linux", "windows"]));
        }
    }
    errs
}

/// ValidateVolumes (names and the one-source rule, plus the required fields of the common
/// sources). Returns the names that validated.
fn validate_volumes<'a>(volumes: &'a [Value], path: &str) -> (Vec<&'a str>, Vec<FieldError>) {
    let mut ok_names: Vec<&str> = Vec::new();
    let mut errs = Vec::new();
    for (i, vol) in volumes.iter().enumerate() {
        let vpath = pi(path, i);
        let name_path = pc(&vpath, "name");
        let mut el = Vec::new();
        let mut count = 0;
        for (key, forbidden_name) in VOLUME_SOURCES {
            let Some(src) = get(vol, key) else { continue };
            if count > 0 {
                el.push(FieldError::forbidden(pc(&vpath, forbidden_name), "may not specify more than 1 volume type"));
                continue;
            }
            count += 1;
            let required = match *key {
                "secret" => Some("secretName"),
                "configMap" => Some("name"),
                "persistentVolumeClaim" => Some("claimName"),
                "hostPath" => Some("path"),
                "nfs" => Some("server"),
                _ => None,
            };
            if let Some(field) = required
                && s(src, field).is_empty()
            {
                el.push(FieldError::required(pc(&pc(&vpath, key), field), ""));
            }
        }
        if count == 0 {
            el.push(FieldError::required(&vpath, "must specify a volume type"));
        }
        let name = s(vol, "name");
        if name.is_empty() {
            el.push(FieldError::required(&name_path, ""));
        } else {
            el.extend(names::label_errors(&name_path, name));
        }
        if ok_names.contains(&name) {
            el.push(FieldError::duplicate(&name_path, quote(name)));
        }
        if el.is_empty() {
            ok_names.push(name);
        } else {
            errs.extend(el);
        }
    }
    (ok_names, errs)
}

/// validateContainers: the regular containers.
fn validate_containers(containers: &[Value], volumes: &[&str], grace: Option<i64>, path: &str) -> Vec<FieldError> {
    if containers.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let cpath = pi(path, i);
        errs.extend(validate_container_common(c, volumes, &cpath));
        let name = s(c, "name");
        if seen.contains(&name) {
            errs.push(FieldError::duplicate(pc(&cpath, "name"), quote(name)));
        } else {
            seen.push(name);
        }
        if let Some(lifecycle) = get(c, "lifecycle") {
            errs.extend(validate_lifecycle(lifecycle, grace, &pc(&cpath, "lifecycle")));
        }
        errs.extend(validate_probes(c, grace, &cpath));
        if get(c, "restartPolicy").is_some() {
            errs.push(FieldError::forbidden(pc(&cpath, "restartPolicy"), "may not be set for non-init containers"));
        }
    }
    errs.extend(host_port_conflicts(containers, path));
    errs
}

/// validateInitContainers.
fn validate_init_containers(
    inits: &[Value],
    regular: &[Value],
    volumes: &[&str],
    grace: Option<i64>,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<&str> = regular.iter().map(|c| s(c, "name")).collect();
    for (i, c) in inits.iter().enumerate() {
        let cpath = pi(path, i);
        errs.extend(validate_container_common(c, volumes, &cpath));
        let restart = value::opt_s(c, "restartPolicy");
        if let Some(r) = restart
            && r != "Always"
        {
            errs.push(FieldError::not_supported(pc(&cpath, "restartPolicy"), quote(r), &["Always"]));
        }
        let name = s(c, "name");
        if seen.contains(&name) {
            errs.push(FieldError::duplicate(pc(&cpath, "name"), quote(name)));
        } else if !name.is_empty() {
            seen.push(name);
        }
        // Init containers run one at a time, so each is checked alone (at index 0, as upstream).
        errs.extend(host_port_conflicts(std::slice::from_ref(c), path));
        if restart == Some("Always") {
            if let Some(lifecycle) = get(c, "lifecycle") {
                errs.extend(validate_lifecycle(lifecycle, grace, &pc(&cpath, "lifecycle")));
            }
            errs.extend(validate_probes(c, grace, &cpath));
        } else {
            for field in ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"] {
                if get(c, field).is_some() {
                    errs.push(FieldError::forbidden(
                        pc(&cpath, field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}

/// validateContainerCommon.
fn validate_container_common(c: &Value, volumes: &[&str], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(pc(path, "name"), ""));
    } else {
        errs.extend(names::label_errors(&pc(path, "name"), name));
    }
    if s(c, "image").is_empty() {
        errs.push(FieldError::required(pc(path, "image"), ""));
    }
    match s(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(pc(path, "terminationMessagePolicy"), "")),
        other => errs.push(FieldError::not_supported(
            pc(path, "terminationMessagePolicy"),
            quote(other),
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(validate_container_ports(value::arr(c, "ports"), &pc(path, "ports")));
    errs.extend(validate_env(value::arr(c, "env"), &pc(path, "env")));
    errs.extend(validate_env_from(value::arr(c, "envFrom"), &pc(path, "envFrom")));
    errs.extend(validate_volume_mounts(value::arr(c, "volumeMounts"), volumes, &pc(path, "volumeMounts")));
    match s(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldError::required(pc(path, "imagePullPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            pc(path, "imagePullPolicy"),
            quote(other),
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    errs
}

/// validateContainerPorts: names are IANA service names unique within the container.
fn validate_container_ports(ports: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let ppath = pi(path, i);
        let name = s(p, "name");
        if !name.is_empty() {
            let msgs = names::iana_svc_name(name);
            if !msgs.is_empty() {
                errs.extend(msgs.into_iter().map(|m| FieldError::invalid(pc(&ppath, "name"), quote(name), m)));
            } else if seen.contains(&name) {
                errs.push(FieldError::duplicate(pc(&ppath, "name"), quote(name)));
            } else {
                seen.push(name);
            }
        }
        let cp = value::i(p, "containerPort");
        if cp == 0 {
            errs.push(FieldError::required(pc(&ppath, "containerPort"), ""));
        } else {
            errs.extend(
                names::port_num(cp)
                    .into_iter()
                    .map(|m| FieldError::invalid(pc(&ppath, "containerPort"), cp.to_string(), m)),
            );
        }
        let hp = value::i(p, "hostPort");
        if hp != 0 {
            errs.extend(
                names::port_num(hp).into_iter().map(|m| FieldError::invalid(pc(&ppath, "hostPort"), hp.to_string(), m)),
            );
        }
        match s(p, "protocol") {
            "" => errs.push(FieldError::required(pc(&ppath, "protocol"), "")),
            proto if !PROTOCOLS.contains(&proto) => {
                errs.push(FieldError::not_supported(pc(&ppath, "protocol"), quote(proto), PROTOCOLS))
            }
            _ => {}
        }
    }
    errs
}

/// AccumulateUniqueHostPorts: a protocol/hostIP/hostPort triple may be used once.
fn host_port_conflicts(containers: &[Value], path: &str) -> Vec<FieldError> {
    let mut seen: Vec<String> = Vec::new();
    let mut errs = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi_, p) in value::arr(c, "ports").iter().enumerate() {
            let hp = value::i(p, "hostPort");
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{}", s(p, "protocol"), s(p, "hostIP"), hp);
            if seen.contains(&key) {
                errs.push(FieldError::duplicate(pc(&pi(&pc(&pi(path, ci), "ports"), pi_), "hostPort"), quote(&key)));
            } else {
                seen.push(key);
            }
        }
    }
    errs
}

/// ValidateEnv (relaxed names, as the v1.32 default).
fn validate_env(env: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in env.iter().enumerate() {
        let epath = pi(path, i);
        let name = s(ev, "name");
        if name.is_empty() {
            errs.push(FieldError::required(pc(&epath, "name"), ""));
        } else {
            errs.extend(
                names::env_var_name(name).into_iter().map(|m| FieldError::invalid(pc(&epath, "name"), quote(name), m)),
            );
        }
        let Some(from) = get(ev, "valueFrom") else { continue };
        let fpath = pc(&epath, "valueFrom");
        let mut sources = 0;
        if let Some(fr) = get(from, "fieldRef") {
            sources += 1;
            errs.extend(validate_field_ref(fr, &pc(&fpath, "fieldRef")));
        }
        if let Some(rr) = get(from, "resourceFieldRef") {
            sources += 1;
            if s(rr, "resource").is_empty() {
                errs.push(FieldError::required(pc(&pc(&fpath, "resourceFieldRef"), "resource"), ""));
            }
        }
        for key in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(kr) = get(from, key) {
                sources += 1;
                let kpath = pc(&fpath, key);
                let n = s(kr, "name");
                errs.extend(
                    names::dns1123_subdomain(n)
                        .into_iter()
                        .map(|m| FieldError::invalid(pc(&kpath, "name"), quote(n), m)),
                );
                let k = s(kr, "key");
                if k.is_empty() {
                    errs.push(FieldError::required(pc(&kpath, "key"), ""));
                } else {
                    errs.extend(
                        names::config_map_key(k)
                            .into_iter()
                            .map(|m| FieldError::invalid(pc(&kpath, "key"), quote(k), m)),
                    );
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                &fpath,
                quote(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(ev, "value").is_empty() {
            errs.push(FieldError::invalid(&fpath, quote(""), "may not be specified when `value` is not empty"));
        } else if sources > 1 {
            errs.push(FieldError::invalid(&fpath, quote(""), "may not have more than one field specified at a time"));
        }
    }
    errs
}

/// validateObjectFieldSelector for env vars.
fn validate_field_ref(fr: &Value, path: &str) -> Vec<FieldError> {
    let api_version = s(fr, "apiVersion");
    if api_version.is_empty() {
        return vec![FieldError::required(pc(path, "apiVersion"), "")];
    }
    let field_path = s(fr, "fieldPath");
    if field_path.is_empty() {
        return vec![FieldError::required(pc(path, "fieldPath"), "")];
    }
    let convert_err = if api_version != "v1" {
        Some(format!("unsupported pod version: {api_version}"))
    } else if let Some((base, _)) = split_subscript(field_path) {
        (base != "metadata.annotations" && base != "metadata.labels")
            .then(|| format!("field label does not support subscript: {field_path}"))
    } else if field_path == "spec.host" || POD_FIELD_LABELS.contains(&field_path) {
        None
    } else {
        Some(format!("field label not supported: {field_path}"))
    };
    if let Some(e) = convert_err {
        return vec![FieldError::invalid(
            pc(path, "fieldPath"),
            quote(field_path),
            format!("error converting fieldPath: {e}"),
        )];
    }
    let internal = if field_path == "spec.host" { "spec.nodeName" } else { field_path };
    if let Some((base, subscript)) = split_subscript(internal) {
        let key = if base == "metadata.annotations" { subscript.to_lowercase() } else { subscript.to_string() };
        return names::qualified_name_errors(path, &key);
    }
    if !ENV_FIELD_PATHS.contains(&internal) {
        return vec![FieldError::not_supported(pc(path, "fieldPath"), quote(internal), ENV_FIELD_PATHS)];
    }
    Vec::new()
}

/// `fieldpath.SplitMaybeSubscriptedPath`: `metadata.labels['key']`.
fn split_subscript(p: &str) -> Option<(&str, &str)> {
    let inner = p.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    Some((base, key))
}

/// ValidateEnvFrom.
fn validate_env_from(list: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in list.iter().enumerate() {
        let epath = pi(path, i);
        let prefix = s(ev, "prefix");
        if !prefix.is_empty() {
            errs.extend(
                names::env_var_name(prefix)
                    .into_iter()
                    .map(|m| FieldError::invalid(pc(&epath, "prefix"), quote(prefix), m)),
            );
        }
        let mut sources = 0;
        for key in ["configMapRef", "secretRef"] {
            if let Some(r) = get(ev, key) {
                sources += 1;
                let n = s(r, "name");
                let npath = pc(&pc(&epath, key), "name");
                if n.is_empty() {
                    errs.push(FieldError::required(npath, ""));
                } else {
                    errs.extend(
                        NameKind::Subdomain
                            .check(n, true)
                            .into_iter()
                            .map(|m| FieldError::invalid(&npath, quote(n), m)),
                    );
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(path, quote(""), "must specify one of: `configMapRef` or `secretRef`"));
        } else if sources > 1 {
            errs.push(FieldError::invalid(path, quote(""), "may not have more than one field specified at a time"));
        }
    }
    errs
}

/// ValidateVolumeMounts (names must refer to volumes, mount paths unique, sub-paths relative).
fn validate_volume_mounts(mounts: &[Value], volumes: &[&str], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut points: Vec<&str> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let mpath = pi(path, i);
        let name = s(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(pc(&mpath, "name"), ""));
        }
        if !volumes.contains(&name) {
            errs.push(FieldError::not_found(pc(&mpath, "name"), quote(name)));
        }
        let mount_path = s(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(pc(&mpath, "mountPath"), ""));
        }
        if points.contains(&mount_path) {
            errs.push(FieldError::invalid(pc(&mpath, "mountPath"), quote(mount_path), "must be unique"));
        }
        points.push(mount_path);
        for key in ["subPath", "subPathExpr"] {
            let sub = s(m, key);
            if sub.is_empty() {
                continue;
            }
            if key == "subPathExpr" && !s(m, "subPath").is_empty() {
                errs.push(FieldError::invalid(
                    pc(&mpath, key),
                    quote(sub),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            // Upstream reports these at the list's path, not the item's.
            let spath = pc(path, key);
            if sub.starts_with('/') {
                errs.push(FieldError::invalid(&spath, quote(sub), "must be a relative path"));
            }
            if sub.split('/').any(|part| part == "..") {
                errs.push(FieldError::invalid(&spath, quote(sub), "must not contain '..'"));
            }
        }
    }
    errs
}

/// The three probes of a container (liveness and startup need successThreshold 1, readiness
/// may not set a terminationGracePeriodSeconds).
fn validate_probes(c: &Value, grace: Option<i64>, cpath: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = get(c, field) else { continue };
        let path = pc(cpath, field);
        errs.extend(validate_probe(probe, grace, &path));
        if field == "readinessProbe" {
            if let Some(t) = value::opt_i(probe, "terminationGracePeriodSeconds") {
                errs.push(FieldError::invalid(
                    pc(&path, "terminationGracePeriodSeconds"),
                    t.to_string(),
                    "must not be set for readinessProbes",
                ));
            }
        } else {
            let st = value::i(probe, "successThreshold");
            if st != 1 {
                errs.push(FieldError::invalid(pc(&path, "successThreshold"), st.to_string(), "must be 1"));
            }
        }
    }
    errs
}

/// validateProbe.
fn validate_probe(probe: &Value, grace: Option<i64>, path: &str) -> Vec<FieldError> {
    let mut errs = validate_handler(probe, &["exec", "httpGet", "tcpSocket", "grpc"], grace, path);
    for field in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        let v = value::i(probe, field);
        if v < 0 {
            errs.push(FieldError::invalid(pc(path, field), v.to_string(), "must be greater than or equal to 0"));
        }
    }
    if let Some(t) = value::opt_i(probe, "terminationGracePeriodSeconds")
        && t <= 0
    {
        errs.push(FieldError::invalid(
            pc(path, "terminationGracePeriodSeconds"),
            t.to_string(),
            "must be greater than 0",
        ));
    }
    errs
}

/// validateLifecycle.
fn validate_lifecycle(lifecycle: &Value, grace: Option<i64>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for hook in ["postStart", "preStop"] {
        if let Some(h) = get(lifecycle, hook) {
            errs.extend(validate_handler(h, &["exec", "httpGet", "tcpSocket", "sleep"], grace, &pc(path, hook)));
        }
    }
    errs
}

/// validateHandler: exactly one of the handler kinds in `kinds`.
fn validate_handler(h: &Value, kinds: &[&str], grace: Option<i64>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    for kind in kinds {
        let Some(action) = get(h, kind) else { continue };
        let apath = pc(path, kind);
        if count > 0 {
            errs.push(FieldError::forbidden(apath, "may not specify more than 1 handler type"));
            continue;
        }
        count += 1;
        match *kind {
            "exec" if value::arr(action, "command").is_empty() => {
                errs.push(FieldError::required(pc(&apath, "command"), ""));
            }
            "httpGet" => {
                if s(action, "path").is_empty() {
                    errs.push(FieldError::required(pc(&apath, "path"), ""));
                }
                errs.extend(names::port_num_or_name(&pc(&apath, "port"), get(action, "port")));
                let scheme = s(action, "scheme");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    errs.push(FieldError::not_supported(pc(&apath, "scheme"), quote(scheme), &["HTTP", "HTTPS"]));
                }
                for header in value::arr(action, "httpHeaders") {
                    let n = s(header, "name");
                    errs.extend(
                        names::http_header_name(n)
                            .into_iter()
                            .map(|m| FieldError::invalid(pc(&apath, "httpHeaders"), quote(n), m)),
                    );
                }
            }
            "tcpSocket" => errs.extend(names::port_num_or_name(&pc(&apath, "port"), get(action, "port"))),
            "grpc" => {
                let p = value::i(action, "port");
                errs.extend(
                    names::port_num(p).into_iter().map(|m| FieldError::invalid(pc(&apath, "port"), p.to_string(), m)),
                );
            }
            "sleep" => {
                let secs = value::i(action, "seconds");
                if let Some(g) = grace
                    && (secs <= 0 || secs > g)
                {
                    errs.push(FieldError::invalid(
                        &apath,
                        secs.to_string(),
                        format!(
                            "must be greater than 0 and less than terminationGracePeriodSeconds ({g}). Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep."
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    errs
}

/// validatePodDNSConfig.
fn validate_dns_config(config: Option<&Value>, policy: &str, path: &str) -> Vec<FieldError> {
    if policy == "None" {
        let Some(c) = config else {
            return vec![FieldError::required(path, "must provide `dnsConfig` when `dnsPolicy` is None")];
        };
        if value::arr(c, "nameservers").is_empty() {
            return vec![FieldError::required(
                pc(path, "nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )];
        }
    }
    let Some(c) = config else { return Vec::new() };
    let mut errs = Vec::new();
    let servers = value::str_list(c, "nameservers");
    if servers.len() > MAX_DNS_NAMESERVERS {
        errs.push(FieldError::invalid(
            pc(path, "nameservers"),
            render::str_slice("[]string", Some(&servers)),
            format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in servers.iter().enumerate() {
        errs.extend(net::valid_ip_errors(&pi(&pc(path, "nameservers"), i), ns));
    }
    let searches = value::str_list(c, "searches");
    if searches.len() > MAX_DNS_SEARCH_PATHS {
        errs.push(FieldError::invalid(
            pc(path, "searches"),
            render::str_slice("[]string", Some(&searches)),
            format!("must not have more than {MAX_DNS_SEARCH_PATHS} search paths"),
        ));
    }
    if searches.join(" ").len() > MAX_DNS_SEARCH_CHARS {
        errs.push(FieldError::invalid(
            pc(path, "searches"),
            render::str_slice("[]string", Some(&searches)),
            format!("must not have more than {MAX_DNS_SEARCH_CHARS} characters (including spaces) in the search list"),
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        errs.extend(names::subdomain_errors(&pi(&pc(path, "searches"), i), trimmed));
    }
    for (i, opt) in value::arr(c, "options").iter().enumerate() {
        if s(opt, "name").is_empty() {
            errs.push(FieldError::required(pi(&pc(path, "options"), i), "must not be empty"));
        }
    }
    errs
}

/// ValidateTolerations.
fn validate_tolerations(tolerations: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let tpath = pi(path, i);
        let key = s(t, "key");
        let op = s(t, "operator");
        let effect = s(t, "effect");
        let val = s(t, "value");
        if !key.is_empty() {
            errs.extend(names::qualified_name_errors(&pc(&tpath, "key"), key));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                pc(&tpath, "operator"),
                quote(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                pc(&tpath, "effect"),
                quote(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = names::label_value(val);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(pc(&tpath, "operator"), quote(val), msgs.join(";")));
                }
            }
            "Exists" => {
                if !val.is_empty() {
                    errs.push(FieldError::invalid(
                        pc(&tpath, "operator"),
                        quote(val),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(pc(&tpath, "operator"), quote(other), &["Equal", "Exists"])),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            errs.push(FieldError::not_supported(
                pc(&tpath, "effect"),
                quote(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
    errs
}

/// ValidatePodUpdate: only images, activeDeadlineSeconds, added tolerations and removed
/// scheduling gates may change.
pub fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    errs.extend(validate_pod_metadata_and_spec(new));
    let null = Value::Null;
    let new_spec = get(new, "spec").unwrap_or(&null);
    let old_spec = get(old, "spec").unwrap_or(&null);
    for list in ["containers", "initContainers"] {
        let (n, o) = (value::arr(new_spec, list), value::arr(old_spec, list));
        let lpath = pc("spec", list);
        if n.len() != o.len() {
            errs.push(FieldError::forbidden(lpath, "pod updates may not add or remove containers"));
            return errs;
        }
        for (i, c) in n.iter().enumerate() {
            let image = s(c, "image");
            if image.is_empty() {
                errs.push(FieldError::required(pc(&pi(&lpath, i), "image"), ""));
            }
            if image.trim().len() != image.len() {
                errs.push(FieldError::invalid(
                    pc(&pi(&lpath, i), "image"),
                    quote(image),
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    match (value::opt_i(new_spec, "activeDeadlineSeconds"), value::opt_i(old_spec, "activeDeadlineSeconds")) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                n.to_string(),
                names::inclusive_range_error(0, MAX_INT32),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                n.to_string(),
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                "null",
                "must not update from a positive integer to nil value",
            ));
        }
        _ => {}
    }
    let new_tol = value::arr(new_spec, "tolerations");
    let strip_seconds = |t: &Value| {
        let mut t = value::normalized(t);
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let all_kept = value::arr(old_spec, "tolerations").iter().all(|o| {
        let o = strip_seconds(o);
        new_tol.iter().any(|n| strip_seconds(n) == o)
    });
    if all_kept {
        errs.extend(validate_tolerations(new_tol, "spec.tolerations"));
    } else {
        errs.push(FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    let old_gates: Vec<&str> = value::arr(old_spec, "schedulingGates").iter().map(|g| s(g, "name")).collect();
    for (i, g) in value::arr(new_spec, "schedulingGates").iter().enumerate() {
        let name = s(g, "name");
        if !old_gates.contains(&name) {
            errs.push(FieldError::forbidden(
                pc(&pi("spec.schedulingGates", i), "name"),
                format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            ));
        }
    }
    if value::sem_eq(Some(new_spec), Some(old_spec)) {
        return errs;
    }
    let munged = munge_pod_spec(new_spec, old_spec);
    if !value::sem_eq(Some(&munged), Some(old_spec)) {
        let diff = spec_diff(&value::normalized(old_spec), &value::normalized(&munged), "");
        errs.push(FieldError::forbidden(
            "spec",
            format!("pod updates may not change fields other than {}\n{}", UPDATABLE_POD_SPEC_FIELDS.join(","), diff),
        ));
    }
    errs
}

/// The new spec with the mutable fields replaced by the old values, for the equality check.
fn munge_pod_spec(new_spec: &Value, old_spec: &Value) -> Value {
    let mut m = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let old_list = value::arr(old_spec, list);
        if let Some(items) = m.get_mut(list).and_then(Value::as_array_mut) {
            for (i, c) in items.iter_mut().enumerate() {
                if let (Some(obj), Some(old_c)) = (c.as_object_mut(), old_list.get(i)) {
                    match get(old_c, "image") {
                        Some(img) => obj.insert("image".into(), img.clone()),
                        None => obj.remove("image"),
                    };
                }
            }
        }
    }
    if let Some(obj) = m.as_object_mut() {
        for field in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match get(old_spec, field) {
                Some(v) => obj.insert(field.into(), v.clone()),
                None => obj.remove(field),
            };
        }
        let old_grace = value::opt_i(old_spec, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0)
            && obj.get("terminationGracePeriodSeconds").and_then(Value::as_i64) == Some(1)
        {
            obj.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
    }
    m
}

/// A readable diff of two normalised specs, one `-`/`+` line pair per changed leaf. Upstream
/// prints `cmp.Diff` of the Go structs here, which cannot be reproduced exactly.
fn spec_diff(old: &Value, new: &Value, path: &str) -> String {
    let mut out = String::new();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = pc(path, k);
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => out.push_str(&spec_diff(x, y, &p)),
                    (Some(x), None) => out.push_str(&format!("  - {p}: {x}\n")),
                    (None, Some(y)) => out.push_str(&format!("  + {p}: {y}\n")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                out.push_str(&spec_diff(x, y, &pi(path, i)));
            }
        }
        (a, b) if a != b => out.push_str(&format!("  - {path}: {a}\n  + {path}: {b}\n")),
        _ => {}
    }
    out
}

/// ValidatePodStatusUpdate (the node name, pod and host IPs, condition types).
pub fn validate_pod_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    let null = Value::Null;
    let status = get(new, "status").unwrap_or(&null);
    for (i, c) in value::arr(status, "conditions").iter().enumerate() {
        let t = s(c, "type");
        if !["PodScheduled", "Ready", "Initialized"].contains(&t) {
            errs.extend(names::qualified_name_errors(&pc(&pi("metadata.conditions", i), "Type"), t));
        }
    }
    let new_node = value::at(new, &["spec", "nodeName"]).and_then(Value::as_str).unwrap_or_default();
    let old_node = value::at(old, &["spec", "nodeName"]).and_then(Value::as_str).unwrap_or_default();
    if new_node != old_node {
        errs.push(FieldError::forbidden("status.nodeName", "may not be changed directly"));
    }
    errs.extend(status_ips(status, "podIPs", "core.PodIP"));
    let host_ips = value::arr(status, "hostIPs");
    if let Some(first) = host_ips.first()
        && s(status, "hostIP") != s(first, "ip")
    {
        errs.push(FieldError::invalid("status.hostIPs[0].ip", quote(s(first, "ip")), "must be equal to `hostIP`"));
    }
    errs.extend(status_ips(status, "hostIPs", "core.HostIP"));
    errs
}

/// validatePodIPs / validateHostIPs: valid addresses, at most one per family, no duplicates.
fn status_ips(status: &Value, field: &str, go_type: &str) -> Vec<FieldError> {
    let path = pc("status", field);
    let ips: Vec<String> = value::arr(status, field).iter().map(|p| s(p, "ip").to_string()).collect();
    let mut errs = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        errs.extend(net::valid_ip_errors(&pi(&path, i), ip));
    }
    if ips.len() > 1 {
        if !net::is_dual_stack(&ips) || ips.len() > 2 {
            let repr: Vec<String> = ips.iter().map(|ip| format!("{go_type}{{IP:{}}}", quote(ip))).collect();
            errs.push(FieldError::invalid(
                &path,
                format!("[]{go_type}{{{}}}", repr.join(", ")),
                "may specify no more than one IP for each IP family",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            if seen.contains(&ip.as_str()) {
                errs.push(FieldError::duplicate(pi(&path, i), format!("{go_type}{{IP:{}}}", quote(ip))));
            }
            seen.push(ip);
        }
    }
    errs
}
