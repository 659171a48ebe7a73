//! Calls and messages between local users through the stateful proxy, with
//! SIPp as caller and callee(s): 407 then the call, Record-Route with flow
//! tokens so ACK and BYE come back through us, parallel forking where the
//! first 2xx wins and the other branch is CANCELed, CANCEL from the caller,
//! MESSAGE, and 404 / 480 for unknown and unreachable users.

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard::auth::digest::{Algorithm, ha1, response};

use common::{Server, free_port, read_sip, scenario, sipp};

const DOMAIN: &str = "example.test";
/// SIPp 3.6 answers the topmost challenge and knows only MD5: offer MD5 first here.
const PLAN: &str = "rules:\n  - name: users\n    match:\n      to: { regex: '^(u[0-9]{4})$' }\n    action:\n      user: { users: ['$1'], ring_timeout: 30 }\n";

fn start() -> Server {
    Server::start_with_files(
        &format!(
            "{}{USERS}dialplan:\n  file: plan.yaml\n",
            common::ALL_LOOPBACK
        ),
        &[("plan.yaml", PLAN)],
    )
}

const USERS: &str = "domains:\n  - name: example.test\n    users:\n      - {username: u0001, password: p0001}\n      - {username: u0002, password: p0002}\n      - {username: u0003, password: p0003}\nauth:\n  algorithms: [MD5, SHA-256]\n";

fn csv(dir: &Path, name: &str, line: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("SEQUENTIAL\n{line}\n")).unwrap();
    path
}

/// Registers `user` over UDP from local port `port` (SIPp, digest).
fn register(server: &Server, user: &str, port: u16) {
    let password = user.replace('u', "p");
    let file = csv(
        server.dir.path(),
        &format!("reg-{user}-{port}.csv"),
        &format!(
            "{user};{password};{DOMAIN};300;[authentication username={user} password={password}];-"
        ),
    );
    let port = port.to_string();
    let out = sipp(
        &scenario("register.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", file.to_str().unwrap(), "-p", &port],
    );
    assert!(out.status.success(), "registering {user} failed");
}

/// Starts a SIPp server scenario in the background on `port`.
fn spawn_uas(server: &Server, name: &str, port: u16) -> (Child, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let child = Command::new("sipp")
        .arg(server.addr("udp").to_string())
        .args([
            "-sf",
            scenario(name).to_str().unwrap(),
            "-t",
            "u1",
            "-nr",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args([
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
            "-trace_err",
            "-nostdin",
        ])
        .current_dir(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    // Give it time to bind its socket.
    std::thread::sleep(Duration::from_millis(300));
    (child, work)
}

fn wait(mut child: Child, work: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if !status.success() {
                let mut details = String::new();
                for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
                    details.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
                panic!("{what} failed ({status}):\n{details}");
            }
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn caller_csv(server: &Server, callee: &str) -> PathBuf {
    csv(
        server.dir.path(),
        &format!("caller-{callee}.csv"),
        &format!("u0001;p0001;{DOMAIN};{callee};[authentication username=u0001 password=p0001]"),
    )
}

#[test]
fn call_between_local_users_with_record_route_ack_and_bye() {
    let server = start();
    let callee_port = free_port();
    register(&server, "u0002", callee_port);
    let (uas, uas_dir) = spawn_uas(&server, "uas_answer.xml", callee_port);
    let file = caller_csv(&server, "u0002");
    let out = sipp(
        &scenario("uac_call.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "caller failed");
    wait(uas, uas_dir.path(), "callee");
}

#[test]
fn parallel_fork_first_answer_wins_and_the_other_branch_is_cancelled() {
    let server = start();
    let (answering, ringing) = (free_port(), free_port());
    register(&server, "u0002", answering);
    register(&server, "u0002", ringing);
    let (uas_a, dir_a) = spawn_uas(&server, "uas_answer.xml", answering);
    let (uas_b, dir_b) = spawn_uas(&server, "uas_ring_cancelled.xml", ringing);
    let file = caller_csv(&server, "u0002");
    let out = sipp(
        &scenario("uac_call.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "caller failed");
    wait(uas_a, dir_a.path(), "answering branch");
    wait(uas_b, dir_b.path(), "ringing branch (must be CANCELed)");
}

#[test]
fn cancel_from_the_caller_reaches_the_ringing_callee() {
    let server = start();
    let port = free_port();
    register(&server, "u0002", port);
    let (uas, dir) = spawn_uas(&server, "uas_ring_cancelled.xml", port);
    let file = caller_csv(&server, "u0002");
    let out = sipp(
        &scenario("uac_cancel.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "caller failed");
    wait(uas, dir.path(), "callee");
}

#[test]
fn message_between_local_users() {
    let server = start();
    let port = free_port();
    register(&server, "u0002", port);
    let (uas, dir) = spawn_uas(&server, "uas_message.xml", port);
    let file = caller_csv(&server, "u0002");
    let out = sipp(
        &scenario("uac_message.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "MESSAGE failed");
    wait(uas, dir.path(), "receiver");
}

fn invite(server: SocketAddr, callee: &str) -> String {
    common::authenticated_invite(server, DOMAIN, "u0001", "p0001", callee)
}

#[test]
fn unknown_user_gets_404_and_unreachable_user_480() {
    let server = start();
    assert!(invite(server.addr("udp"), "nobody").starts_with("SIP/2.0 404"));
    assert!(invite(server.addr("udp"), "u0003").starts_with("SIP/2.0 480"));
}

#[test]
fn a_closed_connection_takes_its_bindings_with_it() {
    let server = start();
    // Register u0003 over TCP with a raw client, then close the connection.
    let mut tcp = TcpStream::connect(server.addr("tcp")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = tcp.local_addr().unwrap();
    let register = |auth: &str, cseq: u32| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-tr{cseq}\r\nMax-Forwards: 70\r\n\
             From: <sip:u0003@{DOMAIN}>;tag=r1\r\nTo: <sip:u0003@{DOMAIN}>\r\nCall-ID: tcp-reg\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:u0003@{local};transport=tcp>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    tcp.write_all(register("", 1).as_bytes()).unwrap();
    let challenge = read_sip(&mut tcp).unwrap();
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let uri = format!("sip:{DOMAIN}");
    let digest = response(
        Algorithm::Md5,
        &ha1(Algorithm::Md5, "u0003", DOMAIN, "p0003"),
        "REGISTER",
        &uri,
        &nonce,
        "00000001",
        "c1",
        Some("auth"),
    );
    let auth = format!(
        "Authorization: Digest username=\"u0003\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{digest}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c1\"\r\n"
    );
    tcp.write_all(register(&auth, 2).as_bytes()).unwrap();
    assert!(read_sip(&mut tcp).unwrap().starts_with("SIP/2.0 200"));
    assert_eq!(server.metric("switchboard_registrar_bindings"), 1);
    drop(tcp);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.metric("switchboard_registrar_bindings"), 0);
    let started = Instant::now();
    assert!(invite(server.addr("udp"), "u0003").starts_with("SIP/2.0 480"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "480 at once, not after a timeout"
    );
}

const CHAIN: &str = "rules:\n  - name: chain\n    match:\n      to: u0002\n    action:\n      user: { users: ['u0002'], ring_timeout: 2 }\n      on_no_answer:\n        user: { users: ['u0003'], ring_timeout: 10 }\n        on_no_answer: { reject: { code: 480, reason: Nobody home } }\n  - name: nobody\n    match:\n      to: u0009\n    action:\n      user: { users: ['u0001'], ring_timeout: 5 }\n      on_no_answer: { reject: { code: 480, reason: Nobody home } }\n";

#[test]
fn dialplan_chain_rings_the_next_user_after_the_ring_timeout() {
    let server = Server::start_with_files(
        &format!(
            "{}{USERS}dialplan:\n  file: plan.yaml\n",
            common::ALL_LOOPBACK
        ),
        &[("plan.yaml", CHAIN)],
    );
    let (first, second) = (free_port(), free_port());
    register(&server, "u0002", first);
    register(&server, "u0003", second);
    // u0002 only rings: after 2 s the dialplan cancels it and rings u0003, who answers.
    let (ringing, ringing_dir) = spawn_uas(&server, "uas_ring_cancelled.xml", first);
    let (answering, answering_dir) = spawn_uas(&server, "uas_answer.xml", second);
    let file = caller_csv(&server, "u0002");
    let started = Instant::now();
    let out = sipp(
        &scenario("uac_call.xml"),
        "u1",
        server.addr("udp"),
        &["-inf", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "caller failed");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the first user rang for its ring timeout"
    );
    wait(
        ringing,
        ringing_dir.path(),
        "first user (cancelled after 2 s)",
    );
    wait(answering, answering_dir.path(), "second user (answers)");
    // u0009 routes to u0001, who has no binding: 480 counts as no answer, the chain rejects.
    assert_eq!(
        invite(server.addr("udp"), "u0009"),
        "SIP/2.0 480 Nobody home"
    );
}
