//! Prints the full nftables script for N Services × M endpoints (used to time `nft -f`).

use pier_proxy::nft::render::{full_script, render_service};
use pier_proxy::table::{Backend, NodeContext, Protocol, ServiceKey, ServicePort};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, m) = (args.first().copied().unwrap_or(10_000), args.get(1).copied().unwrap_or(10));
    let node =
        NodeContext { name: "n".into(), pod_cidr: "10.244.0.0/16".parse().expect("cidr"), served_locally: Vec::new() };
    let objs: Vec<_> = (0..n)
        .map(|i| {
            let i = i as u32;
            let vip = std::net::Ipv4Addr::from(0x0a60_0000 + 16 + i);
            let eps = (0..m as u32)
                .map(|j| Backend {
                    ip: std::net::Ipv4Addr::from(0x0af4_0000 + ((i * 10 + j) % 65_000) + 2),
                    port: 8080,
                })
                .collect();
            let sp = ServicePort {
                service: ServiceKey::new("default", format!("svc-{i}")),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                cluster_ips: vec![vip],
                node_port: None,
                external_ips: vec![],
                load_balancer_ips: vec![],
                affinity_timeout: None,
                external_local: false,
                internal_local: false,
                cluster_endpoints: eps,
                local_endpoints: vec![],
            };
            render_service(&[sp], &mut |_| i + 1)
        })
        .collect();
    print!("{}", full_script(&node, objs.iter()));
}
