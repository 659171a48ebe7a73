//! Interop in a real browser: Debian's Chromium driven by playwright-core runs
//! the real npm packages `sip.js` (0.21) and `jssip` (3.13) against the binary
//! over WSS (see interop-tests/browser/). Two users register with passwords and
//! call each other with audio checked by `getStats()` on both sides; a wrong
//! password is refused; a dropped WebSocket re-registers by itself and can be
//! called again.

mod common;

use std::process::Command;

use common::{Server, repo};

/// One browser scenario at a time: two Chromiums with audio already load both cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(server: &Server, scenario: &str) {
    run_with(server, scenario, &[]);
}

fn run_with(server: &Server, scenario: &str, extra: &[&str]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let browser = repo().join("interop-tests").join("browser");
    let artifacts = server
        .dir
        .path()
        .join(format!("artifacts-{}", scenario.replace(':', "-")));
    let output = Command::new("node")
        .arg(browser.join("run.mjs"))
        .args(["--wss", &format!("wss://{}", server.addr("wss"))])
        .args(["--scenario", scenario, "--domain", "127.0.0.1"])
        .args(["--user1", "1001:demo-1001", "--user2", "1002:demo-1002"])
        .args(extra)
        .arg("--artifacts")
        .arg(&artifacts)
        .current_dir(&browser)
        .output()
        .expect("run node (apt-get install nodejs npm; see interop-tests/run.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser scenario {scenario} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log (tail)\n{}",
        server
            .log_text()
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains(&format!("PASS {scenario}")), "{stdout}");
}

fn server() -> Server {
    // The embedded demo users (1001, 1002 with demo-<user>), WSS only.
    Server::start_with(
        "listen:\n  udp: []\n  tcp: []\n  tls: []\n  https: ['127.0.0.1:0']\n  http: []\n  admin: ['127.0.0.1:0']\n",
    )
}

#[test]
fn wrong_password_is_refused_in_both_stacks() {
    run(&server(), "register-wrong-password");
}

#[test]
fn sipjs_calls_sipjs() {
    run(&server(), "call:sipjs:sipjs");
}

#[test]
fn jssip_calls_jssip() {
    run(&server(), "call:jssip:jssip");
}

#[test]
fn sipjs_calls_jssip() {
    run(&server(), "call:sipjs:jssip");
}

#[test]
fn sipjs_reregisters_after_its_websocket_drops_and_can_be_called() {
    run(&server(), "reconnect:sipjs");
}

#[test]
fn jssip_reregisters_after_its_websocket_drops_and_can_be_called() {
    run(&server(), "reconnect:jssip");
}

#[test]
fn sipjs_hears_itself_through_the_echo_test() {
    run(&server(), "echo:sipjs");
}

#[test]
fn jssip_hears_itself_through_the_echo_test() {
    run(&server(), "echo:jssip");
}

#[test]
fn sipjs_and_jssip_hear_each_other_in_a_conference() {
    run(&server(), "conference:sipjs:jssip");
}

#[test]
fn sipjs_holds_and_resumes_the_echo_test() {
    run(&server(), "echo-hold:sipjs");
}

#[test]
fn jssip_holds_and_resumes_the_echo_test() {
    run(&server(), "echo-hold:jssip");
}

/// Two SIP.js users fetch TURN credentials from `/api/ice-servers` (HTTP
/// Digest with their SIP passwords, computed in the page) and call each
/// other with `iceTransportPolicy: 'relay'`: the selected pair is a relay
/// pair on both sides, audio flows both ways, and it went through our relays.
#[test]
fn sipjs_calls_sipjs_through_the_bundled_turn_relay() {
    let server = Server::start_with(
        "listen:\n  udp: []\n  tcp: []\n  tls: []\n  https: ['127.0.0.1:0']\n  http: []\n  admin: ['127.0.0.1:0']\n\
         turn:\n  listen:\n    udp: ['127.0.0.1:0']\n    tcp: ['127.0.0.1:0']\n    tls: ['127.0.0.1:0']\n  \
         relay_ipv4: 127.0.0.1\n  relay_ipv6: ''\n  relay_ports: 20000-29999\n",
    );
    let http = format!("https://{}", server.addr("wss"));
    // Five seconds of talk: ~250 Opus packets each way, so the counts below
    // hold even when a loaded machine takes a second or two to get media
    // through the relay pair after the call is up (seen once with 3 s).
    run_with(&server, "turn-relay", &["--http", &http, "--talk", "5"]);
    assert!(server.metric("switchboard_turn_allocations_total") >= 2);
    assert!(server.metric("switchboard_turn_relayed_to_peers_total") > 200);
    assert!(server.metric("switchboard_turn_relayed_to_clients_total") > 200);
    assert_eq!(
        server.metric("switchboard_turn_credentials_issued_total"),
        2
    );
}
