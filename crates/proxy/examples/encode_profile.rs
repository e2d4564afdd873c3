//! Times rendering and netlink encoding of N Services × M endpoints, without a kernel.

use std::time::Instant;

use pier_proxy::nft::{render, wire::Batch};
use pier_proxy::table::{Backend, NodeContext, Protocol, ServiceKey, ServicePort};

fn main() {
    let node =
        NodeContext { name: "n".into(), pod_cidr: "10.244.0.0/16".parse().expect("cidr"), served_locally: Vec::new() };
    let ports: Vec<ServicePort> = (0..10_000u32)
        .map(|i| ServicePort {
            service: ServiceKey::new("default", format!("svc-{i}")),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec![std::net::Ipv4Addr::from(0x0a60_0000 + 16 + i)],
            node_port: None,
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            cluster_endpoints: (0..10)
                .map(|j| Backend { ip: std::net::Ipv4Addr::from(0x0af4_0000 + (i * 16 + j) % 65_000 + 2), port: 8080 })
                .collect(),
            local_endpoints: vec![],
        })
        .collect();
    for _ in 0..5 {
        let t = Instant::now();
        let objs: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(i, sp)| render::render_service(std::slice::from_ref(sp), &mut |_| i as u32 + 1))
            .collect();
        let r = t.elapsed();
        let t = Instant::now();
        let classes: Vec<_> = render::preset_classes().map(render::class_objects).collect();
        let base = render::base(&node, &render::counts(objs.iter(), classes.len()));
        let ops = render::full_ops(&base, &classes, objs.iter());
        let o = t.elapsed();
        let t = Instant::now();
        let mut b = Batch::new(1);
        for op in &ops {
            b.op(op).expect("encode");
        }
        let (bytes, _) = b.finish();
        eprintln!("render {:?} ops {:?} encode {:?} ({} bytes)", r, o, t.elapsed(), bytes.len());
    }
}
