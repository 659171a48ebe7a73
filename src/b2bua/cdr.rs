//! Call detail records: one JSON line per bridged call, appended to a file
//! by a writer task (call tasks never block on the disk).

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::media::leg::LegStats;

/// Where call detail records go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CdrConfig {
    /// Write records (default true).
    pub enabled: bool,
    /// The JSON lines file, appended to (default `cdr.jsonl`).
    pub file: PathBuf,
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            enabled: true,
            file: PathBuf::from("cdr.jsonl"),
        }
    }
}

/// One leg of a call in its record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LegRecord {
    /// `caller`, `trunk` or `callee`.
    pub role: &'static str,
    /// The codec the leg used.
    pub codec: Option<String>,
    /// RTP packets received from the peer.
    pub packets_received: u64,
    /// RTP packets sent to the peer.
    pub packets_sent: u64,
    /// Packets the peer sent that never arrived (sequence gaps).
    pub packets_lost: u64,
}

impl LegRecord {
    /// A leg's record from its final counters (zeros when it never had media).
    pub fn new(role: &'static str, codec: Option<String>, stats: Option<LegStats>) -> LegRecord {
        let stats = stats.unwrap_or_default();
        LegRecord {
            role,
            codec,
            packets_received: stats.packets_received,
            packets_sent: stats.packets_sent,
            packets_lost: stats.packets_lost,
        }
    }
}

/// One transfer during a call (REFER), in the order they completed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransferRecord {
    /// When the transferred party was connected to its new peer, Unix seconds.
    pub at: f64,
    /// `blind` (REFER to a URI) or `attended` (REFER with Replaces).
    pub kind: &'static str,
    /// Who sent the REFER: `caller` or `callee`.
    pub by: &'static str,
    /// The leg that took the transferor's place (its label).
    pub to: String,
}

impl TransferRecord {
    /// A transfer completed `at` (Unix seconds): `kind` `blind` or
    /// `attended`, asked by the `caller` or the `callee`, `to` the leg now
    /// in the transferor's place.
    pub fn new(at: f64, kind: &'static str, by: &'static str, to: &str) -> TransferRecord {
        TransferRecord {
            at,
            kind,
            by,
            to: to.to_string(),
        }
    }

    /// The call's end reason while nothing else ends it ("transferred by
    /// the callee to …", "attended transfer to …").
    pub fn end_reason(&self) -> String {
        let what = if self.kind == "attended" {
            "attended transfer"
        } else {
            "transferred"
        };
        let by = if self.by == "callee" {
            " by the callee"
        } else {
            ""
        };
        format!("{what}{by} to {}", self.to)
    }
}

/// One call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    /// The caller's Call-ID.
    pub call_id: String,
    /// Caller (user or number): the From user (`anonymous` from a trunk
    /// that withholds the number).
    pub caller: String,
    /// The caller's number a trunk asserted (RFC 3325
    /// P-Asserted-Identity), also when it is withheld (omitted when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_asserted: Option<String>,
    /// The caller asked for privacy (RFC 3323 `Privacy: id`, `user` or
    /// `header`; omitted when not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub caller_private: bool,
    /// Callee (number or user).
    pub callee: String,
    /// The trunk that carried it out (the last one tried), or the one it
    /// came from (inbound).
    pub trunk: Option<String>,
    /// For a trunk-to-trunk call, the trunk it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_trunk: Option<String>,
    /// `outbound` (to a trunk), `inbound` (from a trunk), `transit` (trunk
    /// to trunk) or `internal` (user to user).
    pub direction: &'static str,
    /// When the INVITE arrived, Unix seconds.
    pub start: f64,
    /// When it was answered.
    pub answer: Option<f64>,
    /// When it ended.
    pub end: f64,
    /// Seconds from answer to end (0 when never answered).
    pub duration: f64,
    /// Why it ended.
    pub end_reason: String,
    /// The final status of the call setup (200 when answered).
    pub status: u16,
    /// Per leg: codec, packets, loss.
    pub legs: Vec<LegRecord>,
    /// Transfers that completed (omitted when none): `end_reason` says how
    /// the call finally ended, this says how its parties changed on the way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<TransferRecord>,
}

/// Sends records to the writer task.
#[derive(Clone)]
pub struct CdrWriter {
    tx: Option<mpsc::UnboundedSender<CallRecord>>,
}

impl CdrWriter {
    /// A writer that drops every record.
    pub fn disabled() -> CdrWriter {
        CdrWriter { tx: None }
    }

    /// Starts the writer task for `config` (must run inside a runtime).
    pub fn start(config: &CdrConfig) -> CdrWriter {
        if !config.enabled {
            return CdrWriter::disabled();
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<CallRecord>();
        let path = config.file.clone();
        tokio::spawn(async move {
            while let Some(record) = rx.recv().await {
                let mut batch = vec![record];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let path = path.clone();
                let written = tokio::task::spawn_blocking(move || append(&path, &batch)).await;
                if let Ok(Err(e)) = written {
                    warn!(error = %e, "cannot write call detail records");
                }
            }
        });
        CdrWriter { tx: Some(tx) }
    }

    /// Queues one record.
    pub fn write(&self, record: CallRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(record);
        }
    }
}

fn append(path: &std::path::Path, records: &[CallRecord]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut out = Vec::new();
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    file.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_names_the_end_reason() {
        let reason = |kind, by| TransferRecord::new(1.0, kind, by, "target-2").end_reason();
        assert_eq!(reason("blind", "caller"), "transferred to target-2");
        assert_eq!(
            reason("blind", "callee"),
            "transferred by the callee to target-2"
        );
        assert_eq!(
            reason("attended", "caller"),
            "attended transfer to target-2"
        );
        assert_eq!(
            reason("attended", "callee"),
            "attended transfer by the callee to target-2"
        );
    }
}
