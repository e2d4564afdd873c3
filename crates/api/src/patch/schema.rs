//! The merge metadata of the kinds pier serves: for every list whose behaviour differs from
//! the default, how strategic merge patch merges it (`patchStrategy`/`patchMergeKey` Go tags)
//! and how server-side apply identifies its items (`+listType`/`+listMapKey`); and which maps
//! and structs server-side apply treats as one atomic value (`+mapType=atomic`,
//! `+structType=atomic`).
//!
//! Where it came from: the `DeepMerge` impls that k8s-openapi generates from the OpenAPI
//! `x-kubernetes-list-type`/`x-kubernetes-list-map-keys`/`x-kubernetes-map-type` extensions
//! (crate `k8s-openapi` 0.29, `v1_33`), cross-checked against the struct tags in k8s.io/api
//! `core/v1/types.go`, `apps/v1/types.go` and apimachinery `meta/v1/types.go`. k8s-openapi
//! keeps only the first list-map key, so the multi-key lists (`ports` keyed by port *and*
//! protocol, `topologySpreadConstraints`) and the `protocol: TCP` key default come from the Go
//! markers.
//!
//! Everything not listed behaves the default way: objects merge field by field, lists are
//! replaced as a whole (SMP) or atomic (SSA), scalars are replaced. A list item has no path
//! segment of its own: a list node's `fields` describe its items.

/// How strategic merge patch merges a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SmpList {
    /// No `patchStrategy`: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars: the union, as a set.
    MergeSet,
    /// `patchStrategy:"merge"` with `patchMergeKey`: items merge by that key.
    MergeByKey(&'static str),
}

/// How server-side apply identifies the items of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SsaList {
    /// `+listType=atomic` (and the default): one value owned as a whole.
    Atomic,
    /// `+listType=set`: scalars, each owned on its own (`v:` path elements).
    Set,
    /// `+listType=map`: objects identified by `keys` (`k:` path elements); a key field an
    /// item omits takes its value from `defaults` (`protocol` defaults to `TCP`).
    Map { keys: &'static [&'static str], defaults: &'static [(&'static str, &'static str)] },
}

/// One position in an object's schema.
#[derive(Debug)]
pub(crate) struct Node {
    /// Children with non-default behaviour somewhere below them.
    pub(crate) fields: &'static [(&'static str, &'static Node)],
    pub(crate) smp: SmpList,
    pub(crate) ssa: SsaList,
    /// Server-side apply treats this map or struct as one leaf.
    pub(crate) atomic: bool,
}

impl Node {
    /// The schema of field `name` of the object (or list item) at this node.
    pub(crate) fn child(&self, name: &str) -> &'static Node {
        self.fields.iter().find(|(n, _)| *n == name).map_or(&DEFAULT, |(_, node)| *node)
    }
}

const fn object(fields: &'static [(&'static str, &'static Node)]) -> Node {
    Node { fields, smp: SmpList::Replace, ssa: SsaList::Atomic, atomic: false }
}

const fn keyed(
    smp_key: &'static str,
    ssa_keys: &'static [&'static str],
    fields: &'static [(&'static str, &'static Node)],
) -> Node {
    Node {
        fields,
        smp: SmpList::MergeByKey(smp_key),
        ssa: SsaList::Map { keys: ssa_keys, defaults: &[] },
        atomic: false,
    }
}

/// The default: merge objects, replace lists.
pub(crate) static DEFAULT: Node = object(&[]);
static ATOMIC: Node = Node { fields: &[], smp: SmpList::Replace, ssa: SsaList::Atomic, atomic: true };
static MERGED_SET: Node = Node { fields: &[], smp: SmpList::MergeSet, ssa: SsaList::Set, atomic: false };
static BY_NAME: Node = keyed("name", &["name"], &[]);
static BY_IP: Node = keyed("ip", &["ip"], &[]);
static CONDITIONS: Node = keyed("type", &["type"], &[]);

static OBJECT_META: Node = object(&[("finalizers", &MERGED_SET), ("ownerReferences", &OWNER_REFERENCES)]);
static OWNER_REFERENCES: Node = keyed("uid", &["uid"], &[]);

static ENV_VAR_SOURCE: Node = object(&[
    ("configMapKeyRef", &ATOMIC),
    ("fieldRef", &ATOMIC),
    ("resourceFieldRef", &ATOMIC),
    ("secretKeyRef", &ATOMIC),
]);
static ENV: Node = keyed("name", &["name"], &[("valueFrom", &ENV_VAR_SOURCE)]);
static CONTAINER_PORTS: Node = Node {
    fields: &[],
    // SMP merges by containerPort alone; SSA keys by containerPort and protocol.
    smp: SmpList::MergeByKey("containerPort"),
    ssa: SsaList::Map { keys: &["containerPort", "protocol"], defaults: &[("protocol", "TCP")] },
    atomic: false,
};
static VOLUME_MOUNTS: Node = keyed("mountPath", &["mountPath"], &[]);
static VOLUME_DEVICES: Node = keyed("devicePath", &["devicePath"], &[]);
static RESOURCE_CLAIMS: Node = Node {
    fields: &[],
    // `+listType=map` without a patch strategy.
    smp: SmpList::Replace,
    ssa: SsaList::Map { keys: &["name"], defaults: &[] },
    atomic: false,
};
static RESOURCES: Node = object(&[("claims", &RESOURCE_CLAIMS)]);
static CONTAINERS: Node = keyed(
    "name",
    &["name"],
    &[
        ("env", &ENV),
        ("ports", &CONTAINER_PORTS),
        ("resources", &RESOURCES),
        ("volumeDevices", &VOLUME_DEVICES),
        ("volumeMounts", &VOLUME_MOUNTS),
    ],
);
static TOPOLOGY_SPREAD: Node = Node {
    fields: &[("labelSelector", &ATOMIC)],
    smp: SmpList::MergeByKey("topologyKey"),
    ssa: SsaList::Map { keys: &["topologyKey", "whenUnsatisfiable"], defaults: &[] },
    atomic: false,
};
static NODE_AFFINITY: Node = object(&[("requiredDuringSchedulingIgnoredDuringExecution", &ATOMIC)]);
static AFFINITY: Node = object(&[("nodeAffinity", &NODE_AFFINITY)]);
static POD_SPEC: Node = object(&[
    ("affinity", &AFFINITY),
    ("containers", &CONTAINERS),
    ("ephemeralContainers", &CONTAINERS),
    ("hostAliases", &BY_IP),
    ("imagePullSecrets", &BY_NAME),
    ("initContainers", &CONTAINERS),
    ("nodeSelector", &ATOMIC),
    ("resourceClaims", &BY_NAME),
    ("schedulingGates", &BY_NAME),
    ("topologySpreadConstraints", &TOPOLOGY_SPREAD),
    // patchStrategy "merge,retainKeys": the retainKeys half is the `$retainKeys` directive.
    ("volumes", &BY_NAME),
]);
static POD_STATUS: Node = object(&[
    ("conditions", &CONDITIONS),
    ("hostIPs", &BY_IP),
    ("podIPs", &BY_IP),
    ("resourceClaimStatuses", &BY_NAME),
]);
static POD_TEMPLATE: Node = object(&[("metadata", &OBJECT_META), ("spec", &POD_SPEC)]);
static STATUS_WITH_CONDITIONS: Node = object(&[("conditions", &CONDITIONS)]);

static POD: Node = object(&[("metadata", &OBJECT_META), ("spec", &POD_SPEC), ("status", &POD_STATUS)]);

static SERVICE_PORTS: Node = Node {
    fields: &[],
    // Upstream's SMP key is `port` alone; SSA keys by port and protocol.
    smp: SmpList::MergeByKey("port"),
    ssa: SsaList::Map { keys: &["port", "protocol"], defaults: &[("protocol", "TCP")] },
    atomic: false,
};
static SERVICE_SPEC: Node = object(&[("ports", &SERVICE_PORTS), ("selector", &ATOMIC)]);
static SERVICE: Node =
    object(&[("metadata", &OBJECT_META), ("spec", &SERVICE_SPEC), ("status", &STATUS_WITH_CONDITIONS)]);

static NODE_SPEC: Node = object(&[("podCIDRs", &MERGED_SET)]);
static NODE_STATUS: Node = object(&[("addresses", &CONDITIONS), ("conditions", &CONDITIONS)]);
static NODE: Node = object(&[("metadata", &OBJECT_META), ("spec", &NODE_SPEC), ("status", &NODE_STATUS)]);

static NAMESPACE: Node = object(&[("metadata", &OBJECT_META), ("status", &STATUS_WITH_CONDITIONS)]);

static EVENT: Node = object(&[("involvedObject", &ATOMIC), ("metadata", &OBJECT_META), ("related", &ATOMIC)]);

static SERVICE_ACCOUNT: Node = object(&[("metadata", &OBJECT_META), ("secrets", &BY_NAME)]);

static WORKLOAD_SPEC: Node = object(&[("selector", &ATOMIC), ("template", &POD_TEMPLATE)]);
static WORKLOAD: Node =
    object(&[("metadata", &OBJECT_META), ("spec", &WORKLOAD_SPEC), ("status", &STATUS_WITH_CONDITIONS)]);

/// Kinds with nothing special beyond their metadata (Endpoints `subsets`, EndpointSlice
/// `endpoints`, Ingress `rules` and `tls` are all atomic/replace upstream).
static PLAIN: Node = object(&[("metadata", &OBJECT_META)]);

/// The schema of `kind`; kinds pier does not know get the metadata rules only.
pub(crate) fn root(kind: &str) -> &'static Node {
    match kind {
        "Pod" => &POD,
        "Service" => &SERVICE,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "Event" => &EVENT,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "Deployment" | "ReplicaSet" => &WORKLOAD,
        _ => &PLAIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_the_pod_spec_into_templates() {
        let containers = root("Deployment").child("spec").child("template").child("spec").child("containers");
        assert_eq!(containers.smp, SmpList::MergeByKey("name"));
        assert_eq!(containers.child("ports").smp, SmpList::MergeByKey("containerPort"));
        assert!(matches!(containers.child("ports").ssa, SsaList::Map { keys: ["containerPort", "protocol"], .. }));
        assert_eq!(root("Pod").child("spec").child("tolerations").smp, SmpList::Replace);
        assert_eq!(root("Ingress").child("spec").child("rules").smp, SmpList::Replace);
        assert!(root("Service").child("spec").child("selector").atomic);
        assert_eq!(root("Unknown").child("metadata").child("finalizers").smp, SmpList::MergeSet);
    }
}
