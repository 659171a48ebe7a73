//! The transaction user's front door: takes each new server transaction and
//! hands it to the module that owns its method.
//!
//! Retransmissions never get here (the transaction layer absorbs them), so
//! every transaction seen here is processed exactly once. Later modules
//! (registrar, proxy, B2BUA) plug in here; until then requests that need them
//! are answered with the status a standards-following server would give.

use std::sync::Arc;

use tracing::{Instrument, debug, info_span};

use crate::b2bua::B2bua;
use crate::directory::Directory;
use crate::proxy::{Proxy, is_in_dialog};
use crate::registrar::service::{Registrar, unix_now};
use crate::sip::{
    FastAnswer, Header, HeadersExt, Method, Request, SipCore, Source, StatusCode, Transaction,
    TransactionReceiver,
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

/// Receives new server transactions until shutdown; one task per transaction.
pub async fn run(services: Arc<Services>, mut incoming: TransactionReceiver) {
    let core = services.core.clone();
    while let Some(mut transaction) = incoming.recv().await {
        if transaction.original.method != Method::Ack
            && let Some(previous) = core.completed_response(&transaction.key)
        {
            tokio::spawn(async move {
                let _ = transaction.respond(previous).await;
            });
            continue;
        }
        core.metrics().requests_processed.inc();
        let call_id = transaction
            .original
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default();
        let span = info_span!("call", %call_id, method = %transaction.original.method);
        tokio::spawn(handle(services.clone(), transaction).instrument(span));
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

async fn handle(services: Arc<Services>, mut transaction: Transaction) {
    let core = &services.core;
    let method = transaction.original.method;
    let result = match method {
        Method::Register => {
            let Some(source) = core.source(&transaction.original, transaction.connection.as_ref())
            else {
                debug!("REGISTER from an unknown source");
                return;
            };
            let (status, headers) = services.register(&transaction.original, source);
            transaction.reply_with(status, headers, None).await
        }
        Method::Options => {
            let (status, headers) = services.options();
            transaction.reply_with(status, headers, None).await
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
