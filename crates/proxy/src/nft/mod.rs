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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::table::{NodeContext, ServicePort};
use crate::{Change, DataPlane, ProxyError, ServiceTable};
use netlink::Netlink;
use render::{ClassObjects, Op, ServiceObjects};

/// Numbers of endpoint sets (see `render::set_ref`), by set name. A number freed by one batch
/// is reused only by a later one, so a transaction never deletes and adds the same key for two
/// different Services.
#[derive(Debug, Default)]
struct SetNumbers {
    ids: std::collections::HashMap<Box<str>, u32>,
    free: Vec<u32>,
    released: Vec<u32>,
    next: u32,
}

impl SetNumbers {
    fn get(&mut self, set: &str) -> u32 {
        if let Some(id) = self.ids.get(set) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.ids.insert(set.into(), id);
        id
    }

    /// Frees the numbers of the sets `old` named and `new` does not.
    fn release_gone(&mut self, old: &BTreeSet<String>, new: &BTreeSet<String>) {
        for name in old.difference(new) {
            if let Some(id) = self.ids.remove(name.as_str()) {
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
    backend: Backend,
    numbers: SetNumbers,
    /// How many live Services use each endpoint address (the hairpin set is shared). Hashed
    /// by the address's bits: one per endpoint of the cluster, 300,000 in the scale goal.
    hairpin_refs: HashMap<u32, u32>,
    /// How many live Services use each pick class beyond the presets (the chains are shared).
    class_refs: BTreeMap<u32, usize>,
    /// Transactions sent to the kernel (or to `nft -f`) so far.
    transactions: u64,
    /// The generation whose names the live table's sets and chains have (see
    /// [`Nftables::full_sync`]).
    generation: u32,
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
            backend,
            node,
            numbers: SetNumbers::default(),
            hairpin_refs: HashMap::new(),
            class_refs: BTreeMap::new(),
            transactions: 0,
            generation: 0,
        }
    }

    /// The generation the live table's objects are named for (0: plain names).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Transactions sent so far (a full sync of a table that did not exist sends several).
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    fn count_hairpin(&mut self, old: &ServiceObjects, new: &ServiceObjects) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for ip in new.hairpin.difference(&old.hairpin) {
            let n = self.hairpin_refs.entry(u32::from(*ip)).or_default();
            *n += 1;
            if *n == 1 {
                add.push(*ip);
            }
        }
        for ip in old.hairpin.difference(&new.hairpin) {
            if let Some(n) = self.hairpin_refs.get_mut(&u32::from(*ip)) {
                *n -= 1;
                if *n == 0 {
                    self.hairpin_refs.remove(&u32::from(*ip));
                    remove.push(*ip);
                }
            }
        }
        (add, remove)
    }
}

/// How many Services a full sync renders and encodes at a time: few enough that their
/// objects are a few megabytes, enough that each set gets its elements in long messages.
const FULL_SYNC_CHUNK: usize = 500;

/// When the table does not exist yet, a full sync fills it in transactions of about this many
/// bytes, each holding whole Services (see [`Nftables::full_sync`]).
const FIRST_SYNC_PIECE: usize = 1 << 20;

/// About how many bytes one element takes in a batch (an `endpoints` element is 36).
const ELEMENT_BYTES: usize = 40;

/// How a full sync writes the table (see [`Nftables::full_sync`]).
#[derive(Debug)]
enum Plan {
    /// No table yet: created, then filled in pieces, in generation 0.
    Fresh,
    /// Deleted and written again in one transaction, in generation 0.
    Whole,
    /// A new generation built in pieces beside the live one, then switched to.
    Replace { new: u32, old_chains: Vec<String>, old_sets: Vec<String> },
}

impl Plan {
    /// A replace of the live table, whose objects are `chains` and `sets`: the live
    /// generation is the one `service-ips` has; [`Plan::Whole`] when that is unclear or
    /// something of the other generation is there already (a replace interrupted half-way).
    fn replace(chains: Vec<String>, sets: Vec<String>) -> Plan {
        let old_chains: Vec<String> =
            chains.into_iter().filter(|c| !render::FIXED_CHAINS.contains(&c.as_str())).collect();
        // Anonymous sets go with the rules that hold them.
        let old_sets: Vec<String> = sets.into_iter().filter(|s| !s.starts_with("__")).collect();
        let named = |generation: u32| render::set_in(render::SERVICE_IPS, generation).into_owned();
        let live = match (old_sets.contains(&named(0)), old_sets.contains(&named(1))) {
            (true, false) => 0,
            (false, true) => 1,
            _ => return Plan::Whole,
        };
        let of_live = |name: &String| (live == 1) == name.ends_with("-g1");
        if !old_chains.iter().chain(&old_sets).all(of_live) {
            return Plan::Whole;
        }
        Plan::Replace { new: 1 - live, old_chains, old_sets }
    }

    fn generation(&self) -> u32 {
        match self {
            Plan::Replace { new, .. } => *new,
            Plan::Fresh | Plan::Whole => 0,
        }
    }
}

/// One transaction being built op by op: a netlink batch, or an nft script. Each commit counts
/// in the owner's tally of transactions.
struct Transaction<'s> {
    sink: Sink<'s>,
    sent: &'s mut u64,
}

enum Sink<'s> {
    Netlink(&'s mut Netlink, wire::Batch),
    Script(String),
}

impl<'s> Transaction<'s> {
    /// A transaction naming objects for `generation` (the `nft -f` back end has only
    /// generation 0).
    fn begin(backend: &'s mut Backend, sent: &'s mut u64, generation: u32) -> Result<Transaction<'s>, ProxyError> {
        let sink = match backend {
            Backend::Cli => Sink::Script(String::new()),
            Backend::Netlink(sock) => {
                let sock = socket(sock)?;
                let mut batch = sock.batch();
                batch.set_generation(generation);
                Sink::Netlink(sock, batch)
            }
        };
        Ok(Transaction { sink, sent })
    }

    fn set_generation(&mut self, generation: u32) {
        if let Sink::Netlink(_, batch) = &mut self.sink {
            batch.set_generation(generation);
        }
    }

    fn add(&mut self, ops: &[Op]) -> Result<(), ProxyError> {
        match &mut self.sink {
            Sink::Netlink(_, batch) => ops.iter().try_for_each(|op| batch.op(op).map_err(ProxyError::Nft)),
            Sink::Script(script) => {
                script.push_str(&render::script(ops));
                Ok(())
            }
        }
    }

    fn commit(self) -> Result<(), ProxyError> {
        *self.sent += 1;
        match self.sink {
            Sink::Netlink(sock, batch) => sock.send(batch),
            Sink::Script(script) => run_nft(&script),
        }
    }

    /// Bytes (or script text) so far.
    fn size(&self) -> usize {
        match &self.sink {
            Sink::Netlink(_, batch) => batch.len(),
            Sink::Script(script) => script.len(),
        }
    }

    /// Commits what was added so far and goes on with a new, empty transaction.
    fn commit_and_continue(&mut self) -> Result<(), ProxyError> {
        *self.sent += 1;
        match &mut self.sink {
            Sink::Netlink(sock, batch) => {
                let done = std::mem::replace(batch, wire::Batch::new(0));
                let generation = done.generation();
                sock.send(done)?;
                *batch = sock.batch();
                batch.set_generation(generation);
                Ok(())
            }
            Sink::Script(script) => run_nft(&std::mem::take(script)),
        }
    }
}

/// Runs one transaction; nothing of it is applied on error.
fn run(backend: &mut Backend, sent: &mut u64, generation: u32, ops: &[Op]) -> Result<(), ProxyError> {
    let mut tx = Transaction::begin(backend, sent, generation)?;
    tx.add(ops)?;
    tx.commit()
}

/// Renders one Service, numbering its endpoint sets (a full sync, which needs no names).
fn render_numbered(ports: &[ServicePort], numbers: &mut SetNumbers) -> ServiceObjects {
    render::render_service(ports, &mut |name| numbers.get(name))
}

/// Renders one Service, numbering its endpoint sets; returns the objects and the names of the
/// sets it numbered (a delta, which frees the numbers of the sets that went).
fn render(ports: &[ServicePort], numbers: &mut SetNumbers) -> (ServiceObjects, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let o = render::render_service(ports, &mut |name| {
        names.insert(name.to_string());
        numbers.get(name)
    });
    (o, names)
}

/// Classes a Service uses beyond the ones that always exist.
fn extra_classes(o: &ServiceObjects) -> impl Iterator<Item = u32> + '_ {
    o.classes.iter().copied().filter(|n| *n > render::PRESET_CLASSES)
}

impl Nftables {
    /// Counts the shared objects one Service uses (the hairpin addresses, the pick classes
    /// beyond the presets).
    fn count_refs(&mut self, o: &ServiceObjects) {
        for ip in &o.hairpin {
            *self.hairpin_refs.entry(u32::from(*ip)).or_default() += 1;
        }
        for n in extra_classes(o) {
            *self.class_refs.entry(n).or_default() += 1;
        }
    }

    /// Counts `old` out and `new` in; returns the classes that came into use and went out of
    /// use.
    fn count_classes(&mut self, old: &ServiceObjects, new: &ServiceObjects) -> (Vec<u32>, Vec<u32>) {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for n in extra_classes(new) {
            let c = self.class_refs.entry(n).or_default();
            *c += 1;
            if *c == 1 {
                add.push(n);
            }
        }
        for n in extra_classes(old) {
            if let Some(c) = self.class_refs.get_mut(&n) {
                *c -= 1;
                if *c == 0 {
                    self.class_refs.remove(&n);
                    remove.push(n);
                }
            }
        }
        (add, remove)
    }
}

impl DataPlane for Nftables {
    /// Renders every Service twice rather than holding all their objects (at 30,000 Services
    /// those were hundreds of megabytes): once to size the table and count the shared hairpin
    /// addresses and pick classes, once, [`FULL_SYNC_CHUNK`] Services at a time, into the
    /// transactions. Rendering is deterministic and the set numbers are taken by the first pass.
    ///
    /// The kernel applies a batch only whole, in one write, so a table written in one
    /// transaction is held whole in memory first (about 17 MB at 30,000 Services × 10
    /// endpoints). So ([`Plan`]):
    /// - a table that does not exist yet (a new node, after a reboot, deleted out of band) has
    ///   no traffic to keep whole: the first transaction creates it with everything shared
    ///   (sets, pick classes, hairpin addresses), then it is filled in transactions of about
    ///   [`FIRST_SYNC_PIECE`] bytes, each holding whole Services with all their objects (a piece
    ///   ends between two chunks of [`FULL_SYNC_CHUNK`] Services);
    /// - a large table that exists (an agent restarted over its rules, the hourly resync, a
    ///   repair) is replaced by a new *generation*: its sets, maps and chains (all but the
    ///   fixed chains every packet walks) are built under the other generation's names in
    ///   pieces, while traffic still uses the old ones; then one small transaction rewrites the
    ///   fixed chains' rules to name the new sets and deletes every object of the old
    ///   generation, found by a dump of the table's names;
    /// - a small table, or one whose generation is unclear (a replace interrupted half-way),
    ///   and the `nft -f` back end: one transaction that deletes the table and writes it again,
    ///   in generation 0.
    ///
    /// If a piece fails, the next full sync finds leftovers and replaces the table in one
    /// transaction.
    fn full_sync(&mut self, table: &dyn ServiceTable) -> Result<(), ProxyError> {
        let exists = matches!(self.backend, Backend::Netlink(_)) && self.healthy()?;
        self.numbers = SetNumbers::default();
        self.hairpin_refs.clear();
        self.class_refs.clear();
        let mut counts = render::Counts::new();
        let mut classes: BTreeSet<u32> = render::preset_classes().collect();
        table.for_each(&mut |_, ports| {
            let o = render_numbered(ports, &mut self.numbers);
            render::add_counts(&mut counts, &o);
            classes.extend(&o.classes);
            self.count_refs(&o);
        });
        counts.insert(render::HAIRPIN, self.hairpin_refs.len());
        counts.insert(render::ENDPOINT_CLASSES, classes.len());
        let classes: Vec<ClassObjects> = classes.into_iter().map(render::class_objects).collect();
        let base = render::base(&self.node, &counts);
        let elements: usize = counts.values().sum();
        let plan = match &mut self.backend {
            Backend::Cli => Plan::Whole,
            Backend::Netlink(_) if !exists => Plan::Fresh,
            Backend::Netlink(_) if elements * ELEMENT_BYTES < FIRST_SYNC_PIECE => Plan::Whole,
            Backend::Netlink(sock) => {
                let (chains, sets) = socket(sock)?.object_names()?;
                Plan::replace(chains, sets)
            }
        };
        let generation = plan.generation();

        let mut tx = Transaction::begin(&mut self.backend, &mut self.transactions, generation)?;
        match &plan {
            Plan::Replace { .. } => tx.add(&render::generation_head(&base, &classes))?,
            Plan::Fresh | Plan::Whole => tx.add(&render::full_head(&base, &classes))?,
        }
        // The hairpin set is shared and known from the first pass: in the first piece, so a pod
        // reaching itself through a Service of an early piece is masqueraded from the start.
        let mut hairpin: Vec<u32> = self.hairpin_refs.keys().copied().collect();
        hairpin.sort_unstable();
        tx.add(&render::hairpin_ops(hairpin.into_iter().map(Ipv4Addr::from)))?;
        let mut claimed = render::Claimed::default();
        let mut chunk: Vec<ServiceObjects> = Vec::with_capacity(FULL_SYNC_CHUNK);
        let mut failed = None;
        let numbers = &mut self.numbers;
        let piecewise = !matches!(plan, Plan::Whole);
        table.for_each(&mut |_, ports| {
            if failed.is_some() {
                return;
            }
            chunk.push(render_numbered(ports, numbers));
            if chunk.len() == FULL_SYNC_CHUNK {
                failed = tx.add(&render::services_ops(&chunk, &mut claimed)).err();
                chunk.clear();
                if failed.is_none() && piecewise && tx.size() >= FIRST_SYNC_PIECE {
                    failed = tx.commit_and_continue().err();
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        tx.add(&render::services_ops(&chunk, &mut claimed))?;
        drop(chunk);
        if let Plan::Replace { old_chains, old_sets, .. } = &plan {
            // The switch, in a transaction of its own: the fixed chains now name the new
            // generation; then the old one goes, by the names the dump found (chains flushed
            // first, so no rule refers to a set being deleted; maps before chains, so no
            // verdict refers to a chain being deleted).
            tx.commit_and_continue()?;
            tx.add(&render::fixed_rules_ops(&base))?;
            tx.set_generation(0);
            let mut ops: Vec<Op> = old_chains.iter().map(|c| Op::FlushChain(c)).collect();
            ops.extend(old_sets.iter().map(|s| Op::DeleteSet(s)));
            ops.extend(old_chains.iter().map(|c| Op::DeleteChain(c)));
            tx.add(&ops)?;
        }
        tx.commit()?;
        self.generation = generation;
        Ok(())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ProxyError> {
        let mut staged = Vec::with_capacity(changes.len());
        let (mut classes_add, mut classes_remove) = (BTreeSet::new(), BTreeSet::new());
        for c in changes {
            // The old objects first: their sets still hold their numbers, so this renders
            // exactly what is in the table (rendering is deterministic).
            let (old, old_names) = render(&c.old, &mut self.numbers);
            let (new, names) = render(&c.new, &mut self.numbers);
            self.numbers.release_gone(&old_names, &names);
            let (add, remove) = self.count_hairpin(&old, &new);
            let (c_add, c_remove) = self.count_classes(&old, &new);
            // A class freed by one Service and taken by another in the same batch stays.
            for n in c_add {
                if !classes_remove.remove(&n) {
                    classes_add.insert(n);
                }
            }
            for n in c_remove {
                if !classes_add.remove(&n) {
                    classes_remove.insert(n);
                }
            }
            staged.push((old, new, add, remove));
        }
        let classes_add: Vec<ClassObjects> = classes_add.into_iter().map(render::class_objects).collect();
        let classes_remove: Vec<ClassObjects> = classes_remove.into_iter().map(render::class_objects).collect();
        let mut ops: Vec<Op> = Vec::new();
        match &mut self.backend {
            // nft 1.0.6 cannot add a rule bound to the `endpoints` map once the map is in the
            // kernel (it reads the map's `typeof … th dport` back and then refuses the rule:
            // "conflicting protocols specified: tcp vs. th"). The `nft -f` back end therefore
            // creates new pick classes through netlink, in a transaction of their own just
            // before the delta: an unused class is harmless if the delta then fails.
            Backend::Cli if !classes_add.is_empty() => {
                let mut sock = Netlink::open().map_err(|e| ProxyError::Nft(format!("opening netlink: {e}")))?;
                let mut batch = sock.batch();
                for op in render::class_add_ops(&classes_add) {
                    batch.op(&op).map_err(ProxyError::Nft)?;
                }
                sock.send(batch)?;
            }
            _ => ops.extend(render::class_add_ops(&classes_add)),
        }
        ops.extend(staged.iter().flat_map(|(old, new, add, remove)| render::delta_ops(old, new, add, remove)));
        ops.extend(render::class_remove_ops(&classes_remove));
        let result =
            if ops.is_empty() { Ok(()) } else { run(&mut self.backend, &mut self.transactions, self.generation, &ops) };
        drop(ops);
        drop(staged);
        let mut flushes = Vec::new();
        for c in changes {
            flushes.extend(conntrack::stale(&udp_ports(&c.old), &udp_ports(&c.new)));
        }
        self.numbers.end_batch();
        result?;
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
