//! The bundled STUN/TURN server against coturn's own clients (Debian
//! `coturn`: `turnutils_stunclient`, `turnutils_uclient`, `turnutils_peer`
//! as the echoing peer; the coturn daemon is never started here), plus the
//! `/api/ice-servers` endpoint through `curl --digest`.
//!
//! Everything runs on 127.0.0.1 with ephemeral ports. Relays use the range
//! 20000–29999, outside Linux's ephemeral range, so a peer on a free port is
//! never one of our own relays. Loopback peers are refused by default, so the
//! relaying tests allow 127.0.0.1 explicitly, and one test shows the default.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Server, free_port};
use switchboard::turn::stun::{self, Builder, Class, Message, attr, method};

const SECRET: &str = "north";

fn config(allow: &str) -> String {
    format!(
        "listen:\n  udp: []\n  tcp: []\n  tls: []\n  https: ['127.0.0.1:0']\n  http: []\n  admin: ['127.0.0.1:0']\n\
         turn:\n  listen:\n    udp: ['127.0.0.1:0']\n    tcp: ['127.0.0.1:0']\n    tls: ['127.0.0.1:0']\n  \
         realm: switchboard.test\n  relay_ipv4: 127.0.0.1\n  relay_ipv6: ''\n  relay_ports: 20000-29999\n  \
         users:\n    - {{username: alice, password: wonderland}}\n  rest_secret: {SECRET}\n{allow}"
    )
}

fn server(allow_loopback: bool) -> Server {
    let allow = if allow_loopback {
        "  allowed_peers: ['127.0.0.1']\n"
    } else {
        ""
    };
    Server::start_with(&config(allow))
}

/// `turnutils_peer`: the UDP echo peer, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start() -> Peer {
        let port = free_port();
        let child = Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer (apt-get install coturn)");
        std::thread::sleep(Duration::from_millis(200));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `turnutils_uclient`, bounded to 30 s; returns (success, output).
fn uclient(server: SocketAddr, peer: &str, peer_port: u16, extra: &[&str]) -> (bool, String) {
    let port = server.port().to_string();
    let peer_port = peer_port.to_string();
    let mut args = vec![
        "30",
        "turnutils_uclient",
        "-p",
        &port,
        "-e",
        peer,
        "-r",
        &peer_port,
        "-n",
        "20",
        "-m",
        "1",
        "-l",
        "120",
        "-z",
        "10",
    ];
    args.extend_from_slice(extra);
    args.push("127.0.0.1");
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new("timeout")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run turnutils_uclient (apt-get install coturn)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

/// The relayed echo worked: every packet came back.
fn assert_echo(ok: bool, output: &str, sessions: u32) {
    let expected = format!(
        "tot_send_msgs={}, tot_recv_msgs={}",
        20 * sessions,
        20 * sessions
    );
    assert!(
        ok && output.contains(&expected) && output.contains("Total lost packets 0 (0.000000%)"),
        "uclient did not relay every packet ({expected}):\n{output}"
    );
}

/// A REST credential in coturn's scheme, computed here (not by the server).
fn rest_credential(expiry: u64, user: &str) -> (String, String) {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    let username = format!("{expiry}:{user}");
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn stun_binding_over_udp_with_coturn_stunclient_and_over_tcp() {
    let server = server(false);
    let udp = server.addr("turn-udp");
    let out = Command::new("timeout")
        .args([
            "10",
            "turnutils_stunclient",
            "-p",
            &udp.port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("turnutils_stunclient");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("UDP reflexive addr: 127.0.0.1:"),
        "{text}"
    );

    // Over TCP: one Binding request on a stream, checked with FINGERPRINT.
    let mut tcp = TcpStream::connect(server.addr("turn-tcp")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&Builder::new(method::BINDING, Class::Request, [3; 12], 0).fingerprint())
        .unwrap();
    let mut head = [0u8; 20];
    tcp.read_exact(&mut head).unwrap();
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut raw = head.to_vec();
    raw.resize(20 + len, 0);
    tcp.read_exact(&mut raw[20..]).unwrap();
    let m = Message::parse(&raw).unwrap();
    assert_eq!((m.method, m.class), (method::BINDING, Class::Success));
    assert!(m.fingerprint_ok());
    assert_eq!(
        m.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(tcp.local_addr().unwrap())
    );
    assert_eq!(
        m.get(attr::RESPONSE_ORIGIN).map(|v| v.len()),
        Some(8),
        "RFC 5780 RESPONSE-ORIGIN"
    );
    assert!(server.metric("switchboard_turn_binding_requests_total") >= 2);
}

/// One Binding request on a stream; whether a success came back.
fn stream_binding(tcp: &mut TcpStream) -> bool {
    let request = Builder::new(method::BINDING, Class::Request, [4; 12], 0).fingerprint();
    if tcp.write_all(&request).is_err() {
        return false;
    }
    let mut head = [0u8; 20];
    if tcp.read_exact(&mut head).is_err() {
        return false;
    }
    let mut raw = head.to_vec();
    raw.resize(20 + u16::from_be_bytes([head[2], head[3]]) as usize, 0);
    tcp.read_exact(&mut raw[20..]).is_ok()
        && Message::parse(&raw).is_ok_and(|m| m.class == Class::Success)
}

/// Whether the server closes `tcp` within `within` (it sends nothing).
fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match tcp.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn stream_connections_are_limited_per_source_and_cut_when_idle_without_allocation() {
    let server = Server::start_with(&config(
        "  max_connections_per_ip: 2\n  idle_timeout_secs: 2\n",
    ));
    let turn = server.addr("turn-tcp");
    let mut a = TcpStream::connect(turn).unwrap();
    let mut b = TcpStream::connect(turn).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(stream_binding(&mut a) && stream_binding(&mut b));
    // A third from the same address is closed at once, unanswered.
    let mut c = TcpStream::connect(turn).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(!stream_binding(&mut c), "third connection served");
    // Without an allocation, two seconds of silence end a connection (the
    // allowance for one with an allocation is an hour).
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut a, Duration::from_secs(10)),
        "idle connection kept"
    );
    assert!(
        closed_within(&mut b, Duration::from_secs(10)),
        "idle connection kept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Their slots are free again.
    let mut d = TcpStream::connect(turn).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(stream_binding(&mut d));
}

#[test]
fn a_stream_client_that_stops_reading_and_then_sends_garbage_is_closed() {
    // A client whose responses pile up unread (the server's writer stalls
    // on a full send buffer) and that then sends garbage: the server must
    // close the connection (its writer is aborted after a second's grace).
    let server = server(false);
    let mut tcp = common::connect_not_reading(server.addr("turn-tcp"));
    // Far more responses than the two sides' buffers hold, never read.
    let request = Builder::new(method::BINDING, Class::Request, [5; 12], 0).fingerprint();
    let burst: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 10_000)
        .collect();
    // In bursts, so that the server's writer keeps up until its socket's
    // send buffer (which grows to megabytes) is full: its unsent bytes stop
    // growing while requests still come.
    let mut unsent = Vec::new();
    for _ in 0..400 {
        tcp.write_all(&burst).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        unsent.push(common::server_unsent(&tcp).unwrap_or(0));
        if let [.., a, b, c] = unsent[..]
            && a > 0
            && a == b
            && b == c
        {
            break;
        }
    }
    assert!(
        unsent.len() < 400,
        "the server's writer never stalled: {unsent:?}"
    );
    // Not a STUN or ChannelData header: the server ends the connection.
    tcp.write_all(&[0xff; 4]).unwrap();
    let garbage_seen = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        server.log_text().contains("not STUN or ChannelData")
    });
    assert!(garbage_seen, "the server never read the garbage");
    // After a second's grace the writer is stopped and the socket closed.
    assert!(
        common::server_closes(&tcp, Duration::from_secs(4)),
        "the server kept the connection open"
    );
    drop(tcp);
}

#[test]
fn udp_allocation_relays_echo_with_static_credentials() {
    let server = server(true);
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-udp"),
        "127.0.0.1",
        peer.port,
        &["-u", "alice", "-w", "wonderland"],
    );
    // Default uclient: an RTP and an RTCP allocation per client, ChannelData.
    assert_echo(ok, &out, 2);
    assert!(server.metric("switchboard_turn_allocations_total") >= 2);
    assert!(server.metric("switchboard_turn_relayed_to_peers_total") >= 40);
    assert!(server.metric("switchboard_turn_relayed_to_clients_total") >= 40);
}

#[test]
fn udp_allocation_with_send_indications() {
    let server = server(true);
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-udp"),
        "127.0.0.1",
        peer.port,
        &["-u", "alice", "-w", "wonderland", "-s", "-c"],
    );
    assert_echo(ok, &out, 1);
}

#[test]
fn tcp_allocation_relays_echo_with_static_credentials() {
    let server = server(true);
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-tcp"),
        "127.0.0.1",
        peer.port,
        &["-t", "-u", "alice", "-w", "wonderland"],
    );
    assert_echo(ok, &out, 2);
}

#[test]
fn tls_allocation_relays_echo() {
    let server = server(true);
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-tls"),
        "127.0.0.1",
        peer.port,
        &["-t", "-S", "-c", "-u", "alice", "-w", "wonderland"],
    );
    assert_echo(ok, &out, 1);
}

#[test]
fn udp_and_tcp_allocations_with_rest_credentials() {
    let server = server(true);
    let peer = Peer::start();
    // coturn's client computing the REST username and password from the secret itself.
    let (ok, out) = uclient(
        server.addr("turn-udp"),
        "127.0.0.1",
        peer.port,
        &["-u", "carol", "-W", SECRET, "-c"],
    );
    assert_echo(ok, &out, 1);
    // A credential computed here with a future expiry, over TCP.
    let (username, password) = rest_credential(unix_now() + 600, "dave");
    let (ok, out) = uclient(
        server.addr("turn-tcp"),
        "127.0.0.1",
        peer.port,
        &["-t", "-c", "-u", &username, "-w", &password],
    );
    assert_echo(ok, &out, 1);
}

#[test]
fn wrong_password_and_expired_rest_username_are_refused() {
    let server = server(true);
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-udp"),
        "127.0.0.1",
        peer.port,
        &["-u", "alice", "-w", "not-the-password", "-c"],
    );
    assert!(!ok && out.contains("Cannot complete Allocation"), "{out}");
    let (username, password) = rest_credential(unix_now() - 5, "erin");
    let (ok, out) = uclient(
        server.addr("turn-tcp"),
        "127.0.0.1",
        peer.port,
        &["-t", "-c", "-u", &username, "-w", &password],
    );
    assert!(!ok && out.contains("Cannot complete Allocation"), "{out}");
    assert!(server.metric("switchboard_turn_auth_failures_total") >= 2);
    assert_eq!(server.metric("switchboard_turn_allocations_total"), 0);
}

#[test]
fn loopback_peer_is_refused_by_default() {
    let server = server(false);
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-udp"),
        "127.0.0.1",
        peer.port,
        &["-u", "alice", "-w", "wonderland", "-c"],
    );
    assert!(
        !ok || !out.contains("Total lost packets 0 (0.000000%)"),
        "{out}"
    );
    assert!(server.metric("switchboard_turn_refused_peers_total") >= 1);
    assert_eq!(server.metric("switchboard_turn_relayed_to_peers_total"), 0);
}

/// A minimal long-term-credential TURN client for the checks coturn's
/// client cannot do without sending traffic to the peer: it only asks for a
/// permission, so nothing is ever sent to 10.0.0.1.
struct MiniClient {
    socket: UdpSocket,
    server: SocketAddr,
    key: [u8; 16],
    nonce: String,
    next: u8,
}

impl MiniClient {
    fn exchange(&mut self, request: Vec<u8>) -> Vec<u8> {
        self.socket.send_to(&request, self.server).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = self.socket.recv_from(&mut buf).expect("TURN response");
        buf[..n].to_vec()
    }

    fn signed(&mut self, method: u16, add: impl FnOnce(&mut Builder)) -> Vec<u8> {
        self.next += 1;
        let mut b = Builder::new(method, Class::Request, [self.next; 12], 64);
        add(&mut b);
        b.add(attr::USERNAME, b"alice");
        b.add(attr::REALM, b"switchboard.test");
        b.add(attr::NONCE, self.nonce.as_bytes());
        b.integrity(&self.key);
        b.fingerprint()
    }

    fn allocate(server: SocketAddr) -> MiniClient {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut client = MiniClient {
            socket,
            server,
            key: stun::long_term_key("alice", "switchboard.test", "wonderland"),
            nonce: String::new(),
            next: 0,
        };
        let mut b = Builder::new(method::ALLOCATE, Class::Request, [0; 12], 8);
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        let challenge = client.exchange(b.fingerprint());
        let m = Message::parse(&challenge).unwrap();
        client.nonce = m.text(attr::NONCE).unwrap().to_string();
        let request = client.signed(method::ALLOCATE, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let response = client.exchange(request);
        assert_eq!(Message::parse(&response).unwrap().class, Class::Success);
        client
    }

    /// The error code of CreatePermission for `peer`, or None on success.
    fn permission(&mut self, peer: &str) -> Option<u16> {
        let peer: SocketAddr = peer.parse().unwrap();
        let request = self.signed(method::CREATE_PERMISSION, |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        let response = self.exchange(request);
        let m = Message::parse(&response).unwrap();
        assert_eq!(m.integrity_ok(&self.key), Some(true));
        m.get(attr::ERROR_CODE)
            .map(|v| v[2] as u16 * 100 + v[3] as u16)
    }
}

#[test]
fn private_peer_permission_is_refused_by_default_and_allowed_when_configured() {
    let server = server(false);
    let mut client = MiniClient::allocate(server.addr("turn-udp"));
    assert_eq!(client.permission("10.0.0.1:3480"), Some(403));
    assert_eq!(client.permission("127.0.0.1:3480"), Some(403));
    assert_eq!(client.permission("192.168.1.1:3480"), Some(403));
    drop(server);

    let allow = "  allowed_peers: ['10.0.0.1', '127.0.0.1:3480']\n";
    let server = Server::start_with(&config(allow));
    let mut client = MiniClient::allocate(server.addr("turn-udp"));
    assert_eq!(client.permission("10.0.0.1:3480"), None);
    assert_eq!(client.permission("127.0.0.1:3480"), None);
    assert_eq!(client.permission("10.0.0.2:3480"), Some(403));
}

/// `curl --digest` against `/api/ice-servers`; returns (status line, body).
fn curl(server: &Server, credentials: Option<&str>) -> String {
    let url = format!("https://{}/api/ice-servers", server.addr("wss"));
    let mut args = vec!["-sk", "--max-time", "10", "-i"];
    if let Some(c) = credentials {
        args.extend(["--digest", "-u", c]);
    }
    args.push(&url);
    let out = Command::new("curl").args(&args).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ice_servers_endpoint_needs_sip_digest_and_its_credentials_relay() {
    let server = server(true);
    let unauthenticated = curl(&server, None);
    assert!(
        unauthenticated.starts_with("HTTP/1.1 401"),
        "{unauthenticated}"
    );
    assert!(
        unauthenticated.contains("algorithm=SHA-256"),
        "{unauthenticated}"
    );
    let wrong = curl(&server, Some("1001:wrong"));
    assert!(wrong.contains("HTTP/1.1 401"), "{wrong}");
    assert!(!wrong.contains("\"credential\""), "{wrong}");

    let ok = curl(&server, Some("1001:demo-1001"));
    assert!(ok.contains("HTTP/1.1 200"), "{ok}");
    let body = ok.split("\r\n\r\n").last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).expect(body);
    let servers = json["iceServers"].as_array().expect("iceServers");
    let turn = servers
        .iter()
        .find(|s| s["username"].is_string())
        .expect("a TURN entry");
    let urls: Vec<&str> = turn["urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    let udp = server.addr("turn-udp").port();
    assert!(
        urls.contains(&format!("turn:127.0.0.1:{udp}?transport=udp").as_str()),
        "{urls:?}"
    );
    assert!(
        urls.iter().any(|u| u.starts_with("turns:127.0.0.1:")),
        "{urls:?}"
    );
    let username = turn["username"].as_str().unwrap();
    let password = turn["credential"].as_str().unwrap();
    let expiry: u64 = username.split(':').next().unwrap().parse().unwrap();
    assert!(expiry > unix_now() + 3_000, "{username}");
    assert!(
        username.ends_with(":1001@127.0.0.1") || username.contains(":1001@"),
        "{username}"
    );

    // The minted credential works with coturn's client.
    let peer = Peer::start();
    let (ok, out) = uclient(
        server.addr("turn-udp"),
        "127.0.0.1",
        peer.port,
        &["-c", "-u", username, "-w", password],
    );
    assert_echo(ok, &out, 1);
    assert_eq!(
        server.metric("switchboard_turn_credentials_issued_total"),
        1
    );
}
