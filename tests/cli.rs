//! The command line: help, version, `check` with file:line:column messages, and
//! a start with embedded defaults (the README's first command).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::binary;

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run switchboard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "check", "--config", "--log-level", "--log-format"] {
        assert!(out.contains(word), "help lacks {word}:\n{out}");
    }
    let (code, out, _) = run(dir.path(), &["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("switchboard {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn check_accepts_defaults_and_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("<built-in defaults>: configuration OK"),
        "{out}"
    );
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        "listen:\n  udp: ['127.0.0.1:5070']\nlimits:\n  max_headers: 64\n",
    )
    .unwrap();
    let (code, out, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("switchboard.yaml: configuration OK"), "{out}");
}

#[test]
fn check_reports_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "listen:\n  udp:\n    - 127.0.0.1:5060\n    - not-an-address\n  admin: ['0.0.0.0:8090']\nlimits:\n  max_headers: 2\n").unwrap();
    let (code, _, err) = run(dir.path(), &["check", "--config", "bad.yaml"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("bad.yaml:4:7: listen.udp: 'not-an-address'"),
        "{err}"
    );
    assert!(
        lines[1]
            .starts_with("bad.yaml:5:11: listen.admin: '0.0.0.0:8090' is not a loopback address"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("bad.yaml:7:3: limits.max_headers: 2 is out of range"),
        "{err}"
    );

    std::fs::write(&file, "listen:\n  udp: []\nsurprise: true\n").unwrap();
    let (code, _, err) = run(dir.path(), &["check", "--config", "bad.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("bad.yaml:3:1: ") && err.contains("surprise"),
        "{err}"
    );

    let (code, _, err) = run(dir.path(), &["check", "--config", "missing.yaml"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("missing.yaml:0:0: cannot read"), "{err}");
}

#[test]
fn serve_refuses_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        "limits:\n  max_message_size: -5\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["serve"]);
    assert_eq!(code, 1);
    assert!(err.contains("switchboard.yaml:2:"), "{err}");
}

/// The README's run command: embedded defaults, a generated certificate, and a
/// log line for every listener. Uses the default ports, so it is skipped when
/// something else holds them.
#[test]
fn serve_with_embedded_defaults_logs_every_listener() {
    let ports = [5060u16, 5061, 8443, 8080, 8090, 3478, 5349];
    let v6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if ports.iter().any(|p| {
        std::net::TcpListener::bind(("0.0.0.0", *p)).is_err()
            || std::net::UdpSocket::bind(("0.0.0.0", *p)).is_err()
            || (v6
                && (std::net::TcpListener::bind(("::", *p)).is_err()
                    || std::net::UdpSocket::bind(("::", *p)).is_err()))
    }) {
        eprintln!("default ports busy; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["--log-format", "text"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            log.push(line);
        }
        if log.iter().any(|l| l.contains(" ready")) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = log.join("\n");
    assert!(
        text.contains("generated a self-signed development certificate"),
        "{text}"
    );
    assert!(
        dir.path().join("certs/switchboard.crt").exists()
            && dir.path().join("certs/switchboard.key").exists()
    );
    for expected in [
        "transport=\"udp\" addr=0.0.0.0:5060",
        "transport=\"tcp\" addr=0.0.0.0:5060",
        "transport=\"tls\" addr=0.0.0.0:5061",
        "transport=\"wss\" addr=0.0.0.0:8443",
        "transport=\"ws\" addr=0.0.0.0:8080",
        "transport=\"admin\" addr=127.0.0.1:8090",
        "transport=\"turn-udp\" addr=0.0.0.0:3478",
        "transport=\"turn-tcp\" addr=0.0.0.0:3478",
        "transport=\"turn-tls\" addr=0.0.0.0:5349",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let ipv6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if ipv6 {
        assert!(
            text.contains("addr=[::]:5060"),
            "IPv6 listener missing:\n{text}"
        );
    }
}

#[test]
fn check_validates_the_dialplan_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("dialplans")).unwrap();
    std::fs::write(dir.path().join("dialplans/default.yaml"), "rules:\n  - name: bad\n    match:\n      to: { regex: '(' }\n    action:\n      reject: { code: 404 }\n").unwrap();
    let (code, out, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("dialplans/default.yaml:4:"), "{err}");
    // Without the file the embedded default dialplan is used, and it is valid.
    std::fs::remove_file(dir.path().join("dialplans/default.yaml")).unwrap();
    let (code, out, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dialplan OK"), "{out}");
}
