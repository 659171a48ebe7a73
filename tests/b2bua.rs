//! Calls the gateway answers itself (600 echo, 7xx conference) with SIPp as
//! the caller: audio through an echo room and a conference room, CANCEL
//! while ringing, BYE from us on media timeout, hold/resume by re-INVITE,
//! DTMF by INFO; and after every call, failed or not, the media counters
//! (rooms, legs, ports, calls) are back to zero.
//!
//! **How the audio is proven.** SIPp sends RTP with `play_pcap_audio`, a
//! pcap of a known tone this test writes (raw sockets: SIPp needs root for
//! it, so do these tests). What comes back to SIPp's media port cannot be
//! read through SIPp, which does not record received RTP, and the port is
//! SIPp's own; so the test captures it on the loopback interface with an
//! `AF_PACKET` socket (also root), keeps UDP datagrams from our RTP port
//! range to SIPp's media port, decodes their PCMA payload with our G.711
//! decoder and measures the tone with a Goertzel filter, frame by frame.
//! Without root the audio tests are skipped with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::media::{
    Capture, assert_nothing_left, frames_hearing, frames_with_tone, is_root, media_port,
    port_window, wait, write_tone_pcap,
};
use common::{Server, free_port, scenario};

const DOMAIN: &str = "example.test";
/// One Chromium scenario at a time in this binary.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const USERS: &str = "domains:\n  - name: example.test\n    users:\n      - {username: u0001, password: p0001}\n      - {username: u0002, password: p0002}\nauth:\n  algorithms: [MD5, SHA-256]\n";
const PLAN: &str = "rules:\n  - name: echo\n    match:\n      to: '600'\n    action:\n      echo: {}\n  - name: rooms\n    match:\n      to: { regex: '^(7[0-9]{2})$' }\n    action:\n      conference: { room: '$1' }\n";

struct Setup {
    server: Server,
    rtp: (u16, u16),
}

fn start(media_extra: &str) -> Setup {
    start_with_users(USERS, media_extra)
}

/// [`start`] with other users/auth settings.
fn start_with_users(users: &str, media_extra: &str) -> Setup {
    let rtp = port_window(40);
    let config = format!(
        "{}{users}dialplan:\n  file: plan.yaml\nmedia:\n  bind: 127.0.0.1\n  rtp_ports: '{}-{}'\n{media_extra}",
        common::ALL_LOOPBACK,
        rtp.0,
        rtp.1
    );
    let server = Server::start_with_files(&config, &[("plan.yaml", PLAN)]);
    Setup { server, rtp }
}

fn caller_csv(dir: &Path, user: &str, callee: &str) -> PathBuf {
    let password = user.replace('u', "p");
    let path = dir.join(format!("caller-{user}-{callee}.csv"));
    std::fs::write(
        &path,
        format!(
            "SEQUENTIAL\n{user};{password};{DOMAIN};{callee};[authentication username={user} password={password}]\n"
        ),
    )
    .unwrap();
    path
}

/// Starts SIPp on `scenario` as `user` calling `callee`, in a work dir
/// holding tone.pcap at `freq` (None: no pcap needed).
fn spawn_sipp(
    setup: &Setup,
    name: &str,
    user: &str,
    callee: &str,
    media_port: u16,
    freq: Option<f32>,
) -> (Child, tempfile::TempDir) {
    spawn_sipp_for(setup, name, user, callee, media_port, freq, 3)
}

/// [`spawn_sipp`] with a tone (and a call) of `seconds`.
fn spawn_sipp_for(
    setup: &Setup,
    name: &str,
    user: &str,
    callee: &str,
    media_port: u16,
    freq: Option<f32>,
    seconds: u32,
) -> (Child, tempfile::TempDir) {
    spawn_sipp_bounded(setup, name, user, callee, media_port, freq, seconds, 40)
}

/// [`spawn_sipp_for`] with SIPp's global timeout, seconds.
#[allow(clippy::too_many_arguments)]
fn spawn_sipp_bounded(
    setup: &Setup,
    name: &str,
    user: &str,
    callee: &str,
    media_port: u16,
    freq: Option<f32>,
    seconds: u32,
    timeout: u32,
) -> (Child, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    if let Some(freq) = freq {
        write_tone_pcap(&work.path().join("tone.pcap"), freq, seconds);
    }
    let csv = caller_csv(work.path(), user, callee);
    let child = Command::new("sipp")
        .arg(setup.server.addr("udp").to_string())
        .args(["-sf", scenario(name).to_str().unwrap()])
        .args(["-inf", csv.to_str().unwrap()])
        .args(["-d", &(seconds * 1000 + 500).to_string()])
        .args(["-t", "u1", "-nr", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args([
            "-p",
            &free_port().to_string(),
            "-mp",
            &media_port.to_string(),
        ])
        .args([
            "-m",
            "1",
            "-timeout",
            &format!("{timeout}s"),
            "-timeout_error",
            "-trace_err",
            "-nostdin",
        ])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("sipp-stderr.log")).unwrap())
        .spawn()
        .expect("run sipp (apt-get install sip-tester)");
    (child, work)
}

#[test]
fn echo_600_sends_the_callers_audio_back() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let setup = start("");
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (child, work) = spawn_sipp(&setup, "b2bua_call.xml", "u0001", "600", mp, Some(1000.0));
    wait(child, work.path(), "echo call");
    let payloads = capture.finish();
    let toned = frames_with_tone(&payloads, 1000.0);
    eprintln!(
        "echo: {toned} of {} captured frames carry the 1 kHz tone",
        payloads.len()
    );
    assert!(
        toned >= 100,
        "expected most of 150 tone frames back, got {toned} of {} packets",
        payloads.len()
    );
    assert!(
        setup
            .server
            .metric("switchboard_media_packets_received_total")
            >= 140
    );
    assert_nothing_left(&setup.server);
}

#[test]
fn two_callers_in_a_conference_hear_each_other() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let setup = start("");
    let (mp_a, mp_b) = (media_port(), media_port());
    let cap_a = Capture::start(setup.rtp, mp_a);
    let cap_b = Capture::start(setup.rtp, mp_b);
    let (a, work_a) = spawn_sipp(&setup, "b2bua_call.xml", "u0001", "701", mp_a, Some(1000.0));
    let (b, work_b) = spawn_sipp(&setup, "b2bua_call.xml", "u0002", "701", mp_b, Some(600.0));
    wait(a, work_a.path(), "conference caller A");
    wait(b, work_b.path(), "conference caller B");
    let (heard_a, heard_b) = (cap_a.finish(), cap_b.finish());
    // B hears A's 1 kHz, A hears B's 600 Hz; nobody hears itself (N−1).
    let b_hears_a = frames_with_tone(&heard_b, 1000.0);
    let a_hears_b = frames_with_tone(&heard_a, 600.0);
    eprintln!(
        "conference: B heard A in {b_hears_a}/{}, A heard B in {a_hears_b}/{} frames",
        heard_b.len(),
        heard_a.len()
    );
    assert!(
        b_hears_a >= 50,
        "B heard A in {b_hears_a} of {} frames",
        heard_b.len()
    );
    assert!(
        a_hears_b >= 50,
        "A heard B in {a_hears_b} of {} frames",
        heard_a.len()
    );
    assert_eq!(frames_with_tone(&heard_a, 1000.0), 0, "A heard itself");
    assert_nothing_left(&setup.server);
}

#[test]
fn cancel_while_ringing_gets_487_and_leaves_nothing() {
    let setup = start("  answer_delay_ms: 3000\n");
    let (child, work) = spawn_sipp(
        &setup,
        "b2bua_cancel.xml",
        "u0001",
        "600",
        media_port(),
        None,
    );
    wait(child, work.path(), "cancelled call");
    assert_nothing_left(&setup.server);
}

#[test]
fn media_timeout_makes_us_hang_up() {
    let setup = start("  media_timeout_secs: 2\n");
    let started = Instant::now();
    let (child, work) = spawn_sipp(
        &setup,
        "b2bua_timeout.xml",
        "u0001",
        "600",
        media_port(),
        None,
    );
    wait(child, work.path(), "silent call");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(setup.server.metric("switchboard_media_timeouts_total"), 1);
    assert_nothing_left(&setup.server);
}

#[test]
fn reinvite_hold_resume_and_info_dtmf() {
    let setup = start("");
    let (child, work) = spawn_sipp(&setup, "b2bua_hold.xml", "u0001", "702", media_port(), None);
    wait(child, work.path(), "hold/resume call");
    assert!(setup.server.wait_log("re-INVITE"), "re-INVITE not logged");
    assert_nothing_left(&setup.server);
}

#[test]
fn webrtc_offer_without_ice_and_dtls_is_refused() {
    let setup = start("");
    let status = common::authenticated_invite_with_sdp(
        setup.server.addr("udp"),
        DOMAIN,
        "u0001",
        "p0001",
        "600",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
    );
    assert!(status.starts_with("SIP/2.0 488"), "{status}");
    assert_nothing_left(&setup.server);
}

/// Issue 5: a browser (Opus over WebRTC) and an RTP participant (SIPp, PCMA)
/// in one conference room: each hears the other, transcoded both ways. The
/// browser checks SIPp's 1 kHz tone with WebAudio; the capture of what we
/// send SIPp must carry the browser's 440 Hz fake microphone.
#[test]
fn browser_and_rtp_phone_hear_each_other_in_a_conference() {
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    // Before SIPp starts: its call would end while another browser test runs.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // MD5 only: SIPp answers the first challenge, SIP.js the last.
    let setup = start_with_users(&USERS.replace("[MD5, SHA-256]", "[MD5]"), "");
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (sipp, work) = spawn_sipp_for(
        &setup,
        "b2bua_call.xml",
        "u0002",
        "705",
        mp,
        Some(1000.0),
        // Long enough for a slow Chromium to start and join (~20 s here).
        30,
    );
    std::thread::sleep(Duration::from_secs(1));
    let browser = common::repo().join("interop-tests").join("browser");
    let out = Command::new("node")
        .arg(browser.join("run.mjs"))
        .args(["--wss", &format!("wss://{}", setup.server.addr("wss"))])
        .args(["--domain", DOMAIN, "--user1", "u0001:p0001"])
        .args([
            "--scenario",
            "join:sipjs:705:1000",
            "--talk",
            "5",
            "--timeout",
            "40",
        ])
        .current_dir(&browser)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS join:sipjs:705:1000"),
        "browser side failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait(sipp, work.path(), "SIPp in the conference");
    let heard = capture.finish();
    let from_browser = frames_with_tone(&heard, 440.0);
    eprintln!(
        "SIPp heard the browser's 440 Hz in {from_browser} of {} frames",
        heard.len()
    );
    assert!(
        from_browser >= 50,
        "SIPp heard the browser in {from_browser} of {} frames",
        heard.len()
    );
    assert_nothing_left(&setup.server);
}

/// Issue 6: three browsers (SIP.js, JsSIP, SIP.js; fake microphones at 440,
/// 1000 and 700 Hz) and a phone (SIPp, PCMA, 1600 Hz) in one conference:
/// every browser hears the other two and the phone, never itself (checked
/// in each page with WebAudio), and the phone hears the three browsers
/// (checked on the wire). The admin API lists the participants by user,
/// mutes the third browser (nobody hears 700 Hz any more, it still hears
/// everyone), and finally removes the phone, whose call we then hang up.
#[test]
fn three_browsers_and_a_phone_in_a_conference_and_a_muted_one_is_not_heard() {
    use std::io::BufRead;
    if !is_root() {
        eprintln!("skipped: play_pcap_audio and the capture need root");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let users = "domains:\n  - name: example.test\n    users:\n      - {username: u0001, password: p0001}\n      - {username: u0002, password: p0002}\n      - {username: u0003, password: p0003}\n      - {username: u0004, password: p0004}\nauth:\n  algorithms: [MD5]\n";
    let setup = start_with_users(users, "");
    let admin = setup.server.addr("admin");
    let (code, body) = common::http_request(admin, "GET", "/api/conferences", None);
    assert_eq!((code, body.as_str()), (200, "[]"), "no conference yet");
    let mp = media_port();
    let capture = Capture::start(setup.rtp, mp);
    let (sipp, work) = spawn_sipp_bounded(
        &setup,
        "b2bua_kicked.xml",
        "u0004",
        "706",
        mp,
        Some(1600.0),
        120,
        150,
    );
    std::thread::sleep(Duration::from_secs(1));
    let browser = common::repo().join("interop-tests").join("browser");
    let mut node = Command::new("node")
        .arg(browser.join("run.mjs"))
        .args(["--wss", &format!("wss://{}", setup.server.addr("wss"))])
        .args(["--admin", &format!("http://{admin}")])
        .args(["--domain", DOMAIN])
        .args(["--user1", "u0001:p0001", "--user2", "u0002:p0002"])
        .args(["--user3", "u0003:p0003"])
        .args(["--scenario", "conference3:sipjs:jssip:sipjs:706:1600"])
        .args(["--talk", "2", "--timeout", "100"])
        .current_dir(&browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // When (the browser side's clock, ms since the epoch) it had muted user 3
    // and when it had checked the result.
    let (mut muted_at, mut checked_at) = (None, None);
    let stamp = |rest: &str| rest.trim().parse::<u64>().ok();
    let mut stdout = String::new();
    for line in std::io::BufReader::new(node.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(rest) = line.strip_prefix("MUTED ") {
            muted_at = stamp(rest);
        } else if let Some(rest) = line.strip_prefix("CONFERENCE CHECKED ") {
            checked_at = stamp(rest);
        }
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = node.wait().unwrap();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut stderr);
    let scenario = "conference3:sipjs:jssip:sipjs:706:1600";
    assert!(
        status.success() && stdout.contains(&format!("PASS {scenario}")),
        "browser side failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    // The phone is still in the room: the admin API lists it; remove it.
    let (code, body) = common::http_request(admin, "GET", "/api/conferences/706", None);
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let parts = list["participants"].as_array().expect("participants");
    assert_eq!(parts.len(), 1, "only the phone is left: {body}");
    assert_eq!(parts[0]["label"], "u0004", "{body}");
    assert_eq!(parts[0]["codec"], "PCMA", "{body}");
    let id = parts[0]["id"].as_u64().expect("id");
    // Unknown rooms, participants and fields are refused.
    for (method, path, json, want) in [
        ("GET", "/api/conferences/nope".to_string(), None, 404),
        (
            "PATCH",
            "/api/conferences/706/participants/999999".to_string(),
            Some("{\"muted\":true}"),
            404,
        ),
        (
            "PATCH",
            format!("/api/conferences/706/participants/{id}"),
            Some("{\"loud\":true}"),
            422,
        ),
        (
            "DELETE",
            "/api/conferences/nope/participants/1".to_string(),
            None,
            404,
        ),
    ] {
        let (code, body) = common::http_request(admin, method, &path, json);
        assert_eq!(code, want, "{method} {path}: {body}");
    }
    let (code, body) = common::http_request(
        admin,
        "DELETE",
        &format!("/api/conferences/706/participants/{id}"),
        None,
    );
    assert_eq!(code, 204, "{body}");
    wait(
        sipp,
        work.path(),
        "the phone, hung up by us after the admin removed it",
    );
    let (code, _) = common::http_request(admin, "GET", "/api/conferences/706", None);
    assert_eq!(code, 404, "the room is gone with its last participant");
    let heard = capture.finish_timed();
    let muted_at = muted_at.expect("MUTED <ms> printed");
    let checked_at = checked_at.expect("CONFERENCE CHECKED <ms> printed");
    // By the kernel's receive times: before the mute, its last 2 s; after,
    // from 0.5 s after it to the check.
    let window = |from: u64, to: u64| -> Vec<Vec<u8>> {
        heard
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, p)| p.clone())
            .collect()
    };
    let before = window(muted_at.saturating_sub(2000), muted_at);
    let after = window(muted_at + 500, checked_at);
    for (label, frames, tones_present, tones_absent) in [
        (
            "before the mute",
            &before[..],
            &[440.0, 1000.0, 700.0][..],
            &[1600.0][..],
        ),
        (
            "after the mute",
            &after[..],
            &[440.0, 1000.0][..],
            &[700.0, 1600.0][..],
        ),
    ] {
        // 0.5 s of audio at least.
        assert!(frames.len() >= 25, "{label}: only {} frames", frames.len());
        for &hz in tones_present {
            let n = frames_hearing(frames, hz, 0.1);
            eprintln!("phone {label}: {hz} Hz in {n} of {} frames", frames.len());
            // Present in a quarter of the frames at least: a starved browser
            // may send in bursts (seen once at 40 %); muted means none.
            assert!(
                n * 4 >= frames.len(),
                "{label}: the phone heard {hz} Hz in {n} of {} frames",
                frames.len()
            );
        }
        for &hz in tones_absent {
            let n = frames_hearing(frames, hz, 0.05);
            eprintln!(
                "phone {label}: {hz} Hz (must be absent) in {n} of {} frames",
                frames.len()
            );
            assert!(
                n * 20 <= frames.len(),
                "{label}: the phone heard {hz} Hz in {n} of {} frames",
                frames.len()
            );
        }
    }
    assert_nothing_left(&setup.server);
}
