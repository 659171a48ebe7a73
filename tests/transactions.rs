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
