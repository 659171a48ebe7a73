//! State machine tests: no sockets, no sleeps; time is passed in.

use super::*;
use crate::turn::policy::PeerRule;

const REALM: &str = "test.realm";

struct FakeBinder {
    next: u16,
}

fn fake_relay(port: u16) -> BoundRelay<u16> {
    BoundRelay {
        handle: port,
        local: SocketAddr::new([0, 0, 0, 0].into(), port),
        relayed: SocketAddr::new([203, 0, 113, 7].into(), port),
    }
}

impl RelayBinder<u16> for FakeBinder {
    fn bind(&mut self, family: Family, _even: bool) -> Option<BoundRelay<u16>> {
        if family == Family::V6 {
            return None;
        }
        self.next += 1;
        Some(fake_relay(50_000 + self.next))
    }

    fn bind_pair(&mut self, _family: Family) -> Option<(BoundRelay<u16>, BoundRelay<u16>)> {
        self.next += 2;
        Some((
            fake_relay(60_000 + self.next),
            fake_relay(60_001 + self.next),
        ))
    }

    fn start(&mut self, _relay: &BoundRelay<u16>, _client: FiveTuple) {}
}

struct Harness {
    server: TurnServer<u16>,
    binder: FakeBinder,
    metrics: Arc<TurnMetrics>,
    t0: Instant,
    unix: u64,
}

fn client(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        local: "198.51.100.1:3478".parse().unwrap(),
        remote: SocketAddr::new([192, 0, 2, 10].into(), port),
    }
}

fn harness(options: Options, allow: &[&str]) -> Harness {
    let credentials = Arc::new(Credentials::new(
        REALM,
        &[
            ("alice".into(), "wonderland".into()),
            ("bob".into(), "builder".into()),
        ],
        Some(b"rest-secret"),
        3_600,
        600,
    ));
    let metrics = Arc::new(TurnMetrics::default());
    let filter = PeerFilter::new(
        allow.iter().map(|r| PeerRule::parse(r).unwrap()).collect(),
        vec![],
    );
    Harness {
        server: TurnServer::new(options, credentials, filter, metrics.clone()),
        binder: FakeBinder { next: 0 },
        metrics,
        t0: Instant::now(),
        unix: 1_000_000,
    }
}

fn txid(n: u8) -> [u8; 12] {
    [n; 12]
}

impl Harness {
    fn now(&self, secs: u64) -> Now {
        Now {
            mono: self.t0 + Duration::from_secs(secs),
            unix: self.unix + secs,
        }
    }

    /// Sends bytes, returns every output.
    fn send_at(&mut self, from: FiveTuple, data: &[u8], secs: u64) -> Vec<Output<u16>> {
        let mut out = Vec::new();
        let now = self.now(secs);
        self.server
            .handle_client(from, data, now, &mut self.binder, &mut out);
        out
    }

    /// Sends a request, returns the single response.
    fn request(&mut self, from: FiveTuple, data: &[u8], secs: u64) -> Vec<u8> {
        let out = self.send_at(from, data, secs);
        match out.into_iter().find_map(|o| match o {
            Output::ToClient { data, .. } => Some(data),
            _ => None,
        }) {
            Some(data) => data,
            None => panic!("no response"),
        }
    }

    fn nonce(&mut self, from: FiveTuple) -> String {
        let mut b = Builder::new(method::ALLOCATE, Class::Request, txid(99), 16);
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        let r = self.request(from, &b.fingerprint(), 0);
        let m = Message::parse(&r).unwrap();
        assert_eq!(error_code(&m), Some(401));
        m.text(attr::NONCE).unwrap().to_string()
    }

    /// An authenticated request: `add` adds the method's attributes.
    fn signed(
        &mut self,
        from: FiveTuple,
        method: u16,
        id: u8,
        user: &str,
        password: &str,
        add: impl FnOnce(&mut Builder),
    ) -> Builder {
        let nonce = self.nonce(from);
        let mut b = Builder::new(method, Class::Request, txid(id), 64);
        add(&mut b);
        b.add(attr::USERNAME, user.as_bytes());
        b.add(attr::REALM, REALM.as_bytes());
        b.add(attr::NONCE, nonce.as_bytes());
        b.integrity(&stun::long_term_key(user, REALM, password));
        b
    }

    fn allocate(&mut self, from: FiveTuple, id: u8, user: &str, password: &str) -> Vec<u8> {
        let b = self.signed(from, method::ALLOCATE, id, user, password, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        self.request(from, &b.fingerprint(), 0)
    }

    fn permission(&mut self, from: FiveTuple, id: u8, peer: &str) -> Vec<u8> {
        let peer: SocketAddr = peer.parse().unwrap();
        let b = self.signed(
            from,
            method::CREATE_PERMISSION,
            id,
            "alice",
            "wonderland",
            |b| {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
            },
        );
        self.request(from, &b.fingerprint(), 0)
    }
}

fn error_code(m: &Message<'_>) -> Option<u16> {
    let v = m.get(attr::ERROR_CODE)?;
    Some(v[2] as u16 * 100 + v[3] as u16)
}

fn parse(raw: &[u8]) -> Message<'_> {
    let m = Message::parse(raw).unwrap();
    assert!(m.fingerprint_ok());
    m
}

#[test]
fn binding_reports_the_mapped_address() {
    let mut h = harness(Options::default(), &[]);
    let request = Builder::new(method::BINDING, Class::Request, txid(1), 0).finish();
    let r = h.request(client(4000), &request, 0);
    let m = parse(&r);
    assert_eq!((m.method, m.class), (method::BINDING, Class::Success));
    assert_eq!(
        m.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(client(4000).remote)
    );
    assert_eq!(h.metrics.binding_requests.get(), 1);
}

#[test]
fn allocate_is_challenged_then_granted_once() {
    let mut h = harness(Options::default(), &[]);
    let from = client(4000);
    let r = h.allocate(from, 2, "alice", "wonderland");
    let m = parse(&r);
    assert_eq!(m.class, Class::Success, "{:?}", error_code(&m));
    assert_eq!(
        m.xor_address(attr::XOR_RELAYED_ADDRESS),
        Some("203.0.113.7:50001".parse().unwrap())
    );
    assert_eq!(m.u32(attr::LIFETIME), Some(600));
    assert_eq!(
        m.integrity_ok(&stun::long_term_key("alice", REALM, "wonderland")),
        Some(true)
    );
    assert_eq!(h.server.allocation_count(), 1);
    // A different Allocate on the same 5-tuple: 437.
    let r = h.allocate(from, 3, "alice", "wonderland");
    assert_eq!(error_code(&parse(&r)), Some(437));
    assert_eq!(h.metrics.allocations.get(), 1);
}

#[test]
fn retransmitted_allocate_gets_the_same_response() {
    let mut h = harness(Options::default(), &[]);
    let from = client(4000);
    let b = h.signed(from, method::ALLOCATE, 7, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let request = b.fingerprint();
    let first = h.request(from, &request, 0);
    let second = h.request(from, &request, 1);
    assert_eq!(first, second);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn wrong_password_unknown_user_and_expired_rest_name_get_401() {
    let mut h = harness(Options::default(), &[]);
    let r = h.allocate(client(1), 2, "alice", "wrong");
    assert_eq!(error_code(&parse(&r)), Some(401));
    let r = h.allocate(client(2), 2, "mallory", "x");
    assert_eq!(error_code(&parse(&r)), Some(401));
    // A REST name that expired one second before now.
    let expired = format!("{}:carol", h.unix - 1);
    let password = {
        use base64::Engine as _;
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"rest-secret").unwrap();
        mac.update(expired.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let r = h.allocate(client(3), 2, &expired, &password);
    assert_eq!(error_code(&parse(&r)), Some(401));
    assert_eq!(h.metrics.auth_failures.get(), 3);
    // The same scheme with a future expiry works.
    let valid = format!("{}:carol", h.unix + 60);
    let minted = {
        use base64::Engine as _;
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"rest-secret").unwrap();
        mac.update(valid.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let r = h.allocate(client(4), 2, &valid, &minted);
    assert_eq!(parse(&r).class, Class::Success);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn old_nonce_gets_438() {
    let mut h = harness(Options::default(), &[]);
    let from = client(5);
    let nonce = h.nonce(from);
    let mut b = Builder::new(method::ALLOCATE, Class::Request, txid(4), 64);
    b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    b.add(attr::USERNAME, b"alice");
    b.add(attr::REALM, REALM.as_bytes());
    b.add(attr::NONCE, nonce.as_bytes());
    b.integrity(&stun::long_term_key("alice", REALM, "wonderland"));
    let r = h.request(from, &b.fingerprint(), 601);
    let m = parse(&r);
    assert_eq!(error_code(&m), Some(438));
    assert!(m.get(attr::NONCE).is_some() && m.get(attr::REALM).is_some());
}

#[test]
fn channel_data_and_indications_flow_both_ways() {
    let mut h = harness(Options::default(), &[]);
    let from = client(4000);
    assert_eq!(
        parse(&h.allocate(from, 2, "alice", "wonderland")).class,
        Class::Success
    );
    let peer: SocketAddr = "192.0.2.50:9000".parse().unwrap();
    let relay_key: SocketAddr = "0.0.0.0:50001".parse().unwrap();

    // Without a permission nothing passes.
    let mut buf = [0u8; 64];
    buf[4..8].copy_from_slice(b"ping");
    assert_eq!(
        h.server.handle_peer(relay_key, peer, &mut buf, 4, h.t0),
        PeerAction::Drop
    );

    // Send indication: installs nothing, needs a permission.
    assert_eq!(
        parse(&h.permission(from, 3, "192.0.2.50:1")).class,
        Class::Success
    );
    let mut send = Builder::new(method::SEND, Class::Indication, txid(5), 32);
    send.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    send.add(attr::DATA, b"hello");
    let raw = send.finish();
    let out = h.send_at(from, &raw, 1);
    match &out[..] {
        [
            Output::ToPeer {
                relay,
                peer: p,
                range,
            },
        ] => {
            assert_eq!(
                (*relay, *p, &raw[range.clone()]),
                (50_001, peer, &b"hello"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    // Peer -> client without a channel: a Data indication.
    match h
        .server
        .handle_peer(relay_key, peer, &mut buf, 4, h.t0 + Duration::from_secs(1))
    {
        PeerAction::Indication { to, data } => {
            assert_eq!(to, from);
            let m = Message::parse(&data).unwrap();
            assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
            assert_eq!(m.get(attr::DATA), Some(&b"ping"[..]));
            assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
        }
        other => panic!("{other:?}"),
    }

    // ChannelBind, then ChannelData both ways.
    let b = h.signed(from, method::CHANNEL_BIND, 6, "alice", "wonderland", |b| {
        b.add(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    assert_eq!(
        parse(&h.request(from, &b.fingerprint(), 1)).class,
        Class::Success
    );
    let data = [0x40, 0x01, 0, 3, b'a', b'b', b'c', 0];
    match &h.send_at(from, &data, 2)[..] {
        [Output::ToPeer { peer: p, range, .. }] => {
            assert_eq!((*p, &data[range.clone()]), (peer, &b"abc"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.server
            .handle_peer(relay_key, peer, &mut buf, 4, h.t0 + Duration::from_secs(2)),
        PeerAction::Forward {
            to: from,
            range: 0..8
        }
    );
    assert_eq!(&buf[..8], &[0x40, 0x01, 0, 4, b'p', b'i', b'n', b'g']);
    // Unknown channel numbers and other peers are dropped.
    assert!(
        h.send_at(from, &[0x40, 0x02, 0, 1, 1, 0, 0, 0], 2)
            .is_empty()
    );
    let stranger: SocketAddr = "192.0.2.99:1".parse().unwrap();
    assert_eq!(
        h.server.handle_peer(relay_key, stranger, &mut buf, 4, h.t0),
        PeerAction::Drop
    );
    // The permission lapses after 300 s without refresh; the channel's own
    // lifetime (600 s) does not keep it alive.
    assert_eq!(
        h.server.handle_peer(
            relay_key,
            "192.0.2.50:1".parse().unwrap(),
            &mut buf,
            4,
            h.t0 + Duration::from_secs(302)
        ),
        PeerAction::Drop
    );
    assert_eq!(h.metrics.relayed_to_peers.get(), 2);
}

#[test]
fn a_channel_cannot_be_rebound_to_another_peer() {
    let mut h = harness(Options::default(), &[]);
    let from = client(4000);
    h.allocate(from, 2, "alice", "wonderland");
    let bind = |h: &mut Harness, id: u8, number: u16, peer: &str| {
        let peer: SocketAddr = peer.parse().unwrap();
        let b = h.signed(from, method::CHANNEL_BIND, id, "alice", "wonderland", |b| {
            let n = number.to_be_bytes();
            b.add(attr::CHANNEL_NUMBER, &[n[0], n[1], 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        let r = h.request(from, &b.fingerprint(), 0);
        let m = Message::parse(&r).unwrap();
        error_code(&m)
    };
    assert_eq!(bind(&mut h, 3, 0x4000, "192.0.2.1:1"), None);
    assert_eq!(
        bind(&mut h, 4, 0x4000, "192.0.2.1:1"),
        None,
        "refresh is fine"
    );
    assert_eq!(bind(&mut h, 5, 0x4000, "192.0.2.2:1"), Some(400));
    assert_eq!(bind(&mut h, 6, 0x4001, "192.0.2.1:1"), Some(400));
    assert_eq!(bind(&mut h, 7, 0x3FFF, "192.0.2.3:1"), Some(400));
}

#[test]
fn private_and_loopback_peers_are_refused_unless_allowed() {
    let mut h = harness(Options::default(), &[]);
    let from = client(4000);
    h.allocate(from, 2, "alice", "wonderland");
    for peer in ["127.0.0.1:3480", "10.0.0.1:3480", "[::ffff:127.0.0.1]:1"] {
        let r = h.permission(from, 3, peer);
        let m = parse(&r);
        let code = error_code(&m);
        // An IPv6 peer on an IPv4 relay is a family mismatch before it is a policy question.
        assert!(code == Some(403) || code == Some(443), "{peer}: {code:?}");
    }
    assert!(h.metrics.refused_peers.get() >= 2);

    let mut h = harness(Options::default(), &["127.0.0.1", "10.0.0.0/8"]);
    h.allocate(from, 2, "alice", "wonderland");
    for peer in ["127.0.0.1:3480", "10.0.0.1:3480"] {
        assert_eq!(
            parse(&h.permission(from, 3, peer)).class,
            Class::Success,
            "{peer}"
        );
    }
    assert_eq!(
        error_code(&parse(&h.permission(from, 4, "192.168.0.1:1"))),
        Some(403)
    );
}

#[test]
fn permissions_per_allocation_are_limited() {
    let options = Options {
        max_permissions: 2,
        ..Options::default()
    };
    let mut h = harness(options, &[]);
    let from = client(4000);
    h.allocate(from, 2, "alice", "wonderland");
    let ok = |r: &[u8]| parse(r).class == Class::Success;
    assert!(ok(&h.permission(from, 3, "192.0.2.1:1")));
    assert!(ok(&h.permission(from, 4, "192.0.2.2:1")));
    // Renewing one (another port, same address) takes no room.
    assert!(ok(&h.permission(from, 5, "192.0.2.1:9")));
    assert_eq!(
        error_code(&parse(&h.permission(from, 6, "192.0.2.3:1"))),
        Some(508)
    );
    // Nor through a channel.
    let b = h.signed(from, method::CHANNEL_BIND, 7, "alice", "wonderland", |b| {
        b.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, "192.0.2.3:1".parse().unwrap());
    });
    assert_eq!(
        error_code(&parse(&h.request(from, &b.fingerprint(), 0))),
        Some(508)
    );
    // Many peers in one request: all or nothing.
    let b = h.signed(
        from,
        method::CREATE_PERMISSION,
        8,
        "alice",
        "wonderland",
        |b| {
            for i in 10..40u8 {
                b.add_xor_address(
                    attr::XOR_PEER_ADDRESS,
                    SocketAddr::from(([192, 0, 2, i], 1)),
                );
            }
        },
    );
    assert_eq!(
        error_code(&parse(&h.request(from, &b.fingerprint(), 0))),
        Some(508)
    );
    assert_eq!(h.metrics.quota_refusals.get(), 3);
}

#[test]
fn quotas_per_user_and_in_total() {
    let options = Options {
        user_quota: 1,
        total_quota: 2,
        ..Options::default()
    };
    let mut h = harness(options, &[]);
    assert_eq!(
        parse(&h.allocate(client(1), 2, "alice", "wonderland")).class,
        Class::Success
    );
    assert_eq!(
        error_code(&parse(&h.allocate(client(2), 2, "alice", "wonderland"))),
        Some(486)
    );
    assert_eq!(
        parse(&h.allocate(client(3), 2, "bob", "builder")).class,
        Class::Success
    );
    // Total reached: even a new user is refused.
    let r = h.allocate(client(4), 2, "bob", "builder");
    assert!(matches!(error_code(&parse(&r)), Some(486 | 508)));
    assert_eq!(h.metrics.quota_refusals.get(), 2);
    // Releasing one frees the user's slot.
    let mut out = Vec::new();
    h.server.client_closed(client(1), &mut out);
    assert!(matches!(&out[..], [Output::Release { relay: 50_001 }]));
    assert_eq!(
        parse(&h.allocate(client(2), 2, "alice", "wonderland")).class,
        Class::Success
    );
}

#[test]
fn lifetimes_refresh_and_expiry() {
    let options = Options {
        default_lifetime: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(120),
        ..Options::default()
    };
    let mut h = harness(options, &[]);
    let from = client(7);
    h.allocate(from, 2, "alice", "wonderland");
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.t0 + Duration::from_secs(60))
    );
    // Refresh asking for an hour gets the maximum.
    let b = h.signed(from, method::REFRESH, 3, "alice", "wonderland", |b| {
        b.add_u32(attr::LIFETIME, 3_600);
    });
    let r = h.request(from, &b.fingerprint(), 10);
    assert_eq!(parse(&r).u32(attr::LIFETIME), Some(120));
    let mut out = Vec::new();
    h.server
        .handle_timeout(h.t0 + Duration::from_secs(129), &mut out);
    assert!(out.is_empty());
    h.server
        .handle_timeout(h.t0 + Duration::from_secs(130), &mut out);
    assert!(matches!(&out[..], [Output::Release { .. }]));
    assert_eq!(h.server.allocation_count(), 0);
    // Refresh with lifetime 0 deletes at once.
    h.allocate(from, 4, "alice", "wonderland");
    let b = h.signed(from, method::REFRESH, 5, "alice", "wonderland", |b| {
        b.add_u32(attr::LIFETIME, 0);
    });
    let out = h.send_at(from, &b.fingerprint(), 200);
    assert!(out.iter().any(|o| matches!(o, Output::Release { .. })));
    assert_eq!(h.server.allocation_count(), 0);
    // Another user's credentials cannot refresh an allocation.
    h.allocate(from, 6, "alice", "wonderland");
    let b = h.signed(from, method::REFRESH, 7, "bob", "builder", |_| {});
    assert_eq!(
        error_code(&parse(&h.request(from, &b.fingerprint(), 0))),
        Some(441)
    );
}

#[test]
fn allocate_rate_is_limited_per_source() {
    let options = Options {
        allocate_rate: 1,
        allocate_burst: 3,
        ..Options::default()
    };
    let mut h = harness(options, &[]);
    // nonce() spends one Allocate each time: 401, then the signed one.
    assert_eq!(
        parse(&h.allocate(client(1), 2, "alice", "wonderland")).class,
        Class::Success
    );
    let r = h.allocate(client(2), 2, "bob", "builder");
    assert_eq!(error_code(&parse(&r)), Some(486));
    assert!(h.metrics.rate_limited.get() >= 1);
}

#[test]
fn unknown_required_attributes_and_bad_transport() {
    let mut h = harness(Options::default(), &[]);
    let from = client(9);
    let b = h.signed(from, method::ALLOCATE, 2, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.add(attr::DONT_FRAGMENT, &[]);
    });
    let r = h.request(from, &b.fingerprint(), 0);
    let m = parse(&r);
    assert_eq!(error_code(&m), Some(420));
    assert_eq!(
        m.get(attr::UNKNOWN_ATTRIBUTES),
        Some(&attr::DONT_FRAGMENT.to_be_bytes()[..])
    );
    let b = h.signed(from, method::ALLOCATE, 3, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(
        error_code(&parse(&h.request(from, &b.fingerprint(), 0))),
        Some(442)
    );
    // Garbage and responses are ignored.
    assert!(h.send_at(from, &[0xff; 40], 0).is_empty());
    let response = Builder::new(method::BINDING, Class::Success, txid(1), 0).finish();
    assert!(h.send_at(from, &response, 0).is_empty());
}

#[test]
fn stream_clients_get_padded_channel_data() {
    let mut h = harness(Options::default(), &[]);
    let from = FiveTuple {
        transport: Transport::Tcp,
        ..client(4000)
    };
    h.allocate(from, 2, "alice", "wonderland");
    let peer: SocketAddr = "192.0.2.50:9000".parse().unwrap();
    let b = h.signed(from, method::CHANNEL_BIND, 6, "alice", "wonderland", |b| {
        b.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    assert_eq!(
        parse(&h.request(from, &b.fingerprint(), 0)).class,
        Class::Success
    );
    let mut buf = [0xAAu8; 16];
    assert_eq!(
        h.server
            .handle_peer("0.0.0.0:50001".parse().unwrap(), peer, &mut buf, 5, h.t0),
        PeerAction::Forward {
            to: from,
            range: 0..12
        }
    );
    assert_eq!(&buf[9..12], &[0, 0, 0]);
}

#[test]
fn even_port_reservation_is_claimed_by_token_or_expires() {
    let mut h = harness(Options::default(), &[]);
    let b = h.signed(client(1), method::ALLOCATE, 2, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.add(attr::EVEN_PORT, &[0x80]);
    });
    let r = h.request(client(1), &b.fingerprint(), 0);
    let m = parse(&r);
    assert_eq!(
        m.xor_address(attr::XOR_RELAYED_ADDRESS).map(|a| a.port()),
        Some(60_002)
    );
    let token = m.get(attr::RESERVATION_TOKEN).expect("token").to_vec();
    let b = h.signed(client(2), method::ALLOCATE, 3, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.add(attr::RESERVATION_TOKEN, &token);
    });
    let r = h.request(client(2), &b.fingerprint(), 1);
    assert_eq!(
        parse(&r)
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .map(|a| a.port()),
        Some(60_003)
    );
    // A token is good once.
    let b = h.signed(client(3), method::ALLOCATE, 4, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.add(attr::RESERVATION_TOKEN, &token);
    });
    assert_eq!(
        error_code(&parse(&h.request(client(3), &b.fingerprint(), 1))),
        Some(508)
    );
    // An unclaimed reservation is released after 30 s.
    let b = h.signed(client(4), method::ALLOCATE, 5, "alice", "wonderland", |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        b.add(attr::EVEN_PORT, &[0x80]);
    });
    assert_eq!(
        parse(&h.request(client(4), &b.fingerprint(), 0)).class,
        Class::Success
    );
    let mut out = Vec::new();
    h.server
        .handle_timeout(h.t0 + Duration::from_secs(31), &mut out);
    assert!(
        matches!(&out[..], [Output::Release { relay: 60_005 }]),
        "{out:?}"
    );
}
