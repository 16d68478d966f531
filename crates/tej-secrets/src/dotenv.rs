//! A `.env` parser and writer that keeps every byte it does not have to change.
//!
//! Values are read the way Docker Compose's parser (compose-go `dotenv`) reads them,
//! without variable interpolation: unquoted values end at ` #` and are trimmed,
//! single-quoted values are literal, double-quoted values understand `\a \b \f \n \r
//! \t \v \$ \" \\` and `\0ddd` (other backslashes stay); a quote preceded by a
//! backslash never closes a value. `KEY: value` (YAML style) lines are kept but not read.
//! New values are written unquoted when they are plain, in single quotes when
//! that is literal enough, else in double quotes with `\`, `"`, `$` and newlines
//! escaped, so Compose reads them back unchanged.

use crate::error::{Result, SecretsError};
use std::fmt;
use tej_core::Secret;

/// How a value is quoted in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quote {
    /// `KEY=value`
    None,
    /// `KEY='value'`
    Single,
    /// `KEY="value"`
    Double,
}

#[derive(Clone)]
struct Assign {
    key: String,
    export: bool,
    /// Byte range of the value token (quotes included) inside `raw`.
    value_start: usize,
    value_end: usize,
    quote: Quote,
    value: String,
}

#[derive(Clone)]
enum Kind {
    Blank,
    Comment,
    /// A line tej does not understand; kept as it is.
    Other,
    Assign(Assign),
}

#[derive(Clone)]
struct Entry {
    /// The exact text, line terminator(s) included.
    raw: String,
    kind: Kind,
}

/// One parsed `.env` file. `Debug` shows keys only, never values.
#[derive(Clone, Default)]
pub struct EnvFile {
    entries: Vec<Entry>,
}

impl fmt::Debug for EnvFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvFile")
            .field("keys", &self.keys())
            .field("lines", &self.entries.len())
            .finish()
    }
}

/// True for a name tej may set: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

fn line_end(s: &str, from: usize) -> usize {
    s[from..]
        .find('\n')
        .map(|i| from + i + 1)
        .unwrap_or(s.len())
}

/// Tries to read an assignment starting at `pos`; returns it and where its entry ends.
fn parse_assign(s: &str, pos: usize) -> Option<(Assign, usize)> {
    let first_end = line_end(s, pos);
    let mut i = pos;
    let bytes = s.as_bytes();
    while i < first_end && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    let mut export = false;
    if s[i..first_end].starts_with("export") && matches!(bytes.get(i + 6), Some(b' ') | Some(b'\t'))
    {
        let mut j = i + 6;
        while j < first_end && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        // `export =` would be a key named export
        if j < first_end && bytes[j] != b'=' {
            export = true;
            i = j;
        }
    }
    let key_start = i;
    while i < first_end && is_key_char(bytes[i] as char) {
        i += 1;
    }
    if i == key_start {
        return None;
    }
    let key = s[key_start..i].to_string();
    while i < first_end && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    if bytes.get(i) != Some(&b'=') || i >= first_end {
        return None;
    }
    i += 1;
    // leading whitespace of the value (never the newline)
    while let Some(c) = s[i..first_end].chars().next() {
        if c.is_whitespace() && c != '\n' && c != '\r' {
            i += c.len_utf8();
        } else {
            break;
        }
    }
    let value_start = i;
    let q = bytes.get(i).copied();
    if q == Some(b'\'') || q == Some(b'"') {
        let quote = q?;
        let mut j = i + 1;
        let close = loop {
            if j >= bytes.len() {
                return None;
            }
            if bytes[j] == quote && bytes[j - 1] != b'\\' {
                break j;
            }
            j += 1;
        };
        let inner = &s[i + 1..close];
        let (quote, value) = if quote == b'\'' {
            (Quote::Single, inner.to_string())
        } else {
            (Quote::Double, decode_double(inner))
        };
        let end = line_end(s, close);
        Some((
            Assign {
                key,
                export,
                value_start: value_start - pos,
                value_end: close + 1 - pos,
                quote,
                value,
            },
            end,
        ))
    } else {
        let content_end = if s[..first_end].ends_with('\n') {
            first_end - 1
        } else {
            first_end
        };
        let line = &s[i..content_end];
        let cut = line.find(" #").unwrap_or(line.len());
        let value = line[..cut].trim_end();
        Some((
            Assign {
                key,
                export,
                value_start: value_start - pos,
                value_end: value_start + value.len() - pos,
                quote: Quote::None,
                value: value.to_string(),
            },
            first_end,
        ))
    }
}

/// Double-quoted escapes as compose-go's dotenv parser reads them: `\a \b \f \n \r \t \v
/// \$ \" \\` and `\0ddd` octal; any other backslash stays as it is.
fn decode_double(inner: &str) -> String {
    let chars: Vec<char> = inner.chars().collect();
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let mapped = match chars[i + 1] {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '$' => Some('$'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            _ => None,
        };
        if let Some(m) = mapped {
            out.push(m);
            i += 2;
            continue;
        }
        if chars[i + 1] == '0' {
            // `\0` and up to three digits; only exactly three octal digits make a character
            let digits: Vec<char> = chars[i + 2..]
                .iter()
                .take(3)
                .take_while(|d| d.is_ascii_digit())
                .copied()
                .collect();
            let whole = 2 + digits.len();
            let octal = (digits.len() == 3 && digits.iter().all(|d| ('0'..='7').contains(d)))
                .then(|| u32::from_str_radix(&digits.iter().collect::<String>(), 8).ok())
                .flatten()
                .filter(|v| *v <= 0xff)
                .and_then(char::from_u32);
            match octal {
                Some(ch) => out.push(ch),
                // compose-go rewrites `\0` to `\` before trying, and keeps the rewrite
                None => {
                    out.push('\\');
                    out.extend(&digits);
                }
            }
            i += whole;
            continue;
        }
        out.push('\\');
        i += 1;
    }
    out
}

fn is_plain(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:/+=@%\\".contains(c))
}

fn encode_single(v: &str) -> Option<String> {
    (!v.contains(['\'', '\n', '\r']) && !v.ends_with('\\')).then(|| format!("'{v}'"))
}

fn encode_double(v: &str) -> Option<String> {
    if v.ends_with('\\') {
        return None;
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            o => out.push(o),
        }
    }
    out.push('"');
    Some(out)
}

/// The text of `value` as it should appear after `KEY=`, preferring `prefer`'s quoting.
pub fn encode_value(key: &str, value: &str, prefer: Quote) -> Result<String> {
    if value.contains('\0') {
        return Err(SecretsError::Unrepresentable {
            key: key.into(),
            reason: "it contains a NUL character",
        });
    }
    let attempt = match prefer {
        Quote::None => is_plain(value).then(|| value.to_string()),
        Quote::Single => encode_single(value),
        Quote::Double => encode_double(value),
    };
    if let Some(a) = attempt {
        return Ok(a);
    }
    if value.is_empty() || is_plain(value) {
        return Ok(value.to_string());
    }
    encode_single(value)
        .or_else(|| encode_double(value))
        .ok_or_else(|| SecretsError::Unrepresentable {
            key: key.into(),
            reason: "a quoted value cannot end with a backslash (Compose reads it as an escaped quote)",
        })
}

impl EnvFile {
    /// Parses text; never fails (lines it does not understand are kept as they are).
    pub fn parse(text: &str) -> EnvFile {
        let mut entries = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let end = line_end(text, pos);
            let content = text[pos..end].trim_end_matches(['\n', '\r']);
            let trimmed = content.trim();
            let (kind, end) = if trimmed.is_empty() {
                (Kind::Blank, end)
            } else if trimmed.starts_with('#') {
                (Kind::Comment, end)
            } else {
                match parse_assign(text, pos) {
                    Some((a, e)) => (Kind::Assign(a), e),
                    None => (Kind::Other, end),
                }
            };
            entries.push(Entry {
                raw: text[pos..end].to_string(),
                kind,
            });
            pos = end;
        }
        EnvFile { entries }
    }

    /// The file's text; identical to the parsed text when nothing was changed.
    pub fn render(&self) -> String {
        self.entries.iter().map(|e| e.raw.as_str()).collect()
    }

    /// Distinct keys, in order of first appearance.
    pub fn keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for e in &self.entries {
            if let Kind::Assign(a) = &e.kind
                && !out.contains(&a.key.as_str())
            {
                out.push(&a.key);
            }
        }
        out
    }

    /// Number of entries (lines, or line groups for multi-line quoted values).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn last_index(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .rposition(|e| matches!(&e.kind, Kind::Assign(a) if a.key == key))
    }

    /// True when the file assigns `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.last_index(key).is_some()
    }

    /// The value Compose uses for `key` (the last assignment), without interpolation.
    pub fn get(&self, key: &str) -> Option<Secret> {
        let i = self.last_index(key)?;
        match &self.entries[i].kind {
            Kind::Assign(a) => Some(Secret::new(a.value.clone())),
            _ => None,
        }
    }

    /// How `key`'s last assignment is quoted and whether it has an `export` prefix.
    pub fn style(&self, key: &str) -> Option<(Quote, bool)> {
        let i = self.last_index(key)?;
        match &self.entries[i].kind {
            Kind::Assign(a) => Some((a.quote, a.export)),
            _ => None,
        }
    }

    /// Sets `key` (every assignment of it); appends `KEY=value` when absent.
    pub fn set(&mut self, key: &str, value: &Secret) -> Result<()> {
        self.set_inner(key, value, None)
    }

    /// Sets `key`; when absent, inserts it right after the last assignment of `anchor`
    /// (or at the end when `anchor` is absent too).
    pub fn set_after(&mut self, key: &str, value: &Secret, anchor: &str) -> Result<()> {
        self.set_inner(key, value, Some(anchor))
    }

    fn set_inner(&mut self, key: &str, value: &Secret, anchor: Option<&str>) -> Result<()> {
        if !is_valid_key(key) {
            return Err(SecretsError::InvalidKey(key.to_string()));
        }
        let v = value.expose();
        let mut found = false;
        // Encode everything first so a failure leaves the file untouched.
        let mut edits = Vec::new();
        for (idx, e) in self.entries.iter().enumerate() {
            if let Kind::Assign(a) = &e.kind
                && a.key == key
            {
                found = true;
                edits.push((idx, encode_value(key, v, a.quote)?));
            }
        }
        for (idx, enc) in edits {
            let e = &mut self.entries[idx];
            if let Kind::Assign(a) = &mut e.kind {
                let mut raw = String::with_capacity(e.raw.len() + enc.len());
                raw.push_str(&e.raw[..a.value_start]);
                raw.push_str(&enc);
                raw.push_str(&e.raw[a.value_end..]);
                // re-parse the entry so offsets, quoting and value are exact
                let reparsed = EnvFile::parse(&raw);
                match reparsed.entries.as_slice() {
                    [one] if matches!(&one.kind, Kind::Assign(b) if b.key == key && b.value == v) =>
                    {
                        *e = one.clone();
                    }
                    _ => {
                        return Err(SecretsError::Unrepresentable {
                            key: key.into(),
                            reason: "the edited line would not read back unchanged",
                        });
                    }
                }
            }
        }
        if found {
            return Ok(());
        }
        let enc = encode_value(key, v, Quote::None)?;
        let line = format!("{key}={enc}\n");
        let parsed = EnvFile::parse(&line);
        let Some(entry) = parsed.entries.into_iter().next() else {
            return Err(SecretsError::InvalidKey(key.into()));
        };
        let at = anchor
            .and_then(|a| self.last_index(a))
            .map(|i| i + 1)
            .unwrap_or(self.entries.len());
        if at > 0 {
            let prev = &mut self.entries[at - 1];
            if !prev.raw.ends_with('\n') {
                prev.raw.push('\n');
            }
        }
        self.entries.insert(at, entry);
        Ok(())
    }

    /// Removes every assignment of `key`; true when there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| !matches!(&e.kind, Kind::Assign(a) if a.key == key));
        before != self.entries.len()
    }

    /// Every assigned value, for registering with a [`tej_core::Redactor`].
    pub fn values(&self) -> Vec<Secret> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Assign(a) => Some(Secret::new(a.value.clone())),
                _ => None,
            })
            .collect()
    }

    /// Counts of (assignments, comments, blank lines, unparsed lines).
    pub fn line_counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for e in &self.entries {
            match e.kind {
                Kind::Assign(_) => c.0 += 1,
                Kind::Comment => c.1 += 1,
                Kind::Blank => c.2 += 1,
                Kind::Other => c.3 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(f: &EnvFile, k: &str) -> String {
        f.get(k).map(|s| s.expose().to_string()).unwrap_or_default()
    }

    #[test]
    fn reads_compose_syntax() {
        let text = "# comment\n\nexport A=1\nB = two # inline\nC='lit $X # not comment'\nD=\"a\\nb \\\"q\\\" \\$HOME\"\r\nE=\"multi\nline\" # c\nF=\nbogus line\nG=x#y\nH=\"\\t\\'\\#\\0101\\09\\\\x\"\n";
        let f = EnvFile::parse(text);
        assert_eq!(f.render(), text);
        assert_eq!(get(&f, "A"), "1");
        assert_eq!(f.style("A"), Some((Quote::None, true)));
        assert_eq!(get(&f, "B"), "two");
        assert_eq!(get(&f, "C"), "lit $X # not comment");
        assert_eq!(get(&f, "D"), "a\nb \"q\" $HOME");
        assert_eq!(get(&f, "E"), "multi\nline");
        assert_eq!(get(&f, "F"), "");
        assert_eq!(get(&f, "G"), "x#y");
        // compose-go keeps unknown escapes and reads \0ddd as octal
        assert_eq!(get(&f, "H"), "\t\\'\\#A\\9\\x");
        assert_eq!(f.keys(), vec!["A", "B", "C", "D", "E", "F", "G", "H"]);
        assert_eq!(f.line_counts(), (8, 1, 1, 1));
    }

    #[test]
    fn edits_touch_only_the_value() {
        let text = "export JWT_SECRET=\"old\" # rotated quarterly\nOTHER=1";
        let mut f = EnvFile::parse(text);
        f.set("JWT_SECRET", &Secret::new("n$w 'v' #1")).unwrap();
        f.set_after("JWT_SECRET_PREVIOUS", &Secret::new("old"), "JWT_SECRET")
            .unwrap();
        f.set("NEW", &Secret::new("abc")).unwrap();
        assert_eq!(
            f.render(),
            "export JWT_SECRET=\"n\\$w 'v' #1\" # rotated quarterly\nJWT_SECRET_PREVIOUS=old\nOTHER=1\nNEW=abc\n"
        );
        let g = EnvFile::parse(&f.render());
        assert_eq!(get(&g, "JWT_SECRET"), "n$w 'v' #1");
        let mut g = g;
        assert!(g.remove("JWT_SECRET_PREVIOUS"));
        assert!(!g.contains("JWT_SECRET_PREVIOUS"));
    }

    #[test]
    fn encodings_follow_compose_rules() {
        assert_eq!(encode_value("K", "abc123", Quote::None).unwrap(), "abc123");
        assert_eq!(encode_value("K", "a b", Quote::None).unwrap(), "'a b'");
        assert_eq!(
            encode_value("K", "it's $x", Quote::None).unwrap(),
            "\"it's \\$x\""
        );
        assert_eq!(encode_value("K", "", Quote::None).unwrap(), "");
        assert!(matches!(
            encode_value("K", "a b\\", Quote::None),
            Err(SecretsError::Unrepresentable { .. })
        ));
        assert_eq!(
            encode_value("K", "plain\\", Quote::None).unwrap(),
            "plain\\"
        );
        assert!(EnvFile::default().set("1BAD", &Secret::new("x")).is_err());
    }

    #[test]
    fn debug_shows_no_values() {
        let f = EnvFile::parse("JWT_SECRET=supersecretvalue123\n");
        let d = format!("{f:?}");
        assert!(
            d.contains("JWT_SECRET") && !d.contains("supersecretvalue123"),
            "{d}"
        );
    }

    fn line_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ \t]*".prop_map(|s| s),
            "#[^\n]*".prop_map(|s| s),
            ("(export )?", "[A-Z_][A-Z0-9_]{0,6}", "[ ]?=[ ]?", "[^\n]*")
                .prop_map(|(e, k, eq, v)| format!("{e}{k}{eq}{v}")),
            ("[A-Z]{1,4}", "[^\n'\"]*").prop_map(|(k, v)| format!("{k}=\"{v}")),
            ("[A-Z]{1,4}", "[^']*").prop_map(|(k, v)| format!("{k}='{v}'")),
            "[^\n]*".prop_map(|s| s),
        ]
    }

    fn file_strategy() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((line_strategy(), prop::bool::ANY), 0..12),
            prop::bool::ANY,
        )
            .prop_map(|(lines, trailing)| {
                let mut s = String::new();
                for (l, crlf) in &lines {
                    s.push_str(l);
                    s.push_str(if *crlf { "\r\n" } else { "\n" });
                }
                if !trailing && s.ends_with('\n') {
                    s.pop();
                }
                s
            })
    }

    proptest! {
        #[test]
        fn parse_then_render_is_identical(text in file_strategy()) {
            prop_assert_eq!(EnvFile::parse(&text).render(), text);
        }

        #[test]
        fn parse_then_render_is_identical_for_any_text(text in any::<String>()) {
            prop_assert_eq!(EnvFile::parse(&text).render(), text);
        }

        #[test]
        fn update_sets_value_and_keeps_other_lines(
            others in prop::collection::vec(("[A-Z]{1,5}", "[^\n]{0,12}", 0u8..4), 0..8),
            before in 0usize..9,
            old in "[^\n]{0,10}",
            new in any::<String>(),
            style in 0u8..3,
        ) {
            // a file with distinct keys, one of them TARGET_KEY in one of three styles
            let mut lines: Vec<String> = Vec::new();
            for (i, (k, v, kind)) in others.iter().enumerate() {
                lines.push(match kind {
                    0 => format!("# {v}"),
                    1 => String::new(),
                    _ => format!("K{i}{k}={}", v.replace(['#', '\'', '"'], "")),
                });
            }
            let old_line = match style {
                0 => format!("TARGET_KEY={}", encode_value("T", &old, Quote::None).unwrap_or_default()),
                1 => format!("export TARGET_KEY='{}' # keep", old.replace(['\'', '\\'], "")),
                _ => format!("TARGET_KEY = \"{}\"", old.replace(['"', '\\'], "")),
            };
            let at = before.min(lines.len());
            lines.insert(at, old_line);
            let text = lines.join("\n") + "\n";
            let original = EnvFile::parse(&text);
            let mut f = original.clone();
            match f.set("TARGET_KEY", &Secret::new(new.clone())) {
                Ok(()) => {
                    let rendered = f.render();
                    let back = EnvFile::parse(&rendered);
                    prop_assert_eq!(back.get("TARGET_KEY").map(|s| s.expose().to_string()), Some(new.clone()));
                    for k in original.keys() {
                        if k != "TARGET_KEY" {
                            prop_assert_eq!(back.get(k), original.get(k));
                        }
                    }
                    let old_lines: Vec<&str> = text.split_inclusive('\n').collect();
                    let new_lines: Vec<&str> = rendered.split_inclusive('\n').collect();
                    // every line other than the target's is unchanged and in order
                    let keep_old: Vec<&&str> = old_lines.iter().filter(|l| !l.contains("TARGET_KEY")).collect();
                    let keep_new: Vec<&&str> = new_lines.iter().filter(|l| !l.contains("TARGET_KEY")).collect();
                    prop_assert_eq!(keep_old, keep_new);
                }
                Err(SecretsError::Unrepresentable { .. }) => {
                    prop_assert!(new.contains('\0') || new.ends_with('\\'));
                    prop_assert_eq!(f.render(), text);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
