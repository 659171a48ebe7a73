//! RFC 3261 transaction behaviour, checked with SIPp as the client:
//! retransmitted requests get the stored response and are processed once,
//! a non-2xx final response to INVITE is retransmitted until the ACK, and the
//! ACK is absorbed.

mod common;

use common::{Server, scenario, sipp};

#[test]
fn retransmitted_options_gets_the_same_response_and_is_processed_once() {
    for (transport, label) in [("u1", "udp"), ("t1", "tcp")] {
        let server = Server::start("");
        let out = sipp(
            &scenario("options_retransmit.xml"),
            transport,
            server.addr(label),
            &[],
        );
        assert!(
            out.status.success(),
            "options_retransmit over {label} failed"
        );
        // Three OPTIONS reached the transport (one of them a retransmission);
        // the transaction user processed two.
        let received = server.metric(&format!(
            "switchboard_sip_messages_received_total{{transport=\"{label}\"}}"
        ));
        assert_eq!(received, 3, "{label}: messages received");
        assert_eq!(
            server.metric("switchboard_sip_requests_processed_total"),
            2,
            "{label}: requests processed"
        );
    }
}

#[test]
fn non_2xx_final_response_to_invite_is_retransmitted_until_ack_over_udp() {
    let server = Server::start("");
    let out = sipp(
        &scenario("invite_non2xx.xml"),
        "u1",
        server.addr("udp"),
        &[],
    );
    assert!(out.status.success(), "invite_non2xx over UDP failed");
    // INVITE + ACK reached the transport; only the INVITE was a new transaction.
    assert_eq!(server.metric("switchboard_sip_requests_processed_total"), 1);
}

#[test]
fn non_2xx_final_response_to_invite_is_not_retransmitted_over_tcp() {
    let server = Server::start("");
    let out = sipp(
        &scenario("invite_non2xx.xml"),
        "t1",
        server.addr("tcp"),
        &[],
    );
    assert!(out.status.success(), "invite_non2xx over TCP failed");
}

#[test]
fn retransmitted_invite_gets_the_same_final_response_over_udp() {
    let server = Server::start("");
    let out = sipp(
        &scenario("invite_retransmit.xml"),
        "u1",
        server.addr("udp"),
        &[],
    );
    assert!(out.status.success(), "invite_retransmit over UDP failed");
    assert_eq!(server.metric("switchboard_sip_requests_processed_total"), 1);
}

/// A REGISTER for the demo user 1001 from `local`, with `authorization` when given.
fn register(local: std::net::SocketAddr, branch: &str, cseq: u32, authorization: &str) -> String {
    format!(
        "REGISTER sip:switchboard.local SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1001@switchboard.local>;tag=rtx1\r\n\
         To: <sip:1001@switchboard.local>\r\n\
         Call-ID: register-retransmission@127.0.0.1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:1001@{local}>\r\n\
         Expires: 600\r\n\
         {authorization}Content-Length: 0\r\n\r\n"
    )
}

fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn retransmitted_register_gets_the_identical_response_and_is_processed_once_over_udp() {
    use std::time::Duration;
    let server = Server::start("auth:\n  algorithms: [MD5]\n");
    let target = server.addr("udp");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut exchange = |request: &str| -> String {
        socket.send_to(request.as_bytes(), target).unwrap();
        let (n, _) = socket.recv_from(&mut buf).expect("a response");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    // Transaction 1: the challenge, and its retransmission.
    let first = register(local, "-rtx-1", 1, "");
    let challenge = exchange(&first);
    let text = challenge.clone();
    assert!(text.starts_with("SIP/2.0 401 "), "{text}");
    assert_eq!(
        exchange(&first),
        challenge,
        "a retransmitted REGISTER gets the same 401, byte for byte (same nonce, same To tag)"
    );
    let nonce = text
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a nonce")
        .to_string();

    // Transaction 2: the credentials, and their retransmission. Processing the
    // retransmission again would reuse nonce count 1 and get a stale 401.
    let realm = "switchboard.local";
    let uri = "sip:switchboard.local";
    let ha1 = md5_hex(&format!("1001:{realm}:demo-1001"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
    let authorization = format!(
        "Authorization: Digest username=\"1001\", realm=\"{realm}\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, \
         cnonce=\"c0ffee\"\r\n"
    );
    let second = register(local, "-rtx-2", 2, &authorization);
    let ok = exchange(&second);
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(
        exchange(&second),
        ok,
        "a retransmitted REGISTER gets the same 200, byte for byte (same To tag and expiry)"
    );

    // Four requests reached the transport; two transactions were processed,
    // one authentication succeeded, one registration was made.
    assert_eq!(
        server.metric("switchboard_sip_messages_received_total{transport=\"udp\"}"),
        4
    );
    assert_eq!(server.metric("switchboard_sip_requests_processed_total"), 2);
    assert_eq!(server.metric("switchboard_auth_successes_total"), 1);
    assert_eq!(server.metric("switchboard_auth_failures_total"), 0);
    assert_eq!(server.metric("switchboard_registrations_total"), 1);
}
