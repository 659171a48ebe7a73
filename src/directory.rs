//! Users and the SIP domains they belong to: the configuration schema, and the
//! immutable lookup structure built from it (with digest HA1s precomputed).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::auth::digest::{Algorithm, ha1};

/// A SIP domain (and digest realm) with its users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The domain name; also the digest realm.
    pub name: Spanned<String>,
    /// Other host names or addresses that mean this domain. `"*"` makes this
    /// the domain of any host no other domain claims (handy for a demo; name
    /// your hosts in production).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The users of the domain.
    #[serde(default)]
    pub users: Vec<Spanned<UserConfig>>,
}

/// One user, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user part of the address of record (`1001` in `sip:1001@example.com`).
    pub username: String,
    /// Clear-text password; or give the precomputed HA1s instead.
    #[serde(default)]
    pub password: Option<String>,
    /// MD5(username:realm:password), lower-case hex.
    #[serde(default)]
    pub ha1_md5: Option<String>,
    /// SHA-256(username:realm:password), lower-case hex.
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    /// Display name for caller ID.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Groups, used by dialplans (e.g. who may call abroad).
    #[serde(default)]
    pub groups: Vec<String>,
    /// A disabled user cannot authenticate (and is indistinguishable from an unknown one).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The demo domain shipped in the embedded defaults: any host, users 1001–1003.
pub fn demo_domains() -> Vec<DomainConfig> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    let user = |name: &str, display: &str| Spanned {
        value: UserConfig {
            username: name.to_string(),
            password: Some(format!("demo-{name}")),
            ha1_md5: None,
            ha1_sha256: None,
            display_name: Some(display.to_string()),
            groups: vec!["demo".to_string()],
            enabled: true,
        },
        referenced: unknown,
        defined: unknown,
    };
    vec![DomainConfig {
        name: Spanned {
            value: "switchboard.local".to_string(),
            referenced: unknown,
            defined: unknown,
        },
        aliases: vec!["*".to_string()],
        users: vec![
            user("1001", "Demo 1001"),
            user("1002", "Demo 1002"),
            user("1003", "Demo 1003"),
        ],
    }]
}

/// A user ready for authentication.
#[derive(Debug, Clone)]
pub struct User {
    /// Username (user part of the AOR).
    pub username: String,
    /// Domain name (realm).
    pub domain: Arc<str>,
    /// Display name, when configured.
    pub display_name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// HA1 for MD5, when known.
    pub ha1_md5: Option<String>,
    /// HA1 for SHA-256, when known.
    pub ha1_sha256: Option<String>,
}

impl User {
    /// The HA1 for `algorithm`, when this user has one.
    pub fn ha1(&self, algorithm: Algorithm) -> Option<&str> {
        match algorithm {
            Algorithm::Md5 => self.ha1_md5.as_deref(),
            Algorithm::Sha256 => self.ha1_sha256.as_deref(),
        }
    }

    /// The address of record, `user@domain`.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.username, self.domain)
    }
}

/// Domains and users, immutable once built.
#[derive(Debug, Default)]
pub struct Directory {
    domains: HashMap<String, Arc<str>>,
    catch_all: Option<Arc<str>>,
    users: HashMap<(Arc<str>, String), Arc<User>>,
}

/// A problem in the users/domains configuration, with where it is.
#[derive(Debug, Clone)]
pub struct DirectoryProblem {
    /// Line (1-based, 0 unknown).
    pub line: u64,
    /// Column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Directory {
    /// Builds the directory, or lists every problem found.
    pub fn build(domains: &[DomainConfig]) -> Result<Directory, Vec<DirectoryProblem>> {
        let mut problems = Vec::new();
        let mut directory = Directory::default();
        for domain in domains {
            let name = domain.name.value.trim().to_ascii_lowercase();
            let at = |s: &serde_saphyr::Location| (s.line(), s.column());
            let (line, column) = at(&domain.name.referenced);
            if name.is_empty() || name.contains(['@', ' ', ':']) {
                problems.push(DirectoryProblem {
                    line,
                    column,
                    message: format!("domains.name: '{}' is not a domain name", domain.name.value),
                });
                continue;
            }
            let realm: Arc<str> = Arc::from(name.as_str());
            for host in std::iter::once(&name).chain(domain.aliases.iter()) {
                let host = host.trim().to_ascii_lowercase();
                if host == "*" {
                    if directory.catch_all.is_some() {
                        problems.push(DirectoryProblem {
                            line,
                            column,
                            message: "domains.aliases: only one domain may use \"*\"".into(),
                        });
                    }
                    directory.catch_all = Some(realm.clone());
                } else if directory
                    .domains
                    .insert(host.clone(), realm.clone())
                    .is_some()
                {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!("domains: host '{host}' belongs to two domains"),
                    });
                }
            }
            for user in &domain.users {
                let (line, column) = at(&user.referenced);
                let config = &user.value;
                let username = config.username.trim();
                if username.is_empty() || username.contains(['@', ':', ' ', ';', '<', '>']) {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!(
                            "users.username: '{}' is not a valid user name",
                            config.username
                        ),
                    });
                    continue;
                }
                let has_ha1 = config.ha1_md5.is_some() || config.ha1_sha256.is_some();
                if config.password.is_some() == has_ha1 {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!(
                            "users '{username}': give either password or ha1_md5/ha1_sha256"
                        ),
                    });
                    continue;
                }
                if let Some(h) = &config.ha1_md5
                    && !is_hex(h, 32)
                {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!("users '{username}': ha1_md5 must be 32 hex digits"),
                    });
                }
                if let Some(h) = &config.ha1_sha256
                    && !is_hex(h, 64)
                {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!("users '{username}': ha1_sha256 must be 64 hex digits"),
                    });
                }
                if config.groups.iter().any(|g| g.trim().is_empty()) {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!("users '{username}': empty group name"),
                    });
                }
                let (ha1_md5, ha1_sha256) = match &config.password {
                    Some(password) => (
                        Some(ha1(Algorithm::Md5, username, &realm, password)),
                        Some(ha1(Algorithm::Sha256, username, &realm, password)),
                    ),
                    None => (
                        config.ha1_md5.as_ref().map(|h| h.to_ascii_lowercase()),
                        config.ha1_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
                    ),
                };
                if !config.enabled {
                    continue;
                }
                let entry = User {
                    username: username.to_string(),
                    domain: realm.clone(),
                    display_name: config.display_name.clone(),
                    groups: config.groups.clone(),
                    ha1_md5,
                    ha1_sha256,
                };
                if directory
                    .users
                    .insert((realm.clone(), username.to_string()), Arc::new(entry))
                    .is_some()
                {
                    problems.push(DirectoryProblem {
                        line,
                        column,
                        message: format!("users: '{username}' appears twice in domain {realm}"),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(directory)
        } else {
            Err(problems)
        }
    }

    /// The domain (realm) a host name or address belongs to, if it is ours.
    pub fn domain_of(&self, host: &str) -> Option<Arc<str>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self.domains.get(host) {
            Some(domain) => Some(domain.clone()),
            None if self.domains.keys().any(|k| k.eq_ignore_ascii_case(host)) => self
                .domains
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(host))
                .map(|(_, v)| v.clone()),
            None => self.catch_all.clone(),
        }
    }

    /// The domain for requests that name none of ours (calls from trunks
    /// to a number): the catch-all domain, else the first one by name.
    pub fn default_domain(&self) -> Option<Arc<str>> {
        self.catch_all.clone().or_else(|| {
            self.domains
                .iter()
                .min_by(|a, b| a.0.cmp(b.0))
                .map(|(_, v)| v.clone())
        })
    }

    /// An enabled user of `domain`.
    pub fn user(&self, domain: &Arc<str>, username: &str) -> Option<Arc<User>> {
        self.users
            .get(&(domain.clone(), username.to_string()))
            .cloned()
    }

    /// Number of enabled users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}
