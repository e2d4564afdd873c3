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

/// One Service's move in a partial sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub service: ServiceKey,
    /// Its ports as the last sync programmed them (empty: it was not there). The caller knows
    /// them (the sync loop compiles the snapshot as it was before the change), so a back end
    /// need not keep a copy of every Service's ports to find what to take out.
    pub old: Vec<ServicePort>,
    /// Its ports now (empty: the Service is gone).
    pub new: Vec<ServicePort>,
}

/// The whole service table, Service by Service in key order (Services without ports may be
/// left out). The sync loop compiles each Service as it is read rather than holding the
/// compiled table (a full sync reads it twice); a map of compiled ports is one too.
pub trait ServiceTable {
    fn for_each(&self, f: &mut dyn FnMut(&ServiceKey, &[ServicePort]));
}

impl ServiceTable for BTreeMap<ServiceKey, Vec<ServicePort>> {
    fn for_each(&self, f: &mut dyn FnMut(&ServiceKey, &[ServicePort])) {
        for (k, ports) in self {
            f(k, ports);
        }
    }
}

/// A back end that makes the service table live. Calls are serialised by the sync loop.
pub trait DataPlane: Send + 'static {
    /// Replaces everything with `table`.
    fn full_sync(&mut self, table: &dyn ServiceTable) -> Result<(), ProxyError>;
    /// Moves each listed Service from its old ports to its new ones, touching no other
    /// Service. After an error the caller must `full_sync`.
    fn apply(&mut self, changes: &[Change]) -> Result<(), ProxyError>;
    /// Whether the live state is still there (e.g. nobody deleted the table out of band).
    fn healthy(&mut self) -> Result<bool, ProxyError>;
}
