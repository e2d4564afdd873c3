//! Cluster DNS: a zone built from Services and EndpointSlices, a pure answerer
//! (query, zone) → response that follows `reference/dns-spec.md`, and the UDP/TCP server
//! that serves it on the kube-dns cluster IP with a forwarding cache for other names.
