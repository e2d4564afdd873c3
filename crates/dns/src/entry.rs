//! How a name is stored once built: its key and every answer in one allocation, so a zone of
//! 10,000 Services and 100,000 endpoints (~225,000 names) fits the memory goal (D3). The
//! answerer reads it through borrowed views; nothing is decoded or copied to look a type up.
//!
//! Layout: `key_len u8, key, flags u8, rrset_count u8`, then per rrset
//! `rtype u16, answers u16, additionals u16, answer_len u16, additional_len u16`, then the
//! rrsets' bytes in order, then for an alias `target_len u8, in_zone_key_len u8 (0xFF: none),
//! target`.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use crate::records::Node;

const FLAG_ALIAS: u8 = 1;
const RRSET_HEADER: usize = 10;
const NOT_IN_ZONE: u8 = 0xFF;

/// One stored name. Hashes and compares as its key, so a set of entries is a map from key
/// (replace, don't insert, to update one).
#[derive(Debug, Clone)]
pub struct Entry(Box<[u8]>);

/// One record type's answers at a name, borrowed from an [`Entry`].
#[derive(Debug, Clone, Copy)]
pub struct RrsetView<'a> {
    pub rtype: u16,
    pub answers: u16,
    pub additionals: u16,
    pub answer_bytes: &'a [u8],
    pub additional_bytes: &'a [u8],
}

/// An ExternalName alias, borrowed from an [`Entry`].
#[derive(Debug, Clone, Copy)]
pub struct AliasView<'a> {
    /// Wire form, lowercase.
    pub target: &'a [u8],
    /// The target's key when it lies in the cluster zone.
    pub in_zone: Option<&'a [u8]>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    crate::wire::get_u16(b, at).unwrap_or(0)
}

impl Entry {
    /// Encodes a built node under `key` (at most 255 bytes: keys are parts of names).
    pub fn new(key: &[u8], node: &Node) -> Entry {
        let data_len: usize =
            node.rrsets.iter().map(|r| RRSET_HEADER + r.answer_bytes().len() + r.additional_bytes().len()).sum();
        let mut b =
            Vec::with_capacity(3 + key.len() + data_len + node.alias.as_ref().map_or(0, |a| a.target.len() + 2));
        b.push(key.len() as u8);
        b.extend_from_slice(key);
        b.push(if node.alias.is_some() { FLAG_ALIAS } else { 0 });
        b.push(node.rrsets.len() as u8);
        for r in node.rrsets.iter() {
            for v in
                [r.rtype, r.answers, r.additionals, r.answer_bytes().len() as u16, r.additional_bytes().len() as u16]
            {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        for r in node.rrsets.iter() {
            b.extend_from_slice(r.answer_bytes());
            b.extend_from_slice(r.additional_bytes());
        }
        if let Some(alias) = &node.alias {
            b.push(alias.target.len() as u8);
            b.push(alias.in_zone.as_ref().map_or(NOT_IN_ZONE, |k| k.len() as u8));
            b.extend_from_slice(&alias.target);
        }
        Entry(b.into_boxed_slice())
    }

    pub fn key(&self) -> &[u8] {
        let len = usize::from(self.0.first().copied().unwrap_or(0));
        self.0.get(1..1 + len).unwrap_or_default()
    }

    fn header_at(&self) -> usize {
        1 + self.key().len()
    }

    fn rrset_count(&self) -> usize {
        usize::from(self.0.get(self.header_at() + 1).copied().unwrap_or(0))
    }

    /// Iterates the rrsets with the offset just past the last one.
    fn rrsets(&self) -> impl Iterator<Item = RrsetView<'_>> {
        let b = &self.0[..];
        let first = self.header_at() + 2;
        let count = self.rrset_count();
        let mut data = first + count * RRSET_HEADER;
        (0..count).map(move |i| {
            let h = first + i * RRSET_HEADER;
            let (an_len, ar_len) = (usize::from(u16_at(b, h + 6)), usize::from(u16_at(b, h + 8)));
            let view = RrsetView {
                rtype: u16_at(b, h),
                answers: u16_at(b, h + 2),
                additionals: u16_at(b, h + 4),
                answer_bytes: b.get(data..data + an_len).unwrap_or_default(),
                additional_bytes: b.get(data + an_len..data + an_len + ar_len).unwrap_or_default(),
            };
            data += an_len + ar_len;
            view
        })
    }

    pub fn rrset(&self, rtype: u16) -> Option<RrsetView<'_>> {
        self.rrsets().find(|r| r.rtype == rtype)
    }

    pub fn alias(&self) -> Option<AliasView<'_>> {
        if self.0.get(self.header_at()).copied().unwrap_or(0) & FLAG_ALIAS == 0 {
            return None;
        }
        let headers = self.header_at() + 2;
        let end = headers
            + self.rrset_count() * RRSET_HEADER
            + self.rrsets().map(|r| r.answer_bytes.len() + r.additional_bytes.len()).sum::<usize>();
        let target_len = usize::from(*self.0.get(end)?);
        let in_zone_len = *self.0.get(end + 1)?;
        let target = self.0.get(end + 2..end + 2 + target_len)?;
        let in_zone = (in_zone_len != NOT_IN_ZONE).then(|| target.get(..usize::from(in_zone_len))).flatten();
        Some(AliasView { target, in_zone })
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::records::{Alias, RrsetBuilder};
    use std::collections::HashSet;

    #[test]
    fn round_trips_rrsets_and_alias() {
        let mut a = RrsetBuilder::new(1);
        a.answer(|o| o.extend_from_slice(&[1, 2, 3]));
        a.additional(|o| o.extend_from_slice(&[9]));
        let mut t = RrsetBuilder::new(16);
        t.answer(|o| o.extend_from_slice(&[4, 5]));
        let node = Node {
            rrsets: vec![a.finish(), t.finish()].into_boxed_slice(),
            alias: Some(Box::new(Alias { target: b"\x01a\x01b\x00"[..].into(), in_zone: Some(b"\x01a"[..].into()) })),
        };
        let e = Entry::new(b"\x03key", &node);
        assert_eq!(e.key(), b"\x03key");
        let r = e.rrset(1).unwrap();
        assert_eq!((r.answers, r.additionals, r.answer_bytes, r.additional_bytes), (1, 1, &[1, 2, 3][..], &[9][..]));
        assert_eq!(e.rrset(16).unwrap().answer_bytes, &[4, 5]);
        assert!(e.rrset(28).is_none());
        let alias = e.alias().unwrap();
        assert_eq!(alias.target, b"\x01a\x01b\x00");
        assert_eq!(alias.in_zone, Some(&b"\x01a"[..]));
        let mut set = HashSet::new();
        set.insert(e);
        assert!(set.contains(&b"\x03key"[..]));
        assert!(Entry::new(b"", &Node::default()).alias().is_none());
    }
}
