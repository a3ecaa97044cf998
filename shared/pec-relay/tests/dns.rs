//! `DnsRoutes` against a name server on 127.0.0.1 that answers from a small zone (messages
//! parsed and written by hickory-proto): MX preference order, the implicit MX, null MX,
//! NXDOMAIN, SERVFAIL, and MX hosts that point into private or reserved address space.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use pec_relay::{DnsRoutes, RouteError, Routes};
use tokio::net::UdpSocket;

/// What the fake name server knows: answers by (name, type); names under `nx` do not exist;
/// names under `broken` get SERVFAIL; anything else exists with no records of that type.
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
}

impl Zone {
    fn answer(&self, query: &Message) -> Message {
        let mut reply = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        let Some(q) = query.queries.first() else {
            reply.metadata.response_code = ResponseCode::FormErr;
            return reply;
        };
        reply.add_query(q.clone());
        let name = q.name().to_ascii().to_ascii_lowercase();
        if name.ends_with("nx.test.") {
            reply.metadata.response_code = ResponseCode::NXDomain;
        } else if name.ends_with("broken.test.") {
            reply.metadata.response_code = ResponseCode::ServFail;
        } else if let Some(rdatas) = self.records.get(&(name, q.query_type())) {
            for r in rdatas {
                reply.add_answer(Record::from_rdata(q.name().clone(), 60, r.clone()));
            }
        }
        reply
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// Starts the name server; its address.
async fn name_server() -> SocketAddr {
    let mut records: HashMap<(String, RecordType), Vec<RData>> = HashMap::new();
    let mut add = |n: &str, r: RData| {
        records
            .entry((n.to_string(), r.record_type()))
            .or_default()
            .push(r)
    };
    let a = |s: &str| RData::A(A(s.parse::<Ipv4Addr>().unwrap()));
    // Two MX hosts, the lower preference first whatever order the answer lists them in.
    add(
        "pec.due.test.",
        RData::MX(MX::new(20, name("mx2.pec.due.test."))),
    );
    add(
        "pec.due.test.",
        RData::MX(MX::new(10, name("mx1.pec.due.test."))),
    );
    add("mx1.pec.due.test.", a("62.149.128.10"));
    add("mx1.pec.due.test.", a("62.149.128.11"));
    // An MX host with an IPv6 address only.
    add(
        "mx2.pec.due.test.",
        RData::AAAA(AAAA("2a00:6d40::20".parse::<Ipv6Addr>().unwrap())),
    );
    // No MX: the domain's own address (RFC 5321 §5.1).
    add("implicit.test.", a("62.149.128.30"));
    // Null MX (RFC 7505).
    add("nullmx.test.", RData::MX(MX::new(0, Name::root())));
    // MX hosts in our own network: the metadata service, a VPC address, loopback.
    add(
        "inside.test.",
        RData::MX(MX::new(10, name("mx.inside.test."))),
    );
    add("mx.inside.test.", a("169.254.169.254"));
    add("mx.inside.test.", a("10.0.3.7"));
    add("mx.inside.test.", a("127.0.0.1"));
    // One public and one private address: only the public one is used.
    add(
        "mixed.test.",
        RData::MX(MX::new(10, name("mx.mixed.test."))),
    );
    add("mx.mixed.test.", a("192.168.0.25"));
    add("mx.mixed.test.", a("62.149.128.40"));
    // An MX host that has no address.
    add(
        "noaddr.test.",
        RData::MX(MX::new(10, name("ghost.noaddr.test."))),
    );
    let zone = Zone { records };

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let reply = zone.answer(&query).to_vec().unwrap();
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

async fn routes() -> DnsRoutes {
    DnsRoutes::with_nameserver(name_server().await, 25, 5).unwrap()
}

fn targets(t: &[pec_relay::Target]) -> Vec<String> {
    t.iter().map(|t| format!("{}={}", t.host, t.addr)).collect()
}

#[tokio::test]
async fn mx_hosts_by_preference_each_with_its_addresses() {
    let r = routes().await;
    let t = r.route("PEC.Due.test").await.unwrap();
    assert_eq!(
        targets(&t),
        [
            "mx1.pec.due.test=62.149.128.10:25",
            "mx1.pec.due.test=62.149.128.11:25",
            "mx2.pec.due.test=[2a00:6d40::20]:25",
        ]
    );
    // At most max_targets addresses.
    let one = DnsRoutes::with_nameserver(name_server().await, 2525, 1).unwrap();
    let t = one.route("pec.due.test").await.unwrap();
    assert_eq!(targets(&t), ["mx1.pec.due.test=62.149.128.10:2525"]);
}

#[tokio::test]
async fn no_mx_record_means_the_domain_itself() {
    let t = routes().await.route("implicit.test").await.unwrap();
    assert_eq!(targets(&t), ["implicit.test=62.149.128.30:25"]);
}

#[tokio::test]
async fn null_mx_and_nonexistent_domains_are_permanent() {
    let r = routes().await;
    match r.route("nullmx.test").await {
        Err(RouteError::Permanent(why)) => assert!(why.starts_with("5.1.10"), "{why}"),
        other => panic!("{other:?}"),
    }
    match r.route("nessuno.nx.test").await {
        Err(RouteError::Permanent(why)) => assert!(why.starts_with("5.1.2"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An MX host without any address.
    match r.route("noaddr.test").await {
        Err(RouteError::Permanent(why)) => assert!(why.starts_with("5.4.4"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_failing_name_server_is_transient() {
    match routes().await.route("pec.broken.test").await {
        Err(RouteError::Transient(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dns_never_points_the_relay_into_our_own_network() {
    let r = routes().await;
    match r.route("inside.test").await {
        Err(RouteError::Permanent(why)) => {
            assert!(why.starts_with("5.4.4"), "{why}");
            assert!(why.contains("169.254.169.254"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let t = r.route("mixed.test").await.unwrap();
    assert_eq!(targets(&t), ["mx.mixed.test=62.149.128.40:25"]);
    assert!(!pec_ports::net::is_internal(IpAddr::V4(Ipv4Addr::new(
        62, 149, 128, 40
    ))));
}
