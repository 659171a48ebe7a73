//! Human-readable explanations: `Display` for [`Decision`] (the dry run of
//! `switchboard dialplan test`), [`Plan`], [`Action`] and [`FailoverOn`].

use std::fmt;

use super::{Action, Decision, FailoverOn, Plan};

impl fmt::Display for FailoverOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailoverOn::Code(code) => write!(f, "{code}"),
            FailoverOn::Class(class) => write!(f, "{class}xx"),
            FailoverOn::Timeout => f.write_str("timeout"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::User {
                users,
                parallel,
                ring_timeout,
            } => {
                let secs = ring_timeout.as_secs();
                if users.len() == 1 {
                    write!(f, "user: ring {} for {secs} s", users[0])
                } else if *parallel {
                    write!(
                        f,
                        "user: ring {} at once (parallel) for {secs} s",
                        users.join(", ")
                    )
                } else {
                    write!(
                        f,
                        "user: ring {} one after another (sequential), {secs} s each",
                        users.join(", then ")
                    )
                }
            }
            Action::Trunk {
                trunks,
                failover_on,
            } => {
                let on: Vec<String> = failover_on.iter().map(ToString::to_string).collect();
                write!(f, "trunk: {}", trunks.join(", then "))?;
                if trunks.len() > 1 {
                    write!(
                        f,
                        " (next trunk on {})",
                        if on.is_empty() {
                            "nothing".to_string()
                        } else {
                            on.join(", ")
                        }
                    )?;
                }
                Ok(())
            }
            Action::Conference { room } => write!(f, "conference: room '{room}'"),
            Action::Echo => f.write_str("echo: answer and play the caller's audio back"),
            Action::Reject { code, reason } => write!(f, "reject: {code} {reason}"),
        }
    }
}

impl Plan {
    fn write_indented(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        writeln!(f, "{:indent$}{}", "", self.action)?;
        if let Some(next) = &self.on_no_answer {
            writeln!(f, "{:indent$}on no answer:", "")?;
            next.write_indented(f, indent + 2)?;
        }
        if let Some(next) = &self.on_failure {
            writeln!(f, "{:indent$}on failure:", "")?;
            next.write_indented(f, indent + 2)?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    /// The action tree, one line per action, follow-ups indented.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_indented(f, 0)
    }
}

impl fmt::Display for Decision {
    /// The dry-run explanation: rule and position, reasons, rewrites, the
    /// resulting call, and the action tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "matched rule '{}' ({}:{})",
            self.rule, self.file, self.line
        )?;
        writeln!(f, "because:")?;
        for reason in &self.reasons {
            writeln!(f, "  - {reason}")?;
        }
        if self.rewrites.is_empty() {
            writeln!(f, "rewrites: none")?;
        } else {
            writeln!(f, "rewrites:")?;
            for rewrite in &self.rewrites {
                writeln!(f, "  - {rewrite}")?;
            }
        }
        writeln!(f, "called number: {}", self.to)?;
        match (&self.caller_user, &self.caller_display) {
            (None, None) => writeln!(f, "caller id: unchanged")?,
            (user, display) => {
                let mut parts = Vec::new();
                if let Some(user) = user {
                    parts.push(format!("user '{user}'"));
                }
                if let Some(display) = display {
                    parts.push(format!("display '{display}'"));
                }
                writeln!(f, "caller id: {}", parts.join(", "))?;
            }
        }
        for (name, value) in &self.add_headers {
            writeln!(f, "add header: {name}: {value}")?;
        }
        for name in &self.remove_headers {
            writeln!(f, "remove header: {name}")?;
        }
        writeln!(f, "action:")?;
        self.plan.write_indented(f, 2)
    }
}
