//! Live dialplan reload on a running binary: a valid edit changes routing
//! within a second (file watcher), an invalid edit is refused with
//! file:line:column and routing stays as it was, the admin endpoint and SIGHUP
//! reload too, and a call in progress is unaffected.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ALL_LOOPBACK, Server, free_port, scenario, sipp};

const DOMAIN: &str = "example.test";
const USERS: &str = "domains:\n  - name: example.test\n    users:\n      - {username: u0001, password: p0001}\n      - {username: u0002, password: p0002}\nauth:\n  algorithms: [MD5, SHA-256]\n";
const ROUTE_USERS: &str = "rules:\n  - name: users\n    match:\n      to: { regex: '^(u[0-9]{4})$' }\n    action:\n      user: { users: ['$1'], ring_timeout: 30 }\n";
const REJECT_ALL: &str = "rules:\n  - name: closed\n    action:\n      reject: { code: 403, reason: Closed for maintenance }\n";
const BROKEN: &str = "rules:\n  - name: broken\n    match:\n      to: { regex: '^(unclosed' }\n    action:\n      reject: { code: 403 }\n";

fn start() -> Server {
    Server::start_with_files(
        &format!("{ALL_LOOPBACK}{USERS}dialplan:\n  file: dialplans/main.yaml\n"),
        &[("dialplans/main.yaml", ROUTE_USERS)],
    )
}

fn plan_path(server: &Server) -> std::path::PathBuf {
    server.dir.path().join("dialplans").join("main.yaml")
}

fn invite(server: SocketAddr, callee: &str) -> String {
    common::authenticated_invite(server, DOMAIN, "u0001", "p0001", callee)
}

fn wait_for(server: &Server, metric: &str, at_least: u64, within: Duration) -> Duration {
    let start = Instant::now();
    while server.metric(metric) < at_least {
        assert!(
            start.elapsed() < within,
            "{metric} did not reach {at_least} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    start.elapsed()
}

fn admin_post(server: &Server, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr("admin")).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn valid_edit_changes_routing_within_a_second_and_invalid_edit_is_refused() {
    let server = start();
    let udp = server.addr("udp");
    assert!(
        invite(udp, "u0002").starts_with("SIP/2.0 480"),
        "routed to the user (no binding yet)"
    );
    assert_eq!(server.metric("switchboard_dialplan_version"), 1);

    // A valid edit: picked up by the file watcher within a second.
    std::fs::write(plan_path(&server), REJECT_ALL).unwrap();
    let took = wait_for(
        &server,
        "switchboard_dialplan_reloads_total",
        1,
        Duration::from_secs(1),
    );
    eprintln!("reload took {took:?}");
    assert_eq!(invite(udp, "u0002"), "SIP/2.0 403 Closed for maintenance");

    // An invalid edit: refused with file:line:column, the running version stays.
    std::fs::write(plan_path(&server), BROKEN).unwrap();
    wait_for(
        &server,
        "switchboard_dialplan_reload_failures_total",
        1,
        Duration::from_secs(2),
    );
    assert_eq!(invite(udp, "u0002"), "SIP/2.0 403 Closed for maintenance");
    assert!(
        server.wait_log("the running version stays active"),
        "{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(
        log.contains("main.yaml:4:"),
        "the refusal names file and line:\n{log}"
    );

    // The admin endpoint reports the same problems, and reloads a fixed file.
    let (status, body) = admin_post(&server, "/api/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("main.yaml:4:"), "{body}");
    std::fs::write(plan_path(&server), ROUTE_USERS).unwrap();
    let (status, body) = admin_post(&server, "/api/reload");
    assert_eq!(status, 200, "{body}");
    assert!(invite(udp, "u0002").starts_with("SIP/2.0 480"));
}

#[test]
fn a_deleted_empty_oversized_or_unreadable_dialplan_is_refused() {
    // The default file: when it is absent at start the built-in plan is
    // used, but a file that goes away must not be replaced by it.
    let server = Server::start_with_files(
        &format!("{ALL_LOOPBACK}{USERS}"),
        &[("dialplans/default.yaml", REJECT_ALL)],
    );
    let udp = server.addr("udp");
    let path = server.dir.path().join("dialplans/default.yaml");
    let refused = |what: &str, needle: &str| {
        let (status, body) = admin_post(&server, "/api/reload");
        assert_eq!(status, 422, "{what}: {body}");
        assert!(body.contains(needle), "{what}: {body}");
        assert_eq!(
            invite(udp, "u0002"),
            "SIP/2.0 403 Closed for maintenance",
            "{what}: the running version stays"
        );
    };
    std::fs::remove_file(&path).unwrap();
    refused("deleted", "dialplan file is missing");
    std::fs::write(&path, "# nothing yet\n").unwrap();
    refused("empty", "has no rules");
    let mut big = String::from(ROUTE_USERS);
    big.push_str(&"# padding\n".repeat(120_000));
    std::fs::write(&path, big).unwrap();
    refused("oversized", "larger than");
    // An include that is a FIFO: refused at once, not a reload that hangs.
    let fifo = server.dir.path().join("dialplans/fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(&path, "rules:\n  - include: fifo.yaml\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let admin = server.addr("admin");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(admin).unwrap();
        let _ = write!(
            stream,
            "POST /api/reload HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
        );
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let body = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a reload reading a FIFO hung");
    assert!(body.contains("not a regular file"), "{body}");
}

#[test]
fn sighup_reloads() {
    let config =
        format!("{ALL_LOOPBACK}{USERS}dialplan:\n  file: dialplans/main.yaml\n  watch: false\n");
    let server = Server::start_with_files(&config, &[("dialplans/main.yaml", ROUTE_USERS)]);
    std::fs::write(plan_path(&server), REJECT_ALL).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.metric("switchboard_dialplan_reloads_total"),
        0,
        "watching is off"
    );
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(
        &server,
        "switchboard_dialplan_reloads_total",
        1,
        Duration::from_secs(2),
    );
    assert_eq!(
        invite(server.addr("udp"), "u0002"),
        "SIP/2.0 403 Closed for maintenance"
    );
}

#[test]
fn a_call_in_progress_is_unaffected_by_a_reload() {
    let server = start();
    let callee_port = free_port();
    let dir = server.dir.path();
    let reg = dir.join("callee.csv");
    std::fs::write(&reg, format!("SEQUENTIAL\nu0002;p0002;{DOMAIN};300;[authentication username=u0002 password=p0002];-\n")).unwrap();
    let out = sipp(
        &scenario("register.xml"),
        "u1",
        server.addr("udp"),
        &[
            "-inf",
            reg.to_str().unwrap(),
            "-p",
            &callee_port.to_string(),
        ],
    );
    assert!(out.status.success());
    let work = tempfile::tempdir().unwrap();
    let mut uas = Command::new("sipp")
        .arg(server.addr("udp").to_string())
        .args([
            "-sf",
            scenario("uas_answer.xml").to_str().unwrap(),
            "-t",
            "u1",
            "-nr",
            "-i",
            "127.0.0.1",
            "-p",
            &callee_port.to_string(),
        ])
        .args(["-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin"])
        .current_dir(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let caller = dir.join("caller.csv");
    std::fs::write(&caller, format!("SEQUENTIAL\nu0001;p0001;{DOMAIN};u0002;[authentication username=u0001 password=p0001]\n")).unwrap();
    let caller_path = caller.to_str().unwrap().to_string();
    let addr = server.addr("udp");
    let call = std::thread::spawn(move || {
        sipp(
            &scenario("uac_call_long.xml"),
            "u1",
            addr,
            &["-inf", &caller_path],
        )
    });
    // While the call is up (4 s between ACK and BYE), close routing entirely.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(plan_path(&server), REJECT_ALL).unwrap();
    wait_for(
        &server,
        "switchboard_dialplan_reloads_total",
        1,
        Duration::from_secs(1),
    );
    assert_eq!(
        invite(server.addr("udp"), "u0002"),
        "SIP/2.0 403 Closed for maintenance",
        "new calls see the new version"
    );
    let out = call.join().unwrap();
    assert!(
        out.status.success(),
        "the call in progress must end normally"
    );
    assert!(uas.wait().unwrap().success(), "callee saw the whole call");
}

#[test]
fn reload_command_uses_the_admin_endpoint() {
    let config =
        format!("{ALL_LOOPBACK}{USERS}dialplan:\n  file: dialplans/main.yaml\n  watch: false\n");
    let server = Server::start_with_files(&config, &[("dialplans/main.yaml", ROUTE_USERS)]);
    // The command reads the same configuration; point its admin address at the running server.
    let admin = server.addr("admin");
    let client_config = server.dir.path().join("client.yaml");
    std::fs::write(&client_config, format!("listen: {{admin: ['{admin}']}}\n")).unwrap();
    std::fs::write(plan_path(&server), BROKEN).unwrap();
    let out = Command::new(common::binary())
        .arg("reload")
        .arg("--config")
        .arg(&client_config)
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("main.yaml:4:") && stderr.contains("error"),
        "{stderr}"
    );
    std::fs::write(plan_path(&server), REJECT_ALL).unwrap();
    let out = Command::new(common::binary())
        .arg("reload")
        .arg("--config")
        .arg(&client_config)
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dialplan reloaded"));
    assert_eq!(
        invite(server.addr("udp"), "u0002"),
        "SIP/2.0 403 Closed for maintenance"
    );
}
