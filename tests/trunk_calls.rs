//! Calls bridged to SIP trunks, with SIPp playing the carrier: a trunk that
//! answers and echoes RTP (`-rtp_echo`), one that is busy (486), one that
//! is unavailable (503, failover to the next trunk), and a trunk that
//! never answers (timeout failover). The caller is SIPp as a local user
//! sending a PCMA tone; the trunk leg negotiates PCMU, so the audio is
//! transcoded through the call's room both ways and comes back to the
//! caller, where it is captured (root) and checked frame by frame.
//! Every call leaves no call, room, leg or port behind and writes a CDR.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::media::{
    Capture, assert_answered_invites_ended, assert_nothing_left, frames_with_tone, is_root,
    media_port, port_window, wait, write_tone_pcap,
};
use common::{Server, assert_transfers, cdrs, free_port, scenario, sipp};

const DOMAIN: &str = "example.test";
const USERS: &str = "domains:\n  - name: example.test\n    users:\n      - {username: u0001, password: p0001}\n      - {username: u0002, password: p0002}\nauth:\n  algorithms: [MD5, SHA-256]\n";

/// A carrier played by SIPp.
struct Carrier {
    child: Child,
    work: tempfile::TempDir,
    port: u16,
    /// Its RTP port.
    media: u16,
}

impl Carrier {
    /// SIPp running `name` on a fresh port (RTP echo on a fresh media port).
    fn start(name: &str, extra: &[&str]) -> Carrier {
        Self::start_with_pcap(name, extra, None)
    }

    /// [`Carrier::start`] with early.pcap (a PCMU tone of this frequency,
    /// 3 s) in its working directory, and no RTP echo.
    fn start_with_pcap(name: &str, extra: &[&str], tone: Option<f32>) -> Carrier {
        match tone {
            Some(freq) => Self::start_playing(name, extra, &[("early.pcap", freq, 0)]),
            None => Self::start_playing(name, extra, &[]),
        }
    }

    /// [`Carrier::start`] with these pcap files in its working directory
    /// (name, tone frequency, payload type; 3 s each), and no RTP echo
    /// when there are any.
    fn start_playing(name: &str, extra: &[&str], pcaps: &[(&str, f32, u8)]) -> Carrier {
        let work = tempfile::tempdir().unwrap();
        for &(file, freq, pt) in pcaps {
            common::media::write_tone_pcap_with(&work.path().join(file), freq, 3, pt);
        }
        let tone = (!pcaps.is_empty()).then_some(());
        let port = free_port();
        let mp = media_port();
        let child = Command::new("sipp")
            .args(["-sf", scenario(name).to_str().unwrap()])
            .args(["-t", "u1", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &mp.to_string()])
            // Echo RTP, unless it plays its own (two streams would interleave).
            .args(if tone.is_some() {
                &[][..]
            } else {
                &["-rtp_echo"][..]
            })
            .args(["-m", "1", "-timeout", "40s", "-timeout_error"])
            .args(["-trace_msg", "-trace_err", "-nostdin"])
            .args(extra)
            .current_dir(work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("sipp-stderr.log")).unwrap())
            .spawn()
            .expect("run sipp (apt-get install sip-tester)");
        // Let it bind before the call starts.
        std::thread::sleep(Duration::from_millis(300));
        Carrier {
            child,
            work,
            port,
            media: mp,
        }
    }

    /// Waits for the scenario to pass and returns the messages it saw.
    fn finish(self, what: &str) -> String {
        wait(self.child, self.work.path(), what);
        messages(self.work.path())
    }
}

/// Everything SIPp's -trace_msg logged in `dir`.
fn messages(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with("_messages.log")
        {
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    out
}

fn trunk(name: &str, port: u16, extra: &str) -> String {
    format!("  - name: {name}\n    host: 127.0.0.1\n    port: {port}\n    codecs: [PCMU]\n{extra}")
}

struct Setup {
    server: Server,
    rtp: (u16, u16),
}

/// Starts Switchboard with these trunks and a dialplan sending `+1...`
/// numbers to `route` (trunk names in failover order).
fn start(trunks: &str, route: &[&str]) -> Setup {
    let names = route.join(", ");
    let plan = format!(
        "rules:\n  - name: pstn\n    match:\n      to: {{ regex: '^\\+1[0-9]{{10}}$' }}\n    action:\n      trunk: {{ trunks: [{names}], failover_on: [503, timeout] }}\n"
    );
    start_plan(trunks, &plan)
}

/// Starts Switchboard with the demo users, these trunks and this dialplan.
fn start_plan(trunks: &str, plan: &str) -> Setup {
    start_plan_with("", trunks, plan)
}

/// [`start_plan`] with `extra` configuration (whole top-level sections).
fn start_plan_with(extra: &str, trunks: &str, plan: &str) -> Setup {
    start_plan_on(extra, trunks, plan, "127.0.0.1")
}

/// [`start_plan_with`], media sockets bound to `media_bind`.
fn start_plan_on(extra: &str, trunks: &str, plan: &str, media_bind: &str) -> Setup {
    let rtp = port_window(40);
    let config = format!(
        "{}{extra}{USERS}trunks:\n{trunks}dialplan:\n  file: plan.yaml\nmedia:\n  bind: {media_bind}\n  rtp_ports: '{}-{}'\n",
        common::ALL_LOOPBACK,
        rtp.0,
        rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", plan)]);
    Setup { server, rtp }
}

/// Calls from trunks to +15551234567 go to the trunk `out`.
const TRANSIT_PLAN: &str = "rules:\n  - name: transit\n    match:\n      source: [trunk]\n      to: '+15551234567'\n    action:\n      trunk: { trunks: [out] }\n";

/// Calls from trunks to the DID +15550001001 reach the echo test.
const DID_ECHO_PLAN: &str = "rules:\n  - name: did\n    match:\n      source: [trunk]\n      to: '+15550001001'\n    action:\n      echo: {}\n";

/// Carrier A's trunk `in` on `in_port`, its calls to +15551234567 sent on
/// to the trunk `out` on `out_port`.
fn start_transit(in_port: u16, out_port: u16) -> Setup {
    let trunks = trunk("in", in_port, "") + &trunk("out", out_port, "");
    start_plan(&trunks, TRANSIT_PLAN)
}

/// A carrier (SIPp `trunk_uac.xml` on `port`, known to the server as a
/// trunk) calling `number` and playing a 1 kHz PCMA tone for `seconds`,
/// then hanging up; media on `media`.
fn carrier_calls(
    server: &Server,
    port: u16,
    media: u16,
    number: &str,
    seconds: u32,
) -> (Child, tempfile::TempDir) {
    carrier_calls_with("trunk_uac.xml", server, port, media, number, seconds)
}

/// [`carrier_calls`] with another scenario.
fn carrier_calls_with(
    scenario_name: &str,
    server: &Server,
    port: u16,
    media: u16,
    number: &str,
    seconds: u32,
) -> (Child, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    write_tone_pcap(&work.path().join("tone.pcap"), 1000.0, seconds);
    let child = Command::new("sipp")
        .arg(server.addr("udp").to_string())
        .args(["-sf", scenario(scenario_name).to_str().unwrap()])
        .args(["-s", number, "-d", &(seconds * 1000).to_string()])
        .args(["-t", "u1", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(["-m", "1", "-timeout", "40s", "-timeout_error"])
        .args(["-trace_msg", "-trace_err", "-nostdin"])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("sipp-stderr.log")).unwrap())
        .spawn()
        .expect("run sipp (apt-get install sip-tester)");
    (child, work)
}

fn caller_csv(dir: &Path, user: &str, callee: &str) -> PathBuf {
    let password = user.replace('u', "p");
    let path = dir.join("caller.csv");
    std::fs::write(
        &path,
        format!(
            "SEQUENTIAL\n{user};{password};{DOMAIN};{callee};[authentication username={user} password={password}]\n"
        ),
    )
    .unwrap();
    path
}

/// SIPp as local user u0001 calling `callee` with `scenario_name`, playing a
/// 1 kHz PCMA tone for `seconds` when the scenario plays audio.
fn call(
    setup: &Setup,
    scenario_name: &str,
    callee: &str,
    media: u16,
    seconds: u32,
) -> (Child, tempfile::TempDir) {
    call_with(setup, scenario_name, callee, media, seconds, &[])
}

/// [`call`] with extra SIPp arguments.
fn call_with(
    setup: &Setup,
    scenario_name: &str,
    callee: &str,
    media: u16,
    seconds: u32,
    extra: &[&str],
) -> (Child, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    write_tone_pcap(&work.path().join("tone.pcap"), 1000.0, seconds);
    let csv = caller_csv(work.path(), "u0001", callee);
    let child = Command::new("sipp")
        .arg(setup.server.addr("udp").to_string())
        .args(["-sf", scenario(scenario_name).to_str().unwrap()])
        .args(["-inf", csv.to_str().unwrap()])
        .args(["-d", &(seconds * 1000 + 500).to_string()])
        .args(["-t", "u1", "-nr", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &free_port().to_string(), "-mp", &media.to_string()])
        .args(["-m", "1", "-timeout", "40s", "-timeout_error"])
        .args(["-trace_msg", "-trace_err", "-nostdin"])
        .args(extra)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("sipp-stderr.log")).unwrap())
        .spawn()
        .expect("run sipp");
    (child, work)
}

/// The first SIP message of `method` in a -trace_msg log.
fn first_request<'a>(log: &'a str, method: &str) -> &'a str {
    let start = log
        .find(&format!("\n{method} sip:"))
        .unwrap_or_else(|| panic!("no {method} in:\n{log}"));
    let rest = &log[start + 1..];
    let end = rest.find("\n\n-----").unwrap_or(rest.len());
    &rest[..end]
}

/// A caller dials a number routed to the trunk `name`, played by a SIPp
/// carrier running `scenario` (it checks what it gets); the call lasts
/// `secs` s, and nothing of it is left afterwards.
fn carrier_answers_a_call(scenario: &str, name: &str, secs: u32, what: &str) {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start(scenario, &[]);
    let setup = start(&trunk(name, carrier.port, ""), &[name]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), secs);
    wait(child, work.path(), "caller");
    carrier.finish(what);
    assert_nothing_left(&setup.server);
}

#[test]
fn the_trunks_caller_id_policy_shapes_from_privacy_and_asserted_identity() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let header = |invite: &str, name: &str| -> Option<String> {
        invite
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l.to_string())
    };
    // A fixed number and name, asserted.
    let policy = "    caller_id:\n      number: '+4930123456'\n      name: ACME\n      asserted_identity: true\n";
    let carrier = Carrier::start("trunk_uas.xml", &[]);
    let setup = start(&trunk("fixed", carrier.port, policy), &["fixed"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier");
    let invite = first_request(&trunk_side, "INVITE");
    let from = header(invite, "From").unwrap_or_default();
    assert!(from.contains("\"ACME\" <sip:+4930123456@"), "{invite}");
    let pai = header(invite, "P-Asserted-Identity").unwrap_or_default();
    assert!(pai.contains("<sip:+4930123456@"), "{invite}");
    assert_eq!(header(invite, "Privacy"), None, "{invite}");
    drop(setup);
    // Anonymous without a fixed number: the caller is hidden in From, but
    // asserted to the carrier (which bills on it) with Privacy: id.
    let carrier = Carrier::start("trunk_uas.xml", &[]);
    let setup = start(
        &trunk(
            "hidden",
            carrier.port,
            "    caller_id:\n      anonymous: true\n",
        ),
        &["hidden"],
    );
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier");
    let invite = first_request(&trunk_side, "INVITE");
    let from = header(invite, "From").unwrap_or_default();
    assert!(
        from.contains("<sip:anonymous@anonymous.invalid>"),
        "{invite}"
    );
    assert!(!from.contains("u0001"), "{invite}");
    assert_eq!(
        header(invite, "Privacy").as_deref(),
        Some("Privacy: id"),
        "{invite}"
    );
    let pai = header(invite, "P-Asserted-Identity").unwrap_or_default();
    assert!(pai.contains("<sip:u0001@"), "{invite}");
    assert_nothing_left(&setup.server);
}

#[test]
fn call_to_a_number_reaches_the_trunk_and_audio_comes_back() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let carrier = Carrier::start("trunk_uas.xml", &[]);
    let setup = start(&trunk("carrier", carrier.port, ""), &["carrier"]);
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", mp, 4);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier");
    let caller_side = messages(work.path());
    let payloads = capture.finish();
    let toned = frames_with_tone(&payloads, 1000.0);
    if std::env::var("DEBUG_LOG").is_ok() {
        eprintln!("{}", setup.server.log_text());
        eprintln!("{trunk_side}");
    }
    eprintln!(
        "trunk echo: {toned} of {} frames back at the caller carry the 1 kHz tone",
        payloads.len()
    );
    assert!(
        toned >= 100,
        "expected most of 200 tone frames back through the trunk, got {toned} of {}",
        payloads.len()
    );
    // Topology hiding: the trunk sees a fresh dialog with our addresses only.
    let invite = first_request(&trunk_side, "INVITE");
    assert!(
        invite.starts_with("INVITE sip:+15551234567@127.0.0.1:"),
        "{invite}"
    );
    let caller_invite = first_request(&caller_side, "INVITE");
    let caller_call_id = caller_invite
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap();
    assert!(
        !invite.contains(caller_call_id),
        "caller's Call-ID leaked:\n{invite}"
    );
    assert!(
        !invite.contains("[pid]") && !invite.contains("B1"),
        "{invite}"
    );
    assert_eq!(invite.matches("Via:").count(), 1, "{invite}");
    assert!(
        invite.contains("m=audio") && invite.contains("RTP/AVP 0 101"),
        "{invite}"
    );
    assert!(!invite.contains("Proxy-Authorization"), "{invite}");
    // The caller's leg: PCMA answered by us, not the trunk's SDP.
    assert!(caller_side.contains("SIP/2.0 180"), "{caller_side}");
    let records = cdrs(&setup.server, 1);
    let cdr = &records[0];
    assert_eq!(cdr["trunk"], "carrier");
    assert_eq!(cdr["callee"], "+15551234567");
    assert_eq!(cdr["caller"], "u0001");
    assert_eq!(cdr["status"], 200);
    assert!(cdr["duration"].as_f64().unwrap() > 3.0, "{cdr}");
    assert_eq!(cdr["legs"][0]["codec"], "PCMA");
    assert_eq!(cdr["legs"][1]["codec"], "PCMU");
    assert!(
        cdr["legs"][1]["packets_received"].as_u64().unwrap() > 100,
        "{cdr}"
    );
    assert_nothing_left(&setup.server);
    assert_answered_invites_ended(&setup.server);
}

#[test]
fn busy_trunk_gives_the_caller_486() {
    let carrier = Carrier::start("trunk_uas_486.xml", &[]);
    let setup = start(&trunk("busy", carrier.port, ""), &["busy"]);
    let (child, work) = call(
        &setup,
        "b2bua_call_busy.xml",
        "+15551234567",
        media_port(),
        1,
    );
    wait(child, work.path(), "caller");
    carrier.finish("busy carrier");
    let caller_side = messages(work.path());
    assert!(
        caller_side.contains("SIP/2.0 486"),
        "caller did not get 486:\n{caller_side}"
    );
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["status"], 486);
    assert_nothing_left(&setup.server);
}

#[test]
fn unavailable_trunk_fails_over_to_the_next() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let down = Carrier::start("trunk_uas_503.xml", &[]);
    let up = Carrier::start("trunk_uas.xml", &[]);
    let trunks = format!(
        "{}{}",
        trunk("first", down.port, ""),
        trunk("second", up.port, "")
    );
    let setup = start(&trunks, &["first", "second"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 2);
    wait(child, work.path(), "caller");
    down.finish("503 carrier");
    let second = up.finish("answering carrier");
    assert!(second.contains("INVITE sip:+15551234567@"), "{second}");
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["trunk"], "second");
    assert_eq!(records[0]["status"], 200);
    assert_nothing_left(&setup.server);
}

/// One browser scenario at a time: Chromium with audio already loads both
/// cores. A browser test takes it first, before it starts its SIPp peers
/// (they time out while waiting).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A browser test's start: `None` (skipped) without root, else the
/// one-at-a-time lock.
fn browser_test() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs a browser scenario (interop-tests/browser/run.mjs) in the
/// background; returns once it printed READY (registered).
fn browser_ready(server: &Server, scenario: &str) -> std::process::Child {
    use std::io::BufRead;
    let browser = common::repo().join("interop-tests").join("browser");
    let mut child = Command::new("node")
        .arg(browser.join("run.mjs"))
        .args(["--wss", &format!("wss://{}", server.addr("wss"))])
        .args(["--scenario", scenario, "--domain", "127.0.0.1"])
        .args(["--user1", "1001:demo-1001", "--talk", "2"])
        .current_dir(&browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (see interop-tests/run.sh)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            if line.ends_with(" READY") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the browser did not register");
    child
}

#[test]
fn calls_from_a_trunk_count_against_its_max_calls() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // The carrier's DID goes to the echo test; the trunk allows one call.
    let carrier_port = free_port();
    let Setup { server, .. } = start_plan(
        &trunk(
            "carrier",
            carrier_port,
            "    max_calls: 1\n    inbound: ['127.0.0.1/32']\n",
        ),
        DID_ECHO_PLAN,
    );
    let (first, work) = carrier_calls(&server, carrier_port, media_port(), "+15550001001", 4);
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        server.metric("switchboard_b2bua_calls") == 1
    });
    assert!(up, "the first call did not come up");
    // A second call from the carrier (another port of its network) while
    // the first lasts.
    let out = sipp(
        &scenario("trunk_uac_refused.xml"),
        "u1",
        server.addr("udp"),
        &["-s", "+15550001001"],
    );
    assert!(
        out.status.success(),
        "the second call was not refused with 503"
    );
    wait(first, work.path(), "the first carrier call");
    // Its slot is free again once it has ended.
    let (again, work) = carrier_calls(&server, carrier_port, media_port(), "+15550001001", 1);
    wait(again, work.path(), "a carrier call after the first ended");
    assert_nothing_left(&server);
}

#[test]
fn a_call_from_a_trunk_rings_the_browser_and_audio_flows_both_ways() {
    let Some(_serial) = browser_test() else {
        return;
    };
    let carrier_port = free_port();
    let rtp = port_window(40);
    let plan = "rules:\n  - name: did\n    match:\n      source: [trunk]\n      to: '+15550001001'\n    action:\n      user: { users: ['1001'], ring_timeout: 20 }\n";
    let config = format!(
        "listen:\n  udp: ['127.0.0.1:0']\n  tcp: []\n  tls: []\n  https: ['127.0.0.1:0']\n  http: []\n  admin: ['127.0.0.1:0']\ntrunks:\n{}dialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n",
        trunk("carrier", carrier_port, ""),
        rtp.0,
        rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", plan)]);
    let browser = browser_ready(&server, "answer:sipjs:1000");
    let mp = media_port();
    let capture = Capture::start(rtp, mp);
    let (sipp, work) = carrier_calls(&server, carrier_port, mp, "+15550001001", 5);
    wait(sipp, work.path(), "carrier calling the DID");
    let output = browser.wait_with_output().unwrap();
    assert!(output.status.success(), "the browser scenario failed");
    // What reached the carrier: the browser's 440 Hz tone, as PCMA.
    let payloads = capture.finish();
    let toned = frames_with_tone(&payloads, 440.0);
    eprintln!(
        "inbound: {toned} of {} frames at the carrier carry the browser's 440 Hz",
        payloads.len()
    );
    assert!(
        toned >= 50,
        "the carrier heard the browser in {toned} of {} frames",
        payloads.len()
    );
    let records = cdrs(&server, 1);
    assert_eq!(records[0]["direction"], "inbound");
    assert_eq!(records[0]["trunk"], "carrier");
    assert_eq!(records[0]["callee"], "+15550001001");
    assert_eq!(records[0]["caller"], "+15557654321");
    assert_eq!(records[0]["legs"][1]["codec"], "opus");
    assert_nothing_left(&server);
}

/// A carrier calls DID +15550001001 (a 1 kHz tone for `seconds`), the
/// browser running `scenario` (user 1001) answers and transfers the call
/// to +15559999999 on an echoing carrier. Returns the server, what the
/// target carrier saw, and how many frames the caller got with its own
/// tone back.
fn carrier_calls_a_browser_that_transfers(scenario: &str, seconds: u32) -> (Server, String, usize) {
    let carrier_port = free_port();
    // Its call lasts until the carrier hangs up, late on a slow machine.
    let target = Carrier::start("trunk_uas.xml", &["-timeout", "90s"]);
    let rtp = port_window(40);
    let plan = "rules:\n  - name: did\n    match:\n      source: [trunk]\n      to: '+15550001001'\n    action:\n      user: { users: ['1001'], ring_timeout: 20 }\n  - name: target\n    match:\n      to: '+15559999999'\n    action:\n      trunk: { trunks: [target] }\n";
    let config = format!(
        "listen:\n  udp: ['127.0.0.1:0']\n  tcp: []\n  tls: []\n  https: ['127.0.0.1:0']\n  http: []\n  admin: ['127.0.0.1:0']\ntrunks:\n{}{}dialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n",
        trunk("carrier", carrier_port, ""),
        trunk("target", target.port, ""),
        rtp.0,
        rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", plan)]);
    let browser = browser_ready(&server, scenario);
    let mp = media_port();
    let capture = Capture::start(rtp, mp);
    let (sipp, work) = carrier_calls(&server, carrier_port, mp, "+15550001001", seconds);
    let output = browser.wait_with_output().unwrap();
    assert!(output.status.success(), "the browser scenario failed");
    wait(sipp, work.path(), "carrier calling the DID");
    let target_side = target.finish("transfer target");
    let payloads = capture.finish();
    let echoed = frames_with_tone(&payloads, 1000.0);
    eprintln!(
        "{scenario}: {echoed} of {} frames at the caller carry its own tone back",
        payloads.len()
    );
    (server, target_side, echoed)
}

/// Blind transfer by the called party: a carrier calls a DID, SIP.js
/// answers and transfers the caller to a number on another carrier (REFER
/// on its own dialog with us). The NOTIFY says 200, the browser's leg is
/// hung up, and the caller then hears its tone echoed by the transfer
/// target; the target gets one INVITE; everything ends when the caller
/// hangs up.
#[test]
fn the_called_browser_transfers_the_caller_blind() {
    let Some(_serial) = browser_test() else {
        return;
    };
    let (server, target_side, echoed) =
        carrier_calls_a_browser_that_transfers("answer-refer:sipjs:1000:+15559999999", 16);
    assert_eq!(
        target_side.matches("INVITE sip:+15559999999@").count(),
        1,
        "{target_side}"
    );
    assert!(
        echoed >= 100,
        "the caller heard the target's echo in {echoed} frames"
    );
    assert!(server.wait_log("transfer by the callee answered"));
    let records = cdrs(&server, 1);
    assert_transfers(&records[0], &[("blind", "callee")]);
    assert_nothing_left(&server);
}

/// Attended transfer by the called party (REFER with `Replaces` from the
/// callee, RFC 3891): a carrier calls a DID, SIP.js answers, holds it,
/// calls a number on an echoing carrier, then transfers the first caller
/// to that call's party. The NOTIFY says 200, the server ends the
/// browser's second call, and the caller hears its own tone echoed by the
/// second carrier, which keeps its one INVITE (its call moved between
/// rooms, nobody was re-INVITEd); everything ends when the caller hangs up.
#[test]
fn the_called_browser_makes_an_attended_transfer() {
    callee_attended_transfer("sipjs");
}

/// The same with JsSIP as the called browser.
#[test]
fn the_called_jssip_browser_makes_an_attended_transfer() {
    callee_attended_transfer("jssip");
}

fn callee_attended_transfer(stack: &str) {
    let Some(_serial) = browser_test() else {
        return;
    };
    let (server, target_side, echoed) = carrier_calls_a_browser_that_transfers(
        &format!("answer-attended:{stack}:1000:+15559999999"),
        25,
    );
    assert_eq!(
        target_side.matches("INVITE sip:").count(),
        1,
        "the target keeps its one call: {target_side}"
    );
    assert!(
        echoed >= 100,
        "the caller heard the target's echo in {echoed} frames"
    );
    assert!(server.wait_log("attended transfer by the callee: the two parties are connected"));
    // Two calls: the carrier's (its callee now the target's party) and the
    // browser's second call (replaced).
    let records = cdrs(&server, 2);
    let inbound = records
        .iter()
        .find(|r| r["callee"] == "+15550001001")
        .expect("the carrier's call has a CDR");
    // Its callee leg is the target's (PCMU from the trunk), not the browser's Opus.
    assert_eq!(inbound["legs"][1]["codec"], "PCMU", "{inbound}");
    assert_transfers(inbound, &[("attended", "callee")]);
    assert!(
        records
            .iter()
            .any(|r| r["end_reason"] == "replaced (attended transfer)"),
        "{records:?}"
    );
    assert_nothing_left(&server);
}

/// RFC 3262 towards a trunk: our INVITE says `Supported: 100rel`; the
/// carrier's reliable 183 (with SDP) and 180 are each PRACKed once with
/// the right RAck, a late copy of the 183 is not PRACKed again (the
/// carrier's scenario fails on a third PRACK), and the call goes on.
#[test]
fn reliable_provisionals_from_the_trunk_are_pracked_once() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_100rel.xml", &[]);
    let setup = start(&trunk("reliable", carrier.port, ""), &["reliable"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier with reliable provisionals");
    assert_eq!(
        trunk_side.matches("PRACK sip:carrier@").count(),
        2,
        "{trunk_side}"
    );
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["status"], 200);
    assert_nothing_left(&setup.server);
}

#[test]
fn a_trunk_that_never_answers_is_skipped_after_its_response_timeout() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // Nothing listens on the first trunk's port.
    let dead = free_port();
    let up = Carrier::start("trunk_uas.xml", &[]);
    let trunks = format!(
        "{}{}",
        trunk("dead", dead, "    response_timeout: 1\n"),
        trunk("alive", up.port, "")
    );
    let setup = start(&trunks, &["dead", "alive"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 2);
    wait(child, work.path(), "caller");
    up.finish("answering carrier");
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["trunk"], "alive");
    assert_eq!(records[0]["status"], 200);
    assert_nothing_left(&setup.server);
}

#[test]
fn the_callers_cancel_reaches_the_trunk() {
    let carrier = Carrier::start("trunk_uas_ring.xml", &[]);
    let setup = start(&trunk("ringing", carrier.port, ""), &["ringing"]);
    let (child, work) = call(&setup, "b2bua_cancel.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller cancelling");
    carrier.finish("ringing carrier");
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["end_reason"], "caller cancelled");
    assert_nothing_left(&setup.server);
}

#[test]
fn the_callers_cancel_reaches_a_trunk_that_only_said_trying() {
    // Once a CANCEL waited for a 180/183 that never came, and the call's
    // task spun on a core meanwhile.
    let carrier = Carrier::start("trunk_uas_trying.xml", &[]);
    let setup = start(&trunk("trying", carrier.port, ""), &["trying"]);
    let (child, work) = call(
        &setup,
        "b2bua_cancel_early.xml",
        "+15551234567",
        media_port(),
        1,
    );
    wait(child, work.path(), "caller cancelling before ringing");
    carrier.finish("carrier that only said trying");
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["end_reason"], "caller cancelled");
    assert_nothing_left(&setup.server);
}

#[test]
fn the_trunk_hanging_up_ends_the_callers_leg() {
    let carrier = Carrier::start("trunk_uas_hangup.xml", &[]);
    let setup = start(&trunk("hangs-up", carrier.port, ""), &["hangs-up"]);
    // b2bua_timeout.xml answers our BYE; it sends no RTP.
    let (child, work) = call(&setup, "b2bua_timeout.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller receiving BYE");
    carrier.finish("carrier hanging up");
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["end_reason"], "callee hung up");
    assert_nothing_left(&setup.server);
    assert_answered_invites_ended(&setup.server);
}

#[test]
fn digest_challenges_from_the_trunk_are_answered() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_auth.xml", &[]);
    let extra = "    auth: { username: trunkuser, password: trunkpass }\n";
    let setup = start(&trunk("secured", carrier.port, extra), &["secured"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    let caller = std::panic::catch_unwind(|| wait(child, work.path(), "caller"));
    if caller.is_err() {
        std::thread::sleep(Duration::from_secs(1));
        let _ = Command::new("kill")
            .arg(carrier.child.id().to_string())
            .status();
        std::thread::sleep(Duration::from_secs(1));
        panic!(
            "carrier saw:\n{}\nserver:\n{}",
            messages(carrier.work.path()),
            setup.server.log_text()
        );
    }
    let trunk_side = carrier.finish("carrier checking credentials");
    assert!(
        trunk_side.contains("\nAuthorization: Digest username=\"trunkuser\""),
        "{trunk_side}"
    );
    assert_eq!(cdrs(&setup.server, 1)[0]["status"], 200);
    assert_nothing_left(&setup.server);
}

#[test]
fn an_invite_from_an_unknown_address_is_not_routed() {
    let carrier_port = free_port();
    let setup = start(&trunk("carrier", carrier_port, ""), &["carrier"]);
    // From a port that is not the trunk's: challenged like any caller.
    let invite = format!(
        "INVITE sip:+15551234567@{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-x1\r\nMax-Forwards: 70\r\nFrom: <sip:+15557654321@198.51.100.1>;tag=a\r\nTo: <sip:+15551234567@{0}>\r\nCall-ID: relay-1\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:9>\r\nContent-Length: 0\r\n\r\n",
        setup.server.addr("udp")
    );
    let reply =
        common::udp_exchange(setup.server.addr("udp"), invite.as_bytes()).expect("an answer");
    assert!(
        reply.starts_with("SIP/2.0 403") || reply.starts_with("SIP/2.0 407"),
        "{reply}"
    );
    assert_eq!(setup.server.metric("switchboard_b2bua_calls"), 0);
}

#[test]
fn a_blind_transfer_moves_the_trunk_party_to_the_transfer_target() {
    let first = Carrier::start("trunk_uas.xml", &[]);
    let target = Carrier::start("trunk_uas_hangup.xml", &[]);
    let rtp = port_window(40);
    let plan = "rules:\n  - name: first\n    match:\n      to: '+15551234567'\n    action:\n      trunk: { trunks: [first] }\n  - name: target\n    match:\n      to: '+15559999999'\n    action:\n      trunk: { trunks: [target] }\n";
    let config = format!(
        "{}{USERS}trunks:\n{}{}dialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n",
        common::ALL_LOOPBACK,
        trunk("first", first.port, ""),
        trunk("target", target.port, ""),
        rtp.0,
        rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", plan)]);
    let setup = Setup { server, rtp };
    let (child, work) = call_with(
        &setup,
        "b2bua_refer.xml",
        "+15551234567",
        media_port(),
        1,
        &["-key", "target", "+15559999999"],
    );
    let transferor = std::panic::catch_unwind(|| wait(child, work.path(), "transferor"));
    if let Err(e) = transferor {
        eprintln!("{}", setup.server.log_text());
        std::panic::resume_unwind(e);
    }
    let target_side = target.finish("transfer target");
    first.finish("transferred party's carrier");
    assert!(
        target_side.contains("INVITE sip:+15559999999@"),
        "{target_side}"
    );
    let records = cdrs(&setup.server, 1);
    assert!(
        records[0]["end_reason"]
            .as_str()
            .unwrap()
            .contains("after transfer"),
        "{}",
        records[0]
    );
    assert_transfers(&records[0], &[("blind", "caller")]);
    assert_nothing_left(&setup.server);
}

/// A trunk over TCP: the INVITE, ACK and BYE reach SIPp on one TCP
/// connection (Via SIP/2.0/TCP, Contact with transport=tcp), the caller
/// hears its tone back through the carrier's RTP echo.
#[test]
fn a_call_over_a_tcp_trunk() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let carrier = Carrier::start("trunk_uas.xml", &["-t", "t1"]);
    let setup = start(
        &trunk("tcp", carrier.port, "    transport: tcp\n"),
        &["tcp"],
    );
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", mp, 3);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier over TCP");
    let invite = first_request(&trunk_side, "INVITE");
    assert!(invite.contains("Via: SIP/2.0/TCP "), "{invite}");
    assert!(invite.contains("transport=tcp"), "{invite}");
    assert!(trunk_side.contains("TCP message received"), "{trunk_side}");
    let heard = frames_with_tone(&capture.finish(), 1000.0);
    assert!(heard >= 50, "the caller heard its tone in {heard} frames");
    assert_nothing_left(&setup.server);
}

/// A trunk over TLS, verified against a CA file. Debian's SIPp has no TLS,
/// so the far end is a second Switchboard: it knows the first as a trunk
/// (`inbound: 127.0.0.1/32`) and its dialplan sends that trunk's calls to
/// its echo test. The caller hears its tone back through both gateways;
/// the far end logs the call as coming over TLS; nothing is left on either.
#[test]
fn a_call_over_a_tls_trunk_verified_with_a_ca_file() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let far_rtp = port_window(40);
    let far_plan = "rules:\n  - name: from-sb1\n    match:\n      source: ['trunk:sb1']\n    action:\n      echo: {}\n";
    let far_config = format!(
        "{}trunks:\n  - name: sb1\n    host: 127.0.0.1\n    inbound: ['127.0.0.1/32']\ndialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n",
        common::ALL_LOOPBACK,
        far_rtp.0,
        far_rtp.1
    );
    let far = Server::start_with_files(&far_config, &[("plan.yaml", far_plan)]);
    let tls = format!(
        "    transport: tls\n    tls: {{ ca_file: '{}' }}\n",
        far.cert_path().display()
    );
    let setup = start(&trunk("far", far.addr("tls").port(), &tls), &["far"]);
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", mp, 3);
    let caller = std::panic::catch_unwind(|| wait(child, work.path(), "caller"));
    if let Err(e) = caller {
        eprintln!(
            "--- near\n{}\n--- far\n{}",
            setup.server.log_text(),
            far.log_text()
        );
        std::panic::resume_unwind(e);
    }
    let heard = frames_with_tone(&capture.finish(), 1000.0);
    assert!(heard >= 50, "the caller heard its tone in {heard} frames");
    // The far end saw one TLS connection and the call's INVITE on it.
    let far_log = far.log_text();
    assert!(
        far_log
            .lines()
            .any(|l| l.contains("connection open") && l.contains("\"transport\":\"tls\"")),
        "{far_log}"
    );
    assert!(
        far_log.contains("dialplan decision (from trunk)"),
        "{far_log}"
    );
    assert_nothing_left(&setup.server);
    assert_nothing_left(&far);
}

/// RFC 3311: the carrier holds and resumes with UPDATE (not re-INVITE):
/// a=sendonly gets a=recvonly, a=sendrecv gets a=sendrecv; the call goes on
/// and ends with the caller's BYE.
#[test]
fn the_trunk_holds_and_resumes_with_update() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_update.xml", &[]);
    let setup = start(&trunk("carrier", carrier.port, ""), &["carrier"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 3);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier holding with UPDATE");
    // Three UPDATE transactions, the first without SDP (a session refresh;
    // it once got 488). SIPp retransmits one whose 200 is late on a loaded
    // machine, so count CSeqs, not messages.
    let updates: std::collections::BTreeSet<&str> = trunk_side
        .lines()
        .filter(|l| l.starts_with("CSeq:") && l.trim_end().ends_with(" UPDATE"))
        .collect();
    assert_eq!(updates.len(), 3, "{trunk_side}");
    assert_nothing_left(&setup.server);
}

/// RFC 4028 §6: a trunk that answers 422 Session Interval Too Small with
/// Min-SE gets the INVITE again (same dialog, next CSeq) with that
/// interval, and the call goes through.
#[test]
fn a_422_is_answered_with_the_interval_the_trunk_asks_for() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_422.xml", &[]);
    let setup = start(
        &trunk("strict", carrier.port, "    session_expires: 900\n"),
        &["strict"],
    );
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier with Min-SE 1800");
    let second = trunk_side
        .split("CSeq: 2 INVITE")
        .next()
        .unwrap_or_default();
    assert!(trunk_side.contains("CSeq: 2 INVITE"), "{trunk_side}");
    assert!(
        second.contains("Session-Expires: 900;refresher=uac"),
        "{trunk_side}"
    );
    assert_nothing_left(&setup.server);
}

/// RFC 3261 §14.1 glare on the trunk leg: our session refresh gets 491
/// and is retried 2.1 to 4 s later; the carrier's own re-INVITE, sent while
/// that retry is pending, gets 491. The call goes on and ends cleanly.
#[test]
fn reinvite_glare_is_resolved_with_491_and_a_retry() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_glare.xml", &[]);
    let setup = start(&trunk("glare", carrier.port, ""), &["glare"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 10);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier with glare");
    // The scenario itself requires the retry (within 5 s) and our 491;
    // its log holds both 491s: the one it sent and the one it got.
    assert!(
        trunk_side.matches("SIP/2.0 491 ").count() >= 2,
        "{trunk_side}"
    );
    assert_nothing_left(&setup.server);
}

#[test]
fn the_session_is_refreshed_when_the_trunk_asks_for_session_timers() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_timer.xml", &[]);
    let setup = start(&trunk("timed", carrier.port, ""), &["timed"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 4);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier with session timers");
    let first = first_request(&trunk_side, "INVITE");
    assert!(
        first.contains("Session-Expires: 1800;refresher=uac"),
        "{first}"
    );
    assert_eq!(
        trunk_side.matches("\nINVITE sip:").count(),
        2,
        "one refresh expected"
    );
    assert_nothing_left(&setup.server);
}

#[test]
fn a_session_refresh_reoffers_what_was_last_answered() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // The carrier moves the call to PCMA by re-INVITE; our refresh must
    // re-offer PCMA only, in the same session (o= id), two versions up
    // from the offer (settled on the answered codec, then the answer to
    // the carrier's re-INVITE).
    let carrier = Carrier::start("trunk_uas_timer_reoffer.xml", &[]);
    let setup = start(
        &trunk("timed", carrier.port, "").replace("[PCMU]", "[PCMU, PCMA]"),
        &["timed"],
    );
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 6);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier moving the codec, with session timers");
    let origins: Vec<Vec<String>> = sip_messages(&trunk_side)
        .into_iter()
        .filter(|m| m.starts_with("INVITE ") && !m.contains("o=carrier"))
        .map(|m| {
            let o = m.lines().find(|l| l.starts_with("o=")).unwrap_or_default();
            o.split_whitespace().map(str::to_owned).collect()
        })
        .collect();
    let [first, refresh] = origins.as_slice() else {
        panic!("the INVITE and one refresh expected: {origins:?}\n{trunk_side}");
    };
    assert_eq!(
        first[1], refresh[1],
        "same session id: {first:?} {refresh:?}"
    );
    let (v0, v1): (u64, u64) = (first[2].parse().unwrap(), refresh[2].parse().unwrap());
    assert_eq!(v1, v0 + 2, "{first:?} {refresh:?}");
    assert_nothing_left(&setup.server);
}

#[test]
fn the_answer_to_our_session_refresh_can_move_the_trunks_media() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    // The carrier's answer to our refresh re-INVITE (3 s in) names another
    // port: the caller's tone must reach it there.
    let moved = free_port();
    let carrier = Carrier::start(
        "trunk_uas_timer_move.xml",
        &["-key", "moved_port", &moved.to_string()],
    );
    let setup = start(
        &trunk("moving", carrier.port, "").replace("[PCMU]", "[PCMA]"),
        &["moving"],
    );
    let at_new_port = Capture::start(setup.rtp, moved);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 4);
    wait(child, work.path(), "caller");
    carrier.finish("carrier moving its media in a refresh answer");
    let sent = at_new_port.finish();
    let toned = frames_with_tone(&sent, 1000.0);
    eprintln!(
        "after the refresh: {toned} of {} PCMA frames at the new port carry the caller's tone",
        sent.len()
    );
    assert!(toned >= 30, "{toned} frames of the caller at the new port");
    assert_nothing_left(&setup.server);
}

#[test]
fn an_absurd_session_interval_from_the_trunk_does_not_break_the_call() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // u64::MAX seconds once overflowed the timer's deadline: the call's task
    // died, the caller never got its 200 and nothing was cleaned up.
    let carrier = Carrier::start("trunk_uas_huge_timer.xml", &[]);
    let setup = start(&trunk("huge", carrier.port, ""), &["huge"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier with a huge session interval");
    assert!(trunk_side.contains("\nBYE sip:"), "{trunk_side}");
    assert_eq!(trunk_side.matches("\nINVITE sip:").count(), 1);
    assert_nothing_left(&setup.server);
}

#[test]
fn the_trunks_own_session_refresh_is_answered_with_the_timer() {
    carrier_answers_a_call(
        "trunk_uas_timer_uas.xml",
        "refresher",
        3,
        "carrier refreshing the session",
    );
}

#[test]
fn the_2xx_settles_the_route_set_even_when_it_has_no_record_route() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let carrier = Carrier::start("trunk_uas_rr_early.xml", &[]);
    let setup = start(&trunk("routed", carrier.port, ""), &["routed"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    let trunk_side = carrier.finish("carrier with an early Record-Route");
    let bye = first_request(&trunk_side, "BYE");
    assert!(!bye.contains("ringback"), "{bye}");
    assert_nothing_left(&setup.server);
}

#[test]
fn hold_resume_and_info_dtmf_on_a_trunk_call() {
    // The caller holds and resumes (answered by its own leg; the trunk leg
    // is untouched) and sends DTMF by INFO; the trunk wants INFO too.
    let carrier = Carrier::start("trunk_uas_info.xml", &[]);
    let setup = start(&trunk("info", carrier.port, "    dtmf: info\n"), &["info"]);
    let (child, work) = call(&setup, "b2bua_hold.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller holding and sending DTMF");
    let trunk_side = carrier.finish("carrier receiving INFO");
    assert!(trunk_side.contains("Signal=5"), "{trunk_side}");
    assert_eq!(
        trunk_side.matches("\nINVITE sip:").count(),
        1,
        "hold stays on the caller's leg"
    );
    assert_nothing_left(&setup.server);
}

#[test]
fn early_media_from_the_trunk_reaches_the_caller_before_the_answer() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    // The carrier plays a 600 Hz announcement in its 183 and answers 2 s later.
    let carrier = Carrier::start_with_pcap("trunk_uas_early.xml", &[], Some(600.0));
    let setup = start(&trunk("early", carrier.port, ""), &["early"]);
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", mp, 1);
    wait(child, work.path(), "caller");
    carrier.finish("carrier with early media");
    let caller_side = messages(work.path());
    assert!(caller_side.contains("SIP/2.0 183"), "{caller_side}");
    let payloads = capture.finish();
    let announced = frames_with_tone(&payloads, 600.0);
    eprintln!(
        "early media: {announced} of {} frames at the caller carry the 600 Hz announcement",
        payloads.len()
    );
    if announced < 50 && std::env::var("DEBUG_LOG").is_ok() {
        eprintln!("{}\n{}", setup.server.log_text(), setup.server.metrics());
    }
    assert!(
        announced >= 50,
        "heard the announcement in {announced} frames"
    );
    assert_nothing_left(&setup.server);
}

#[test]
fn a_2xx_answering_another_codec_than_the_183_switches_the_trunk_leg() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    // The carrier answers PCMU in its 183, PCMA in its 200, then plays a
    // 600 Hz PCMA tone.
    let carrier = Carrier::start_playing(
        "trunk_uas_codec_change.xml",
        &[],
        &[("answer.pcap", 600.0, 8)],
    );
    let setup = start(
        &trunk("switching", carrier.port, "").replace("[PCMU]", "[PCMU, PCMA]"),
        &["switching"],
    );
    let mp = media_port();
    let to_caller = Capture::start(setup.rtp, mp);
    let to_carrier = Capture::start(setup.rtp, carrier.media);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", mp, 3);
    wait(child, work.path(), "caller");
    carrier.finish("carrier switching codec");
    // What reaches the carrier after the 200 is PCMA with the caller's tone.
    let sent = to_carrier.finish();
    let caller_tone = frames_with_tone(&sent, 1000.0);
    // The carrier's PCMA tone reaches the caller.
    let heard = to_caller.finish();
    let carrier_tone = frames_with_tone(&heard, 600.0);
    eprintln!(
        "after the switch: {caller_tone} of {} PCMA frames to the carrier carry the caller's tone, {carrier_tone} of {} to the caller carry the carrier's",
        sent.len(),
        heard.len()
    );
    if (caller_tone < 50 || carrier_tone < 50) && std::env::var("DEBUG_LOG").is_ok() {
        eprintln!("{}", setup.server.log_text());
    }
    assert!(
        caller_tone >= 50,
        "the carrier heard the caller in {caller_tone} PCMA frames"
    );
    assert!(
        carrier_tone >= 50,
        "the caller heard the carrier in {carrier_tone} frames"
    );
    assert_nothing_left(&setup.server);
}

/// The SIP messages of a -trace_msg log, in order (start line first).
fn sip_messages(log: &str) -> Vec<&str> {
    log.split("\n-----")
        .filter_map(|chunk| chunk.split_once("\n\n").map(|(_, m)| m.trim()))
        .filter(|m| {
            m.lines()
                .next()
                .is_some_and(|l| l.starts_with("SIP/2.0 ") || l.trim_end().ends_with(" SIP/2.0"))
        })
        .collect()
}

/// The value of the first `name` header of a message.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn a_caller_that_supports_100rel_gets_the_early_answer_reliably() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    // 183 with SDP from the carrier (a 600 Hz announcement), 200 at 2 s.
    let carrier = Carrier::start_with_pcap("trunk_uas_early.xml", &[], Some(600.0));
    let setup = start(&trunk("early", carrier.port, ""), &["early"]);
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    // The caller says Supported: 100rel and PRACKs only the fourth copy of
    // the 183 (3.5 s), after the carrier answered.
    let (child, work) = call(&setup, "b2bua_call_100rel.xml", "+15551234567", mp, 1);
    wait(child, work.path(), "caller with 100rel");
    carrier.finish("carrier with early media");
    let log = messages(work.path());
    let sip = sip_messages(&log);
    let progress: Vec<&str> = sip
        .iter()
        .copied()
        .filter(|m| m.starts_with("SIP/2.0 183"))
        .collect();
    assert_eq!(progress.len(), 4, "the 183 and 3 retransmissions:\n{log}");
    let rseq: u32 = header(progress[0], "RSeq")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no RSeq:\n{}", progress[0]));
    assert!((1..1 << 31).contains(&rseq), "{rseq}");
    for m in &progress {
        assert_eq!(header(m, "Require"), Some("100rel"), "{m}");
        assert_eq!(header(m, "RSeq"), Some(rseq.to_string().as_str()), "{m}");
        assert!(m.contains("m=audio "), "our answer in the 183:\n{m}");
    }
    let position = |what: &str, pred: &dyn Fn(&str) -> bool| {
        sip.iter()
            .position(|m| pred(m))
            .unwrap_or_else(|| panic!("no {what}:\n{log}"))
    };
    let prack = position("PRACK", &|m| m.starts_with("PRACK "));
    assert_eq!(
        header(sip[prack], "RAck"),
        Some(format!("{rseq} 2 INVITE").as_str())
    );
    let prack_ok = position("200 for the PRACK", &|m| {
        m.starts_with("SIP/2.0 200") && header(m, "CSeq") == Some("3 PRACK")
    });
    let answer = position("200 for the INVITE", &|m| {
        m.starts_with("SIP/2.0 200") && header(m, "CSeq") == Some("2 INVITE")
    });
    assert!(
        prack < prack_ok && prack_ok < answer,
        "the 2xx waited for the PRACK:\n{log}"
    );
    let ok = sip[answer];
    // The answer went reliably in the 183: the 200 carries no second one.
    assert_eq!(header(ok, "Content-Length"), Some("0"), "{ok}");
    assert!(
        header(ok, "Allow").is_some_and(|a| a.contains("PRACK")),
        "{ok}"
    );
    let payloads = capture.finish();
    let announced = frames_with_tone(&payloads, 600.0);
    eprintln!(
        "early media with 100rel: {announced} of {} frames carry the announcement",
        payloads.len()
    );
    assert!(
        announced >= 50,
        "heard the announcement in {announced} frames"
    );
    let cdr = &cdrs(&setup.server, 1)[0];
    assert_eq!(cdr["status"], 200, "{cdr}");
    assert!(cdr["answer"].is_number(), "{cdr}");
    assert_nothing_left(&setup.server);
}

#[test]
fn a_trunk_found_down_by_probing_is_skipped_at_once() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // The first trunk answers nothing, not even OPTIONS: probing marks it
    // down, and calls go straight to the second one (no response timeout).
    let dead = free_port();
    let up = Carrier::start("trunk_uas.xml", &[]);
    let trunks = format!(
        "{}{}",
        trunk(
            "dead",
            dead,
            "    options_interval: 1\n    response_timeout: 30\n"
        ),
        trunk("alive", up.port, "")
    );
    let setup = start(&trunks, &["dead", "alive"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !setup.server.log_text().contains("trunk down") {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead trunk was never marked down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = std::time::Instant::now();
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 1);
    wait(child, work.path(), "caller");
    up.finish("answering carrier");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the down trunk was tried ({:?})",
        started.elapsed()
    );
    let records = cdrs(&setup.server, 1);
    assert_eq!(records[0]["trunk"], "alive");
    assert_nothing_left(&setup.server);
}

#[test]
fn a_trunk_at_its_call_limit_is_skipped() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // `limited` takes one call at a time; a second call at the same time
    // goes to `busy` (which refuses it with 486).
    let limited = Carrier::start("trunk_uas.xml", &[]);
    let busy = Carrier::start("trunk_uas_486.xml", &[]);
    let trunks = format!(
        "{}{}",
        trunk("limited", limited.port, "    max_calls: 1\n"),
        trunk("busy", busy.port, "")
    );
    let setup = start(&trunks, &["limited", "busy"]);
    let (first, first_work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), 4);
    std::thread::sleep(Duration::from_secs(1));
    let (second, second_work) = call(
        &setup,
        "b2bua_call_busy.xml",
        "+15551234567",
        media_port(),
        1,
    );
    wait(second, second_work.path(), "second caller");
    wait(first, first_work.path(), "first caller");
    limited.finish("limited carrier");
    let refused = busy.finish("busy carrier");
    assert!(refused.contains("INVITE sip:+15551234567@"), "{refused}");
    let records = cdrs(&setup.server, 2);
    let trunks_used: Vec<&str> = records
        .iter()
        .map(|r| r["trunk"].as_str().unwrap())
        .collect();
    assert!(
        trunks_used.contains(&"busy") && trunks_used.contains(&"limited"),
        "{trunks_used:?}"
    );
    assert_nothing_left(&setup.server);
}

#[test]
fn a_call_from_one_trunk_to_another_is_bridged() {
    transit("trunk_uac.xml");
}

#[test]
fn a_delayed_offer_from_a_trunk_is_bridged_to_another() {
    transit("trunk_uac_delayed_offer.xml");
}

#[test]
fn a_delayed_offer_from_a_trunk_reaches_the_echo_test() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    // The carrier's INVITE has no SDP: our offer is in the 200, its PCMA
    // answer in the ACK; the echo test sends its tone back.
    let carrier_port = free_port();
    let Setup { server, rtp } = start_plan(
        &trunk("carrier", carrier_port, "    inbound: ['127.0.0.1/32']\n"),
        DID_ECHO_PLAN,
    );
    let mp = media_port();
    let capture = Capture::start(rtp, mp);
    let (sipp, work) = carrier_calls_with(
        "trunk_uac_delayed_offer.xml",
        &server,
        carrier_port,
        mp,
        "+15550001001",
        3,
    );
    wait(sipp, work.path(), "carrier with a delayed offer");
    let payloads = capture.finish();
    let toned = frames_with_tone(&payloads, 1000.0);
    eprintln!(
        "delayed offer: {toned} of {} PCMA frames back at the carrier carry its tone",
        payloads.len()
    );
    assert!(toned >= 75, "the carrier heard itself in {toned} frames");
    assert_nothing_left(&server);
}

#[test]
fn an_invite_requiring_an_unsupported_extension_gets_420() {
    // The carrier requires preconditions (RFC 3312): 420 naming them, no
    // call (it was once answered as if nothing were required).
    let Setup { server, .. } = start_plan(
        &trunk("carrier", free_port(), "    inbound: ['127.0.0.1/32']\n"),
        DID_ECHO_PLAN,
    );
    let out = sipp(
        &scenario("trunk_uac_require.xml"),
        "u1",
        server.addr("udp"),
        &["-s", "+15550001001"],
    );
    assert!(
        out.status.success(),
        "no 420 with Unsupported: precondition\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.metric("switchboard_b2bua_calls"), 0);
    assert_nothing_left(&server);
}

#[test]
fn the_trunk_moving_its_contact_gets_our_bye_there() {
    // The called carrier re-INVITEs with a new Contact; the caller hangs
    // up; the carrier checks that our BYE's Request-URI is the new one.
    carrier_answers_a_call(
        "trunk_uas_target_refresh.xml",
        "moving",
        2,
        "carrier refreshing its target",
    );
}

#[test]
fn a_trunks_200_sent_again_gets_our_ack_again() {
    // The carrier sends its 200 again after our ACK, as if the ACK was
    // lost: it must be ACKed again (the transaction layer has ended the
    // INVITE at its 2xx; the SIP core keeps the ACK for this).
    carrier_answers_a_call(
        "trunk_uas_lost_ack.xml",
        "carrier",
        2,
        "carrier sending its 200 again",
    );
}

#[test]
fn a_forked_call_keeps_the_answering_dialog_and_hangs_up_a_second_answer() {
    // The carrier's 180 comes from fork A, its 200 from fork B, then a
    // second 200 from fork C: C is ACKed and hung up at once, the call's
    // BYE goes to B (the scenario checks tags and Request-URIs).
    carrier_answers_a_call(
        "trunk_uas_fork.xml",
        "forking",
        2,
        "carrier behind a forking proxy",
    );
}

#[test]
fn a_second_fork_on_another_node_is_acked_and_hung_up_there() {
    // As above, but fork C's Contact names another node: C's ACK and BYE
    // go there, in C's dialog; the call's BYE still goes to B.
    carrier_answers_for_another_node(
        (
            "trunk_uas_fork_other_node.xml",
            "carrier behind a forking proxy",
        ),
        ("trunk_fork_node_c.xml", "node of fork C"),
        2,
    );
}

/// A call to a carrier whose answer names another node: `node_a` (scenario,
/// what it is) gets the INVITE, `node_b` waits on the port given to it as
/// `-key other_port`; the caller hangs up after `secs`.
fn carrier_answers_for_another_node(node_a: (&str, &str), node_b: (&str, &str), secs: u32) {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    let other = Carrier::start(node_b.0, &[]);
    let carrier = Carrier::start(node_a.0, &["-key", "other_port", &other.port.to_string()]);
    let setup = start(&trunk("carrier", carrier.port, ""), &["carrier"]);
    let (child, work) = call(&setup, "b2bua_call.xml", "+15551234567", media_port(), secs);
    wait(child, work.path(), "caller");
    other.finish(node_b.1);
    carrier.finish(node_a.1);
    assert_nothing_left(&setup.server);
}

#[test]
fn the_calling_trunk_moving_its_contact_gets_our_bye_there() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // Carrier A (bare Contact, then a re-INVITE with a new one) calls
    // through to carrier B, which hangs up after a second: our BYE to A
    // must go to A's new Contact.
    let out = Carrier::start("trunk_uas_hangup.xml", &[]);
    let in_port = free_port();
    let Setup { server, .. } = start_transit(in_port, out.port);
    let (sipp, work) = carrier_calls_with(
        "trunk_uac_target_refresh.xml",
        &server,
        in_port,
        media_port(),
        "+15551234567",
        3,
    );
    wait(sipp, work.path(), "carrier A refreshing its target");
    out.finish("carrier B");
    assert_nothing_left(&server);
}

#[test]
fn a_withheld_number_stays_withheld_trunk_to_trunk_and_is_asserted() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio needs root");
        return;
    }
    // Carrier A withholds its number (From anonymous, Privacy: id, the
    // number in P-Asserted-Identity); carrier B, a trusted network too,
    // must get the same: anonymous From, Privacy: id and the number
    // asserted (it once got From anonymous and nothing else, or the
    // number asserted without Privacy).
    let out = Carrier::start("trunk_uas.xml", &[]);
    let in_port = free_port();
    let Setup { server, .. } = start_transit(in_port, out.port);
    let (sipp, work) = carrier_calls_with(
        "trunk_uac_private.xml",
        &server,
        in_port,
        media_port(),
        "+15551234567",
        1,
    );
    wait(sipp, work.path(), "carrier A withholding its number");
    let trunk_side = out.finish("carrier B");
    let invite = first_request(&trunk_side, "INVITE");
    let from = header(invite, "From").unwrap_or_default();
    assert!(from.contains("anonymous"), "{invite}");
    assert!(!from.contains("5557654321"), "{invite}");
    assert_eq!(header(invite, "Privacy"), Some("id"), "{invite}");
    let asserted = header(invite, "P-Asserted-Identity").unwrap_or_default();
    assert!(asserted.contains("5557654321"), "{invite}");
    // The CDR keeps both: the caller as presented and the asserted number.
    let record = &cdrs(&server, 1)[0];
    assert_eq!(record["caller"], "anonymous", "{record}");
    assert_eq!(record["caller_asserted"], "+15557654321", "{record}");
    assert_eq!(record["caller_private"], true, "{record}");
    assert_nothing_left(&server);
}

/// Carrier A (`scenario_name`) calls +15551234567; the dialplan sends
/// calls from trunks to carrier B, which echoes RTP: A hears its own tone
/// back, relayed (PCMU and PCMA on the legs: transcoded through the room).
fn transit(scenario_name: &str) {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let out = Carrier::start("trunk_uas.xml", &[]);
    let in_port = free_port();
    let Setup { server, rtp } = start_transit(in_port, out.port);
    let mp = media_port();
    let capture = Capture::start(rtp, mp);
    let (sipp, work) = carrier_calls_with(scenario_name, &server, in_port, mp, "+15551234567", 3);
    wait(sipp, work.path(), "carrier A");
    out.finish("carrier B");
    let payloads = capture.finish();
    let toned = frames_with_tone(&payloads, 1000.0);
    eprintln!(
        "transit: {toned} of {} frames back at carrier A carry its tone",
        payloads.len()
    );
    assert!(toned >= 75, "carrier A heard itself in {toned} frames");
    let records = cdrs(&server, 1);
    assert_eq!(records[0]["direction"], "transit");
    assert_eq!(records[0]["trunk"], "out");
    assert_eq!(records[0]["from_trunk"], "in");
    assert!(records[0].get("caller_private").is_none(), "{}", records[0]);
    assert_nothing_left(&server);
}

/// Session intervals down to 2 s (RFC 4028's 90 s would make slow tests).
const SHORT_SESSION_TIMERS: &str = "limits:\n  min_session_expires_secs: 2\n";

#[test]
fn a_carrier_that_stops_refreshing_its_session_is_hung_up() {
    // A DID the gateway answers itself (echo): 422 below Min-SE, then the
    // carrier refreshes once (UPDATE) and goes silent; our BYE ends it.
    let carrier_port = free_port();
    let Setup { server, .. } = start_plan_with(
        SHORT_SESSION_TIMERS,
        &trunk("carrier", carrier_port, "    inbound: ['127.0.0.1/32']\n"),
        DID_ECHO_PLAN,
    );
    let (sipp, work) = carrier_calls_with(
        "trunk_uac_session_timer.xml",
        &server,
        carrier_port,
        media_port(),
        "+15550001001",
        1,
    );
    wait(sipp, work.path(), "carrier refreshing, then silent");
    assert_nothing_left(&server);
}

#[test]
fn a_bridged_caller_that_stops_refreshing_is_hung_up_on_both_sides() {
    // The same carrier through the B2BUA to another trunk: the expired
    // session ends the call there too, and the CDR says why.
    let out = Carrier::start("trunk_uas.xml", &[]);
    let in_port = free_port();
    let trunks = trunk("in", in_port, "") + &trunk("out", out.port, "");
    let Setup { server, .. } = start_plan_with(SHORT_SESSION_TIMERS, &trunks, TRANSIT_PLAN);
    let (sipp, work) = carrier_calls_with(
        "trunk_uac_session_timer.xml",
        &server,
        in_port,
        media_port(),
        "+15551234567",
        1,
    );
    wait(sipp, work.path(), "carrier refreshing, then silent");
    out.finish("carrier B");
    let records = cdrs(&server, 1);
    assert_eq!(records[0]["end_reason"], "caller session expired");
    assert_nothing_left(&server);
}

#[test]
fn we_refresh_the_session_when_the_carrier_asks_us_to() {
    // refresher=uas with UPDATE allowed: an UPDATE every half interval.
    let carrier_port = free_port();
    let Setup { server, .. } = start_plan_with(
        SHORT_SESSION_TIMERS,
        &trunk("carrier", carrier_port, "    inbound: ['127.0.0.1/32']\n"),
        DID_ECHO_PLAN,
    );
    let (sipp, work) = carrier_calls_with(
        "trunk_uac_session_timer_uas.xml",
        &server,
        carrier_port,
        media_port(),
        "+15550001001",
        1,
    );
    wait(sipp, work.path(), "carrier asking us to refresh");
    assert_nothing_left(&server);
}

#[test]
fn behind_nat_peers_outside_our_networks_are_given_the_public_address() {
    // `server.advertised_address` with no local networks: even loopback
    // peers count as outside. Carrier A's call is bridged to carrier B; A
    // must see the public address in our 200's Contact, B in our INVITE's
    // Via and Contact (both once carried the address we send from, which
    // a carrier cannot reach behind 1:1 NAT).
    let out = Carrier::start("trunk_uas.xml", &[]);
    let in_port = free_port();
    let trunks = trunk("in", in_port, "") + &trunk("out", out.port, "");
    // Media bound to the wildcard: SDP follows the same choice.
    let Setup { server, .. } = start_plan_on(
        "server:\n  advertised_address: 192.0.2.10\n  local_networks: []\n",
        &trunks,
        TRANSIT_PLAN,
        "0.0.0.0",
    );
    let (sipp, work) = carrier_calls_with(
        "trunk_uac.xml",
        &server,
        in_port,
        media_port(),
        "+15551234567",
        1,
    );
    wait(sipp, work.path(), "carrier A");
    let caller_side = messages(work.path());
    let trunk_side = out.finish("carrier B");
    let answer = sip_messages(&caller_side)
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE"))
        .unwrap_or_default();
    let contact = header(answer, "Contact").unwrap_or_default();
    assert!(contact.contains("@192.0.2.10:"), "{answer}");
    let invite = first_request(&trunk_side, "INVITE");
    let via = header(invite, "Via").unwrap_or_default();
    assert!(via.contains(" 192.0.2.10:"), "{invite}");
    let contact = header(invite, "Contact").unwrap_or_default();
    assert!(contact.contains("@192.0.2.10:"), "{invite}");
    assert!(invite.contains("c=IN IP4 192.0.2.10"), "{invite}");
    assert!(answer.contains("c=IN IP4 192.0.2.10"), "{answer}");
    assert_nothing_left(&server);
}

#[test]
fn behind_nat_peers_in_our_networks_are_given_the_address_we_send_from() {
    // The same with the default local networks: loopback is one of them.
    let out = Carrier::start("trunk_uas.xml", &[]);
    let in_port = free_port();
    let trunks = trunk("in", in_port, "") + &trunk("out", out.port, "");
    let Setup { server, .. } = start_plan_on(
        "server:\n  advertised_address: 192.0.2.10\n",
        &trunks,
        TRANSIT_PLAN,
        "0.0.0.0",
    );
    let (sipp, work) = carrier_calls_with(
        "trunk_uac.xml",
        &server,
        in_port,
        media_port(),
        "+15551234567",
        1,
    );
    wait(sipp, work.path(), "carrier A");
    let trunk_side = out.finish("carrier B");
    assert!(!trunk_side.contains("192.0.2.10"), "{trunk_side}");
    assert!(!messages(work.path()).contains("192.0.2.10"));
    assert_nothing_left(&server);
}

#[test]
fn our_bye_goes_to_the_node_the_trunks_contact_names() {
    // The carrier's node A answers with a Contact naming node B (another
    // port): the caller hangs up and our BYE must reach B, not A.
    carrier_answers_for_another_node(
        ("trunk_uas_other_node.xml", "node A (the INVITE's address)"),
        ("trunk_other_node_bye.xml", "node B (the Contact)"),
        1,
    );
}
