//! nftables mode: keeps pier's table in step with the service table, one transaction per
//! batch of changed Services, and rebuilds the whole table when it went missing or a
//! transaction failed.
//!
//! Transactions go to the kernel as nf_tables netlink batches ([`wire`] encodes, [`netlink`]
//! sends): an update costs the encoding of that batch and the kernel's work on it, nothing that
//! grows with the table. The `nft` binary is the other back end ([`Nftables::with_cli`]): it
//! reads the same operations as script text, but fetches the table's chains and sets before
//! every change and parses text, which costs seconds at 10,000 Services.

pub mod conntrack;
pub mod ir;
pub mod netlink;
pub mod render;
pub mod wire;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::table::{NodeContext, ServiceKey, ServicePort};
use crate::{DataPlane, ProxyError};
use netlink::Netlink;
use render::{Op, ServiceObjects};

/// Slot numbers of the chains that pick endpoints (see `render::SLOTS`). A number freed by one
/// batch is reused only by a later one, so a transaction never deletes and adds the same slot
/// for two different Services.
#[derive(Debug, Default)]
struct SlotIds {
    ids: std::collections::HashMap<String, u32>,
    free: Vec<u32>,
    released: Vec<u32>,
    next: u32,
}

impl SlotIds {
    fn get(&mut self, chain: &str) -> u32 {
        if let Some(id) = self.ids.get(chain) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.ids.insert(chain.to_string(), id);
        id
    }

    fn release_gone(&mut self, old: &ServiceObjects, new: &ServiceObjects) {
        for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
            if let Some(id) = self.ids.remove(name) {
                self.released.push(id);
            }
        }
    }

    fn end_batch(&mut self) {
        self.free.append(&mut self.released);
    }
}

/// How transactions reach the kernel.
#[derive(Debug)]
enum Backend {
    /// nf_tables batches on a netlink socket, opened in the network namespace `Nftables` was
    /// created in (or, if that failed, the one of its first use).
    Netlink(Option<Netlink>),
    /// Scripts piped to `nft -f -`.
    Cli,
}

#[derive(Debug)]
pub struct Nftables {
    node: NodeContext,
    base: ir::BaseTable,
    backend: Backend,
    slots: SlotIds,
    objects: BTreeMap<ServiceKey, ServiceObjects>,
    /// How many live Services use each endpoint address (the hairpin set is shared).
    hairpin_refs: BTreeMap<Ipv4Addr, usize>,
    /// The UDP ports of each Service as last programmed, for the conntrack cleanup.
    udp: BTreeMap<ServiceKey, Vec<ServicePort>>,
}

/// Runs one nft script as a single transaction.
pub fn run_nft(script: &str) -> Result<(), ProxyError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ProxyError::Nft(format!("running nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| ProxyError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| ProxyError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProxyError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// The live table as nft prints it, or `None` when there is none.
pub fn list_table() -> Result<Option<String>, ProxyError> {
    let out = Command::new("nft")
        .args(["list", "table", render::FAMILY, render::TABLE])
        .output()
        .map_err(|e| ProxyError::Nft(format!("running nft: {e}")))?;
    if out.status.success() { Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())) } else { Ok(None) }
}

fn table_exists() -> Result<bool, ProxyError> {
    let out = Command::new("nft")
        .args(["list", "tables", render::FAMILY])
        .output()
        .map_err(|e| ProxyError::Nft(format!("running nft: {e}")))?;
    let wanted = format!("table {} {}", render::FAMILY, render::TABLE);
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == wanted))
}

fn socket(slot: &mut Option<Netlink>) -> Result<&mut Netlink, ProxyError> {
    if slot.is_none() {
        let s = Netlink::open().map_err(|e| ProxyError::Nft(format!("opening a netfilter netlink socket: {e}")))?;
        *slot = Some(s);
    }
    slot.as_mut().ok_or_else(|| ProxyError::Nft("no netlink socket".into()))
}

fn udp_ports(ports: &[ServicePort]) -> Vec<ServicePort> {
    ports.iter().filter(|p| p.protocol == crate::table::Protocol::Udp).cloned().collect()
}

impl Nftables {
    /// The netlink back end, talking to the calling thread's network namespace.
    pub fn new(node: NodeContext) -> Nftables {
        let sock = match Netlink::open() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a netfilter netlink socket yet; retrying on first use");
                None
            }
        };
        Nftables::with_backend(node, Backend::Netlink(sock))
    }

    /// The `nft` binary back end: the same transactions as nft scripts.
    pub fn with_cli(node: NodeContext) -> Nftables {
        Nftables::with_backend(node, Backend::Cli)
    }

    fn with_backend(node: NodeContext, backend: Backend) -> Nftables {
        Nftables {
            base: render::base(&node),
            backend,
            node,
            slots: SlotIds::default(),
            objects: BTreeMap::new(),
            hairpin_refs: BTreeMap::new(),
            udp: BTreeMap::new(),
        }
    }

    fn count_hairpin(&mut self, old: &ServiceObjects, new: &ServiceObjects) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for ip in new.hairpin.difference(&old.hairpin) {
            let n = self.hairpin_refs.entry(*ip).or_default();
            *n += 1;
            if *n == 1 {
                add.push(*ip);
            }
        }
        for ip in old.hairpin.difference(&new.hairpin) {
            if let Some(n) = self.hairpin_refs.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.hairpin_refs.remove(ip);
                    remove.push(*ip);
                }
            }
        }
        (add, remove)
    }
}

/// Runs one transaction; nothing of it is applied on error.
fn run(backend: &mut Backend, ops: &[Op]) -> Result<(), ProxyError> {
    {
        match backend {
            Backend::Cli => run_nft(&render::script(ops)),
            Backend::Netlink(sock) => {
                let sock = socket(sock)?;
                let mut batch = sock.batch();
                for op in ops {
                    batch.op(op).map_err(ProxyError::Nft)?;
                }
                sock.send(batch)
            }
        }
    }
}

impl Nftables {
    fn rebuild_refs(&mut self) {
        self.hairpin_refs.clear();
        for o in self.objects.values() {
            for ip in &o.hairpin {
                *self.hairpin_refs.entry(*ip).or_default() += 1;
            }
        }
    }
}

impl DataPlane for Nftables {
    fn full_sync(&mut self, table: &BTreeMap<ServiceKey, Vec<ServicePort>>) -> Result<(), ProxyError> {
        self.slots = SlotIds::default();
        let slots = &mut self.slots;
        let objects: BTreeMap<ServiceKey, ServiceObjects> = table
            .iter()
            .map(|(k, ports)| (k.clone(), render::render_service(ports, &self.node, &mut |c| slots.get(c))))
            .collect();
        run(&mut self.backend, &render::full_ops(&self.base, objects.values()))?;
        self.objects = objects;
        self.rebuild_refs();
        self.udp =
            table.iter().map(|(k, ports)| (k.clone(), udp_ports(ports))).filter(|(_, p)| !p.is_empty()).collect();
        Ok(())
    }

    fn apply(&mut self, changes: &[(ServiceKey, Vec<ServicePort>)]) -> Result<(), ProxyError> {
        let empty = ServiceObjects::default();
        let mut staged = Vec::with_capacity(changes.len());
        for (key, ports) in changes {
            let slots = &mut self.slots;
            let new = render::render_service(ports, &self.node, &mut |c| slots.get(c));
            let old = self.objects.get(key).unwrap_or(&empty).clone();
            self.slots.release_gone(&old, &new);
            let (add, remove) = self.count_hairpin(&old, &new);
            staged.push((key.clone(), old, new, add, remove));
        }
        let ops: Vec<Op> =
            staged.iter().flat_map(|(_, old, new, add, remove)| render::delta_ops(old, new, add, remove)).collect();
        let result = if ops.is_empty() { Ok(()) } else { run(&mut self.backend, &ops) };
        drop(ops);
        for (key, _, new, _, _) in staged {
            if new == ServiceObjects::default() {
                self.objects.remove(&key);
            } else {
                self.objects.insert(key, new);
            }
        }
        self.slots.end_batch();
        result?;
        let mut flushes = Vec::new();
        for (key, ports) in changes {
            let new = udp_ports(ports);
            let old = self.udp.remove(key).unwrap_or_default();
            flushes.extend(conntrack::stale(&old, &new));
            if !new.is_empty() {
                self.udp.insert(key.clone(), new);
            }
        }
        conntrack::flush(&flushes);
        Ok(())
    }

    fn healthy(&mut self) -> Result<bool, ProxyError> {
        match &mut self.backend {
            Backend::Cli => table_exists(),
            Backend::Netlink(sock) => socket(sock)?.table_exists(),
        }
    }
}
