//! Cluster DNS: a zone built from Services and EndpointSlices, a pure answerer
//! (query, zone) → response that follows `reference/dns-spec.md`, and the UDP/TCP server
//! that serves it on the kube-dns cluster IP with a forwarding cache for other names.
//!
//! Data flow: watch events → [`Zone::apply_service`] / [`Zone::apply_slice`] (one Service's
//! names rebuilt, swapped in) → [`answer_into`] (pure: bytes in, bytes out, or "forward") →
//! [`Server`] (sockets, forwarding with a TTL cache, ExternalName chasing).

mod answer;
mod chase;
mod entry;
mod forward;
mod objects;
mod records;
mod server;
mod wire;
mod zone;

pub use answer::{
    Answer, DEFAULT_MAX_UDP_PAYLOAD, Disposition, Resolve, Transport, answer, answer_into, error_response,
};
pub use chase::merge_chased;
pub use records::reverse_name;
pub use server::{Server, ServerConfig, ServerError, upstreams_from_resolv_conf};
pub use zone::{ConfigError, Zone, ZoneConfig};
