//! The typed form of pier's nftables objects: set and map declarations, chains and rules as
//! sequences of nft statements. The renderer builds these; two encoders consume them — the
//! nft-syntax text (`Display`, what `nft -f` and the snapshot tests read) and the nf_tables
//! netlink messages ([`super::wire`], which lowers each statement to the kernel's expressions).
//!
//! Statements are nft's own vocabulary rather than raw kernel expressions because the text
//! must stay exactly what nft accepts and prints; each statement has exactly one lowering.
//! Pure: no IO.

use std::cell::OnceCell;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Deref;

use ipnet::Ipv4Net;

use crate::table::Protocol;

/// nft's limit on a comment (`NFTNL_UDATA_COMMENT_MAXLEN`): nft refuses longer ones, and a
/// Service's name can be longer, so comments are cut rather than failing the whole table.
pub const COMMENT_MAX: usize = 128;

/// The nft data types pier's sets and maps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Ipv4Addr,
    InetProto,
    InetService,
    Mark,
    /// The key of an anonymous `numgen … vmap { 0 : …, 1 : … }`.
    Integer,
    Verdict,
}

impl DataType {
    pub fn name(self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Mark => "mark",
            DataType::Integer => "integer",
            DataType::Verdict => "verdict",
        }
    }
}

fn join_types(types: &[DataType]) -> String {
    types.iter().map(|t| t.name()).collect::<Vec<_>>().join(" . ")
}

/// An expression a `typeof` declaration names. nft records them in the set's userdata to print
/// the declaration back; a key that concatenates a mark with a `numgen` result has no `type`
/// spelling, so the `endpoints` map needs this form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeofExpr {
    CtMark,
    /// `numgen random mod N` (N only matters to the declaration's text).
    NumgenRandom(u32),
    IpDaddr,
    ThDport,
    MetaL4proto,
}

impl fmt::Display for TypeofExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeofExpr::CtMark => f.write_str("ct mark"),
            TypeofExpr::NumgenRandom(n) => write!(f, "numgen random mod {n}"),
            TypeofExpr::IpDaddr => f.write_str("ip daddr"),
            TypeofExpr::ThDport => f.write_str("th dport"),
            TypeofExpr::MetaL4proto => f.write_str("meta l4proto"),
        }
    }
}

/// A named set (no data types) or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDecl {
    pub key: Vec<DataType>,
    /// Empty for a set; `[Verdict]` for a verdict map.
    pub data: Vec<DataType>,
    /// Declared by `typeof` (key, data) instead of by `type`; `key` and `data` still give the
    /// kernel's types and lengths.
    pub typeof_exprs: Option<(Vec<TypeofExpr>, Vec<TypeofExpr>)>,
    /// Written from the packet path (`update @set { … }`).
    pub dynamic: bool,
    /// Default element lifetime in seconds.
    pub timeout: Option<u32>,
    /// `size N`: the kernel sizes the hash table for N elements up front (no resizing while a
    /// full sync loads) and refuses elements beyond N.
    pub size: Option<u32>,
    pub comment: Option<String>,
}

impl SetDecl {
    pub fn new(key: &[DataType], data: &[DataType], comment: &str) -> SetDecl {
        SetDecl {
            key: key.to_vec(),
            data: data.to_vec(),
            typeof_exprs: None,
            dynamic: false,
            timeout: None,
            size: None,
            comment: Some(comment.into()),
        }
    }

    pub fn with_size(mut self, size: u32) -> SetDecl {
        self.size = Some(size);
        self
    }

    pub fn is_map(&self) -> bool {
        !self.data.is_empty()
    }

    /// The declaration body as nft writes it inside `{ … }`.
    pub fn body(&self) -> String {
        let mut parts = Vec::new();
        let exprs = |e: &[TypeofExpr]| e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" . ");
        if let Some((k, d)) = &self.typeof_exprs {
            if d.is_empty() {
                parts.push(format!("typeof {}", exprs(k)));
            } else {
                parts.push(format!("typeof {} : {}", exprs(k), exprs(d)));
            }
        } else if self.is_map() {
            parts.push(format!("type {} : {}", join_types(&self.key), join_types(&self.data)));
        } else {
            parts.push(format!("type {}", join_types(&self.key)));
        }
        let mut flags = Vec::new();
        if self.dynamic {
            flags.push("dynamic");
        }
        if self.timeout.is_some() {
            flags.push("timeout");
        }
        if !flags.is_empty() {
            parts.push(format!("flags {}", flags.join(",")));
        }
        if let Some(t) = self.timeout {
            parts.push(format!("timeout {t}s"));
        }
        if let Some(n) = self.size {
            parts.push(format!("size {n}"));
        }
        if let Some(c) = &self.comment {
            parts.push(format!("comment \"{c}\""));
        }
        parts.iter().map(|p| format!("{p};")).collect::<Vec<_>>().join(" ")
    }

    /// Whether the body contains `s` (the declaration read as nft text).
    pub fn contains(&self, s: &str) -> bool {
        self.body().contains(s)
    }
}

impl fmt::Display for SetDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.body())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// Which address `fib` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FibAddr {
    Saddr,
    Daddr,
}

/// Something a statement reads from the packet or its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Load {
    IpSaddr,
    IpDaddr,
    L4proto,
    /// The transport header's destination port, whatever the protocol.
    ThDport,
    Oifname,
    Mark,
    CtMark,
    CtState,
    CtStatus,
    /// `fib <addr> type`: the route type of the address.
    FibType(FibAddr),
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Load::IpSaddr => "ip saddr",
            Load::IpDaddr => "ip daddr",
            Load::L4proto => "meta l4proto",
            Load::ThDport => "th dport",
            Load::Oifname => "oifname",
            Load::Mark => "meta mark",
            Load::CtMark => "ct mark",
            Load::CtState => "ct state",
            Load::CtStatus => "ct status",
            Load::FibType(FibAddr::Saddr) => "fib saddr type",
            Load::FibType(FibAddr::Daddr) => "fib daddr type",
        })
    }
}

/// The right-hand side of a match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Addr(Ipv4Addr),
    Net(Ipv4Net),
    Proto(Protocol),
    /// An interface name.
    Iface(String),
    /// `ct state new` (a bit of the state mask).
    CtStateNew,
    /// `ct status dnat` (a bit of the status mask).
    CtStatusDnat,
    /// `fib … type local` (RTN_LOCAL).
    Local,
    Int(u32),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(a) => write!(f, "{a}"),
            Value::Net(n) => write!(f, "{n}"),
            Value::Proto(p) => f.write_str(p.as_str()),
            Value::Iface(s) => write!(f, "\"{s}\""),
            Value::CtStateNew => f.write_str("new"),
            Value::CtStatusDnat => f.write_str("dnat"),
            Value::Local => f.write_str("local"),
            Value::Int(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkOp {
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// ICMP port unreachable (nft's default).
    PortUnreachable,
    TcpReset,
}

/// One nft statement. Each has one text form and one lowering to kernel expressions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// `<load> [& <mask> ==|!=] <value>`.
    Match {
        load: Load,
        mask: Option<u32>,
        neq: bool,
        value: Value,
    },
    /// `<key> [. <key>…] @<set>`.
    InSet {
        keys: Vec<Load>,
        set: String,
    },
    /// `<key> [. <key>…] vmap @<map>`.
    Vmap {
        keys: Vec<Load>,
        map: String,
    },
    /// `<load> & <mask> vmap @<map>`.
    MaskedVmap {
        load: Load,
        mask: u32,
        map: String,
    },
    /// `numgen random mod N vmap { 0 : v0, 1 : v1, … }` (an anonymous map bound to the rule).
    NumgenVmap(Vec<Verdict>),
    /// `meta l4proto { tcp, udp, … }` (an anonymous set bound to the rule).
    L4protoIn(Vec<Protocol>),
    /// `ct mark set <key> [. <key>…] map @<map>`: no element, no match.
    CtMarkSetMap {
        keys: Vec<Load>,
        map: String,
    },
    /// `ct mark set ct mark & <mask>`.
    CtMarkAnd(u32),
    /// `meta mark set meta mark | X` (or `^ X`).
    MarkSet(MarkOp, u32),
    /// `update @<set> { <key> }`: add or refresh the element (the set's timeout applies).
    Update {
        set: String,
        key: Load,
    },
    /// `dnat ip to <addr>:<port>`.
    Dnat(Ipv4Addr, u16),
    /// `dnat ip to ct mark . numgen random mod N map @<map>`: endpoint number N-1 or below of the
    /// endpoint set in `ct mark`, from a map to `ip daddr . th dport`.
    DnatPick {
        modulus: u32,
        map: String,
    },
    Masquerade {
        fully_random: bool,
    },
    Reject(Reject),
    Verdict(Verdict),
}

impl Stmt {
    /// `<load> <value>` / `<load> != <value>`.
    pub fn eq(load: Load, value: Value) -> Stmt {
        Stmt::Match { load, mask: None, neq: false, value }
    }

    pub fn neq(load: Load, value: Value) -> Stmt {
        Stmt::Match { load, mask: None, neq: true, value }
    }

    pub fn jump(chain: &str) -> Stmt {
        Stmt::Verdict(Verdict::Jump(chain.into()))
    }

    pub fn goto(chain: &str) -> Stmt {
        Stmt::Verdict(Verdict::Goto(chain.into()))
    }
}

fn keys(f: &mut fmt::Formatter<'_>, keys: &[Load]) -> fmt::Result {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            f.write_str(" . ")?;
        }
        write!(f, "{k}")?;
    }
    Ok(())
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A masked value is bits: hex, as nft prints marks.
            Stmt::Match { load, mask: Some(m), neq, value: Value::Int(v) } => {
                write!(f, "{load} & {m:#010x} {} {v:#010x}", if *neq { "!=" } else { "==" })
            }
            Stmt::Match { load, mask: Some(m), neq, value } => {
                write!(f, "{load} & {m:#010x} {} {value}", if *neq { "!=" } else { "==" })
            }
            Stmt::Match { load, mask: None, neq: false, value } => write!(f, "{load} {value}"),
            Stmt::Match { load, mask: None, neq: true, value } => write!(f, "{load} != {value}"),
            Stmt::InSet { keys: k, set } => {
                keys(f, k)?;
                write!(f, " @{set}")
            }
            Stmt::Vmap { keys: k, map } => {
                keys(f, k)?;
                write!(f, " vmap @{map}")
            }
            Stmt::MaskedVmap { load, mask, map } => write!(f, "{load} & {mask:#010x} vmap @{map}"),
            Stmt::L4protoIn(protos) => {
                let names: Vec<&str> = protos.iter().map(|p| p.as_str()).collect();
                write!(f, "meta l4proto {{ {} }}", names.join(", "))
            }
            Stmt::CtMarkSetMap { keys: k, map } => {
                f.write_str("ct mark set ")?;
                keys(f, k)?;
                write!(f, " map @{map}")
            }
            Stmt::CtMarkAnd(mask) => write!(f, "ct mark set ct mark & {mask:#010x}"),
            Stmt::NumgenVmap(arms) => {
                write!(f, "numgen random mod {} vmap {{ ", arms.len())?;
                for (i, v) in arms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{i} : {v}")?;
                }
                f.write_str(" }")
            }
            Stmt::MarkSet(op, x) => {
                write!(f, "meta mark set meta mark {} {x:#010x}", if *op == MarkOp::Or { "|" } else { "^" })
            }
            Stmt::Update { set, key } => write!(f, "update @{set} {{ {key} }}"),
            Stmt::Dnat(ip, port) => write!(f, "dnat ip to {ip}:{port}"),
            Stmt::DnatPick { modulus, map } => {
                write!(f, "dnat ip to ct mark . numgen random mod {modulus} map @{map}")
            }
            Stmt::Masquerade { fully_random: false } => f.write_str("masquerade"),
            Stmt::Masquerade { fully_random: true } => f.write_str("masquerade fully-random"),
            Stmt::Reject(Reject::PortUnreachable) => f.write_str("reject"),
            Stmt::Reject(Reject::TcpReset) => f.write_str("reject with tcp reset"),
            Stmt::Verdict(v) => write!(f, "{v}"),
        }
    }
}

/// A comment as nft can carry it: quotes and backslashes (which nft's syntax cannot carry) are
/// dropped and it is cut to [`COMMENT_MAX`] bytes.
pub fn clean_comment(comment: &str) -> String {
    let mut c: String = comment.chars().filter(|c| !matches!(c, '"' | '\\')).collect();
    if c.len() > COMMENT_MAX {
        let mut end = COMMENT_MAX;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    c
}

/// One rule: statements in order, and an optional comment (shown by `nft list`).
///
/// A rule reads, compares and debug-prints as its nft text, which is rendered on first use
/// only: the delta logic and the snapshot tests work with nft's syntax, while the netlink
/// path never needs the text at all.
#[derive(Clone)]
pub struct Rule {
    stmts: Vec<Stmt>,
    comment: Option<String>,
    text: OnceCell<String>,
}

impl Rule {
    pub fn new(stmts: Vec<Stmt>) -> Rule {
        Rule { stmts, comment: None, text: OnceCell::new() }
    }

    /// Adds a comment (see [`clean_comment`]).
    pub fn comment(mut self, comment: &str) -> Rule {
        self.comment = Some(clean_comment(comment));
        self.text = OnceCell::new();
        self
    }

    pub fn stmts(&self) -> &[Stmt] {
        &self.stmts
    }

    pub fn comment_text(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    fn render(&self) -> String {
        let mut s = self.stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
        if let Some(c) = &self.comment {
            s.push_str(&format!(" comment \"{c}\""));
        }
        s
    }
}

impl Deref for Rule {
    type Target = str;

    fn deref(&self) -> &str {
        self.text.get_or_init(|| self.render())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.stmts == other.stmts && self.comment == other.comment
    }
}

impl Eq for Rule {}

impl PartialEq<str> for Rule {
    fn eq(&self, other: &str) -> bool {
        &**self == other
    }
}

impl PartialEq<&str> for Rule {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

impl PartialEq<String> for Rule {
    fn eq(&self, other: &String) -> bool {
        &**self == other.as_str()
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// A base chain's attachment: `type <t> hook <h> priority <p>; policy accept;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseHook {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<BaseHook>,
    pub rules: Vec<Rule>,
}

/// The table's fixed part: comment, sets and maps, base and helper chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseTable {
    pub comment: String,
    pub sets: Vec<(String, SetDecl)>,
    pub chains: Vec<Chain>,
}

impl BaseTable {
    pub fn set(&self, name: &str) -> Option<&SetDecl> {
        self.sets.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }
}
