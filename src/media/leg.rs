//! The seam between a room and the network: a [`Leg`] is the sans-IO
//! endpoint of one participant (plain RTP for trunks and phones, WebRTC for
//! browsers).
//!
//! A leg never touches a socket or a clock. Its driver (the room task in
//! `media::engine`) owns the leg's UDP socket; it hands every received
//! datagram to [`Leg::handle_datagram`], every frame the room produced for
//! this participant to [`Leg::send_frame`], and calls [`Leg::handle_timeout`]
//! when [`Leg::poll_timeout`] is due. The leg answers through [`LegIo`]
//! callbacks, so the per-packet path needs no allocation and no channel.
//!
//! A leg may have a second socket (plain RTP's RTCP port): the driver feeds
//! datagrams from both to [`Leg::handle_datagram`] (the leg tells RTP from
//! RTCP by content, RFC 5761 §4) and sends [`LegIo::transmit_rtcp`] from it.

use std::net::SocketAddr;
use std::time::Instant;

use super::room::{FrameRef, InPacket};

/// Where a leg puts what it produces. Implemented by the driver.
pub trait LegIo {
    /// Sends `data` to `to` from the leg's socket (best effort, like UDP).
    fn transmit(&mut self, to: SocketAddr, data: &[u8]);
    /// Sends `head` then `body` as one datagram (an RTP header and a
    /// payload that lives elsewhere). Drivers gather them into a buffer
    /// they reuse; this default allocates one.
    fn transmit_parts(&mut self, to: SocketAddr, head: &[u8], body: &[u8]) {
        let mut data = Vec::with_capacity(head.len() + body.len());
        data.extend_from_slice(head);
        data.extend_from_slice(body);
        self.transmit(to, &data);
    }
    /// Hands one received media packet (decrypted, header parsed) to the room.
    fn media(&mut self, pkt: InPacket<'_>);
    /// Sends an RTCP datagram from the leg's RTCP socket: plain RTP/AVP
    /// without rtcp-mux uses the port above the RTP port. Drivers with one
    /// socket per leg (WebRTC, rtcp-mux) send it like any other datagram.
    fn transmit_rtcp(&mut self, to: SocketAddr, data: &[u8]) {
        self.transmit(to, data);
    }
}

/// Counters a leg keeps, for call detail records and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    /// RTP packets received and accepted.
    pub packets_received: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Packets the peer did not deliver (sequence gaps), as far as we know.
    pub packets_lost: u64,
    /// Datagrams dropped: from an unexpected source, malformed, failed authentication.
    pub dropped: u64,
}

/// Why a leg is no longer usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegClosed {
    /// No media from the peer for the configured time.
    MediaTimeout,
    /// ICE, DTLS or SRTP failed (WebRTC).
    TransportFailed(String),
    /// The peer closed it (DTLS close_notify, RTCP BYE).
    ClosedByPeer,
}

/// One participant's network endpoint. See the module documentation.
pub trait Leg: Send {
    /// A datagram arrived on the leg's socket from `from`. The buffer may be
    /// modified in place (SRTP decryption).
    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
        io: &mut dyn LegIo,
    );

    /// The room produced `frame` for this participant: packetize and send it.
    fn send_frame(&mut self, now: Instant, frame: FrameRef<'_>, io: &mut dyn LegIo);

    /// [`Leg::poll_timeout`]'s deadline has passed.
    fn handle_timeout(&mut self, now: Instant, io: &mut dyn LegIo);

    /// When the leg next wants [`Leg::handle_timeout`] (RTCP reports, ICE
    /// keepalives, DTLS retransmissions, media timeout).
    fn poll_timeout(&self) -> Option<Instant>;

    /// Its counters so far.
    fn stats(&self) -> LegStats;

    /// `Some` once the leg can no longer carry media; the driver then
    /// removes the participant and reports why.
    fn closed(&self) -> Option<LegClosed>;

    /// The leg as `Any`, so that its owner can reach leg-specific controls
    /// through the room task (e.g. an RTP leg's new remote address after a
    /// re-INVITE). `None` by default.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}
