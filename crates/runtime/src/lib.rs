//! Pods on Linux: the kubelet, CRI runtime and CNI plugin of pier, minus the Kubernetes API.
//!
//! A *sandbox* is what every container of a pod shares: a network namespace with one address
//! from the node's pod CIDR on a veth attached to bridge `pier0`, a UTS namespace (the pod's
//! hostname), an IPC namespace and a mount namespace whose root is a private, tmpfs-backed
//! overlay over the host's root with the pod's own `/etc/resolv.conf` and `/etc/hosts`. The
//! namespaces are held by a tiny long-lived *holder* process (the pier binary itself, run as
//! `pier __image pier-sandbox`), so every pod mount lives and dies inside the pod's mount
//! namespace and nothing is mounted in the host's.
//!
//! A *container* is a process that joins those namespaces (its root is the overlay), in its own
//! process group, with stdout and stderr written to a CRI-format log file. `exec` joins the
//! same namespaces. IP addresses come from [`Runtime`]'s IPAM, one file per address under the
//! state directory, so they are never handed out twice and survive restarts.
//!
//! Images are not pulled: [`builtin_image`] recognises the demo images built into the binary
//! ([`run_builtin`] is their entry point) and [`resolve_argv`] turns an image plus
//! `command`/`args` into the argv to run with the host's executables.
//!
//! This crate knows nothing about the Kubernetes API: the agent translates Pods into calls here.
//! Every network change happens in the node's network namespace (the caller's, or
//! [`RuntimeConfig::node_netns`]) and in the pods' namespaces, never anywhere else.

mod container;
mod error;
mod holder;
mod http;
mod images;
mod logs;
mod netlink;
mod network;
mod procfs;
mod pty;
mod runtime;
mod state;
mod sys;
mod time;

pub use container::{Container, ContainerSpec, ExecProcess, ExecReader, ExecWriter, ExitStatus};
pub use error::{ImageError, RuntimeError};
pub use images::{Builtin, POD_PIER_EXE, builtin_image, resolve_argv, run_builtin};
pub use logs::LogOptions;
pub use nix::sys::signal::Signal;
pub use runtime::{
    POD_IP_PLACEHOLDER, RecordedSandbox, Runtime, RuntimeConfig, Sandbox, SandboxRequest, SandboxStatus,
    kill_recorded_pods, recorded_addresses, recorded_sandboxes,
};
pub use time::format_rfc3339_nanos;

/// Puts `ip/32` on `lo` of the caller's network namespace, so this node takes packets for it
/// and answers ARP for it on every interface (LoadBalancer IPs, the cluster DNS address).
pub fn add_local_address(ip: std::net::Ipv4Addr) -> Result<(), RuntimeError> {
    let op = || format!("adding {ip}/32 to lo");
    let mut nl = netlink::Netlink::open().map_err(|e| RuntimeError::net(op(), e))?;
    let lo = nl.link_index("lo").map_err(|e| RuntimeError::net(op(), e))?;
    nl.add_address(lo, ip, 32, ip).map_err(|e| RuntimeError::net(op(), e))
}

/// Makes every address of `cidr` local to the caller's network namespace (userspace proxy
/// mode listens on cluster IPs: a cluster IP with no listener then refuses at once).
pub fn add_local_route(cidr: ipnet::Ipv4Net) -> Result<(), RuntimeError> {
    let op = || format!("routing {cidr} locally");
    let mut nl = netlink::Netlink::open().map_err(|e| RuntimeError::net(op(), e))?;
    let lo = nl.link_index("lo").map_err(|e| RuntimeError::net(op(), e))?;
    nl.replace_local_route(cidr.network(), cidr.prefix_len(), lo).map_err(|e| RuntimeError::net(op(), e))
}

/// Takes `ip/32` off `lo` of the caller's network namespace again.
pub fn remove_local_address(ip: std::net::Ipv4Addr) -> Result<(), RuntimeError> {
    let op = || format!("removing {ip}/32 from lo");
    let mut nl = netlink::Netlink::open().map_err(|e| RuntimeError::net(op(), e))?;
    let lo = nl.link_index("lo").map_err(|e| RuntimeError::net(op(), e))?;
    nl.delete_address(lo, ip, 32).map_err(|e| RuntimeError::net(op(), e))
}

#[cfg(test)]
mod tests {
    /// The agent shares the runtime across tasks and moves handles between them.
    #[test]
    fn handles_are_thread_safe() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<crate::Runtime>();
        send_sync::<crate::Container>();
        send_sync::<crate::Sandbox>();
        send::<crate::ExecProcess>();
        send::<crate::RuntimeError>();
    }
}
