//! ExternalName targets outside the cluster domain (K11): the query sent upstream for the
//! target, and the merge of the upstream answer after the CNAME the answerer wrote.
//!
//! The merge uses hickory-proto: it is off the hot path, and upstream messages may compress
//! names anywhere, which the hand-written answerer never has to read.

use hickory_proto::op::Message;

use crate::wire::{self, CLASS_IN, HEADER_LEN, flag};

/// A recursive query for `name`/`qtype` with EDNS (1232 bytes), as the forwarder sends it.
pub(crate) fn upstream_query(name: &str, qtype: u16, id: u16) -> Option<Vec<u8>> {
    let qname = wire::text_to_wire(name)?;
    let mut q = Vec::with_capacity(HEADER_LEN + qname.len() + 4 + 11);
    wire::put_u16(&mut q, id);
    wire::put_u16(&mut q, flag::RD);
    for count in [1, 0, 0, 1] {
        wire::put_u16(&mut q, count);
    }
    q.extend_from_slice(&qname);
    wire::put_u16(&mut q, qtype);
    wire::put_u16(&mut q, CLASS_IN);
    wire::put_opt(&mut q, crate::DEFAULT_MAX_UDP_PAYLOAD, 0, false);
    Some(q)
}

/// Appends the answer records of `upstream` (the target's resolution) to `partial` (the
/// answerer's CNAME response), passing on TC (K11), and keeps the result within `limit` bytes
/// by dropping trailing records with TC set. Without a usable upstream answer the CNAME alone
/// is the reply.
pub fn merge_chased(partial: &[u8], upstream: Option<&[u8]>, limit: usize) -> Vec<u8> {
    let Some(upstream) = upstream else { return partial.to_vec() };
    let (Ok(mut msg), Ok(up)) = (Message::from_vec(partial), Message::from_vec(upstream)) else {
        return partial.to_vec();
    };
    let base = msg.answers.len();
    msg.answers.extend(up.answers);
    msg.metadata.truncation |= up.metadata.truncation;
    loop {
        match msg.to_vec() {
            Ok(bytes) if bytes.len() <= limit => return bytes,
            Ok(_) if msg.answers.len() > base => {
                msg.answers.pop();
                msg.metadata.truncation = true;
            }
            _ => return partial.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upstream_query_is_a_valid_message() {
        let q = upstream_query("example.com.", 1, 7).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "example.com.");
        assert_eq!(m.edns.unwrap().max_payload(), 1232);
    }
}
