//! OPTIONS over every transport against the real binary: SIPp over UDP and TCP,
//! sipsak over TLS (Debian's SIPp has no TLS), tokio-tungstenite over WS and WSS.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{Server, free_port, read_sip, request, scenario, sipp, ws};

fn assert_capabilities(response: &str) {
    assert!(response.starts_with("SIP/2.0 200 OK\r\n"), "{response}");
    for header in [
        "\r\nAllow: ",
        "\r\nAccept: ",
        "\r\nSupported:",
        "\r\nServer: Switchboard/",
    ] {
        assert!(
            response.contains(header),
            "missing {header:?} in\n{response}"
        );
    }
    let allow = response
        .split("\r\n")
        .find(|l| l.starts_with("Allow: "))
        .unwrap_or_default();
    for method in [
        "OPTIONS", "INVITE", "PRACK", "UPDATE", "INFO", "REFER", "MESSAGE", "REGISTER",
    ] {
        assert!(
            allow.contains(method),
            "Allow must list {method}\n{response}"
        );
    }
}

#[test]
fn options_over_udp_and_tcp_with_sipp() {
    let server = Server::start("");
    for (transport, label) in [("u1", "udp"), ("t1", "tcp")] {
        let out = sipp(&scenario("options.xml"), transport, server.addr(label), &[]);
        assert!(out.status.success(), "SIPp OPTIONS over {label} failed");
    }
    assert!(server.metric("switchboard_sip_options_answered_total") >= 2);
}

#[test]
fn options_over_tls_with_sipsak_verifying_the_dev_certificate() {
    let server = Server::start("");
    let cert = server.cert_path();
    assert!(
        cert.exists(),
        "dev certificate not generated at {}",
        cert.display()
    );
    let target = format!("sip:ping@{}", server.addr("tls"));
    let out = Command::new("timeout")
        .args([
            "20",
            "sipsak",
            "-vv",
            "-s",
            &target,
            "--transport=tls",
            "--tls-ca-cert",
        ])
        .arg(&cert)
        .output()
        .expect("run sipsak (apt-get install sipsak)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sipsak over TLS failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SIP/2.0 200 OK"), "{stdout}");
    assert!(
        stdout.contains("Allow: ") && stdout.contains("Accept: ") && stdout.contains("Supported:"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_over_ws_and_wss() {
    let server = Server::start("");
    let cert = server.cert_path();
    for (label, tls) in [("ws", None), ("wss", Some(cert.as_path()))] {
        let addr = server.addr(label);
        let mut socket = ws::connect(addr, tls, Some("sip"))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let local = "127.0.0.1:9".parse().unwrap();
        let transport = if tls.is_some() { "WSS" } else { "WS" };
        let mut req = request("OPTIONS", transport, local, &format!("ws-{label}"), label);
        req = req.replace("127.0.0.1:9", "df7jal23ls0d.invalid");
        ws::send(&mut socket, &req).await;
        let response = ws::recv(&mut socket)
            .await
            .unwrap_or_else(|| panic!("no response over {label}"));
        assert_capabilities(&response);
        // RFC 7118: the .invalid Via host gets a received parameter.
        assert!(response.contains(";received=127.0.0.1"), "{response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_without_sip_subprotocol_is_refused() {
    let server = Server::start("");
    let err = ws::connect(server.addr("ws"), None, None)
        .await
        .err()
        .expect("must be refused");
    assert!(err.contains("400"), "{err}");
}

#[test]
fn static_front_end_is_served() {
    let server = Server::start("");
    let body = common::http_get(server.addr("ws"), "/");
    assert!(body.contains("<title>Switchboard"), "{body}");
}

#[test]
fn responses_return_over_the_connection_of_the_request_with_received_and_rport() {
    let server = Server::start("");
    let mut tcp = TcpStream::connect(server.addr("tcp")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A Via naming an unreachable host: the response must still come back on this connection.
    let req = request(
        "OPTIONS",
        "TCP",
        "192.0.2.1:5060".parse().unwrap(),
        "conn-route",
        "route1",
    );
    tcp.write_all(req.as_bytes()).unwrap();
    let response = read_sip(&mut tcp).expect("response on the same connection");
    assert_capabilities(&response);
    assert!(response.contains("received=127.0.0.1"), "{response}");
    let udp = common::udp_exchange(
        server.addr("udp"),
        request(
            "OPTIONS",
            "UDP",
            "192.0.2.1:5060".parse().unwrap(),
            "udp-route",
            "route2",
        )
        .as_bytes(),
    )
    .expect("UDP response goes to the source address (rport)");
    assert!(udp.contains("received=127.0.0.1;rport="), "{udp}");
}

#[test]
fn crlf_keepalive_on_tcp_gets_a_pong() {
    let server = Server::start("");
    let mut tcp = TcpStream::connect(server.addr("tcp")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    std::io::Read::read_exact(&mut tcp, &mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    // The connection is still usable afterwards.
    tcp.write_all(
        request(
            "OPTIONS",
            "TCP",
            "127.0.0.1:9".parse().unwrap(),
            "after-ping",
            "p1",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_capabilities(&read_sip(&mut tcp).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ping_gets_a_pong() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start("");
    let mut socket = ws::connect(server.addr("ws"), None, Some("sip"))
        .await
        .unwrap();
    socket
        .send(Message::Ping(b"keepalive".to_vec().into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("pong in time");
    match reply {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"keepalive"),
        other => panic!("expected pong, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_idle_websockets() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start("limits:\n  ws_ping_interval_secs: 1\n");
    let mut socket = ws::connect(server.addr("ws"), None, Some("sip"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("ping in time");
    assert!(matches!(got, Some(Ok(Message::Ping(_)))), "{got:?}");
}

#[test]
fn ipv6_listeners_answer_options() {
    let config = "listen:\n  udp: ['[::1]:0']\n  tcp: ['[::1]:0']\n  tls: []\n  https: []\n  http: []\n  admin: ['127.0.0.1:0']\n";
    let server = Server::start_with(config);
    let Some(udp) = server.addrs.get("udp").and_then(|v| v.first().copied()) else {
        eprintln!(
            "IPv6 unavailable on this host; skipped: {}",
            server.log_text()
        );
        return;
    };
    let local = format!("[::1]:{}", free_port());
    let req = request("OPTIONS", "UDP", local.parse().unwrap(), "v6", "v6a");
    let response = common::udp_exchange(udp, req.as_bytes()).expect("reply over IPv6 UDP");
    assert_capabilities(&response);
    let mut tcp = TcpStream::connect(server.addr("tcp")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(request("OPTIONS", "TCP", local.parse().unwrap(), "v6t", "v6b").as_bytes())
        .unwrap();
    assert_capabilities(&read_sip(&mut tcp).unwrap());
}
