//! Where trunks are written: the `trunks:` section of `switchboard.yaml`,
//! which either names a trunks file (the default, `trunks.yaml`, reloaded
//! live with the dialplan) or lists the trunks inline (read at start only).
//! Every problem is reported as `FILE:LINE:COLUMN: message`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

use super::config::TrunkConfig;
use crate::config::Problem;

/// The trunks file used when the configuration names none; when it does
/// not exist there are no trunks.
pub const DEFAULT_FILE: &str = "trunks.yaml";

/// The `trunks:` section of `switchboard.yaml`.
#[derive(Debug, Clone)]
pub enum TrunksSection {
    /// Trunks listed inline (compatibility): read at start, not reloaded.
    Inline(Vec<Spanned<TrunkConfig>>),
    /// Trunks in their own file, reloaded with the dialplan.
    File(TrunkFileConfig),
}

impl Default for TrunksSection {
    fn default() -> Self {
        TrunksSection::File(TrunkFileConfig::default())
    }
}

/// `trunks: { file: ..., watch: ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkFileConfig {
    /// The trunks file (relative to the working directory).
    pub file: PathBuf,
    /// Reload when the file changes.
    pub watch: bool,
}

impl Default for TrunkFileConfig {
    fn default() -> Self {
        TrunkFileConfig {
            file: PathBuf::from(DEFAULT_FILE),
            watch: true,
        }
    }
}

impl<'de> Deserialize<'de> for TrunksSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SectionVisitor;
        impl<'de> Visitor<'de> for SectionVisitor {
            type Value = TrunksSection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of trunks, or { file: PATH, watch: BOOL }")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<Spanned<TrunkConfig>>::deserialize(SeqAccessDeserializer::new(seq))
                    .map(TrunksSection::Inline)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                TrunkFileConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(TrunksSection::File)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(TrunksSection::Inline(Vec::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(TrunksSection::Inline(Vec::new()))
            }
        }
        deserializer.deserialize_any(SectionVisitor)
    }
}

impl TrunksSection {
    /// The trunks file, when trunks live in one.
    pub fn file(&self) -> Option<&TrunkFileConfig> {
        match self {
            TrunksSection::File(file) => Some(file),
            TrunksSection::Inline(_) => None,
        }
    }

    /// The trunks, validated. Inline trunks are checked against the
    /// configuration's own `file` and `text` (for positions).
    pub fn load(&self, file: &str, text: &str) -> Result<Vec<TrunkConfig>, Vec<Problem>> {
        match self {
            TrunksSection::Inline(list) => {
                let problems = check(list, file, text);
                if problems.is_empty() {
                    Ok(list.iter().map(|t| t.value.clone()).collect())
                } else {
                    Err(problems)
                }
            }
            TrunksSection::File(config) => load(&config.file),
        }
    }
}

/// The layout of a trunks file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrunksFile {
    /// The trunks.
    #[serde(default)]
    trunks: Vec<Spanned<TrunkConfig>>,
}

/// Loads and validates a trunks file. The default file being absent means
/// no trunks; any other missing file is an error.
pub fn load(path: &Path) -> Result<Vec<TrunkConfig>, Vec<Problem>> {
    let name = path.display().to_string();
    if !path.exists() && path == Path::new(DEFAULT_FILE) {
        return Ok(Vec::new());
    }
    let text = crate::config::read_admin_file(path).map_err(|e| {
        vec![Problem {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the trunks file: {e}"),
        }]
    })?;
    parse(&text, &name)
}

/// Parses and validates the text of a trunks file named `file`.
pub fn parse(text: &str, file: &str) -> Result<Vec<TrunkConfig>, Vec<Problem>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: TrunksFile = serde_saphyr::from_str(text).map_err(|e| {
        let location = e.location().unwrap_or(Location::UNKNOWN);
        let message = e
            .without_snippet()
            .to_string()
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid YAML")
            .trim()
            .to_string();
        vec![Problem {
            file: file.to_string(),
            line: location.line(),
            column: location.column(),
            message,
        }]
    })?;
    let problems = check(&parsed.trunks, file, text);
    if problems.is_empty() {
        Ok(parsed.trunks.into_iter().map(|t| t.value).collect())
    } else {
        Err(problems)
    }
}

/// Finds `key:` inside the list item that starts at `item` (1-based line
/// and column), for messages about values without a span of their own.
/// Falls back to the item's position (flow-style items, absent keys).
fn locate_key(text: &str, item: (u64, u64), key: &str) -> (u64, u64) {
    if item.0 == 0 {
        return item;
    }
    let mut item_indent = None;
    for (index, line) in text.lines().enumerate().skip(item.0 as usize - 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (content, indent) = match item_indent {
            None => {
                let content = trimmed.strip_prefix("- ").unwrap_or(trimmed).trim_start();
                let indent = line.len() - content.len();
                item_indent = Some(indent);
                (content, indent)
            }
            Some(first) => {
                let indent = line.len() - trimmed.len();
                if indent < first {
                    break;
                }
                (trimmed, indent)
            }
        };
        if let Some(rest) = content.strip_prefix(key)
            && rest.trim_start().starts_with(':')
        {
            return (index as u64 + 1, indent as u64 + 1);
        }
    }
    item
}

/// Every problem of a list of trunks: each trunk's own, and names used twice.
pub fn check(list: &[Spanned<TrunkConfig>], file: &str, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for trunk in list {
        let at = (trunk.referenced.line(), trunk.referenced.column());
        let name = trunk.value.name.trim();
        for (key, message) in trunk.value.problems() {
            let (line, column) = locate_key(text, at, key);
            problems.push(Problem {
                file: file.to_string(),
                line,
                column,
                message: format!("trunks: '{name}': {message}"),
            });
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            let (line, column) = locate_key(text, at, "name");
            problems.push(Problem {
                file: file.to_string(),
                line,
                column,
                message: format!("trunks: name '{name}' is used twice"),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_loads() {
        let trunks = parse(
            "trunks:\n  - name: a\n    host: 192.0.2.1\n  - { name: b, host: sip.example.com, transport: tcp }\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(trunks.len(), 2);
        assert_eq!(trunks[1].name, "b");
        assert!(parse("# nothing yet\n", "t.yaml").unwrap().is_empty());
    }

    #[test]
    fn problems_have_file_line_and_column() {
        let err = parse(
            "trunks:\n  - name: a\n    host: 192.0.2.1\n  - name: a\n    host: ''\n    codecs: []\n",
            "t.yaml",
        )
        .unwrap_err();
        let text: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"t.yaml:5:5: trunks: 'a': host '' must be a host name or IP address (the port goes in port:)".to_string()), "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.starts_with("t.yaml:6:5:") && t.contains("codecs")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("t.yaml:4:") && t.contains("used twice")),
            "{text:?}"
        );
        let err = parse("trunks:\n  - name: a\n    hots: x\n", "t.yaml").unwrap_err();
        assert_eq!(err[0].line, 3, "{err:?}");
        assert!(err[0].message.contains("hots"), "{err:?}");
    }

    #[test]
    fn the_default_file_may_be_absent_but_a_named_one_not() {
        assert!(
            load(Path::new(DEFAULT_FILE)).is_ok_and(|t| t.is_empty())
                || Path::new(DEFAULT_FILE).exists()
        );
        let err = load(Path::new("/nonexistent/trunks.yaml")).unwrap_err();
        assert!(err[0].message.contains("cannot read"), "{err:?}");
    }

    #[test]
    fn section_is_a_list_or_a_file() {
        #[derive(Deserialize)]
        struct Wrapper {
            trunks: TrunksSection,
        }
        let w: Wrapper = serde_saphyr::from_str("trunks:\n  - { name: a, host: h }\n").unwrap();
        assert!(
            matches!(&w.trunks, TrunksSection::Inline(list) if list.len() == 1 && list[0].referenced.line() == 2)
        );
        let w: Wrapper = serde_saphyr::from_str("trunks: { file: carriers.yaml }\n").unwrap();
        assert_eq!(
            w.trunks.file(),
            Some(&TrunkFileConfig {
                file: "carriers.yaml".into(),
                watch: true
            })
        );
        let err = serde_saphyr::from_str::<Wrapper>("trunks: { fiel: x }\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("fiel"), "{err}");
    }
}
