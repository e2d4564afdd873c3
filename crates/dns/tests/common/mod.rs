//! Shared test support: Kubernetes fixtures (built from JSON like the API sends them), a query
//! builder and a dig-like renderer. Responses are decoded with hickory-proto, an implementation
//! independent of the hand-written encoder under test.

#![allow(clippy::unwrap_used, dead_code)]

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pier_dns::{Answer, Transport, Zone, ZoneConfig};
use serde_json::{Value, json};

pub const UDP: Transport = Transport::Udp { max_payload: 1232 };

pub fn service(ns: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

pub fn cluster_ip(ns: &str, name: &str, ips: &[&str], ports: Value) -> Service {
    service(ns, name, json!({"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": ips, "ports": ports}))
}

pub fn headless(ns: &str, name: &str, ports: Value) -> Service {
    service(ns, name, json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": ports}))
}

pub fn external(ns: &str, name: &str, target: &str) -> Service {
    service(ns, name, json!({"type": "ExternalName", "externalName": target}))
}

/// An endpoint: addresses, optional hostname, ready condition (None = unset).
pub fn ep(addresses: &[&str], hostname: Option<&str>, ready: Option<bool>) -> Value {
    let mut e = json!({"addresses": addresses});
    if let Some(h) = hostname {
        e["hostname"] = json!(h);
    }
    if let Some(r) = ready {
        e["conditions"] = json!({"ready": r});
    }
    e
}

pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    address_type: &str,
    endpoints: Vec<Value>,
    ports: Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

pub fn http_port() -> Value {
    json!([{"name": "http", "port": 80, "protocol": "TCP"}])
}

/// The zone most tests read: modelled on CoreDNS's kubernetes plugin test data.
pub fn fixture() -> Zone {
    let zone = Zone::new(ZoneConfig::default()).unwrap();
    populate(&zone);
    zone.mark_synced();
    zone
}

pub fn populate(zone: &Zone) {
    zone.apply_service(&cluster_ip("testns", "svc1", &["10.0.0.1"], http_port()));
    zone.apply_slice(&slice(
        "testns",
        "svc1-abc",
        "svc1",
        "IPv4",
        vec![ep(&["172.0.0.10"], None, Some(true)), ep(&["172.0.0.11"], Some("svc1-pod"), None)],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
    ));
    zone.apply_service(&cluster_ip("testns", "svcempty", &["10.0.0.2"], http_port()));
    zone.apply_service(&cluster_ip("testns", "svc6", &["1234:abcd::1"], http_port()));
    zone.apply_service(&cluster_ip("testns", "svc-dual-stack", &["10.0.0.3", "10::3"], http_port()));
    zone.apply_service(&cluster_ip(
        "testns",
        "multiport",
        &["10.0.0.5"],
        json!([
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 8080}
        ]),
    ));
    zone.apply_service(&headless("testns", "hdls1", http_port()));
    zone.apply_slice(&slice(
        "testns",
        "hdls1-v4",
        "hdls1",
        "IPv4",
        vec![
            ep(&["172.0.0.2"], None, Some(true)),
            ep(&["172.0.0.3"], None, None),
            ep(&["172.0.0.4"], Some("dup-name"), Some(true)),
            ep(&["172.0.0.5"], Some("dup-name"), Some(true)),
            ep(&["172.0.0.6"], Some("unready"), Some(false)),
        ],
        http_port(),
    ));
    zone.apply_slice(&slice(
        "testns",
        "hdls1-v6",
        "hdls1",
        "IPv6",
        vec![ep(&["5678:abcd::1"], None, Some(true)), ep(&["5678:abcd::2"], Some("v6-host"), Some(true))],
        http_port(),
    ));
    zone.apply_service(&headless("testns", "hdlsprtls", json!([])));
    zone.apply_slice(&slice(
        "testns",
        "hdlsprtls-1",
        "hdlsprtls",
        "IPv4",
        vec![ep(&["172.0.0.20"], None, None)],
        json!([]),
    ));
    zone.apply_service(&headless("testns", "hdls-empty", http_port()));
    zone.apply_service(&headless("testns", "hdls-unready", http_port()));
    zone.apply_slice(&slice(
        "testns",
        "hdls-unready-1",
        "hdls-unready",
        "IPv4",
        vec![ep(&["172.0.0.30"], Some("u"), Some(false))],
        http_port(),
    ));
    let mut publish = headless("testns", "hdls-publish", http_port());
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    zone.apply_service(&publish);
    zone.apply_slice(&slice(
        "testns",
        "hdls-publish-1",
        "hdls-publish",
        "IPv4",
        vec![ep(&["172.0.0.40"], Some("p"), Some(false))],
        http_port(),
    ));
    zone.apply_service(&external("testns", "ext", "ext.interwebs.test"));
    zone.apply_service(&external("testns", "ext-in", "svc1.testns.svc.cluster.local"));
    zone.apply_service(&external("testns", "ext-chain", "ext-in.testns.svc.cluster.local."));
    zone.apply_service(&external("testns", "ext-missing", "nope.testns.svc.cluster.local"));
}

/// A query as stub resolvers send it: RD set, optionally with EDNS.
pub struct Ask {
    pub name: String,
    pub qtype: RecordType,
    pub id: u16,
    pub edns: Option<u16>,
    pub class: DNSClass,
}

pub fn ask(name: &str, qtype: RecordType) -> Ask {
    Ask { name: name.to_string(), qtype, id: 0x1234, edns: None, class: DNSClass::IN }
}

impl Ask {
    pub fn edns(mut self, size: u16) -> Ask {
        self.edns = Some(size);
        self
    }

    pub fn id(mut self, id: u16) -> Ask {
        self.id = id;
        self
    }

    pub fn class(mut self, class: DNSClass) -> Ask {
        self.class = class;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = self.id;
        m.metadata.recursion_desired = true;
        let mut q = Query::query(Name::from_ascii(&self.name).unwrap(), self.qtype);
        q.set_query_class(self.class);
        m.add_query(q);
        if let Some(size) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    /// Answers from `zone` over UDP; panics unless the answerer replies.
    pub fn on(&self, zone: &Zone) -> Message {
        self.raw_on(zone, UDP).map(|b| Message::from_vec(&b).unwrap()).unwrap()
    }

    pub fn raw_on(&self, zone: &Zone, transport: Transport) -> Option<Vec<u8>> {
        match pier_dns::answer(zone, &self.bytes(), transport) {
            Answer::Reply(b) => Some(b),
            Answer::Resolve { partial, .. } => Some(partial),
            Answer::Forward | Answer::Drop => None,
        }
    }
}

/// The 12-bit response code (header plus OPT).
pub fn rcode_of(bytes: &[u8]) -> u16 {
    let low = u16::from(bytes[3] & 0xF);
    let high = Message::from_vec(bytes).ok().and_then(|m| m.edns.map(|e| u16::from(e.rcode_high()))).unwrap_or(0);
    (high << 4) | low
}

pub fn rcode_name(rc: u16) -> &'static str {
    match rc {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => "OTHER",
    }
}

pub fn rdata_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) => {
            txt.txt_data.iter().map(|s| format!("\"{}\"", String::from_utf8_lossy(s))).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

pub fn record_text(r: &Record) -> String {
    format!("{} {} {} {} {}", r.name, r.ttl, r.dns_class, r.record_type(), rdata_text(&r.data))
}

pub fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(record_text).collect()
}

pub fn sorted_answers(m: &Message) -> Vec<String> {
    let mut v = answers(m);
    v.sort();
    v
}

pub fn authorities(m: &Message) -> Vec<String> {
    m.authorities.iter().map(record_text).collect()
}

pub fn additionals(m: &Message) -> Vec<String> {
    m.additionals.iter().map(record_text).collect()
}

/// A dig-like rendering for snapshot tests.
pub fn render(bytes: &[u8]) -> String {
    let m = Message::from_vec(bytes).unwrap();
    let md = &m.metadata;
    let mut flags = vec!["qr"];
    for (on, name) in [
        (md.authoritative, "aa"),
        (md.truncation, "tc"),
        (md.recursion_desired, "rd"),
        (md.recursion_available, "ra"),
        (md.checking_disabled, "cd"),
    ] {
        if on {
            flags.push(name);
        }
    }
    let mut s = format!(";; status: {}, id: {}\n", rcode_name(rcode_of(bytes)), md.id);
    s += &format!(
        ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}\n",
        flags.join(" "),
        m.queries.len(),
        m.answers.len(),
        m.authorities.len(),
        m.additionals.len() + usize::from(m.edns.is_some()),
    );
    if let Some(e) = &m.edns {
        s += &format!(";; OPT: version {}, udp {}\n", e.version(), e.max_payload());
    }
    for q in &m.queries {
        s += &format!(";; QUESTION\n{} {} {}\n", q.name(), q.query_class(), q.query_type());
    }
    for (title, records) in [("ANSWER", &m.answers), ("AUTHORITY", &m.authorities), ("ADDITIONAL", &m.additionals)] {
        if !records.is_empty() {
            s += &format!(";; {title}\n");
            for r in records.iter() {
                s += &record_text(r);
                s.push('\n');
            }
        }
    }
    s
}
