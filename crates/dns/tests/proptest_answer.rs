//! Property tests: nothing a client sends panics the answerer, and whatever it replies is a
//! well-formed DNS message within the size limit that carries the query's ID.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use pier_dns::{Answer, Transport};
use proptest::prelude::*;

fn check_reply(query: &[u8], transport: Transport, zone: &pier_dns::Zone) {
    let limit = match transport {
        Transport::Udp { max_payload } => usize::from(max_payload).max(512),
        Transport::Tcp => 65_535,
    };
    match pier_dns::answer(zone, query, transport) {
        Answer::Reply(r) | Answer::Resolve { partial: r, .. } => {
            assert!(r.len() >= 12 && r.len() <= limit, "reply of {} bytes", r.len());
            assert_eq!(&r[..2], &query[..2], "ID echoed");
            assert!(r[2] & 0x80 != 0, "QR set");
            Message::from_vec(&r).unwrap_or_else(|e| panic!("reply does not decode: {e}: {r:02x?}"));
        }
        Answer::Forward | Answer::Drop => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let zone = fixture();
        for t in [UDP, Transport::Tcp, Transport::Udp { max_payload: 0 }] {
            check_reply(&bytes, t, &zone);
        }
    }

    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6),
        truncate in any::<Option<u16>>(),
    ) {
        let names = [
            ("svc1.testns.svc.cluster.local.", RecordType::A),
            ("_http._tcp.hdls1.testns.svc.cluster.local.", RecordType::SRV),
            ("ext.testns.svc.cluster.local.", RecordType::A),
            ("ext-chain.testns.svc.cluster.local.", RecordType::A),
            ("2.0.0.172.in-addr.arpa.", RecordType::PTR),
            ("cluster.local.", RecordType::NS),
        ];
        let (name, t) = names[which];
        let mut q = ask(name, t).edns(1232).bytes();
        for (at, v) in edits {
            let at = usize::from(at) % q.len();
            // Keep QR clear so most mutations reach the parser rather than being dropped.
            q[at] = if at == 2 { v & 0x7F } else { v };
        }
        if let Some(n) = truncate {
            q.truncate(usize::from(n) % (q.len() + 1));
        }
        let zone = fixture();
        if q.len() >= 2 {
            for t in [UDP, Transport::Tcp] {
                check_reply(&q, t, &zone);
            }
        }
    }

    #[test]
    fn merging_arbitrary_upstream_bytes_never_panics(upstream in proptest::collection::vec(any::<u8>(), 0..300)) {
        let zone = fixture();
        let Answer::Resolve { partial, .. } = pier_dns::answer(&zone, &ask("ext.testns.svc.cluster.local.", RecordType::A).bytes(), UDP) else {
            panic!("expected Resolve");
        };
        let merged = pier_dns::merge_chased(&partial, Some(&upstream), 512);
        assert!(merged.len() <= 512);
        Message::from_vec(&merged).unwrap();
    }
}
