//! The softphone (web/, embedded in the binary) against the real binary.
//!
//! - Static serving, no browser: content types, caching of hashed assets, ETag/304, gzip,
//!   the Content-Security-Policy, and refusal of `..` in plain and encoded forms; `--web-root`.
//! - In Debian's Chromium through playwright-core (interop-tests/browser/softphone.mjs), the
//!   page driven only through its UI: log in and call `600`; two users call each other,
//!   answer, mute, hold/resume, DTMF and hang up; a wrong password shows the error; after a
//!   server restart the page re-registers by itself.
//!
//! Screenshots of each browser run are written to `$CARGO_TARGET_TMPDIR/softphone/<scenario>/`
//! (e.g. `target/tmp/softphone/call/softphone-call.png`), never into the repository.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, repo};

/// One browser scenario at a time: Chromium with audio loads both cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(https: &str) -> String {
    format!(
        "listen:\n  udp: []\n  tcp: []\n  tls: []\n  https: ['{https}']\n  http: ['127.0.0.1:0']\n  admin: ['127.0.0.1:0']\n"
    )
}

fn artifacts(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("softphone")
        .join(scenario)
}

fn tail(server: &Server) -> String {
    let log = server.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn node_command(server: &Server, scenario: &str) -> Command {
    let browser = repo().join("interop-tests").join("browser");
    let dir = artifacts(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = Command::new("node");
    cmd.arg(browser.join("softphone.mjs"))
        .args(["--url", &format!("https://{}/", server.addr("wss"))])
        .args(["--scenario", scenario, "--timeout", "100"])
        .arg("--artifacts")
        .arg(&dir)
        .current_dir(&browser);
    cmd
}

/// Runs one scenario to the end and asserts it passed.
fn run(server: &Server, scenario: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let output = node_command(server, scenario)
        .output()
        .expect("run node (apt-get install nodejs npm; see interop-tests/run.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("PASS {scenario}")),
        "softphone scenario {scenario} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log (tail)\n{}",
        tail(server)
    );
    println!("{stdout}\nscreenshots: {}", artifacts(scenario).display());
}

/// The page's pure parts under node's test runner: MD5 and HTTP Digest (RFC 7616 vectors),
/// WWW-Authenticate parsing, ICE server answer shapes, dial strings, backoff, wording.
#[test]
fn web_unit_tests_pass() {
    let output = Command::new("node")
        .args(["--test", "test/unit.test.mjs"])
        .current_dir(repo().join("web"))
        .output()
        .expect("run node (apt-get install nodejs npm)");
    assert!(
        output.status.success(),
        "node --test web/test failed\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]

fn softphone_logs_in_and_the_echo_test_600_returns_audio() {
    let server = Server::start_with(&config("127.0.0.1:0"));
    run(&server, "echo");
}

#[test]
fn softphone_two_users_call_answer_mute_hold_dtmf_and_hang_up() {
    let server = Server::start_with(&config("127.0.0.1:0"));
    run(&server, "call");
}

#[test]
fn softphone_shows_a_wrong_password() {
    let server = Server::start_with(&config("127.0.0.1:0"));
    run(&server, "wrong-password");
}

#[test]
fn softphone_reregisters_by_itself_after_a_server_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A fixed port, so that the restarted server is at the page's origin again.
    let https = format!("127.0.0.1:{}", free_port());
    let mut server = Some(Server::start_with(&config(&https)));
    let mut child = node_command(server.as_ref().expect("server"), "restart")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.trim() == "RESTART-SERVER" {
            drop(server.take()); // kills the process
            std::thread::sleep(Duration::from_millis(1500));
            server = Some(Server::start_with(&config(&https)));
            let _ = writeln!(stdin, "RESTARTED");
        }
    }
    let status = child.wait().expect("wait node");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        status.success() && seen.contains("PASS restart"),
        "softphone scenario restart failed\n--- stdout\n{seen}\n--- stderr\n{stderr}\n--- server log (tail)\n{}",
        server.as_ref().map(tail).unwrap_or_default()
    );
    println!("{seen}\nscreenshots: {}", artifacts("restart").display());
}

// ---------------------------------------------------------------------------------------------
// Static serving (no browser)
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/1.1 request (the path is sent exactly as given: no client normalises `..`).
/// Returns (status, headers lower-cased, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[test]
fn static_files_have_types_caching_csp_and_refuse_traversal() {
    let server = Server::start_with(&config("127.0.0.1:0"));
    let addr = server.addr("ws");

    let (status, h, body) = http(addr, "GET", "/", "");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    let csp = header(&h, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    let etag = header(&h, "etag").to_string();
    assert!(etag.starts_with('"'), "{etag}");
    let html = String::from_utf8(body).expect("utf-8");
    assert!(html.contains("Switchboard"), "{html}");
    // No third-party origin anywhere in the page.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );

    // Hashed assets: cached for a year, gzip on request.
    let js = html
        .split('"')
        .find(|s| s.starts_with("/assets/app-") && s.ends_with(".js"))
        .expect("hashed script in index.html")
        .to_string();
    let css = html
        .split('"')
        .find(|s| s.starts_with("/assets/style-") && s.ends_with(".css"))
        .expect("hashed stylesheet in index.html")
        .to_string();
    let (status, h, plain_js) = http(addr, "GET", &js, "");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        header(&h, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(String::from_utf8_lossy(&plain_js).contains("sip.js") || plain_js.len() > 100_000);
    let (status, h, gz) = http(addr, "GET", &js, "Accept-Encoding: gzip, br\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-encoding"), "gzip");
    assert!(
        gz.len() < plain_js.len() / 2,
        "{} vs {}",
        gz.len(),
        plain_js.len()
    );
    let (status, h, _) = http(addr, "GET", &css, "");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/css; charset=utf-8");
    let (status, h, _) = http(addr, "GET", "/favicon.svg", "");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "image/svg+xml");

    // Revalidation, HEAD, methods, unknown files.
    let (status, _, body) = http(addr, "GET", "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, h, body) = http(addr, "HEAD", "/index.html", "");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert!(body.is_empty());
    assert_eq!(
        http(addr, "POST", "/index.html", "Content-Length: 0\r\n").0,
        405
    );
    assert_eq!(http(addr, "GET", "/nope.js", "").0, 404);
    assert_eq!(http(addr, "GET", "/healthz", "").0, 200);

    // Traversal, in every spelling, never reaches the file system or the table.
    for bad in [
        "/../Cargo.toml",
        "/assets/../../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/assets/..%2f..%2fCargo.toml",
        "/assets%2f..%2findex.html",
        "/..%5c..%5cCargo.toml",
        "/.%2e/Cargo.toml",
        "/assets//app.js",
        "/%00",
    ] {
        let (status, _, body) = http(addr, "GET", bad, "");
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }
}

/// `--web-root DIR` serves that directory (front-end development), still refusing `..` and
/// symlinks that lead out of it.
#[test]
fn web_root_serves_a_directory_instead_of_the_embedded_page() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.path().join("index.html"), "<p>from --web-root</p>").expect("write");
    std::fs::create_dir(root.path().join("assets")).expect("mkdir");
    std::fs::write(
        root.path().join("assets").join("app-TEST.js"),
        "console.log(1)",
    )
    .expect("write");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "secret").expect("write");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        root.path().join("leak.txt"),
    )
    .expect("symlink");

    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        work.path().join("switchboard.yaml"),
        "listen:\n  udp: []\n  tcp: []\n  tls: []\n  https: []\n  http: ['127.0.0.1:0']\n  admin: []\nturn:\n  enabled: false\n",
    )
    .expect("config");
    let mut child = Command::new(common::binary())
        .args(["serve", "--log-format", "json", "--web-root"])
        .arg(root.path())
        .current_dir(work.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("\"listening\"")
                && let Some(addr) = line
                    .split("\"addr\":\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .and_then(|s| s.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the server logs its listener");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);

    let (status, h, body) = http(addr, "GET", "/", "");
    assert_eq!(status, 200);
    assert_eq!(body, b"<p>from --web-root</p>");
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert!(!header(&h, "content-security-policy").is_empty());
    let (status, h, _) = http(addr, "GET", "/assets/app-TEST.js", "");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(http(addr, "GET", "/leak.txt", "").0, 404);
    assert_eq!(http(addr, "GET", "/../switchboard.yaml", "").0, 400);
    assert_eq!(http(addr, "GET", "/%2e%2e/switchboard.yaml", "").0, 400);
    assert_eq!(http(addr, "GET", "/missing.html", "").0, 404);
}

#[test]
fn web_root_without_index_html_is_refused_at_start() {
    let empty = tempfile::tempdir().expect("tempdir");
    let output = Command::new(common::binary())
        .args(["serve", "--web-root"])
        .arg(empty.path())
        .current_dir(empty.path())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--web-root") && stderr.contains("index.html"),
        "{stderr}"
    );
}
