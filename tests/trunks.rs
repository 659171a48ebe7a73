//! SIP trunks against real peers: outbound registration to a SIPp registrar
//! that challenges with Digest and grants a short expiry (refreshes, then
//! the un-REGISTER when the trunk is removed by a reload); OPTIONS probing
//! of a SIPp carrier that stops answering (down) and comes back (up); live
//! reload of the trunks file with the dialplan; `switchboard check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, http_get, scenario};

/// UDP SIP and the admin listener only.
const LISTEN: &str = "listen:\n  udp: ['127.0.0.1:0']\n  tcp: []\n  tls: []\n  https: []\n  http: []\n  admin: ['127.0.0.1:0']\n";

/// A SIPp UAS in the background on 127.0.0.1:`port`, killed on drop.
struct Sipp {
    child: Child,
    work: tempfile::TempDir,
}

impl Sipp {
    fn uas(name: &str, port: u16, calls: u32) -> Sipp {
        let work = tempfile::tempdir().expect("tempdir");
        let child = Command::new("sipp")
            .args(["-sf"])
            .arg(scenario(name))
            .args(["-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &calls.to_string()])
            .args([
                "-timeout",
                "60s",
                "-timeout_error",
                "-trace_err",
                "-trace_msg",
                "-trace_logs",
            ])
            .args(["-nostdin", "-nr"])
            .current_dir(work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run sipp (apt-get install sip-tester)");
        // Let it bind before anything is sent to it.
        std::thread::sleep(Duration::from_millis(300));
        Sipp { child, work }
    }

    /// Waits for SIPp to finish; true when every call succeeded.
    fn wait(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    eprintln!("sipp failed: {status}\n{}", self.logs());
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("sipp still running\n{}", self.logs());
        false
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.work.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") {
                out.push_str(&format!(
                    "--- {name}\n{}\n",
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                ));
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// `GET /api/trunks`.
fn trunks(server: &Server) -> Vec<serde_json::Value> {
    let body = http_get(server.addr("admin"), "/api/trunks");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn trunk(server: &Server, name: &str) -> serde_json::Value {
    trunks(server)
        .into_iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no trunk {name}"))
}

fn names(server: &Server) -> Vec<String> {
    trunks(server)
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn trunks_file(server: &Server) -> PathBuf {
    server.dir.path().join("trunks.yaml")
}

#[test]
fn registers_with_digest_refreshes_and_unregisters_when_removed() {
    let port = free_port();
    let mut registrar = Sipp::uas("trunk_registrar.xml", port, 1);
    let config = format!(
        "trunks:\n  - name: carrier\n    host: 127.0.0.1\n    port: {port}\n    domain: carrier.test\n    register: {{ username: trunkuser, password: trunkpass, expires: 60 }}\n"
    );
    let server = Server::start_with_files(LISTEN, &[("trunks.yaml", &config)]);
    // The first REGISTER is challenged, the answer accepted for 4 s, and the
    // registration refreshed before it expires (after 2 s).
    wait_until("a refresh", Duration::from_secs(15), || {
        server.metric("switchboard_trunk_registrations_total") >= 2
    });
    let status = trunk(&server, "carrier");
    assert_eq!(status["registered"], true, "{status}");
    assert_eq!(status["up"], true, "{status}");
    assert_eq!(status["reason"], serde_json::Value::Null, "{status}");
    let until = status["registered_until"]
        .as_u64()
        .expect("registered_until");
    assert!(
        until > unix_now().saturating_sub(1) && until <= unix_now() + 5,
        "{status}"
    );
    assert_eq!(
        server.metric("switchboard_trunk_registered{trunk=\"carrier\"}"),
        1
    );
    assert_eq!(
        server.metric("switchboard_trunk_registration_failures_total"),
        0
    );
    assert!(server.wait_log("trunk registered"));

    // Removing the trunk unregisters it (Expires: 0), which is what ends the
    // registrar's scenario successfully.
    std::fs::write(trunks_file(&server), "trunks: []\n").unwrap();
    let (code, body) = admin_post(&server, "/api/reload");
    assert_eq!(code, 200, "{body}");
    assert!(
        registrar.wait(Duration::from_secs(10)),
        "registrar scenario failed"
    );
    assert!(server.wait_log("trunk unregistered"));
    assert!(names(&server).is_empty());
}

#[test]
fn options_probing_marks_the_trunk_down_and_up_again() {
    let port = free_port();
    let mut carrier = Sipp::uas("trunk_options.xml", port, 3);
    let config = format!(
        "trunks:\n  - name: carrier\n    host: 127.0.0.1\n    port: {port}\n    options_interval: 1\n"
    );
    let server = Server::start_with_files(LISTEN, &[("trunks.yaml", &config)]);
    wait_until("two probes", Duration::from_secs(5), || {
        server.metric("switchboard_trunk_probes_total") >= 2
    });
    assert_eq!(trunk(&server, "carrier")["up"], true);
    assert_eq!(server.metric("switchboard_trunk_probe_failures_total"), 0);
    // SIPp answers three probes and leaves: two unanswered probes later the
    // trunk is down.
    assert!(
        carrier.wait(Duration::from_secs(10)),
        "carrier scenario failed"
    );
    let took = wait_until("trunk down", Duration::from_secs(6), || {
        trunk(&server, "carrier")["up"] == false
    });
    let status = trunk(&server, "carrier");
    assert!(
        status["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no answer to OPTIONS"),
        "{status} after {took:?}"
    );
    assert!(server.wait_log("trunk down"));
    assert_eq!(server.metric("switchboard_trunk_up{trunk=\"carrier\"}"), 0);
    assert!(server.metric("switchboard_trunk_probe_failures_total") >= 2);

    // The carrier is back: one answer brings the trunk up.
    let mut carrier = Sipp::uas("trunk_options.xml", port, 1);
    wait_until("trunk up", Duration::from_secs(5), || {
        trunk(&server, "carrier")["up"] == true
    });
    assert!(server.wait_log("trunk up"));
    assert_eq!(trunk(&server, "carrier")["reason"], serde_json::Value::Null);
    assert!(carrier.wait(Duration::from_secs(5)));
}

const PLAN_A: &str = "rules:\n  - name: out\n    match: { to: { regex: '^\\+' }, caller_groups: [staff] }\n    action: { trunk: { trunks: [carrier-a] } }\n";
const PLAN_AB: &str = "rules:\n  - name: out\n    match: { to: { regex: '^\\+' }, caller_groups: [staff] }\n    action: { trunk: { trunks: [carrier-a, carrier-b] } }\n";
const USERS: &str = "domains:\n  - name: example.test\n    users:\n      - { username: u0001, password: p0001, groups: [staff] }\ndialplan:\n  file: dialplans/main.yaml\n";
const TRUNKS_A: &str = "trunks:\n  - name: carrier-a\n    host: 192.0.2.1\n";
const TRUNKS_AB: &str = "trunks:\n  - name: carrier-a\n    host: 192.0.2.1\n    max_calls: 5\n  - name: carrier-b\n    host: 192.0.2.2\n    transport: tcp\n";

#[test]
fn trunks_reload_with_the_dialplan_and_bad_files_are_refused() {
    let server = Server::start_with_files(
        &format!("{LISTEN}{USERS}"),
        &[("trunks.yaml", TRUNKS_A), ("dialplans/main.yaml", PLAN_A)],
    );
    assert_eq!(names(&server), ["carrier-a"]);
    let plan = server.dir.path().join("dialplans/main.yaml");

    // A new trunk and a dialplan that uses it: applied together.
    std::fs::write(trunks_file(&server), TRUNKS_AB).unwrap();
    std::fs::write(&plan, PLAN_AB).unwrap();
    let (code, body) = admin_post(&server, "/api/reload");
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&server), ["carrier-a", "carrier-b"]);
    assert_eq!(trunk(&server, "carrier-b")["transport"], "tcp");

    // A broken trunks file: refused with file:line:column, the table stays.
    std::fs::write(
        trunks_file(&server),
        "trunks:\n  - name: carrier-a\n    host: ''\n  - name: carrier-b\n    host: 192.0.2.2\n",
    )
    .unwrap();
    let (code, body) = admin_post(&server, "/api/reload");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("trunks.yaml:3:5: error: trunks: 'carrier-a': host ''"),
        "{body}"
    );
    assert_eq!(names(&server), ["carrier-a", "carrier-b"]);

    // Removing a trunk the dialplan still uses: refused, nothing changes.
    std::fs::write(trunks_file(&server), TRUNKS_A).unwrap();
    let (code, body) = admin_post(&server, "/api/reload");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown trunk 'carrier-b'"), "{body}");
    assert_eq!(names(&server), ["carrier-a", "carrier-b"]);

    // Both files changed together: applied. The file watcher also picks
    // edits up by itself.
    std::fs::write(&plan, PLAN_A).unwrap();
    wait_until("reload by the file watcher", Duration::from_secs(5), || {
        names(&server) == ["carrier-a"]
    });
    assert!(server.wait_log("trunks reloaded"));
}

#[test]
fn an_emptied_or_deleted_trunks_file_is_refused_while_trunks_are_in_force() {
    // With a plan that names no trunk, nothing else would stop the reload.
    let plan = "rules:\n  - name: closed\n    action: { reject: { code: 403 } }\n";
    let server = Server::start_with_files(
        &format!("{LISTEN}{USERS}"),
        &[("trunks.yaml", TRUNKS_A), ("dialplans/main.yaml", plan)],
    );
    assert_eq!(names(&server), ["carrier-a"]);
    for step in ["emptied", "deleted"] {
        if step == "emptied" {
            std::fs::write(trunks_file(&server), "").unwrap();
        } else {
            std::fs::remove_file(trunks_file(&server)).unwrap();
        }
        let (code, body) = admin_post(&server, "/api/reload");
        assert_eq!(code, 422, "{step}: {body}");
        assert!(
            body.contains("trunks file is missing or empty"),
            "{step}: {body}"
        );
        assert_eq!(names(&server), ["carrier-a"], "{step}");
    }
    // Saying so removes them.
    std::fs::write(trunks_file(&server), "trunks: []\n").unwrap();
    let (code, body) = admin_post(&server, "/api/reload");
    assert_eq!(code, 200, "{body}");
    assert!(names(&server).is_empty());
}

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(common::binary())
        .args(["check"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run switchboard check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_validates_the_trunks_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        "trunks: { file: carriers.yaml }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("carriers.yaml"),
        "trunks:\n  - name: a\n    host: 192.0.2.1\n    tls: { verify: false }\n  - name: a\n    host: 192.0.2.2\n    codecs: []\n",
    )
    .unwrap();
    let (ok, text) = check(dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "carriers.yaml:4:5: trunks: 'a': tls: settings apply only with transport: tls"
        ),
        "{text}"
    );
    assert!(
        text.contains("carriers.yaml:7:5: trunks: 'a': codecs"),
        "{text}"
    );
    assert!(
        text.contains("carriers.yaml:5:5: trunks: name 'a' is used twice"),
        "{text}"
    );

    std::fs::write(
        dir.path().join("carriers.yaml"),
        "trunks:\n  - name: a\n    host: sip.carrier.example\n    transport: tls\n",
    )
    .unwrap();
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    assert!(
        text.contains("carriers.yaml: trunks OK (1 trunks)"),
        "{text}"
    );

    // A named trunks file that does not exist is an error.
    std::fs::remove_file(dir.path().join("carriers.yaml")).unwrap();
    let (ok, text) = check(dir.path());
    assert!(
        !ok && text.contains("carriers.yaml:0:0: cannot read"),
        "{text}"
    );
}
