//! A minimal rtnetlink client: exactly the link, address and route messages the runtime sends.
//!
//! Hand-written because no netlink crate is in the workspace and the alternative, running `ip`
//! several times per pod, costs a process spawn each (milliseconds) on the pod-start path. A
//! netlink socket talks to the network namespace it was created in, whatever thread later uses
//! it; [`in_netns`] creates one (or does any other per-namespace work) on a short-lived thread
//! that has joined the target namespace, so no long-lived thread ever changes namespace.
//!
//! Every request asks for an acknowledgement and every read is bounded by a receive timeout.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

// linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
// linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RT_TABLE_LOCAL: u8 = 255;
const RT_SCOPE_HOST: u8 = 254;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
// linux/if_link.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_BRPORT_MODE: u16 = 4; // "hairpin mode"
const VETH_INFO_PEER: u16 = 1;
// linux/if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFF_UP: u32 = 0x1;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;

const NLMSG_HDRLEN: usize = 16;

/// Runs `f` on a fresh thread that has joined the network namespace `netns`. The thread ends
/// with `f`, so the namespace change can never leak into a pooled thread.
pub(crate) fn in_netns<T: Send>(netns: BorrowedFd<'_>, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace worker panicked")))
    })
}

/// A 6-byte locally administered MAC derived from an IPv4 address (`0a:58:` + the address, as
/// Kubernetes' bridge plugin does): fixed per address, so a bridge keeps its MAC when ports come
/// and go, and a reused pod IP gets the same MAC, which keeps neighbours' ARP caches right.
pub(crate) fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

#[derive(Debug)]
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Netlink> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::seconds(5))?;
        Ok(Netlink { fd, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Sends one request and collects the replies up to its acknowledgement.
    fn transact(&mut self, msg: Msg) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        let n = nix::unistd::write(&self.fd, &bytes)?;
        if n != bytes.len() {
            return Err(io::Error::other("netlink: short write"));
        }
        let mut replies = Vec::new();
        // Bounded: a single request never needs more datagrams than this.
        for _ in 0..4096 {
            let n = match nix::unistd::read(&self.fd, &mut self.buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "netlink: no reply"));
                }
                Err(e) => return Err(e.into()),
            };
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let b = &self.buf[off..n];
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < NLMSG_HDRLEN || len > b.len() {
                    return Err(io::Error::other("netlink: malformed reply"));
                }
                let payload = &b[NLMSG_HDRLEN..len];
                off += align(len);
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(-libc::EIO);
                        return if code == 0 { Ok(replies) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push(payload.to_vec()),
                }
            }
        }
        Err(io::Error::other("netlink: no acknowledgement"))
    }

    /// The interface index of `name`; `NotFound` when there is no such link.
    pub(crate) fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut m = Msg::new(RTM_GETLINK, 0);
        m.ifinfomsg(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        let replies = self.transact(m).map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => io::Error::new(io::ErrorKind::NotFound, format!("no link named {name}")),
            _ => e,
        })?;
        let reply = replies.first().ok_or_else(|| io::Error::other("netlink: empty RTM_GETLINK reply"))?;
        let idx = reply.get(4..8).ok_or_else(|| io::Error::other("netlink: short ifinfomsg"))?;
        Ok(i32::from_ne_bytes([idx[0], idx[1], idx[2], idx[3]]) as u32)
    }

    /// Creates a bridge with a fixed MAC.
    pub(crate) fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfomsg(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        m.attr(IFLA_ADDRESS, &mac);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end(info);
        self.transact(m).map(drop)
    }

    /// Creates a veth pair: `host` here, enslaved to `master`, and `peer` (with `peer_mac`)
    /// directly inside the namespace `peer_netns`, so the pod end never exists in this one.
    pub(crate) fn add_veth(
        &mut self,
        host: &str,
        master: u32,
        peer: &str,
        peer_mac: [u8; 6],
        peer_netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfomsg(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, host);
        m.attr_u32(IFLA_MASTER, master);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let p = m.begin(VETH_INFO_PEER);
        m.ifinfomsg(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, peer);
        m.attr(IFLA_ADDRESS, &peer_mac);
        m.attr_u32(IFLA_NET_NS_FD, peer_netns.as_raw_fd() as u32);
        m.end(p);
        m.end(data);
        m.end(info);
        self.transact(m).map(drop)
    }

    /// Turns hairpin mode on for a bridge port, so a pod can reach itself through a Service.
    pub(crate) fn set_hairpin(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.ifinfomsg(AF_UNSPEC, index, 0, 0);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_SLAVE_KIND, "bridge");
        let data = m.begin(IFLA_INFO_SLAVE_DATA);
        m.attr(IFLA_BRPORT_MODE, &[1]);
        m.end(data);
        m.end(info);
        self.transact(m).map(drop)
    }

    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.ifinfomsg(AF_UNSPEC, index, IFF_UP, IFF_UP);
        self.transact(m).map(drop)
    }

    /// Deletes a link by name; a link that is already gone is not an error.
    pub(crate) fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, 0);
        m.ifinfomsg(AF_UNSPEC, 0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        match self.transact(m) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds (or keeps) `ip/prefix` on the link.
    pub(crate) fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8, broadcast: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
        m.put(&[AF_INET, prefix, 0, RT_SCOPE_UNIVERSE]);
        m.put(&index.to_ne_bytes());
        m.attr(IFA_LOCAL, &ip.octets());
        m.attr(IFA_ADDRESS, &ip.octets());
        m.attr(IFA_BROADCAST, &broadcast.octets());
        self.transact(m).map(drop)
    }

    /// Removes `ip/prefix` from the link; gone already is fine.
    pub(crate) fn delete_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELADDR, 0);
        m.put(&[AF_INET, prefix, 0, RT_SCOPE_UNIVERSE]);
        m.put(&index.to_ne_bytes());
        m.attr(IFA_LOCAL, &ip.octets());
        m.attr(IFA_ADDRESS, &ip.octets());
        match self.transact(m) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Makes every address of `dst/dst_len` local (a `local` route in the local table, as
    /// `ip route add local … dev lo` does): packets for them are delivered to this host.
    pub(crate) fn replace_local_route(&mut self, dst: Ipv4Addr, dst_len: u8, lo: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
        m.put(&[AF_INET, dst_len, 0, 0, RT_TABLE_LOCAL, RTPROT_BOOT, RT_SCOPE_HOST, RTN_LOCAL]);
        m.put(&0u32.to_ne_bytes());
        m.attr(RTA_DST, &dst.octets());
        m.attr_u32(RTA_OIF, lo);
        self.transact(m).map(drop)
    }

    /// Adds or replaces a route to `dst/dst_len` out of `oif`, through `gateway` or on-link.
    pub(crate) fn replace_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: u32,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
        let scope = if gateway.is_some() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK };
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        m.put(&[AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST]);
        m.put(&0u32.to_ne_bytes());
        if dst_len > 0 {
            m.attr(RTA_DST, &dst.octets());
        }
        if let Some(gw) = gateway {
            m.attr(RTA_GATEWAY, &gw.octets());
        }
        m.attr_u32(RTA_OIF, oif);
        self.transact(m).map(drop)
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink request under construction: the 16-byte header, a fixed struct, then
/// attributes (type-length-value, 4-byte aligned), some nested.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Msg { buf }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// struct ifinfomsg: family, pad, type, index, flags, change.
    fn ifinfomsg(&mut self, family: u8, index: u32, flags: u32, change: u32) {
        self.put(&[family, 0, 0, 0]);
        self.put(&index.to_ne_bytes());
        self.put(&flags.to_ne_bytes());
        self.put(&change.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.put(&len.to_ne_bytes());
        self.put(&ty.to_ne_bytes());
        self.put(data);
        self.pad();
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// Opens a nested attribute; returns where its length goes.
    fn begin(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.put(&0u16.to_ne_bytes());
        self.put(&ty.to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_nested_lengths_cover_their_children() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE);
        m.ifinfomsg(AF_UNSPEC, 7, IFF_UP, IFF_UP);
        m.attr_str(IFLA_IFNAME, "veth0"); // 4 + 6 = 10, padded to 12
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth"); // 4 + 5 = 9, padded to 12
        m.end(info);
        let b = m.finish(42);
        assert_eq!(b.len(), 16 + 16 + 12 + 4 + 12);
        assert_eq!(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize, b.len());
        assert_eq!(u32::from_ne_bytes([b[8], b[9], b[10], b[11]]), 42);
        // The ifname attribute's length is unpadded.
        assert_eq!(u16::from_ne_bytes([b[32], b[33]]), 10);
        assert_eq!(&b[36..42], b"veth0\0");
        // The nest's length covers its header and its padded child.
        assert_eq!(u16::from_ne_bytes([b[44], b[45]]), 16);
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        let mac = mac_for(Ipv4Addr::new(10, 244, 0, 7));
        assert_eq!(mac, [0x0a, 0x58, 10, 244, 0, 7]);
        assert_eq!(mac[0] & 0b11, 0b10);
    }
}
