//! The NETLINK_NETFILTER socket: sends one [`Batch`] as one nf_tables transaction and reads
//! the kernel's verdict on it, and asks whether pier's table exists.
//!
//! Hand-written (as the runtime's rtnetlink client is) because no maintained, compatibly
//! licensed crate speaks nf_tables; nix's safe socket calls are all it needs. The socket talks
//! to the network namespace it was opened in, whichever thread later uses it.
//!
//! How a transaction is read back: the kernel processes a batch synchronously inside
//! `sendmsg`, acknowledging only what failed (pier does not ask for per-message ACKs, which
//! would cost one reply per message on a 30,000-message full sync). Right after the batch,
//! pier sends a `NFT_MSG_GETGEN` request with an ACK: replies arrive in order, so once that ACK
//! is read every error of the batch has been seen, and no error means the batch committed.
//!
//! Why one `sendmsg` per batch: the kernel aborts a batch whose BATCH_END is not in the same
//! write as its BATCH_BEGIN (each write is a separate `nfnetlink_rcv` call; a batch cut short
//! is rolled back without an error). So the socket's send buffer is raised to fit the batch
//! (`SO_SNDBUFFORCE`, as nft does; pier has CAP_NET_ADMIN wherever it can program nftables).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, sendmsg, setsockopt,
    socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::render::TABLE;
use super::wire::{Batch, NFT_MSG_GETGEN, NFT_MSG_GETTABLE, NLM_F_ACK, NLMSG_HDRLEN};
use crate::ProxyError;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_IPV4: u8 = 2;
const NFTA_TABLE_NAME: u16 = 1;
/// Room for the kernel's error replies: each echoes the failed message (up to ~50 KB for an
/// element list). More than this means many messages failed; the batch is reported failed
/// either way.
const RCVBUF: usize = 4 << 20;
/// Headroom over a batch's size in the send buffer (skb overhead).
const SNDBUF_SLACK: usize = 64 << 10;

fn nft_err(what: impl std::fmt::Display) -> ProxyError {
    ProxyError::Nft(format!("netlink: {what}"))
}

/// A NETLINK_NETFILTER socket in the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::seconds(10))?;
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &RCVBUF)?;
        }
        // Sequence numbers only need to differ from stale replies'; start somewhere arbitrary.
        let seq =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1);
        Ok(Netlink { fd, seq, sndbuf: 0, buf: vec![0; 256 << 10] })
    }

    /// An empty transaction numbered after everything this socket sent.
    pub fn batch(&self) -> Batch {
        Batch::new(self.seq.wrapping_add(1))
    }

    fn ensure_sndbuf(&mut self, len: usize) -> Result<(), ProxyError> {
        let want = len + SNDBUF_SLACK;
        if want <= self.sndbuf {
            return Ok(());
        }
        setsockopt(&self.fd, sockopt::SndBufForce, &want)
            .or_else(|_| setsockopt(&self.fd, sockopt::SndBuf, &want))
            .map_err(|e| nft_err(format!("raising the send buffer to {want} bytes: {e}")))?;
        self.sndbuf = want;
        Ok(())
    }

    /// Sends `batch` as one transaction and waits for the kernel's verdict. On error nothing
    /// of the batch is applied (the kernel rolls the whole transaction back).
    pub fn send(&mut self, batch: Batch) -> Result<(), ProxyError> {
        self.send_timed(batch).map(drop)
    }

    /// [`Netlink::send`], also returning how long the kernel took (the batch is processed and
    /// committed inside `sendmsg`), how long reading the replies took, and the batch's size.
    pub fn send_timed(&mut self, batch: Batch) -> Result<(Duration, Duration, usize), ProxyError> {
        let (bytes, index) = batch.finish();
        let len = bytes.len();
        self.ensure_sndbuf(len)?;
        let iov: Vec<IoSlice<'_>> = bytes.segments().map(IoSlice::new).collect();
        let started = Instant::now();
        let n = sendmsg::<()>(self.fd.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
            .map_err(|e| nft_err(format!("sending a {len}-byte batch: {e}")))?;
        let kernel = started.elapsed();
        let started = Instant::now();
        if n != len {
            return Err(nft_err(format!("short write: {n} of {len} bytes")));
        }
        let (_, last) = index.seq_range();
        let fence = last.wrapping_add(1);
        self.seq = fence;
        let req = request(NFT_MSG_GETGEN, fence, 0, None);
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| nft_err(format!("sending GETGEN: {e}")))?;

        let mut first: Option<(u32, Errno)> = None;
        let mut errors = 0usize;
        let mut overflow = false;
        'read: loop {
            let flags = if overflow { MsgFlags::MSG_DONTWAIT } else { MsgFlags::empty() };
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, flags) {
                Ok(n) => n,
                // Replies were dropped: errors that did not fit, maybe the fence's ACK too.
                Err(Errno::ENOBUFS) => {
                    overflow = true;
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if overflow => break,
                Err(Errno::EAGAIN) => return Err(nft_err("no reply from the kernel to the batch")),
                Err(e) => return Err(nft_err(format!("reading replies: {e}"))),
            };
            for (ty, seq, payload) in messages(&self.buf[..n]) {
                if ty != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(payload);
                if seq == fence {
                    break 'read;
                }
                if code != 0 && index.contains(seq) {
                    errors += 1;
                    first.get_or_insert((seq, Errno::from_raw(-code)));
                }
            }
        }
        match first {
            None if !overflow => Ok((kernel, started.elapsed(), len)),
            None => Err(nft_err("the batch failed; its error replies overflowed the receive buffer")),
            Some((seq, errno)) => {
                let more = if errors > 1 { format!(" ({} more errors)", errors - 1) } else { String::new() };
                let what = index.describe(&bytes, seq);
                let what = if what.starts_with("BATCH_BEGIN") { format!("the commit ({what})") } else { what };
                Err(nft_err(format!("transaction rolled back: {what} failed: {errno}{more}")))
            }
        }
    }

    /// Sends a single request about `table ip pier` outside a batch; its sequence number.
    fn ask(&mut self, ty: u16, flags: u16, what: &str) -> Result<u32, ProxyError> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(ty, self.seq, flags, Some(TABLE));
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| nft_err(format!("sending {what}: {e}")))?;
        Ok(self.seq)
    }

    /// Reads one datagram of replies into the buffer; its length.
    fn receive(&mut self, what: &str) -> Result<usize, ProxyError> {
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(nft_err(format!("reading the {what} reply: {e}"))),
            }
        }
    }

    /// Whether `table ip pier` exists (NFT_MSG_GETTABLE).
    pub fn table_exists(&mut self) -> Result<bool, ProxyError> {
        let seq = self.ask(NFT_MSG_GETTABLE, NLM_F_ACK, "GETTABLE")?;
        let mut found = false;
        loop {
            let n = self.receive("GETTABLE")?;
            for (ty, mseq, payload) in messages(&self.buf[..n]) {
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        return match error_code(payload) {
                            0 => Ok(found),
                            c if c == -(Errno::ENOENT as i32) => Ok(false),
                            c => Err(nft_err(format!("GETTABLE: {}", Errno::from_raw(-c)))),
                        };
                    }
                    NLMSG_DONE => return Ok(found),
                    _ => found = true,
                }
            }
        }
    }
}

/// NFT_MSG_GETCHAIN and NFT_MSG_GETSET, and the attribute that names the object in their
/// replies.
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETSET: u16 = 10;
const NLM_F_DUMP: u16 = 0x300;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_NAME: u16 = 2;

impl Netlink {
    /// The names of the chains and the sets (maps included) of `table ip pier`, from two dumps:
    /// what a replace must delete after a restart, when nothing else remembers them.
    pub fn object_names(&mut self) -> Result<(Vec<String>, Vec<String>), ProxyError> {
        Ok((self.dump_names(NFT_MSG_GETCHAIN, NFTA_CHAIN_NAME)?, self.dump_names(NFT_MSG_GETSET, NFTA_SET_NAME)?))
    }

    fn dump_names(&mut self, ty: u16, name_attr: u16) -> Result<Vec<String>, ProxyError> {
        // The table attribute is number 1 for tables, chains and sets alike.
        let seq = self.ask(ty, NLM_F_DUMP, "a dump request")?;
        let mut names = Vec::new();
        loop {
            let n = self.receive("dump")?;
            for (mty, mseq, payload) in messages(&self.buf[..n]) {
                if mseq != seq {
                    continue;
                }
                match mty {
                    NLMSG_DONE => return Ok(names),
                    NLMSG_ERROR => match error_code(payload) {
                        0 => {}
                        c => return Err(nft_err(format!("dumping the table: {}", Errno::from_raw(-c)))),
                    },
                    _ => {
                        // struct nfgenmsg, then the attributes.
                        if let Some(name) =
                            attributes(payload.get(4..).unwrap_or_default()).find(|(t, _)| *t == name_attr).and_then(
                                |(_, v)| std::str::from_utf8(v.split(|b| *b == 0).next().unwrap_or_default()).ok(),
                            )
                        {
                            names.push(name.to_string());
                        }
                    }
                }
            }
        }
    }
}

/// The attributes in `b`: (type without the flag bits, value).
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = b.get(len.div_ceil(4) * 4..).unwrap_or_default();
        Some((ty, value))
    })
}

/// A single request outside a batch (GETGEN, GETTABLE, dumps).
fn request(ty: u16, seq: u32, flags: u16, table: Option<&str>) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | ty).to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | flags | NLM_F_ACK).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    let family = if table.is_some() { NFPROTO_IPV4 } else { 0 };
    b.extend_from_slice(&[family, 0, 0, 0]);
    if let Some(name) = table {
        b.extend_from_slice(&((4 + name.len() + 1) as u16).to_ne_bytes());
        b.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
    }
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b
}

/// The netlink messages in one datagram: (type, sequence number, payload).
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        let payload = &b[NLMSG_HDRLEN..len];
        b = b.get(len.div_ceil(4) * 4..).unwrap_or_default();
        Some((ty, seq, payload))
    })
}

/// The (negative) errno of an NLMSG_ERROR; 0 is an acknowledgement.
fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(-(Errno::EIO as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_padded_and_carry_their_length() {
        let r = request(NFT_MSG_GETTABLE, 7, NLM_F_ACK, Some("pier"));
        assert_eq!(r.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]) as usize, r.len());
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), (10 << 8) | 1);
        assert_eq!(&r[24..29], b"pier\0");
    }

    #[test]
    fn replies_split_into_messages() {
        let mut b = request(NFT_MSG_GETGEN, 1, 0, None);
        b.extend(request(NFT_MSG_GETGEN, 2, 0, None));
        let seqs: Vec<u32> = messages(&b).map(|(_, s, _)| s).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(messages(&b[..10]).count(), 0);
    }

    #[test]
    fn a_large_batch_is_whole_across_its_segments() {
        let mut batch = Batch::new(100);
        let chains: Vec<String> = (0..40_000).map(|i| format!("a-chain-with-a-long-name-{i:06}")).collect();
        for c in &chains {
            batch.op(&super::super::render::Op::AddChain(c)).expect("encode");
        }
        let (bytes, index) = batch.finish();
        assert!(bytes.segments().count() > 1, "{} bytes in one segment", bytes.len());
        // No message straddles two segments, and together they are the whole batch in order.
        let mut seqs = Vec::new();
        for seg in bytes.segments() {
            let in_seg: Vec<u32> = messages(seg).map(|(_, s, _)| s).collect();
            let used: usize = messages(seg).map(|(_, _, p)| (NLMSG_HDRLEN + p.len()).div_ceil(4) * 4).sum();
            assert_eq!(used, seg.len(), "a segment ends at a message boundary");
            seqs.extend(in_seg);
        }
        assert_eq!(seqs, (100..100 + 40_002).collect::<Vec<u32>>(), "BEGIN, 40,000 chains, END");
        assert_eq!(bytes.to_vec().len(), bytes.len());
        // Error reports find any message, whichever segment holds it.
        assert_eq!(index.seq_range(), (100, 100 + 40_001));
        assert!(index.describe(&bytes, 100 + 40_000).contains("a-chain-with-a-long-name-039999"));
        assert!(index.describe(&bytes, 100 + 40_001).starts_with("BATCH_END"));
    }
}
