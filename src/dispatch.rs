//! The transaction user's front door: takes each new server transaction and
//! hands it to the module that owns its method.
//!
//! Retransmissions never get here (the transaction layer absorbs them), so
//! every transaction seen here is processed exactly once. Later modules
//! (registrar, proxy, B2BUA) plug in here; until then requests that need them
//! are answered with the status a standards-following server would give.

use std::sync::Arc;

use rsipstack::transaction::TransactionReceiver;
use tracing::{Instrument, debug, info_span};

use crate::sip::{Header, HeadersExt, Method, SipCore, StatusCode, Transaction};

/// Receives new server transactions until shutdown; one task per transaction.
pub async fn run(core: Arc<SipCore>, mut incoming: TransactionReceiver) {
    while let Some(transaction) = incoming.recv().await {
        core.metrics().requests_processed.inc();
        let call_id = transaction
            .original
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default();
        let span = info_span!("call", %call_id, method = %transaction.original.method);
        tokio::spawn(handle(core.clone(), transaction).instrument(span));
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

async fn handle(core: Arc<SipCore>, mut transaction: Transaction) {
    let method = transaction.original.method;
    let result = match method {
        Method::Options => {
            core.metrics().options_answered.inc();
            transaction.reply_with(StatusCode::OK, capability_headers(), None).await
        }
        Method::Invite => {
            // No routing exists yet: nothing can be reached.
            let _ = transaction.send_trying().await;
            let result = transaction.reply(StatusCode::NotFound).await;
            // Keep the transaction alive: it retransmits the final response
            // (Timer G) until the ACK, and absorbs the ACK.
            while transaction.receive().await.is_some() {}
            result
        }
        Method::Bye | Method::Cancel => transaction.reply(StatusCode::CallTransactionDoesNotExist).await,
        Method::Ack => Ok(()),
        // Known methods whose modules have not landed yet.
        _ => transaction.reply_with(StatusCode::MethodNotAllowed, capability_headers(), None).await,
    };
    if let Err(e) = result {
        debug!(error = %e, "could not send response");
    }
}
