//! The Service data plane: a pure compiler from the watched Services, EndpointSlices and
//! Node to a service table ([`table`]), and the back ends that make the table live —
//! nftables ([`nft`], one table of pier's own, programmed incrementally) or the userspace L4
//! proxy ([`userspace`]). [`sync`] is the loop between the API and a back end.
//!
//! Invariant: the compiler and the renderers do no IO; only `sync` talks to the API and only
//! the back ends touch the kernel.

pub mod health;
pub mod nft;
pub mod sync;
pub mod table;
pub mod userspace;

use std::collections::BTreeMap;

use table::{ServiceKey, ServicePort};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nftables: {0}")]
    Nft(String),
    #[error("userspace proxy: {0}")]
    Userspace(String),
}

/// A back end that makes the service table live. Calls are serialised by the sync loop.
pub trait DataPlane: Send + 'static {
    /// Replaces everything with `table`.
    fn full_sync(&mut self, table: &BTreeMap<ServiceKey, Vec<ServicePort>>) -> Result<(), ProxyError>;
    /// Moves each listed Service to its new ports (empty: the Service is gone), touching no
    /// other Service. After an error the caller must `full_sync`.
    fn apply(&mut self, changes: &[(ServiceKey, Vec<ServicePort>)]) -> Result<(), ProxyError>;
    /// Whether the live state is still there (e.g. nobody deleted the table out of band).
    fn healthy(&mut self) -> Result<bool, ProxyError>;
}
