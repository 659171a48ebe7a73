//! Shared harness for integration tests: starts the real `switchboard` binary on
//! ephemeral loopback ports, runs real peers (SIPp) against it, and reads its
//! metrics. Every process started here is killed when its handle drops.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// Repository root (for scenario files).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A SIPp scenario file under `interop-tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    repo().join("interop-tests").join("sipp").join(name)
}

/// A running switchboard process.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    /// Bound addresses per label (udp, tcp, tls, wss, ws, admin).
    pub addrs: HashMap<String, Vec<SocketAddr>>,
    /// Every log line printed so far (JSON).
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Default listener block: every transport on 127.0.0.1 with an ephemeral port.
pub const ALL_LOOPBACK: &str = "listen:\n  udp: ['127.0.0.1:0']\n  tcp: ['127.0.0.1:0']\n  tls: ['127.0.0.1:0']\n  https: ['127.0.0.1:0']\n  http: ['127.0.0.1:0']\n  admin: ['127.0.0.1:0']\n";

impl Server {
    /// Starts the binary with `ALL_LOOPBACK` plus `extra` YAML, in a fresh
    /// working directory, and waits until it has logged "ready".
    pub fn start(extra: &str) -> Server {
        Self::start_with(&format!("{ALL_LOOPBACK}{extra}"))
    }

    /// Starts the binary with exactly this configuration.
    pub fn start_with(config: &str) -> Server {
        Self::start_with_files(config, &[])
    }

    /// Starts the binary with this configuration and extra files (relative
    /// path, content) in its working directory, e.g. a dialplan.
    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        // TURN is on by default on fixed ports (3478, 5349): tests that do not
        // configure it run without it, so parallel servers do not collide.
        let config = &if config.contains("\nturn:") || config.starts_with("turn:") {
            config.to_string()
        } else {
            format!("{config}\nturn:\n  enabled: false\n")
        };
        std::fs::write(dir.path().join("switchboard.yaml"), config).expect("write config");
        for (name, content) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, content).expect("write file");
        }
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--log-format",
                "json",
                "--log-level",
                "info,switchboard=debug",
            ])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"ready\"") {
                        let _ = tx.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!(
                "switchboard did not become ready; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        let mut server = Server {
            child,
            dir,
            addrs: HashMap::new(),
            log,
        };
        // Listener lines may be logged just after "ready" by their tasks.
        let deadline = Instant::now() + Duration::from_secs(5);
        let expected = config.matches("127.0.0.1:0").count() + config.matches("[::1]:0").count();
        loop {
            server.addrs = server.listeners();
            let found: usize = server.addrs.values().map(Vec::len).sum();
            if found >= expected || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn listeners(&self) -> HashMap<String, Vec<SocketAddr>> {
        let mut out: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        for line in self.log.lock().unwrap().iter() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if value["message"] == "listening" {
                let transport = value["transport"].as_str().unwrap_or_default().to_string();
                if let Some(addr) = value["addr"].as_str().and_then(|a| a.parse().ok()) {
                    out.entry(transport).or_default().push(addr);
                }
            }
        }
        out
    }

    /// The first address of a listener label.
    pub fn addr(&self, label: &str) -> SocketAddr {
        self.addrs
            .get(label)
            .and_then(|v| v.first().copied())
            .unwrap_or_else(|| panic!("no {label} listener in {:?}", self.addrs))
    }

    /// The dev certificate the server generated (or was given).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("certs").join("switchboard.crt")
    }

    /// Waits up to 3 s for a log line containing `needle` (the log is read by
    /// another thread, so a line may trail the event that caused it).
    pub fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The log so far, one JSON object per line.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Fetches `/metrics` from the admin listener.
    pub fn metrics(&self) -> String {
        http_get(self.addr("admin"), "/metrics")
    }

    /// The value of one metric line (exact name including labels).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or_else(|| panic!("metric {name} not found in\n{text}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response)
}

/// A plain HTTP/1.0 request with an optional JSON body; returns the status
/// code and the body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let body = json.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A port free on 127.0.0.1 for both UDP and TCP at the time of asking.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Runs SIPp once (`-m 1`) with `scenario` against `target` over `transport`
/// (`u1`, `t1` or `l1`), bounded in time, and returns its output.
pub fn sipp(scenario: &Path, transport: &str, target: SocketAddr, extra: &[&str]) -> Output {
    let work = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let target = target.to_string();
    let scenario = scenario.to_str().expect("path");
    let mut args = vec![
        target.as_str(),
        "-sf",
        scenario,
        "-t",
        transport,
        "-i",
        "127.0.0.1",
    ];
    if !extra.contains(&"-p") {
        args.extend(["-p", port.as_str()]);
    }
    if !extra.contains(&"-m") {
        args.extend(["-m", "1"]);
    }
    args.extend([
        "-timeout",
        "30s",
        "-timeout_error",
        "-trace_err",
        "-nostdin",
    ]);
    if !extra.contains(&"-inf") {
        args.push("-trace_msg");
    }
    // Debian's SIPp drops a UDP message identical to the last one received
    // unless -nr is given, which would hide server retransmissions. A load run
    // (`-r`, a call rate) keeps SIPp's retransmissions instead, as any UDP
    // user agent does: on a busy machine a datagram can be lost in a socket
    // buffer, and one lost message out of thousands must not fail the test.
    // SIPp's own buffers are 64 KB by default; a load run asks for more.
    let load = extra.contains(&"-r");
    if transport == "u1" && !load {
        args.push("-nr");
    }
    if load {
        args.extend(["-buff_size", "1048576"]);
    }
    args.extend_from_slice(extra);
    let output = Command::new("sipp")
        .args(&args)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sipp (apt-get install sip-tester)");
    if !output.status.success() {
        let mut details = String::new();
        for entry in std::fs::read_dir(work.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") {
                details.push_str(&format!(
                    "--- {name}\n{}\n",
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                ));
            }
        }
        eprintln!(
            "sipp {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}\n{details}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// A raw SIP request with the given method, Call-ID and branch over `transport`
/// (the text of `Via`'s transport), from `local`.
pub fn request(
    method: &str,
    transport: &str,
    local: SocketAddr,
    call_id: &str,
    branch: &str,
) -> String {
    format!(
        "{method} sip:switchboard@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@127.0.0.1>;tag=t{branch}\r\n\
         To: <sip:switchboard@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends one UDP datagram and waits for one reply.
pub fn udp_exchange(target: SocketAddr, payload: &[u8]) -> Option<String> {
    let socket = UdpSocket::bind(if target.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    })
    .ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    socket.send_to(payload, target).ok()?;
    let mut buf = vec![0u8; 65_536];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Reads one SIP message (headers + Content-Length body) from a stream.
pub fn read_sip<R: Read>(stream: &mut R) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        // Skip keepalive pongs between messages.
        if buf == b"\r\n" {
            buf.clear();
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// An INVITE from `caller` (password `password`) to `callee@domain` over UDP,
/// answering the 407 challenge with MD5 digest credentials; returns the
/// final status line.
pub fn authenticated_invite(
    server: SocketAddr,
    domain: &str,
    caller: &str,
    password: &str,
    callee: &str,
) -> String {
    authenticated_invite_with_sdp(server, domain, caller, password, callee, "")
}

/// [`authenticated_invite`] carrying `sdp` (none when empty); a non-2xx
/// final response is ACKed (same transaction: top Via, To with its tag).
pub fn authenticated_invite_with_sdp(
    server: SocketAddr,
    domain: &str,
    caller: &str,
    password: &str,
    callee: &str,
    sdp: &str,
) -> String {
    use switchboard::auth::digest::{Algorithm, ha1, response};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let call_id = format!("invite-{callee}-{}", local.port());
    let body_headers = if sdp.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    let send = |cseq: u32, auth: &str| {
        let msg = format!(
            "INVITE sip:{callee}@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-i{cseq}-{};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{caller}@{domain}>;tag=a1\r\nTo: <sip:{callee}@{domain}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n\
             Contact: <sip:{caller}@{local}>\r\n{auth}{body_headers}Content-Length: {}\r\n\r\n{sdp}",
            local.port(),
            sdp.len()
        );
        socket.send_to(msg.as_bytes(), server).unwrap();
    };
    // The final response to the INVITE with this CSeq: a retransmitted
    // 407 of the first INVITE (Timer G, when the second one is slow to
    // answer) is not the second one's answer.
    let final_response = |cseq: u32| loop {
        let mut buf = vec![0u8; 8192];
        let (n, _) = socket.recv_from(&mut buf).expect("response");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let ours = text
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("CSeq: {cseq} INVITE")));
        if ours && !text.starts_with("SIP/2.0 1") {
            return text;
        }
    };
    // ACKs a non-2xx final response to INVITE `cseq` (same branch), so
    // that it is not resent.
    let ack = |cseq: u32, response: &str| {
        let to = response
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("to:"))
            .unwrap_or_default();
        let ack = format!(
            "ACK sip:{callee}@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-i{cseq}-{};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{caller}@{domain}>;tag=a1\r\n{to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            local.port()
        );
        socket.send_to(ack.as_bytes(), server).unwrap();
    };
    send(1, "");
    let challenge = final_response(1);
    ack(1, &challenge);
    assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let uri = format!("sip:{callee}@{domain}");
    let digest = response(
        Algorithm::Md5,
        &ha1(Algorithm::Md5, caller, domain, password),
        "INVITE",
        &uri,
        &nonce,
        "00000001",
        "c1",
        Some("auth"),
    );
    let auth = format!(
        "Proxy-Authorization: Digest username=\"{caller}\", realm=\"{domain}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{digest}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c1\"\r\n"
    );
    send(2, &auth);
    let text = final_response(2);
    if !text.starts_with("SIP/2.0 2") {
        ack(2, &text);
    }
    text.lines().next().unwrap_or_default().to_string()
}

pub mod media;
pub mod ws;

/// The CDR lines written so far (polls briefly: the writer is a task).
pub fn cdrs(server: &Server, at_least: usize) -> Vec<serde_json::Value> {
    let path = server.dir.path().join("cdr.jsonl");
    for _ in 0..50 {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= at_least {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("fewer than {at_least} CDRs in {}", path.display());
}

/// A CDR's `transfers`, as (kind, by) pairs in order, each with a time and
/// the label of the leg that took the transferor's place.
pub fn assert_transfers(record: &serde_json::Value, want: &[(&str, &str)]) {
    let got: Vec<(&str, &str)> = record["transfers"]
        .as_array()
        .map(|a| {
            a.iter()
                .inspect(|t| {
                    assert!(t["at"].as_f64().is_some_and(|at| at > 0.0), "{record}");
                    assert!(
                        t["to"].as_str().is_some_and(|to| !to.is_empty()),
                        "{record}"
                    );
                })
                .map(|t| {
                    (
                        t["kind"].as_str().unwrap_or(""),
                        t["by"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(got, want, "transfers in {record}");
}

/// A TCP connection to `server` that will read nothing, with a 4 KB
/// receive buffer, so that the server's writes to it stall soon.
pub fn connect_not_reading(server: SocketAddr) -> std::net::TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&server.into()).expect("connect");
    socket.into()
}

/// Whether the server's end of `client` leaves ESTABLISHED (closed or
/// closing) within `within`, as `/proc/net/tcp` shows it: unlike reading,
/// this does not let the server's stalled writes through.
pub fn server_closes(client: &std::net::TcpStream, within: Duration) -> bool {
    let (Ok(local), Ok(peer)) = (client.local_addr(), client.peer_addr()) else {
        return true;
    };
    let start = Instant::now();
    while start.elapsed() < within {
        std::thread::sleep(Duration::from_millis(100));
        if tcp_state(peer.port(), local.port()) != Some(1) {
            return true;
        }
    }
    false
}

/// Bytes the server's end of `client` holds unsent (it waits for the
/// client's window), from `/proc/net/tcp`.
pub fn server_unsent(client: &std::net::TcpStream) -> Option<u64> {
    let (local, peer) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    let (_, tx_queue) = tcp_entry(peer.port(), local.port())?;
    Some(tx_queue)
}

/// The state (`/proc/net/tcp` `st`: 1 = ESTABLISHED) of the IPv4 TCP socket
/// with this local and remote port, if there is one.
fn tcp_state(local_port: u16, remote_port: u16) -> Option<u8> {
    tcp_entry(local_port, remote_port).map(|(state, _)| state)
}

/// The state and send queue (bytes) of the IPv4 TCP socket with this local
/// and remote port, from `/proc/net/tcp`.
fn tcp_entry(local_port: u16, remote_port: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |f: &str| u16::from_str_radix(f.rsplit(':').next()?, 16).ok();
        if port(fields.get(1)?)? != local_port || port(fields.get(2)?)? != remote_port {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let tx_queue = u64::from_str_radix(fields.get(4)?.split(':').next()?, 16).ok()?;
        Some((state, tx_queue))
    })
}
