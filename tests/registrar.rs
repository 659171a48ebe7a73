//! The registrar against real peers: SIPp registers and unregisters 1,000 users
//! with digest authentication over UDP and TCP; wrong passwords and unknown
//! users get the same answers; failures get throttled. A small digest client
//! checks SHA-256, 423 and the bindings listed in the 200 OK.

mod common;

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Server, scenario, sipp};
use switchboard::auth::digest::{Algorithm, ha1, response};

const DOMAIN: &str = "example.test";

fn users_yaml(count: usize) -> String {
    let mut yaml = format!("domains:\n  - name: {DOMAIN}\n    users:\n");
    for i in 1..=count {
        let _ = writeln!(yaml, "      - {{username: 'u{i:04}', password: 'p{i:04}'}}");
    }
    yaml
}

/// SIPp 3.6 answers the topmost challenge whatever its algorithm and knows only
/// MD5; the default order is SHA-256 first (RFC 8760), so SIPp runs get MD5 first.
fn sipp_users_yaml(count: usize) -> String {
    format!("{}auth:\n  algorithms: [MD5, SHA-256]\n", users_yaml(count))
}

fn users_csv(dir: &std::path::Path, count: usize, expires: u32, name: &str) -> std::path::PathBuf {
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 1..=count {
        let _ = writeln!(
            csv,
            "u{i:04};p{i:04};{DOMAIN};{expires};[authentication username=u{i:04} password=p{i:04}];[authentication username=u{i:04} password=wrong]"
        );
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn thousand_users_register_and_unregister_over_udp_and_tcp() {
    // SIPp is one source sending 1,000 REGISTERs a second (two per user):
    // a load generator, beyond `limits.source_rate` (tests/robustness.rs).
    let server = Server::start(&format!(
        "{}limits:\n  rate_exempt: ['127.0.0.1/32']\n",
        sipp_users_yaml(1000)
    ));
    for (transport, label) in [("u1", "udp"), ("t1", "tcp")] {
        // The same local port twice: unregistering names the same contacts.
        let port = common::free_port().to_string();
        let csv = users_csv(server.dir.path(), 1000, 300, "users.csv");
        let csv = csv.to_str().unwrap();
        let out = sipp(
            &scenario("register.xml"),
            transport,
            server.addr(label),
            &[
                "-inf", csv, "-m", "1000", "-r", "500", "-l", "200", "-p", &port,
            ],
        );
        assert!(
            out.status.success(),
            "SIPp REGISTER x1000 over {label} failed"
        );
        if label == "udp" {
            assert_eq!(
                server.metric("switchboard_registrar_bindings"),
                1000,
                "{label}: bindings after register"
            );
        } else {
            // SIPp has exited, so its TCP connection closed: bindings made over
            // it are gone at once (RFC 5626 flows, no 32-second black hole).
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                server.metric("switchboard_registrar_bindings"),
                0,
                "{label}: bindings after the connection closed"
            );
            assert_eq!(
                server.metric("switchboard_bindings_flow_closed_total"),
                1000
            );
        }
        let csv = users_csv(server.dir.path(), 1000, 0, "unregister.csv");
        let out = sipp(
            &scenario("register.xml"),
            transport,
            server.addr(label),
            &[
                "-inf",
                csv.to_str().unwrap(),
                "-m",
                "1000",
                "-r",
                "500",
                "-l",
                "200",
                "-p",
                &port,
            ],
        );
        assert!(
            out.status.success(),
            "SIPp unREGISTER x1000 over {label} failed"
        );
        assert_eq!(
            server.metric("switchboard_registrar_bindings"),
            0,
            "{label}: bindings after unregister"
        );
    }
    assert_eq!(server.metric("switchboard_registrations_total"), 4000);
    assert_eq!(server.metric("switchboard_auth_failures_total"), 0);
}

#[test]
fn a_non_ascii_contact_gets_400_and_the_udp_readers_live_on() {
    // Two readers, four bad REGISTERs: each once killed the reader that
    // answered it, and then UDP SIP went silent.
    let server = Server::start(&format!(
        "{}limits:\n  udp_readers: 2\n",
        sipp_users_yaml(4)
    ));
    let csv = users_csv(server.dir.path(), 4, 300, "users.csv");
    let csv = csv.to_str().unwrap();
    let out = sipp(
        &scenario("register_bad_contact.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", csv, "-m", "4"],
    );
    assert!(out.status.success(), "non-ASCII Contact: 400 expected");
    assert_eq!(server.metric("switchboard_registrar_bindings"), 0);
    let out = sipp(
        &scenario("register.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", csv, "-m", "4"],
    );
    assert!(out.status.success(), "REGISTER after the bad ones");
    assert_eq!(server.metric("switchboard_registrar_bindings"), 4);
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answers() {
    let server = Server::start(&sipp_users_yaml(3));
    let dir = server.dir.path();
    std::fs::write(dir.join("known.csv"), format!("SEQUENTIAL\nu0001;p0001;{DOMAIN};300;-;[authentication username=u0001 password=wrong]\n")).unwrap();
    std::fs::write(dir.join("unknown.csv"), format!("SEQUENTIAL\nnobody;p0001;{DOMAIN};300;-;[authentication username=nobody password=wrong]\n")).unwrap();
    for csv in ["known.csv", "unknown.csv"] {
        let path = dir.join(csv);
        let out = sipp(
            &scenario("register_wrong_password.xml"),
            "u1",
            server.addr("udp"),
            &["-inf", path.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{csv}: the wrong password must be refused with 401"
        );
    }
    assert_eq!(server.metric("switchboard_auth_failures_total"), 2);
    assert_eq!(server.metric("switchboard_registrar_bindings"), 0);
}

/// A minimal digest client over UDP, for what SIPp cannot do (SHA-256).
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    call_id: String,
    cseq: u32,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        Client {
            socket,
            server,
            call_id: format!("digest-{}", std::process::id()),
            cseq: 0,
        }
    }

    fn register(&mut self, user: &str, extra: &str) -> String {
        self.cseq += 1;
        let local = self.socket.local_addr().unwrap();
        let contact = if extra.contains("Contact:") {
            String::new()
        } else {
            format!("Contact: <sip:{user}@{local}>\r\n")
        };
        let msg = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-d{}-{};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{DOMAIN}>;tag=dc1\r\nTo: <sip:{user}@{DOMAIN}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n\
             {contact}{extra}Content-Length: 0\r\n\r\n",
            self.cseq, self.call_id, self.call_id, self.cseq
        );
        self.socket.send_to(msg.as_bytes(), self.server).unwrap();
        let mut buf = vec![0u8; 8192];
        let (n, _) = self.socket.recv_from(&mut buf).expect("response");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn challenge(response: &str, algorithm: &str) -> (String, String) {
        let line = response
            .lines()
            .find(|l| {
                l.starts_with("WWW-Authenticate:") && l.contains(&format!("algorithm={algorithm}"))
            })
            .unwrap_or_else(|| panic!("no {algorithm} challenge in\n{response}"));
        let get = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_string()
        };
        (get("realm"), get("nonce"))
    }

    fn authorization(
        algorithm: Algorithm,
        user: &str,
        password: &str,
        realm: &str,
        nonce: &str,
        nc: u32,
    ) -> String {
        let uri = format!("sip:{DOMAIN}");
        let ha1 = ha1(algorithm, user, realm, password);
        let nc = format!("{nc:08x}");
        let digest = response(
            algorithm,
            &ha1,
            "REGISTER",
            &uri,
            nonce,
            &nc,
            "abc123",
            Some("auth"),
        );
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{digest}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abc123\"\r\n",
            algorithm.as_str()
        )
    }
}

#[test]
fn sha256_digest_registration_lists_bindings_and_enforces_min_expires() {
    let server = Server::start(&users_yaml(2));
    let mut client = Client::new(server.addr("udp"));
    let first = client.register("u0001", "Expires: 600\r\n");
    assert!(first.starts_with("SIP/2.0 401"), "{first}");
    // Both algorithms are offered, SHA-256 first (preferred), MD5 last (what browsers answer).
    let md5_at = first.find("algorithm=MD5").expect("MD5 challenge");
    let sha_at = first.find("algorithm=SHA-256").expect("SHA-256 challenge");
    assert!(sha_at < md5_at);
    let (realm, nonce) = Client::challenge(&first, "SHA-256");
    assert_eq!(realm, DOMAIN);
    let auth = Client::authorization(Algorithm::Sha256, "u0001", "p0001", &realm, &nonce, 1);
    let ok = client.register("u0001", &format!("{auth}Expires: 600\r\n"));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains(";expires=600"), "{ok}");

    // The same nonce with the same nc is a replay: refused with a new challenge
    // (stale=true: the credentials were right, the client just reused them).
    let replay = client.register("u0001", &format!("{auth}Expires: 600\r\n"));
    assert!(replay.starts_with("SIP/2.0 401"), "{replay}");
    assert!(replay.contains("stale=true"), "{replay}");
    assert_eq!(server.metric("switchboard_auth_failures_total"), 0);

    // A higher nc on the same nonce is fine; too brief an interval gets 423.
    let auth = Client::authorization(Algorithm::Sha256, "u0001", "p0001", &realm, &nonce, 2);
    let brief = client.register("u0001", &format!("{auth}Expires: 10\r\n"));
    assert!(brief.starts_with("SIP/2.0 423"), "{brief}");
    assert!(brief.contains("Min-Expires: 60"), "{brief}");

    // A second contact shows up next to the first, with remaining expiry.
    let auth = Client::authorization(Algorithm::Md5, "u0001", "p0001", &realm, &nonce, 3);
    let local = client.socket.local_addr().unwrap();
    let second = client.register("u0001", &format!("{auth}Contact: <sip:u0001@{local}>, <sip:other@127.0.0.1:5999>;q=0.5\r\nExpires: 120\r\n"));
    assert!(second.starts_with("SIP/2.0 200"), "{second}");
    assert_eq!(second.matches("Contact: ").count(), 2, "{second}");
    assert!(
        second.contains("<sip:other@127.0.0.1:5999>;q=0.5;expires=120"),
        "{second}"
    );

    // Contact: * with Expires: 0 removes everything.
    let auth = Client::authorization(Algorithm::Md5, "u0001", "p0001", &realm, &nonce, 4);
    let cleared = client.register("u0001", &format!("{auth}Contact: *\r\nExpires: 0\r\n"));
    assert!(cleared.starts_with("SIP/2.0 200"), "{cleared}");
    assert!(!cleared.contains("Contact:"), "{cleared}");
    assert_eq!(server.metric("switchboard_registrar_bindings"), 0);

    // Registering someone else's address of record is refused.
    let auth = Client::authorization(Algorithm::Md5, "u0001", "p0001", &realm, &nonce, 5);
    let other = client.register("u0002", &auth);
    assert!(other.starts_with("SIP/2.0 401"), "{other}");
}

#[test]
fn repeated_failures_ban_the_source() {
    let server = Server::start(&format!(
        "{}auth:\n  throttle: {{window_secs: 60, max_failures: 3, ban_secs: 60}}\n",
        users_yaml(1)
    ));
    let mut client = Client::new(server.addr("udp"));
    for attempt in 1..=3 {
        let challenge = client.register("u0001", "");
        assert!(
            challenge.starts_with("SIP/2.0 401"),
            "attempt {attempt}: {challenge}"
        );
        let (realm, nonce) = Client::challenge(&challenge, "MD5");
        let auth = Client::authorization(Algorithm::Md5, "u0001", "wrong", &realm, &nonce, 1);
        let refused = client.register("u0001", &auth);
        assert!(
            refused.starts_with("SIP/2.0 401"),
            "attempt {attempt}: {refused}"
        );
    }
    let banned = client.register("u0001", "");
    assert!(banned.starts_with("SIP/2.0 403"), "{banned}");
    assert_eq!(
        server.metric("switchboard_auth_bans_total"),
        2,
        "source and username banned"
    );
    assert!(server.wait_log("source address banned"));
}

/// A REGISTER over its own TCP connection (one flow), answering the challenge.
fn register_over_tcp(
    server: &Server,
    contact: &str,
    extra: &str,
    cseq: u32,
) -> (std::net::TcpStream, String) {
    use std::io::Write as _;
    let mut tcp = std::net::TcpStream::connect(server.addr("tcp")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = tcp.local_addr().unwrap();
    let message = |auth: &str, cseq: u32| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-ob{cseq}-{}\r\nMax-Forwards: 70\r\n\
             From: <sip:u0001@{DOMAIN}>;tag=ob\r\nTo: <sip:u0001@{DOMAIN}>\r\nCall-ID: outbound-call\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: {contact}\r\nSupported: path, outbound\r\nExpires: 300\r\n{extra}{auth}Content-Length: 0\r\n\r\n",
            local.port()
        )
    };
    tcp.write_all(message("", cseq).as_bytes()).unwrap();
    let challenge = common::read_sip(&mut tcp).unwrap();
    let (realm, nonce) = Client::challenge(&challenge, "MD5");
    let auth = Client::authorization(Algorithm::Md5, "u0001", "p0001", &realm, &nonce, 1);
    tcp.write_all(message(&auth, cseq + 1).as_bytes()).unwrap();
    let answer = common::read_sip(&mut tcp).unwrap();
    (tcp, answer)
}

#[test]
fn outbound_reregistration_on_a_new_flow_replaces_the_old_one_and_path_is_echoed() {
    let server = Server::start(&users_yaml(1));
    let instance = "<sip:u0001@flow.invalid;transport=tcp>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"";
    let (first, answer) =
        register_over_tcp(&server, instance, "Path: <sip:edge.example.test;lr>\r\n", 1);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(answer.contains("Require: outbound"), "{answer}");
    assert!(answer.contains("Flow-Timer: "), "{answer}");
    assert!(
        answer.contains("Path: <sip:edge.example.test;lr>"),
        "{answer}"
    );
    // The browser reconnects: same instance and reg-id over a new connection.
    let (_second, answer) = register_over_tcp(&server, instance, "", 3);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert_eq!(
        answer.matches("Contact: ").count(),
        1,
        "the old flow is replaced, not added:\n{answer}"
    );
    assert_eq!(server.metric("switchboard_registrar_bindings"), 1);
    // Closing the old connection does not remove the new flow's binding.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.metric("switchboard_registrar_bindings"), 1);
}
