//! Browsers calling out through a SIP trunk (issue 6), with real peers on
//! both sides: SIP.js 0.21 and JsSIP 3.13 in Chromium (interop-tests/browser)
//! dial `+15551234567`, which the dialplan routes to a trunk played by SIPp
//! (`trunk_uas.xml` with `-rtp_echo`). The browser hears its own tone back
//! through Opus -> room -> PCMU -> carrier -> PCMU -> room -> Opus, keeps
//! hearing it after hold and resume (re-INVITEs), and the DTMF it sends with
//! its stack's API reaches the carrier: as RFC 4733 telephone-events (captured
//! on `lo` at the carrier's media port, rescaled from the browser's 48 kHz
//! clock to 8 kHz) or, for a trunk with `dtmf: info`, as SIP INFO
//! (`application/dtmf-relay`). Every call leaves no call, room, leg or port.
//!
//! Needs root (the AF_PACKET capture; SIPp's media), node with the harness's
//! node_modules and Chromium: see interop-tests/browser/README.md.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::media::{
    RtpCapture, assert_nothing_left, dtmf_events, is_root, media_port, port_window, wait,
};
use common::{ALL_LOOPBACK, Server, free_port, repo, scenario};

/// A number the dialplan sends to the trunk.
const NUMBER: &str = "+15551234567";
/// Digits sent in the DTMF tests, tone and gap lengths (ms).
const DIGITS: &str = "1234#";
const TONE_MS: u32 = 200;
const GAP_MS: u32 = 100;

/// One browser scenario at a time: Chromium with audio already loads both cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The carrier, played by SIPp with RTP echo.
struct Carrier {
    child: Option<Child>,
    work: tempfile::TempDir,
    port: u16,
    media: u16,
    /// It plays a tone (no RTP echo).
    #[allow(dead_code)]
    tone: bool,
}

impl Carrier {
    fn start(name: &str) -> Carrier {
        Self::start_with(name, &["-rtp_echo"])
    }

    /// A carrier playing a PCMU tone of `freq` for `seconds` (tone.pcap,
    /// trunk_uas_tone.xml) and hanging up then.
    fn start_with_tone(freq: f32, seconds: u32) -> Carrier {
        let work = tempfile::tempdir().unwrap();
        common::media::write_tone_pcap_with(&work.path().join("tone.pcap"), freq, seconds, 0);
        let ms = (seconds * 1000).to_string();
        let mut carrier = Self::start_in(work, "trunk_uas_tone.xml", &["-d", &ms]);
        carrier.tone = true;
        carrier
    }

    /// A carrier with early.pcap in its working directory (a PCMU tone of
    /// `freq`, 5 s, for scenarios that play it, e.g.
    /// trunk_uas_early_long.xml) instead of echoing RTP.
    fn start_with_early(name: &str, freq: f32) -> Carrier {
        let work = tempfile::tempdir().unwrap();
        common::media::write_tone_pcap_with(&work.path().join("early.pcap"), freq, 5, 0);
        Self::start_in(work, name, &[])
    }

    fn start_with(name: &str, extra: &[&str]) -> Carrier {
        Self::start_in(tempfile::tempdir().unwrap(), name, extra)
    }

    fn start_in(work: tempfile::TempDir, name: &str, extra: &[&str]) -> Carrier {
        let port = free_port();
        let media = media_port();
        let child = Command::new("sipp")
            .args(["-sf", scenario(name).to_str().unwrap()])
            .args(["-t", "u1", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(extra)
            .args(["-m", "1", "-timeout", "60s", "-timeout_error"])
            .args(["-trace_msg", "-trace_err", "-nostdin"])
            .current_dir(work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("sipp-stderr.log")).unwrap())
            .spawn()
            .expect("run sipp (apt-get install sip-tester)");
        std::thread::sleep(Duration::from_millis(300));
        Carrier {
            child: Some(child),
            work,
            port,
            media,
            tone: false,
        }
    }

    /// Waits for the scenario to pass (the BYE came) and returns its SIP log.
    fn finish(mut self) -> String {
        wait(
            self.child.take().unwrap(),
            self.work.path(),
            "carrier (SIPp)",
        );
        messages(self.work.path())
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

struct Setup {
    server: Server,
    carrier: Carrier,
    rtp: (u16, u16),
}

/// Switchboard with the demo users (1001, 1002), a WSS listener, and a
/// dialplan sending `+1` + ten digits to a trunk played by SIPp running
/// `sipp_scenario`; `trunk_extra` is added to the trunk's YAML.
fn start(sipp_scenario: &str, trunk_extra: &str) -> Setup {
    start_carrier(Carrier::start(sipp_scenario), trunk_extra)
}

/// [`start`] with a carrier already running.
fn start_carrier(carrier: Carrier, trunk_extra: &str) -> Setup {
    let rtp = port_window(40);
    let plan = "rules:\n  - name: pstn\n    match:\n      to: { regex: '^\\+1[0-9]{10}$' }\n    action:\n      trunk: { trunks: [carrier] }\n";
    let config = format!(
        "{ALL_LOOPBACK}trunks:\n  - name: carrier\n    host: 127.0.0.1\n    port: {}\n    codecs: [PCMU]\n{trunk_extra}dialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n",
        carrier.port, rtp.0, rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", plan)]);
    Setup {
        server,
        carrier,
        rtp,
    }
}

/// Runs one run.mjs scenario as user 1001; returns its stdout.
fn browser(setup: &Setup, scenario: &str) -> String {
    let dir = repo().join("interop-tests").join("browser");
    let artifacts = setup.server.dir.path().join(format!(
        "artifacts-{}",
        scenario.replace([':', '#', '+'], "-")
    ));
    let output = Command::new("node")
        .arg(dir.join("run.mjs"))
        .args(["--wss", &format!("wss://{}", setup.server.addr("wss"))])
        .args(["--scenario", scenario, "--domain", "127.0.0.1"])
        .args(["--user1", "1001:demo-1001", "--user2", "1002:demo-1002"])
        .args(["--talk", "2", "--timeout", "50"])
        .args(["--dtmf-duration", &TONE_MS.to_string()])
        .args(["--dtmf-gap", &GAP_MS.to_string()])
        .arg("--artifacts")
        .arg(&artifacts)
        .current_dir(&dir)
        .output()
        .expect("run node (apt-get install nodejs npm; see interop-tests/run.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stdout.contains(&format!("PASS {scenario}")) {
        let log = setup.server.log_text();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "browser scenario {scenario} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- carrier (SIPp)\n{}\n--- server log (tail)\n{}",
            messages(setup.carrier.work.path()),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    stdout
}

/// Starts a browser test: `None` when it must be skipped, else the
/// [`SERIAL`] guard, taken before the test starts its SIPp carriers (they
/// would time out waiting for another test's browser).
fn browser_test() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !is_root() {
        eprintln!("skipped: SIPp's RTP and the AF_PACKET capture need root");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The browser hears itself through the echoing carrier (with `hold`: also
/// holds and resumes, and the carrier hears the hold tone meanwhile); the
/// call and its media are gone afterwards.
fn echo_through_trunk(stack: &str, hold: bool) {
    let Some(_serial) = browser_test() else {
        return;
    };
    let setup = start("trunk_uas.xml", "");
    let capture = RtpCapture::start(setup.rtp, setup.carrier.media);
    let kind = if hold { "echo-hold" } else { "echo" };
    browser(&setup, &format!("{kind}:{stack}:{NUMBER}"));
    let Setup {
        server,
        carrier,
        rtp: _,
    } = setup;
    let trunk_side = carrier.finish();
    let packets = capture.finish();
    assert!(
        trunk_side.contains(&format!("INVITE sip:{NUMBER}@127.0.0.1:")),
        "{trunk_side}"
    );
    let audio = packets.iter().filter(|p| p.payload_type == 0).count();
    eprintln!("{stack}: {audio} PCMU packets reached the carrier");
    assert!(audio > 50, "only {audio} PCMU packets reached the carrier");
    // While the browser holds, the carrier hears the hold tone (660 Hz).
    let hold_tone = common::media::pcmu_frames_with_tone(&packets, 660.0);
    eprintln!("{stack}: {hold_tone} packets of hold tone reached the carrier");
    if hold {
        assert!(hold_tone >= 10, "hold tone in {hold_tone} packets");
    } else {
        assert_eq!(hold_tone, 0, "hold tone without hold");
    }
    assert_nothing_left(&server);
}

#[test]
fn sipjs_hears_itself_through_an_echoing_trunk() {
    echo_through_trunk("sipjs", false);
}

#[test]
fn jssip_hears_itself_through_an_echoing_trunk() {
    echo_through_trunk("jssip", false);
}

#[test]
fn sipjs_holds_and_resumes_a_trunk_call() {
    echo_through_trunk("sipjs", true);
}

#[test]
fn jssip_holds_and_resumes_a_trunk_call() {
    echo_through_trunk("jssip", true);
}

/// The browser sends `DIGITS` (`via`: rfc4733 or info, the stack's way) to a
/// trunk with `dtmf: rfc4733`: the carrier receives each digit as one
/// RFC 4733 event on the telephone-event type it answered (101, 8 kHz), with
/// an end packet and a duration of about `TONE_MS` at 8000 Hz.
fn dtmf_as_rfc4733(stack: &str, via: &str) {
    let Some(_serial) = browser_test() else {
        return;
    };
    let setup = start("trunk_uas.xml", "");
    let capture = RtpCapture::start(setup.rtp, setup.carrier.media);
    let out = browser(&setup, &format!("dtmf:{stack}:{NUMBER}:{DIGITS}:{via}"));
    eprintln!("{out}");
    assert!(
        out.contains(&format!("DTMF SENT {DIGITS} {TONE_MS} {GAP_MS}")),
        "{out}"
    );
    let Setup {
        server, carrier, ..
    } = setup;
    carrier.finish();
    let packets = capture.finish();
    let events = dtmf_events(&packets, 101);
    eprintln!("{stack} ({via}) -> carrier: {events:?}");
    let digits: String = events.iter().map(|e| e.digit).collect();
    assert_eq!(digits, DIGITS, "digits at the carrier: {events:?}");
    let expected = TONE_MS * 8;
    for e in &events {
        assert!(e.ended, "no end packet for {e:?}");
        // Not asserted: e.marker (RFC 4733 SHOULD). Once in ~10 runs under load the
        // first packet captured for an event lacked it; to be investigated.
        let d = u32::from(e.duration);
        assert!(
            d * 10 >= expected * 8 && d * 10 <= expected * 13,
            "duration of {} is {d} units at 8 kHz, expected about {expected} ({TONE_MS} ms): {events:?}",
            e.digit
        );
    }
    let other: Vec<u8> = packets
        .iter()
        .map(|p| p.payload_type)
        .filter(|&pt| pt != 0 && pt != 101)
        .collect();
    assert!(other.is_empty(), "unexpected payload types {other:?}");
    assert_nothing_left(&server);
}

#[test]
fn sipjs_dtmf_reaches_the_trunk_as_rfc4733() {
    dtmf_as_rfc4733("sipjs", "rfc4733");
}

#[test]
fn jssip_dtmf_reaches_the_trunk_as_rfc4733() {
    dtmf_as_rfc4733("jssip", "rfc4733");
}

/// JsSIP's default DTMF is SIP INFO: the gateway turns it into RFC 4733
/// towards a trunk that wants RFC 4733 (the room plays each digit as
/// telephone-event packets of the INFO's duration).
#[test]
fn jssip_info_dtmf_reaches_the_trunk_as_rfc4733() {
    dtmf_as_rfc4733("jssip", "info");
}

/// The browser sends `DIGITS` to a trunk with `dtmf: info`: the carrier
/// gets one INFO per digit (`application/dtmf-relay`, right digit, duration
/// about `TONE_MS`) and no RFC 4733 packets (or it would see every digit twice).
fn dtmf_as_info(stack: &str, via: &str) {
    let Some(_serial) = browser_test() else {
        return;
    };
    let setup = start("trunk_uas_info.xml", "    dtmf: info\n");
    let capture = RtpCapture::start(setup.rtp, setup.carrier.media);
    browser(&setup, &format!("dtmf:{stack}:{NUMBER}:{DIGITS}:{via}"));
    let Setup {
        server, carrier, ..
    } = setup;
    let trunk_side = carrier.finish();
    let packets = capture.finish();
    let invite = &trunk_side[trunk_side.find("\nINVITE sip:").expect("no INVITE")..];
    let invite = &invite[..invite.find("\n\n-----").unwrap_or(invite.len())];
    assert!(
        invite.lines().any(|l| l.trim().ends_with("RTP/AVP 0"))
            && !invite.contains("telephone-event"),
        "an INFO trunk must not be offered telephone-event:\n{invite}"
    );
    let mut signals = String::new();
    let mut durations = Vec::new();
    for info in trunk_side.split("\nINFO sip:").skip(1) {
        let info = &info[..info.find("\n\n-----").unwrap_or(info.len())];
        assert!(
            info.to_ascii_lowercase()
                .contains("content-type: application/dtmf-relay"),
            "{info}"
        );
        for line in info.lines() {
            if let Some(s) = line.trim().strip_prefix("Signal=") {
                signals.push_str(s.trim());
            }
            if let Some(d) = line.trim().strip_prefix("Duration=") {
                durations.push(d.trim().parse::<u32>().unwrap());
            }
        }
    }
    eprintln!("{stack} ({via}) -> carrier INFO: {signals} {durations:?}");
    assert_eq!(signals, DIGITS, "INFO digits at the carrier:\n{trunk_side}");
    for d in &durations {
        assert!(
            *d * 10 >= TONE_MS * 8 && *d * 10 <= TONE_MS * 13,
            "INFO Duration {d}, expected about {TONE_MS}: {durations:?}"
        );
    }
    let events = dtmf_events(&packets, 101);
    assert!(
        events.is_empty(),
        "RFC 4733 events reached an INFO trunk as well: {events:?}"
    );
    assert_nothing_left(&server);
}

#[test]
fn sipjs_dtmf_reaches_an_info_trunk_as_info() {
    dtmf_as_info("sipjs", "rfc4733");
}

#[test]
fn jssip_info_dtmf_reaches_an_info_trunk_as_info() {
    dtmf_as_info("jssip", "info");
}

/// Issue 6, attended transfer (RFC 3891 `Replaces` in a REFER, RFC 3515):
/// SIP.js (or JsSIP) calls a carrier that echoes, holds that call, calls a second
/// carrier that plays 1 kHz, then transfers the first call's party to the
/// second's. The NOTIFY says 200; the server ends the browser's second
/// call itself (replaced) and the browser hangs up the first; the two
/// carriers are then connected through our room: the first hears the
/// second's 1 kHz. When the second carrier hangs up, the first gets a BYE,
/// and nothing is left.
#[test]
fn sipjs_attended_transfer_connects_the_two_far_parties() {
    attended_transfer("sipjs");
}

#[test]
fn jssip_attended_transfer_connects_the_two_far_parties() {
    attended_transfer("jssip");
}

fn attended_transfer(stack: &str) {
    let Some(_serial) = browser_test() else {
        return;
    };
    let echo = Carrier::start("trunk_uas.xml");
    let tone = Carrier::start_with_tone(1000.0, 8);
    let rtp = port_window(40);
    let plan = "rules:\n  - name: first\n    match:\n      to: '+15551110001'\n    action:\n      trunk: { trunks: [echo] }\n  - name: second\n    match:\n      to: '+15552220002'\n    action:\n      trunk: { trunks: [tone] }\n";
    let config = format!(
        "{ALL_LOOPBACK}trunks:\n  - name: echo\n    host: 127.0.0.1\n    port: {}\n    codecs: [PCMU]\n  - name: tone\n    host: 127.0.0.1\n    port: {}\n    codecs: [PCMU]\ndialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n",
        echo.port, tone.port, rtp.0, rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", plan)]);
    let capture = RtpCapture::start(rtp, echo.media);
    let setup = Setup {
        server,
        carrier: echo,
        rtp,
    };
    let out = browser(
        &setup,
        &format!("attended:{stack}:+15551110001:+15552220002:1000"),
    );
    eprintln!("{out}");
    assert!(out.contains("TRANSFERRED"), "{out}");
    let Setup {
        server, carrier, ..
    } = setup;
    let tone_side = tone.finish();
    let echo_side = carrier.finish();
    assert!(
        tone_side.contains("INVITE sip:+15552220002@"),
        "{tone_side}"
    );
    assert!(echo_side.contains("BYE sip:carrier@"), "{echo_side}");
    assert_eq!(
        tone_side.matches("INVITE sip:").count(),
        1,
        "the tone carrier must keep its one call: {tone_side}"
    );
    let packets = capture.finish();
    let heard = common::media::pcmu_frames_with_tone(&packets, 1000.0);
    eprintln!("the echo carrier heard the tone carrier's 1 kHz in {heard} packets");
    assert!(
        heard >= 50,
        "the echo carrier heard the tone carrier in {heard} of {} packets",
        packets.len()
    );
    // It heard the hold tone while the browser held it, and none once it
    // was connected to the other party (the transferor took it along).
    let connected = packets
        .iter()
        .position(|p| common::media::pcmu_frames_with_tone(std::slice::from_ref(p), 1000.0) > 0)
        .unwrap_or(packets.len());
    let before = common::media::pcmu_frames_hearing(&packets[..connected], 660.0, 0.5);
    let after = common::media::pcmu_frames_hearing(&packets[connected..], 660.0, 0.1);
    eprintln!("hold tone: {before} packets before the transfer, {after} after");
    assert!(before >= 10, "no hold tone while held ({before})");
    assert_eq!(after, 0, "the hold tone went on after the transfer");
    assert!(
        server.wait_log("attended transfer: the two parties are connected"),
        "no transfer logged"
    );
    // The first call's record tells of the transfer; the second call was replaced.
    let records = common::cdrs(&server, 2);
    let first = records
        .iter()
        .find(|r| r["callee"] == "+15551110001")
        .expect("the first call has a CDR");
    common::assert_transfers(first, &[("attended", "caller")]);
    assert_nothing_left(&server);
}

/// SIP.js with `sipExtension100rel: "Supported"` and `earlyMedia` calls a
/// trunk that sends 183 with SDP and a 600 Hz announcement, then answers
/// 4 s later: the 183 reaches the browser reliably (Require: 100rel, RSeq),
/// SIP.js PRACKs it, the announcement is heard before the answer, and the
/// 200 (after the PRACK's) carries no second answer.
#[test]
fn sipjs_with_100rel_gets_early_media_reliably() {
    let Some(_serial) = browser_test() else {
        return;
    };
    let setup = start_carrier(
        Carrier::start_with_early("trunk_uas_early_long.xml", 600.0),
        "",
    );
    let out = browser(&setup, &format!("early:sipjs:{NUMBER}:600"));
    for line in out
        .lines()
        .filter(|l| l.contains("audio:") || l.contains("warning"))
    {
        eprintln!("{line}");
    }
    assert!(out.contains("PRACK (RAck"), "{out}");
    assert!(
        !out.contains("answered before the early media was heard"),
        "{out}"
    );
    let Setup {
        server,
        carrier,
        rtp: _,
    } = setup;
    carrier.finish();
    let log = server.log_text();
    assert!(!log.contains("no PRACK from the caller"), "{log}");
    assert_nothing_left(&server);
}
