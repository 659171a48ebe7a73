//! The back-to-back user agent: calls the gateway terminates itself.
//!
//! Today: the dialplan's `echo` and `conference` actions. The proxy hands
//! the INVITE's server transaction over ([`B2bua::answer`]); each call is a
//! sans-IO state machine ([`call::UasCall`]) run by a thin async driver
//! ([`driver`]) in the INVITE's own task, which owns the call's dialog and
//! its participant in a media room. Later (issue 6) the same shape grows a
//! second, outgoing leg for trunks.
//!
//! **In-dialog requests.** We answer as a UAS with our own To-tag and a
//! Contact `sip:sb-b2b-<tag>@<our address>`; we do not Record-Route, so the
//! caller's BYE, re-INVITE, INFO and OPTIONS come straight to us. The
//! dispatcher asks [`B2bua::owns`] (a lookup of Call-ID + our tag in the
//! dialog table) before the proxy's Record-Route handling, and hands those
//! transactions to the call's task over a channel.

pub mod bridge;
pub mod call;
pub mod cdr;
mod driver;
pub mod uac;

use crate::media::webrtc::WebRtcConfig;
use crate::sip::outbound::Outbound;
use crate::trunks::Trunks;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::debug;

use crate::media::engine::MediaEngine;
use crate::media::sdp::Capabilities;
use crate::sip::{
    HeadersExt, Param, Request, SipAddr, SipConnection, SipCore, StatusCode, ToTypedHeader,
    Transaction, TransportKind,
};

pub use call::{Action, CallEvent, CallState, UasCall};

/// What the call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// The echo test: the caller hears itself.
    Echo,
    /// A conference room, by name.
    Conference(String),
}

/// How to reach the caller: the transport the INVITE came on.
#[derive(Clone)]
pub struct Peer {
    /// The connection (UDP socket or stream flow) to send on.
    pub connection: SipConnection,
    /// The destination for UDP (the INVITE's source address).
    pub destination: Option<SipAddr>,
    /// The transport.
    pub kind: TransportKind,
    /// Our address on that transport (Via, Contact).
    pub local: SocketAddr,
}

type DialogKey = (String, String);

/// Where a call's in-dialog requests go. Boxed: a channel allocates its
/// first block of 32 slots when created, and a `Transaction` is ~900 bytes,
/// which made that block ~29 KB of every call's memory.
type DialogSender = mpsc::UnboundedSender<Box<Transaction>>;

/// The B2BUA service, shared by all calls.
pub struct B2bua {
    /// The SIP core.
    pub core: Arc<SipCore>,
    /// The media engine.
    pub engine: Arc<MediaEngine>,
    /// Codecs we answer with, in preference order.
    pub caps: Capabilities,
    /// Settings (DTLS certificate, codecs) of the browsers' WebRTC legs.
    pub webrtc: Arc<WebRtcConfig>,
    /// Sends the requests we originate towards trunks.
    pub outbound: Arc<Outbound>,
    /// The trunk table.
    pub trunks: Arc<Trunks>,
    /// Where call detail records go.
    pub cdr: cdr::CdrWriter,
    /// Routes transfer targets (REFER) through the dialplan.
    transfers: std::sync::OnceLock<Arc<dyn TransferRouter>>,
    dialogs: Mutex<HashMap<DialogKey, DialogSender>>,
    /// Bridged calls by their caller-side dialog, for requests from another
    /// call (attended transfer).
    controls: Mutex<HashMap<DialogKey, mpsc::UnboundedSender<bridge::Control>>>,
}

/// Routes the target of a blind transfer (REFER) the way a new call from
/// the transferor would go: to trunks or to browsers.
pub trait TransferRouter: Send + Sync {
    /// The destination for `target`, or `None` when the dialplan has no
    /// route the B2BUA can place (reject, echo, conference, no match).
    fn route(&self, target: &str, transferor: &str) -> Option<bridge::Destination>;
}

/// The prefix of the user part of our Contact.
pub const CONTACT_PREFIX: &str = "sb-b2b-";

impl B2bua {
    /// A B2BUA answering plain RTP with `caps` and browsers with `webrtc`.
    pub fn new(
        core: Arc<SipCore>,
        engine: Arc<MediaEngine>,
        caps: Capabilities,
        webrtc: Arc<WebRtcConfig>,
        outbound: Arc<Outbound>,
        trunks: Arc<Trunks>,
        cdr: cdr::CdrWriter,
    ) -> Arc<B2bua> {
        Arc::new(B2bua {
            core,
            engine,
            caps,
            webrtc,
            outbound,
            trunks,
            cdr,
            transfers: std::sync::OnceLock::new(),
            dialogs: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
        })
    }

    fn key_of(request: &Request) -> Option<DialogKey> {
        let call_id = request.call_id_header().ok()?.value().to_string();
        let to = request.to_header().ok()?.typed().ok()?;
        let tag = to.params.iter().find_map(|p| match p {
            Param::Tag(tag) => Some(tag.value().to_string()),
            _ => None,
        })?;
        Some((call_id, tag))
    }

    /// Whether an in-dialog request belongs to one of our calls.
    pub fn owns(&self, request: &Request) -> bool {
        let Some(key) = Self::key_of(request) else {
            return false;
        };
        self.dialogs.lock().is_ok_and(|d| d.contains_key(&key))
    }

    /// Hands an in-dialog request to its call, or answers 481.
    pub async fn in_dialog(&self, transaction: Transaction) {
        let sender = Self::key_of(&transaction.original)
            .and_then(|key| self.dialogs.lock().ok().and_then(|d| d.get(&key).cloned()));
        let transaction = match sender {
            Some(sender) => match sender.send(Box::new(transaction)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(t)) => *t,
            },
            None => transaction,
        };
        let mut transaction = transaction;
        debug!("in-dialog request for an ended B2BUA call");
        let _ = transaction
            .reply(StatusCode::CallTransactionDoesNotExist)
            .await;
        while transaction.receive().await.is_some() {}
    }

    fn register(&self, key: DialogKey, tx: DialogSender) {
        if let Ok(mut d) = self.dialogs.lock() {
            d.insert(key, tx);
        }
    }

    fn unregister(&self, key: &DialogKey) {
        if let Ok(mut d) = self.dialogs.lock() {
            d.remove(key);
        }
    }

    fn register_control(&self, key: DialogKey, tx: mpsc::UnboundedSender<bridge::Control>) {
        if let Ok(mut c) = self.controls.lock() {
            c.insert(key, tx);
        }
    }

    fn unregister_control(&self, key: &DialogKey) {
        if let Ok(mut c) = self.controls.lock() {
            c.remove(key);
        }
    }

    /// The bridged call whose caller-side dialog is `call_id` with our tag
    /// among `tags`.
    fn control_of(
        &self,
        call_id: &str,
        tags: [&str; 2],
    ) -> Option<mpsc::UnboundedSender<bridge::Control>> {
        let c = self.controls.lock().ok()?;
        tags.iter()
            .find_map(|tag| c.get(&(call_id.to_string(), tag.to_string())).cloned())
    }

    /// Sets who routes transfer targets (the proxy, with the dialplan).
    pub fn set_transfer_router(&self, router: Arc<dyn TransferRouter>) {
        let _ = self.transfers.set(router);
    }

    /// Where a transfer to `target` (a user or number) requested by
    /// `transferor` goes, per the dialplan.
    pub fn route_transfer(&self, target: &str, transferor: &str) -> Option<bridge::Destination> {
        self.transfers.get()?.route(target, transferor)
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.dialogs.lock().map(|d| d.len()).unwrap_or(0)
    }
}

pub use driver::{InviteServer, answer};
