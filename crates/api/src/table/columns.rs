//! Column definitions per kind, as upstream's `printers.go` `AddHandlers` declares them.
//!
//! Descriptions are the `SwaggerDoc` strings upstream references (taken from the API
//! documentation of the matching fields; kubectl never shows them). Where upstream points at a
//! removed group version (`extensions/v1beta1` ReplicaSet and Deployment, `discovery/v1beta1`
//! EndpointSlice) the current `apps/v1` / `discovery/v1` text is used.

use super::TableColumnDefinition;

const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const POD_IP: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const POD_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const POD_NOMINATED_NODE_NAME: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const POD_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";

const RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const RS_READY_REPLICAS: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
const RS_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const TEMPLATE_CONTAINERS: &str = "Names of each container in the template.";
const TEMPLATE_IMAGES: &str = "Images referenced by each container in the template.";

const SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";

const ENDPOINTS_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";

const NODE_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";
const NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const NODE_OS_IMAGE: &str = "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const NODE_KERNEL_VERSION: &str = "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const NODE_CONTAINER_RUNTIME: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";

const EVENT_LAST_TIMESTAMP: &str = "The time at which the most recent occurrence of this event was recorded.";
const EVENT_TYPE: &str = "Type of this event (Normal, Warning), new types could be added in the future";
const EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";
const EVENT_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const EVENT_SOURCE: &str = "The component reporting this event. Should be a short machine understandable string.";
const EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";
const EVENT_FIRST_TIMESTAMP: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const EVENT_COUNT: &str = "The number of times this event has occurred.";

const SECRET_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const SECRET_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const SA_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
const CONFIGMAP_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";

const DEPLOY_UPDATED: &str =
    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
const DEPLOY_AVAILABLE: &str =
    "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
const DEPLOY_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";

const SLICE_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.";
const SLICE_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.";
const SLICE_ENDPOINTS: &str =
    "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";

fn col(name: &str, type_: &str, format: &str, description: &str, priority: i32) -> TableColumnDefinition {
    TableColumnDefinition {
        name: name.to_string(),
        type_: type_.to_string(),
        format: format.to_string(),
        description: description.to_string(),
        priority,
    }
}

fn name() -> TableColumnDefinition {
    col("Name", "string", "name", NAME, 0)
}

fn age() -> TableColumnDefinition {
    col("Age", "string", "", CREATION_TIMESTAMP, 0)
}

fn s(name: &str, description: &str) -> TableColumnDefinition {
    col(name, "string", "", description, 0)
}

fn int(name: &str, description: &str) -> TableColumnDefinition {
    col(name, "integer", "", description, 0)
}

fn wide(name: &str, description: &str) -> TableColumnDefinition {
    col(name, "string", "", description, 1)
}

/// The columns upstream's server-side printer declares for `kind` (all priorities; kubectl shows
/// priority-1 columns only with `-o wide`). Kinds without a printer get the default convertor's
/// `Name`, `Created At`.
pub fn column_definitions(kind: &str) -> Vec<TableColumnDefinition> {
    match kind {
        "Pod" => vec![
            name(),
            s("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            s("Status", "The aggregate status of the containers in this pod."),
            s(
                "Restarts",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age(),
            wide("IP", POD_IP),
            wide("Node", POD_NODE_NAME),
            wide("Nominated Node", POD_NOMINATED_NODE_NAME),
            wide("Readiness Gates", POD_READINESS_GATES),
        ],
        "ReplicaSet" => vec![
            name(),
            int("Desired", RS_SPEC_REPLICAS),
            int("Current", RS_STATUS_REPLICAS),
            int("Ready", RS_READY_REPLICAS),
            age(),
            wide("Containers", TEMPLATE_CONTAINERS),
            wide("Images", TEMPLATE_IMAGES),
            wide("Selector", RS_SELECTOR),
        ],
        "Service" => vec![
            name(),
            s("Type", SVC_TYPE),
            s("Cluster-IP", SVC_CLUSTER_IP),
            s("External-IP", SVC_EXTERNAL_IPS),
            s("Port(s)", SVC_PORTS),
            age(),
            wide("Selector", SVC_SELECTOR),
        ],
        "Ingress" => vec![
            name(),
            s("Class", "The name of the IngressClass resource that should be used for additional configuration"),
            s("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
            s("Address", "Address is a list containing ingress points for the load-balancer"),
            s("Ports", "Ports of TLS configurations that open"),
            age(),
        ],
        "IngressClass" => vec![
            name(),
            s("Controller", "Controller that is responsible for handling this class"),
            s("Parameters", "A reference to a resource with additional parameters"),
            age(),
        ],
        "Endpoints" => vec![name(), s("Endpoints", ENDPOINTS_SUBSETS), age()],
        "Node" => vec![
            name(),
            s("Status", "The status of the node"),
            s("Roles", "The roles of the node"),
            age(),
            s("Version", NODE_KUBELET_VERSION),
            wide("Internal-IP", NODE_ADDRESSES),
            wide("External-IP", NODE_ADDRESSES),
            wide("OS-Image", NODE_OS_IMAGE),
            wide("Kernel-Version", NODE_KERNEL_VERSION),
            wide("Container-Runtime", NODE_CONTAINER_RUNTIME),
        ],
        "Event" => vec![
            s("Last Seen", EVENT_LAST_TIMESTAMP),
            s("Type", EVENT_TYPE),
            s("Reason", EVENT_REASON),
            s("Object", EVENT_INVOLVED_OBJECT),
            wide("Subobject", EVENT_FIELD_PATH),
            wide("Source", EVENT_SOURCE),
            s("Message", EVENT_MESSAGE),
            wide("First Seen", EVENT_FIRST_TIMESTAMP),
            wide("Count", EVENT_COUNT),
            col("Name", "string", "name", NAME, 1),
        ],
        "Namespace" => vec![name(), s("Status", "The status of the namespace"), age()],
        "Secret" => vec![name(), s("Type", SECRET_TYPE), s("Data", SECRET_DATA), age()],
        "ServiceAccount" => vec![name(), s("Secrets", SA_SECRETS), age()],
        "Deployment" => vec![
            name(),
            s("Ready", "Number of the pod with ready state"),
            s("Up-to-date", DEPLOY_UPDATED),
            s("Available", DEPLOY_AVAILABLE),
            age(),
            wide("Containers", TEMPLATE_CONTAINERS),
            wide("Images", TEMPLATE_IMAGES),
            wide("Selector", DEPLOY_SELECTOR),
        ],
        "ConfigMap" => vec![name(), s("Data", CONFIGMAP_DATA), age()],
        "EndpointSlice" => vec![
            name(),
            s("AddressType", SLICE_ADDRESS_TYPE),
            s("Ports", SLICE_PORTS),
            s("Endpoints", SLICE_ENDPOINTS),
            age(),
        ],
        _ => vec![name(), col("Created At", "date", "", CREATION_TIMESTAMP, 0)],
    }
}
