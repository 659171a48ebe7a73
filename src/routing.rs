//! The live dialplan: loaded at start, replaced atomically on reload (file
//! watcher, SIGHUP, the admin endpoint). A new version is validated completely
//! before it replaces the old one; a bad one is refused with file:line:column
//! messages and the running version stays. Calls keep the version they started
//! with (they hold its `Arc`).
//!
//! The trunks file (when trunks live in one) is part of the same unit: every
//! reload reads it too, and the dialplan is validated against the trunk
//! names of the new file. Both are applied together or neither is, so the
//! dialplan in force never names a trunk the table in force lacks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::dialplan::{self, Diagnostic, Dialplan, LoadContext, Severity};
use crate::metrics::Metrics;
use crate::trunks::{TrunkConfig, TrunkFileConfig, Trunks};

/// Why a reload was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dialplan refused: {}", .0.iter().filter(|d| d.severity == Severity::Error).map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ReloadError(pub Vec<Diagnostic>);

/// The shipped default dialplan, used when `dialplans/default.yaml` is absent.
pub const EMBEDDED_DEFAULT: &str = include_str!("../dialplans/default.yaml");

/// The default dialplan path (relative to the working directory).
pub const DEFAULT_FILE: &str = "dialplans/default.yaml";

/// Loads `file`, or the embedded default when `file` is the default path and absent.
fn load_from(
    file: &Path,
    context: &LoadContext,
) -> Result<(Dialplan, Vec<Diagnostic>), Vec<Diagnostic>> {
    if !file.exists() && file == Path::new(DEFAULT_FILE) {
        return dialplan::load_str(
            EMBEDDED_DEFAULT,
            "<embedded dialplans/default.yaml>",
            context,
        );
    }
    dialplan::load(file, context)
}

/// Whether `file` is missing or holds nothing but whitespace.
fn blank(file: &Path) -> bool {
    crate::config::read_admin_file(file).map_or_else(
        |e| e.kind() == std::io::ErrorKind::NotFound,
        |t| t.trim().is_empty(),
    )
}

/// A reload refused for what `file` lacks.
fn refusal(file: &Path, message: &str) -> Diagnostic {
    Diagnostic {
        file: file.display().to_string(),
        line: 0,
        column: 0,
        severity: Severity::Error,
        message: message.to_string(),
    }
}

/// The current dialplan and how to load a new one.
pub struct Routing {
    current: ArcSwap<Dialplan>,
    file: PathBuf,
    trunks: Vec<String>,
    groups: BTreeSet<String>,
    metrics: Arc<Metrics>,
    reload_lock: tokio::sync::Mutex<()>,
    /// The live trunk table, when attached with [`Routing::with_trunks`].
    trunk_table: Option<Arc<Trunks>>,
    /// The trunks file reloaded with the dialplan.
    trunk_file: Option<TrunkFileConfig>,
}

/// Turns configuration problems (trunks file) into dialplan-style diagnostics.
fn diagnostics(problems: Vec<crate::config::Problem>) -> Vec<Diagnostic> {
    problems
        .into_iter()
        .map(|p| Diagnostic {
            file: p.file,
            line: p.line,
            column: p.column,
            severity: Severity::Error,
            message: p.message,
        })
        .collect()
}

impl Routing {
    /// Loads the dialplan at `file`; fails when it is invalid.
    pub fn load(
        file: &Path,
        trunks: Vec<String>,
        groups: BTreeSet<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Routing, ReloadError> {
        let context = LoadContext {
            trunks: &trunks,
            groups: &groups,
        };
        let (plan, warnings) = load_from(file, &context).map_err(ReloadError)?;
        for warning in &warnings {
            warn!("{warning}");
        }
        if file.exists() {
            info!(file = %file.display(), rules = plan.rule_count(), "dialplan loaded");
        } else {
            info!(
                rules = plan.rule_count(),
                "dialplan loaded from the embedded default (no {} here)",
                file.display()
            );
        }
        metrics.dialplan_version.inc();
        Ok(Routing {
            current: ArcSwap::from_pointee(plan),
            file: file.to_path_buf(),
            trunks,
            groups,
            metrics,
            reload_lock: tokio::sync::Mutex::new(()),
            trunk_table: None,
            trunk_file: None,
        })
    }

    /// Attaches the live trunk table; with `file`, every reload also reads
    /// the trunks file and replaces the table (see the module comment).
    pub fn with_trunks(mut self, table: Arc<Trunks>, file: Option<TrunkFileConfig>) -> Routing {
        self.trunk_table = Some(table);
        self.trunk_file = file;
        self
    }

    /// The live trunk table, when attached.
    pub fn trunks(&self) -> Option<&Arc<Trunks>> {
        self.trunk_table.as_ref()
    }

    /// Names of the trunks in force.
    fn trunk_names(&self) -> Vec<String> {
        match &self.trunk_table {
            Some(table) => table.names(),
            None => self.trunks.clone(),
        }
    }

    /// The version in force now. A call keeps the `Arc` it got.
    pub fn current(&self) -> Arc<Dialplan> {
        self.current.load_full()
    }

    /// Loads and validates the trunks file (when trunks live in one) and the
    /// dialplan again; swaps both in only when both are valid.
    pub async fn reload(&self, why: &str) -> Result<usize, ReloadError> {
        let _serial = self.reload_lock.lock().await;
        let (file, groups) = (self.file.clone(), self.groups.clone());
        let trunk_file = self.trunk_file.as_ref().map(|t| t.file.clone());
        let current_names = self.trunk_names();
        // The version in force came from [`EMBEDDED_DEFAULT`]: it read no file.
        let embedded = self.current().files().is_empty();
        type Loaded = (
            Option<Result<Vec<TrunkConfig>, Vec<Diagnostic>>>,
            Result<(Dialplan, Vec<Diagnostic>), Vec<Diagnostic>>,
        );
        let loaded: Result<Loaded, _> = tokio::task::spawn_blocking(move || {
            let trunks = trunk_file.as_deref().map(|f| {
                let list = crate::trunks::file::load(f).map_err(diagnostics)?;
                // A deleted or emptied file (an editor mid-save, a bad
                // checkout) would take every trunk away: `trunks: []` says so.
                if list.is_empty() && !current_names.is_empty() && blank(f) {
                    return Err(vec![refusal(
                        f,
                        "the trunks file is missing or empty: refused, the trunks in force \
                         stay (`trunks: []` removes them all)",
                    )]);
                }
                Ok(list)
            });
            let names = match &trunks {
                Some(Ok(list)) => list.iter().map(|t| t.name.clone()).collect(),
                _ => current_names,
            };
            let context = LoadContext {
                trunks: &names,
                groups: &groups,
            };
            // The built-in default stands in for a file that never was,
            // not for one that went away.
            if !embedded && !file.exists() {
                return (
                    trunks,
                    Err(vec![refusal(
                        &file,
                        "the dialplan file is missing: refused, the running version stays",
                    )]),
                );
            }
            let plan = load_from(&file, &context).and_then(|(plan, warnings)| {
                if plan.rule_count() == 0 {
                    Err(vec![refusal(
                        &file,
                        "the dialplan has no rules (an empty file?): refused, the running \
                         version stays",
                    )])
                } else {
                    Ok((plan, warnings))
                }
            });
            (trunks, plan)
        })
        .await;
        let (trunks, plan) = loaded.unwrap_or_else(|e| {
            (
                None,
                Err(vec![Diagnostic {
                    file: self.file.display().to_string(),
                    line: 0,
                    column: 0,
                    severity: Severity::Error,
                    message: format!("loader failed: {e}"),
                }]),
            )
        });
        let refused = match (trunks, plan) {
            (Some(Err(mut problems)), plan) => {
                if let Err(more) = plan {
                    problems.extend(more);
                }
                Err(problems)
            }
            (_, Err(problems)) => Err(problems),
            (trunks, Ok((plan, warnings))) => Ok((trunks, plan, warnings)),
        };
        match refused {
            Ok((trunks, plan, warnings)) => {
                for warning in &warnings {
                    warn!("{warning}");
                }
                if let (Some(Ok(trunks)), Some(table)) = (trunks, &self.trunk_table) {
                    let count = trunks.len();
                    table.replace(trunks);
                    info!(why, trunks = count, "trunks reloaded");
                }
                let rules = plan.rule_count();
                self.current.store(Arc::new(plan));
                self.metrics.dialplan_reloads.inc();
                self.metrics.dialplan_version.inc();
                info!(why, rules, "dialplan reloaded");
                Ok(rules)
            }
            Err(diagnostics) => {
                self.metrics.dialplan_reload_failures.inc();
                for diagnostic in &diagnostics {
                    error!(why, "{diagnostic}");
                }
                error!(
                    why,
                    "dialplan reload refused; the running version stays active"
                );
                Err(ReloadError(diagnostics))
            }
        }
    }

    /// Reloads on SIGHUP and, when `watch`, whenever a dialplan file changes
    /// (debounced). Runs until `cancel`.
    pub fn spawn_watchers(
        self: &Arc<Self>,
        watch: bool,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.send("SIGHUP");
                }
            });
        }
        let watch_trunks = self.trunk_file.as_ref().is_some_and(|t| t.watch);
        let watch_dialplan = watch && self.file.exists();
        let watcher = if watch_dialplan || watch_trunks {
            self.file_watcher(tx.clone(), watch_dialplan, watch_trunks)
        } else {
            None
        };
        let routing = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher; // dropping it stops watching
            loop {
                let why = tokio::select! {
                    _ = cancel.cancelled() => break,
                    why = rx.recv() => match why { Some(why) => why, None => break },
                };
                // Editors write in several steps: wait for the burst to end.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let _ = routing.reload(why).await;
            }
        });
    }

    fn file_watcher(
        &self,
        tx: mpsc::UnboundedSender<&'static str>,
        dialplan: bool,
        trunks: bool,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};
        // Watch the directories (editors replace files by renaming), filtered
        // to the dialplan's files and YAML files next to them (new includes),
        // and the trunks file's directory (it may not exist yet).
        let mut files: Vec<PathBuf> = Vec::new();
        if dialplan {
            files.extend(self.current().files().iter().cloned());
            files.push(self.file.clone());
        }
        if trunks && let Some(trunk_file) = &self.trunk_file {
            files.push(trunk_file.file.clone());
        }
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| {
                f.parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
            })
            .collect();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let relevant = event
                    .paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
                if relevant && !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send("file change");
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                warn!(error = %e, "cannot watch dialplan files; use SIGHUP or the admin endpoint to reload");
                return None;
            }
        };
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                warn!(dir = %dir.display(), error = %e, "cannot watch dialplan directory");
            }
        }
        Some(watcher)
    }
}
