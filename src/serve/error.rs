//! Errors of `nimbus serve`: each names the file, the line and the field, so that a mistake in
//! the file is found without reading the loader.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A mistake in the file, or something the file declares that could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeError {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based), where the mistake has one.
    pub line: Option<usize>,
    /// The field, as spelled in the file (`memory_mb`, `function`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ServeError {}

/// Turns byte offsets of the file into lines and fields, for errors.
#[derive(Debug, Clone)]
pub(crate) struct Locator {
    file: PathBuf,
    text: String,
}

impl Locator {
    pub(crate) fn new(file: &Path, text: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            text: text.to_owned(),
        }
    }

    /// An error at a line (if known) about a field.
    pub(crate) fn error(
        &self,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> ServeError {
        ServeError {
            file: self.file.clone(),
            line,
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// An error about the value whose span is `span` (a name checked after parsing).
    pub(crate) fn at(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> ServeError {
        self.error(Some(self.line_of(span.start)), field, message)
    }

    /// An error about `field` of the table whose span is `table`: the line of the field if the
    /// table spells it, else the table's first line.
    pub(crate) fn in_table(
        &self,
        table: Range<usize>,
        field: &str,
        message: impl fmt::Display,
    ) -> ServeError {
        let line = self.field_line(table, field);
        self.error(Some(line), field, message)
    }

    /// A parse error of the toml crate, with its line and the field it concerns.
    pub(crate) fn parse_error(&self, error: &toml::de::Error) -> ServeError {
        let message = error.message().trim().to_owned();
        let line = error.span().map(|span| self.line_of(span.start));
        let field = quoted_field(&message)
            .or_else(|| error.span().map(|span| self.field_at(span)))
            .unwrap_or_default();
        self.error(line, field, message)
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The key whose value starts at `span` (or the key at `span` itself).
    fn field_at(&self, span: Range<usize>) -> String {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let before = self.text[line_start..start].trim_end();
        if let Some(key) = before.strip_suffix('=') {
            return last_key(key);
        }
        let end = span.end.clamp(start, self.text.len());
        let at = self.text[start..end].trim();
        let at = at.trim_start_matches('[').trim_end_matches(']');
        at.split('=').next().unwrap_or("").trim().to_owned()
    }

    /// The line of `field = ...` inside `table`, else the table's first line. An entry of an
    /// array of tables (`[[functions]]`) is spanned by its header only: its fields, and its
    /// sub-tables (`[[functions.layers]]`, `[functions.async]`), run to the next header that is
    /// not one of its sub-tables.
    pub(crate) fn field_line(&self, table: Range<usize>, field: &str) -> usize {
        let start = table.start.min(self.text.len());
        let end = table
            .end
            .max(self.entry_end(start))
            .clamp(start, self.text.len());
        // A field that is a sub-table (`layers`) is named by its header.
        let sub_table = header_key(&self.text[start..]).map(|key| format!("{key}.{field}"));
        let mut offset = start;
        for line in self.text[start..end].split_inclusive('\n') {
            if sub_table.is_some() && header_key(line) == sub_table {
                return self.line_of(offset);
            }
            let trimmed = line.trim_start().trim_start_matches('{').trim_start();
            if let Some(rest) = trimmed.strip_prefix(field) {
                if rest.trim_start().starts_with('=') {
                    return self.line_of(offset);
                }
            }
            offset += line.len();
        }
        self.line_of(start)
    }

    /// Where the entry whose header starts at `start` ends: at the next header that is not one
    /// of its sub-tables (or at `start` itself when no header starts there).
    fn entry_end(&self, start: usize) -> usize {
        let rest = &self.text[start..];
        let Some(key) = header_key(rest) else {
            return start;
        };
        let sub_table = format!("{key}.");
        let mut lines = rest.split_inclusive('\n');
        let mut offset = start + lines.next().map_or(0, str::len);
        for line in lines {
            if let Some(other) = header_key(line) {
                if !other.starts_with(&sub_table) {
                    return offset;
                }
            }
            offset += line.len();
        }
        self.text.len()
    }
}

/// The key of a table header line (`[[functions.layers]]` gives `functions.layers`).
fn header_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    if !line.starts_with('[') {
        return None;
    }
    let key = line.trim_start_matches('[');
    let key = key.split(']').next()?;
    Some(key.split('.').map(str::trim).collect::<Vec<_>>().join("."))
}

/// The last key of `text` (`throttle = { rate ` gives `rate`).
fn last_key(text: &str) -> String {
    let text = text.trim_end();
    let start = text
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
        .map_or(0, |i| i + 1);
    text[start..].rsplit('.').next().unwrap_or("").to_owned()
}

/// The field a serde message names in backticks (`unknown field `x``, `missing field `x``).
fn quoted_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_owned())
}
