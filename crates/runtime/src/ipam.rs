//! IP address management for the node's pod CIDR, in the style of CNI's `host-local` plugin.
//!
//! Every held address is one file in the IPAM directory, named after the address and holding
//! the owner's sandbox uid. A reservation is `open(O_CREAT|O_EXCL)`, which the kernel makes
//! atomic, so an address can never be handed out twice, even by two processes; the files are the
//! whole state, so it survives restarts with nothing to rebuild. `last_reserved` makes the
//! search round-robin: a released address is reused as late as possible, which keeps stale
//! conntrack entries and ARP caches from pointing a new pod's traffic at an old one.
//!
//! The network address, the gateway (the first host address, on the bridge) and the broadcast
//! address are never handed out.

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::error::RuntimeError;

const LAST_RESERVED: &str = "last_reserved";

#[derive(Debug)]
pub(crate) struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
    first: u32,
    last: u32,
}

/// The bridge's address: the first host address of the pod CIDR.
pub(crate) fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

impl Ipam {
    pub(crate) fn open(dir: PathBuf, cidr: Ipv4Net) -> Result<Self, RuntimeError> {
        if cidr.prefix_len() > 30 {
            return Err(RuntimeError::InvalidConfig(format!(
                "pod CIDR {cidr} is too small: it needs room for a gateway and at least one pod (/30 or larger)"
            )));
        }
        fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        let network = u32::from(cidr.network());
        let broadcast = u32::from(cidr.broadcast());
        Ok(Ipam { dir, cidr: cidr.trunc(), first: network + 2, last: broadcast - 1 })
    }

    pub(crate) fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    fn path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Reserves the next free address for `owner`.
    pub(crate) fn allocate(&self, owner: &str) -> Result<Ipv4Addr, RuntimeError> {
        let size = self.last - self.first + 1;
        let start = match self.last_reserved() {
            Some(last) if (self.first..=self.last).contains(&last) => last - self.first + 1,
            _ => 0,
        };
        for i in 0..size {
            let ip = Ipv4Addr::from(self.first + (start + i) % size);
            if self.try_reserve(ip, owner)? {
                self.write_last_reserved(ip)?;
                return Ok(ip);
            }
        }
        Err(RuntimeError::PodCidrExhausted { cidr: self.cidr })
    }

    /// Reserves `ip` for `owner` if it is free; true when `owner` holds it afterwards.
    pub(crate) fn reserve(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, RuntimeError> {
        if !self.cidr.contains(&ip) || u32::from(ip) < self.first || u32::from(ip) > self.last {
            return Ok(false);
        }
        if self.try_reserve(ip, owner)? {
            return Ok(true);
        }
        Ok(self.owner(ip).as_deref() == Some(owner))
    }

    fn try_reserve(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, RuntimeError> {
        let path = self.path(ip);
        match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(owner.as_bytes())
                    .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(RuntimeError::io(format!("reserving {}", path.display()), e)),
        }
    }

    /// Who holds `ip`, if anyone ("" for a reservation interrupted before its owner was written).
    pub(crate) fn owner(&self, ip: Ipv4Addr) -> Option<String> {
        fs::read_to_string(self.path(ip)).ok()
    }

    /// Releases `ip` if `owner` holds it; true when something was released.
    pub(crate) fn release(&self, ip: Ipv4Addr, owner: &str) -> Result<bool, RuntimeError> {
        if self.owner(ip).as_deref() != Some(owner) {
            return Ok(false);
        }
        remove_file(&self.path(ip))?;
        Ok(true)
    }

    /// Releases every address `owner` holds (normally one).
    pub(crate) fn release_owner(&self, owner: &str) -> Result<usize, RuntimeError> {
        let mut n = 0;
        for (ip, who) in self.allocations()? {
            if who == owner && self.release(ip, owner)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every held address and its owner, in address order.
    pub(crate) fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, RuntimeError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| RuntimeError::io(format!("listing {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            // A file that vanished between readdir and read was just released.
            if let Ok(owner) = fs::read_to_string(entry.path()) {
                out.push((ip, owner));
            }
        }
        out.sort();
        Ok(out)
    }

    fn last_reserved(&self) -> Option<u32> {
        let text = fs::read_to_string(self.dir.join(LAST_RESERVED)).ok()?;
        text.trim().parse::<Ipv4Addr>().ok().map(u32::from)
    }

    fn write_last_reserved(&self, ip: Ipv4Addr) -> Result<(), RuntimeError> {
        // Best effort by design: losing it, or a torn write, only makes the next search start
        // elsewhere. Rewritten in place, so it takes no new inode per pod.
        let _ = fs::write(self.dir.join(LAST_RESERVED), ip.to_string());
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn hands_out_every_host_address_once_then_reports_exhaustion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path().join("ipam"), cidr("10.244.3.0/28")).expect("open");
        let mut seen = HashSet::new();
        for i in 0..13 {
            let ip = ipam.allocate(&format!("pod-{i}")).expect("allocate");
            assert!(seen.insert(ip), "{ip} handed out twice");
            assert_ne!(ip, Ipv4Addr::new(10, 244, 3, 0));
            assert_ne!(ip, Ipv4Addr::new(10, 244, 3, 1), "the gateway is the bridge's");
            assert_ne!(ip, Ipv4Addr::new(10, 244, 3, 15));
        }
        let err = ipam.allocate("one-too-many").expect_err("the /28 is full");
        assert!(matches!(err, RuntimeError::PodCidrExhausted { .. }), "{err}");
        assert_eq!(err.to_string(), "no free IP address left in pod CIDR 10.244.3.0/28");
    }

    #[test]
    fn survives_reopening_and_never_reuses_a_held_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam");
        let held = {
            let ipam = Ipam::open(path.clone(), cidr("10.244.0.0/24")).expect("open");
            let a = ipam.allocate("a").expect("a");
            let b = ipam.allocate("b").expect("b");
            assert_ne!(a, b);
            vec![(a, "a".to_string()), (b, "b".to_string())]
        };
        let ipam = Ipam::open(path, cidr("10.244.0.0/24")).expect("reopen");
        assert_eq!(ipam.allocations().expect("list"), held);
        for i in 0..200 {
            let ip = ipam.allocate(&format!("c{i}")).expect("allocate");
            assert!(held.iter().all(|(h, _)| *h != ip), "{ip} is still held");
            ipam.release(ip, &format!("c{i}")).expect("release");
        }
    }

    #[test]
    fn release_checks_the_owner_and_round_robins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path().to_path_buf(), cidr("10.244.0.0/24")).expect("open");
        let a = ipam.allocate("a").expect("a");
        assert!(!ipam.release(a, "b").expect("release by another owner"));
        assert_eq!(ipam.owner(a).as_deref(), Some("a"));
        assert!(ipam.release(a, "a").expect("release"));
        assert!(!ipam.release(a, "a").expect("second release is a no-op"));
        // The released address is not the next one handed out.
        let b = ipam.allocate("b").expect("b");
        assert_ne!(a, b);
        assert_eq!(ipam.release_owner("b").expect("release_owner"), 1);
        assert!(ipam.allocations().expect("list").is_empty());
    }

    #[test]
    fn reserve_adopts_or_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path().to_path_buf(), cidr("10.244.0.0/24")).expect("open");
        let ip = Ipv4Addr::new(10, 244, 0, 9);
        assert!(ipam.reserve(ip, "a").expect("reserve"));
        assert!(ipam.reserve(ip, "a").expect("idempotent"));
        assert!(!ipam.reserve(ip, "b").expect("held by a"));
        assert!(!ipam.reserve(Ipv4Addr::new(10, 244, 0, 1), "a").expect("the gateway"));
        assert!(!ipam.reserve(Ipv4Addr::new(10, 9, 0, 1), "a").expect("outside"));
    }

    #[test]
    fn refuses_a_cidr_without_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Ipam::open(dir.path().to_path_buf(), cidr("10.244.0.0/31")),
            Err(RuntimeError::InvalidConfig(_))
        ));
    }
}
