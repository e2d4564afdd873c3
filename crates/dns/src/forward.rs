//! Forwarding names outside the cluster domain to the host's resolvers, with a cache that
//! honours TTLs (counted down on every hit) and a hard deadline: an upstream that does not
//! answer costs the client one SERVFAIL within `deadline`, and one that refuses the packet
//! (ENETUNREACH, ECONNREFUSED) costs nothing but moving to the next upstream.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::answer::{ParsedQuery, parse_query};
use crate::wire::{self, HEADER_LEN, flag, rcode, rtype};

#[derive(Debug, Clone)]
pub(crate) struct ForwardConfig {
    pub upstreams: Vec<SocketAddr>,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub cache_capacity: usize,
    pub max_cache_ttl: u32,
}

#[derive(Debug)]
pub(crate) struct Forwarder {
    config: ForwardConfig,
    next: AtomicUsize,
    cache: Mutex<Cache>,
}

/// Cache key: the lowercase question plus the DO and CD bits, which change upstream answers.
type Key = Vec<u8>;

#[derive(Debug)]
struct Entry {
    response: Box<[u8]>,
    /// Offsets of the TTL fields to count down (OPT excluded).
    ttl_offsets: Box<[usize]>,
    stored: Instant,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
}

fn cache_key(q: &ParsedQuery<'_>) -> Key {
    let mut k = q.question.to_vec();
    if let Some(name) = k.get_mut(..q.qname_len) {
        name.make_ascii_lowercase();
    }
    let edns = q.edns.map_or(0, |e| 1 | (u8::from(e.dnssec_ok) << 1));
    k.push(edns | (u8::from(q.flags & flag::CD != 0) << 2));
    k
}

/// The TTL offsets of a cacheable response and how long it may be cached, or `None`.
fn cacheability(resp: &[u8], max_ttl: u32) -> Option<(Vec<usize>, u32)> {
    let flags = wire::get_u16(resp, 2)?;
    let rc = flags & 0xF;
    if flags & flag::TC != 0 || (rc != rcode::NOERROR && rc != rcode::NXDOMAIN) {
        return None;
    }
    let count = |at| wire::get_u16(resp, at).map(usize::from);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = HEADER_LEN;
    for _ in 0..qd {
        pos = wire::skip_name(resp, pos)? + 4;
    }
    let mut offsets = Vec::new();
    let mut min_ttl: Option<u32> = None;
    for i in 0..an + ns + ar {
        let rr = wire::read_rr(resp, pos)?;
        pos = rr.end;
        if rr.rtype == rtype::OPT {
            continue;
        }
        offsets.push(rr.ttl_at);
        if i >= an + ns {
            continue;
        }
        let mut ttl = rr.ttl;
        // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM).
        if an == 0 && rr.rtype == rtype::SOA {
            ttl = ttl.min(wire::get_u32(resp, rr.end.checked_sub(4)?)?);
        }
        min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
    }
    let ttl = min_ttl?.min(max_ttl);
    (ttl > 0).then_some((offsets, ttl))
}

impl Forwarder {
    pub fn new(config: ForwardConfig) -> Forwarder {
        Forwarder { config, next: AtomicUsize::new(0), cache: Mutex::new(Cache::default()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The upstream answer to `query` with the client's ID and question bytes, or SERVFAIL.
    /// `limit` is the largest response the client takes; `tcp` says it came over TCP, so a
    /// truncated upstream answer is retried over TCP rather than passed on.
    pub async fn forward(&self, query: &[u8], limit: usize, tcp: bool) -> Option<Vec<u8>> {
        let q = match parse_query(query) {
            Ok(q) => q,
            Err(_) => return crate::answer::error_response(query, rcode::FORMERR),
        };
        let key = cache_key(&q);
        if let Some(hit) = self.cached(&key, query, &q, limit) {
            return Some(hit);
        }
        let result = tokio::time::timeout(self.config.deadline, self.exchange(query, &q, tcp)).await;
        match result {
            Ok(Ok(mut resp)) => {
                self.store(key, &resp);
                restore(&mut resp, query, &q);
                Some(resp)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "every upstream failed");
                crate::answer::error_response(query, rcode::SERVFAIL)
            }
            Err(_) => {
                tracing::debug!("upstreams did not answer within the deadline");
                crate::answer::error_response(query, rcode::SERVFAIL)
            }
        }
    }

    fn cached(&self, key: &Key, query: &[u8], q: &ParsedQuery<'_>, limit: usize) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut resp = {
            let cache = self.cache();
            let entry = cache.entries.get(key)?;
            if now >= entry.expires || entry.response.len() > limit {
                return None;
            }
            let elapsed = now.duration_since(entry.stored).as_secs() as u32;
            let mut resp = entry.response.to_vec();
            for &at in &entry.ttl_offsets {
                if let Some(ttl) = wire::get_u32(&resp, at) {
                    resp[at..at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
                }
            }
            resp
        };
        restore(&mut resp, query, q);
        Some(resp)
    }

    fn store(&self, key: Key, resp: &[u8]) {
        let Some((offsets, ttl)) = cacheability(resp, self.config.max_cache_ttl) else { return };
        let now = Instant::now();
        let mut cache = self.cache();
        let cap = self.config.cache_capacity;
        if cap == 0 {
            return;
        }
        if cache.entries.len() >= cap {
            cache.entries.retain(|_, e| e.expires > now);
        }
        if cache.entries.len() >= cap {
            // Still full of live entries: drop an arbitrary tenth rather than scan for the oldest.
            let victims: Vec<Key> = cache.entries.keys().take(cap / 10 + 1).cloned().collect();
            for k in victims {
                cache.entries.remove(&k);
            }
        }
        cache.entries.insert(
            key,
            Entry {
                response: resp.into(),
                ttl_offsets: offsets.into_boxed_slice(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    async fn exchange(&self, query: &[u8], q: &ParsedQuery<'_>, tcp: bool) -> io::Result<Vec<u8>> {
        let upstreams = &self.config.upstreams;
        if upstreams.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no upstream resolvers configured"));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // At least two tries, so one lost packet to a single upstream is retried.
        let attempts = upstreams.len().max(2);
        let mut last = io::Error::new(io::ErrorKind::TimedOut, "no attempt made");
        for i in 0..attempts {
            let upstream = upstreams[(start + i) % upstreams.len()];
            let id: u16 = rand::random();
            let mut out = query.to_vec();
            wire::set_u16(&mut out, 0, id);
            // A truncated UDP answer is passed on: the client retries over TCP, and a TCP
            // client's query goes upstream over TCP.
            let attempt =
                async { if tcp { tcp_exchange(upstream, &out).await } else { udp_exchange(upstream, &out, q).await } };
            match tokio::time::timeout(self.config.attempt_timeout, attempt).await {
                Ok(Ok(resp)) if matches(&resp, q) => return Ok(resp),
                Ok(Ok(_)) => last = io::Error::new(io::ErrorKind::InvalidData, "upstream answered another question"),
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed");
                    last = e;
                }
                Err(_) => {
                    tracing::debug!(%upstream, "upstream timed out");
                    last = io::Error::new(io::ErrorKind::TimedOut, format!("{upstream} timed out"));
                }
            }
        }
        Err(last)
    }
}

/// Puts the client's ID and question bytes (its case) back into an upstream response.
fn restore(resp: &mut [u8], query: &[u8], q: &ParsedQuery<'_>) {
    if let (Some(dst), Some(src)) = (resp.get_mut(..2), query.get(..2)) {
        dst.copy_from_slice(src);
    }
    let end = HEADER_LEN + q.question.len();
    if let Some(dst) = resp.get_mut(HEADER_LEN..end)
        && dst.eq_ignore_ascii_case(q.question)
    {
        dst.copy_from_slice(q.question);
    }
}

/// Whether `resp` answers `q`: a response with the same question (case aside).
fn matches(resp: &[u8], q: &ParsedQuery<'_>) -> bool {
    let end = HEADER_LEN + q.question.len();
    wire::get_u16(resp, 2).is_some_and(|f| f & flag::QR != 0)
        && resp.get(HEADER_LEN..end).is_some_and(|qs| qs.eq_ignore_ascii_case(q.question))
}

async fn udp_exchange(upstream: SocketAddr, query: &[u8], q: &ParsedQuery<'_>) -> io::Result<Vec<u8>> {
    let local: SocketAddr =
        if upstream.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from other sources and reports ICMP errors.
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let id = wire::get_u16(query, 0);
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).await?;
        let resp = &buf[..n];
        if wire::get_u16(resp, 0) == id && matches(resp, q) {
            return Ok(resp.to_vec());
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let id = wire::get_u16(query, 0);
    loop {
        let len = stream.read_u16().await?;
        let mut resp = vec![0u8; usize::from(len)];
        stream.read_exact(&mut resp).await?;
        if wire::get_u16(&resp, 0) == id {
            return Ok(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn response(an_ttl: Option<u32>, soa: Option<(u32, u32)>, rc: u16) -> Vec<u8> {
        let mut m = vec![0, 1];
        wire::put_u16(&mut m, flag::QR | rc);
        wire::put_u16(&mut m, 1);
        wire::put_u16(&mut m, u16::from(an_ttl.is_some()));
        wire::put_u16(&mut m, u16::from(soa.is_some()));
        wire::put_u16(&mut m, 0);
        m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        if let Some(ttl) = an_ttl {
            wire::put_address_rr(&mut m, &[0xC0, 0x0C], ttl, "192.0.2.1".parse().unwrap());
        }
        if let Some((ttl, minimum)) = soa {
            let at = wire::begin_rr(&mut m, &[0xC0, 0x0C], rtype::SOA, ttl);
            m.extend_from_slice(&[0xC0, 0x0C, 0xC0, 0x0C]);
            for v in [1, 2, 3, 4, minimum] {
                wire::put_u32(&mut m, v);
            }
            wire::finish_rdata(&mut m, at);
        }
        m
    }

    #[test]
    fn cache_lifetime_follows_ttls() {
        assert_eq!(cacheability(&response(Some(300), None, 0), 3600).map(|c| c.1), Some(300));
        assert_eq!(cacheability(&response(Some(300), None, 0), 60).map(|c| c.1), Some(60));
        assert_eq!(cacheability(&response(None, Some((900, 30)), 3), 3600).map(|c| c.1), Some(30));
        assert_eq!(cacheability(&response(None, None, 0), 3600), None);
        assert_eq!(cacheability(&response(Some(300), None, 2), 3600), None);
        assert_eq!(cacheability(&response(Some(0), None, 0), 3600), None);
    }
}
