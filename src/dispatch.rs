//! The transaction user's front door: takes each new server transaction and
//! hands it to the module that owns its method.
//!
//! Retransmissions are absorbed before the handlers (by the transaction
//! layer, and for the window it leaves, by the checks in [`run`]), so every
//! transaction handled here is processed exactly once. Later modules
//! (registrar, proxy, B2BUA) plug in here; until then requests that need them
//! are answered with the status a standards-following server would give.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::{Instrument, debug, info_span};

use crate::b2bua::B2bua;
use crate::directory::Directory;
use crate::proxy::{Proxy, is_in_dialog};
use crate::registrar::service::{Registrar, unix_now};
use crate::sip::{
    FastAnswer, Header, HeadersExt, Method, Request, Response, SipCore, Source, StatusCode,
    Transaction, TransactionKey, TransactionReceiver,
};

/// Everything the transaction user needs, shared by all transactions.
pub struct Services {
    /// The SIP core.
    pub core: Arc<SipCore>,
    /// Users and domains.
    pub directory: Arc<Directory>,
    /// The registrar.
    pub registrar: Registrar,
    /// The proxy for calls and messages between local users.
    pub proxy: Arc<Proxy>,
    /// Calls the gateway answers itself; their in-dialog requests go there.
    pub b2bua: Option<Arc<B2bua>>,
}

impl Services {
    /// The registrar's answer to a REGISTER from `source`.
    fn register(&self, request: &Request, source: Source) -> (StatusCode, Vec<Header>) {
        let answer = self
            .registrar
            .register(&self.directory, request, source, unix_now());
        if answer.status == StatusCode::OK {
            self.core.metrics().registrations.inc();
        }
        (answer.status, answer.headers)
    }

    /// The answer to an out-of-dialog OPTIONS.
    fn options(&self) -> (StatusCode, Vec<Header>) {
        self.core.metrics().options_answered.inc();
        (StatusCode::OK, capability_headers())
    }
}

/// The UDP fast path: REGISTER and out-of-dialog OPTIONS are answered from
/// the socket reader, without a transaction-layer transaction or a task.
impl FastAnswer for Services {
    fn accepts(&self, request: &Request) -> bool {
        match request.method {
            Method::Register => true,
            Method::Options => !is_in_dialog(request),
            _ => false,
        }
    }

    fn answer(&self, request: &Request, source: Source) -> (StatusCode, Vec<Header>) {
        match request.method {
            Method::Register => self.register(request, source),
            _ => self.options(),
        }
    }
}

/// REGISTER and OPTIONS transactions (over streams: UDP ones take the fast
/// path) from when they are dispatched until their transaction is dropped,
/// with the final response once sent. rsipstack 0.7.14 retires a finished
/// transaction by removing it from its live table and then recording its
/// response, and matches a new request by looking at the records first and
/// the live table second; a retransmission that arrives in between under
/// load becomes a new transaction. This table closes that window: until the
/// first transaction is retired, a retransmission gets the same response
/// (while it is still being answered, once it is; dropped after 2 s).
#[derive(Default)]
struct Answering(Mutex<HashMap<TransactionKey, Option<Response>>>);

/// One key's entry in [`Answering`], removed when dropped (after the
/// transaction, so rsipstack's own record exists by then).
struct AnsweringSlot {
    table: Arc<Answering>,
    key: TransactionKey,
}

impl AnsweringSlot {
    /// Keeps the final response sent, for a retransmission.
    fn record(&self, response: Option<Response>) {
        if let Ok(mut t) = self.table.0.lock() {
            t.insert(self.key.clone(), response);
        }
    }
}

impl Drop for AnsweringSlot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.0.lock() {
            t.remove(&self.key);
        }
    }
}

/// What to do with a REGISTER or OPTIONS given [`Answering`].
enum Seen {
    /// A new transaction: its slot.
    New(AnsweringSlot),
    /// A retransmission of one answered with this.
    Answered(Response),
    /// A retransmission of one still being answered.
    InProgress,
}

/// How long a retransmission waits for the first one's answer, ms.
const RETRANSMISSION_WAIT_MS: u32 = 2000;

impl Answering {
    /// The entry for `key`: absent, being answered (`None`), or answered.
    fn peek(&self, key: &TransactionKey) -> Option<Option<Response>> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn check(self: &Arc<Self>, key: &TransactionKey) -> Seen {
        let Ok(mut t) = self.0.lock() else {
            return Seen::InProgress;
        };
        match t.get(key) {
            Some(Some(response)) => Seen::Answered(response.clone()),
            Some(None) => Seen::InProgress,
            None => {
                t.insert(key.clone(), None);
                Seen::New(AnsweringSlot {
                    table: self.clone(),
                    key: key.clone(),
                })
            }
        }
    }
}

/// Answers a retransmission with the response its first transaction got.
fn replay(mut transaction: Transaction, previous: Response) {
    tokio::spawn(async move {
        let _ = transaction.respond(previous).await;
    });
}

/// Receives new server transactions until shutdown; one task per transaction.
pub async fn run(services: Arc<Services>, mut incoming: TransactionReceiver) {
    let core = services.core.clone();
    let answering = Arc::new(Answering::default());
    while let Some(mut transaction) = incoming.recv().await {
        let method = transaction.original.method;
        if method != Method::Ack
            && let Some(previous) = core.completed_response(&transaction.key)
        {
            replay(transaction, previous);
            continue;
        }
        let slot = match method {
            Method::Register | Method::Options => match answering.check(&transaction.key) {
                Seen::New(slot) => Some(slot),
                Seen::Answered(previous) => {
                    replay(transaction, previous);
                    continue;
                }
                Seen::InProgress => {
                    // The first may have been answered already, its record
                    // not yet made: answer with its response when there is one.
                    let (answering, core) = (answering.clone(), core.clone());
                    tokio::spawn(async move {
                        let key = transaction.key.clone();
                        for _ in 0..RETRANSMISSION_WAIT_MS {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                            let previous = match answering.peek(&key) {
                                Some(None) => continue,
                                Some(Some(response)) => Some(response),
                                None => core.completed_response(&key),
                            };
                            if let Some(previous) = previous {
                                let _ = transaction.respond(previous).await;
                            }
                            return;
                        }
                        debug!(%key, "retransmission of a request still being answered: dropped");
                    });
                    continue;
                }
            },
            _ => None,
        };
        core.metrics().requests_processed.inc();
        let call_id = transaction
            .original
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default();
        let span = info_span!("call", %call_id, method = %transaction.original.method);
        let services = services.clone();
        tokio::spawn(
            async move {
                // `handle` drops the transaction (rsipstack records its
                // response) before the slot goes.
                handle(services, transaction, slot.as_ref()).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Headers describing what we support, for OPTIONS and 405 responses.
pub fn capability_headers() -> Vec<Header> {
    vec![
        Header::Allow(crate::sip::ALLOW.into()),
        Header::Accept(crate::sip::ACCEPT.into()),
        Header::Supported(crate::sip::SUPPORTED.into()),
    ]
}

async fn handle(
    services: Arc<Services>,
    mut transaction: Transaction,
    answering: Option<&AnsweringSlot>,
) {
    let core = &services.core;
    let method = transaction.original.method;
    let result = match method {
        Method::Register | Method::Options => {
            let (status, headers) = if method == Method::Register {
                let Some(source) =
                    core.source(&transaction.original, transaction.connection.as_ref())
                else {
                    debug!("REGISTER from an unknown source");
                    return;
                };
                services.register(&transaction.original, source)
            } else {
                services.options()
            };
            let sent = transaction.reply_with(status, headers, None).await;
            if let Some(slot) = answering {
                slot.record(transaction.last_response.clone());
            }
            sent
        }
        Method::Cancel => {
            transaction
                .reply(StatusCode::CallTransactionDoesNotExist)
                .await
        }
        _ if method != Method::Ack
            && let Some(b2bua) = services
                .b2bua
                .as_ref()
                .filter(|b| b.owns(&transaction.original)) =>
        {
            b2bua.in_dialog(transaction).await;
            Ok(())
        }
        _ if method != Method::Ack && is_in_dialog(&transaction.original) => {
            let Some(source) = core.source(&transaction.original, transaction.connection.as_ref())
            else {
                return;
            };
            services.proxy.clone().in_dialog(transaction, source).await;
            Ok(())
        }
        Method::Invite | Method::Message => {
            let Some(source) = core.source(&transaction.original, transaction.connection.as_ref())
            else {
                return;
            };
            services
                .proxy
                .clone()
                .initial(services.directory.clone(), transaction, source)
                .await;
            Ok(())
        }
        Method::Bye => {
            transaction
                .reply(StatusCode::CallTransactionDoesNotExist)
                .await
        }
        Method::Ack => Ok(()),
        // Known methods whose modules have not landed yet.
        _ => {
            transaction
                .reply_with(StatusCode::MethodNotAllowed, capability_headers(), None)
                .await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "could not send response");
    }
}
