//! What every section's checks share: an error placed at the offending
//! value's line and column, and the rule that counts and durations are more
//! than zero.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::ConfigError;
use super::units::HumanDuration;

/// Reads the source text around spans, to turn byte offsets into line and column.
pub(super) struct Source<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Source<'_> {
    /// An error at `span` of the text, with its line and column.
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// A count that must be at least 1; `default` when left out.
pub(super) fn positive(
    source: &Source,
    value: Option<Spanned<usize>>,
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(source.error(v.span(), "must be at least 1")),
        Some(v) => Ok(v.into_inner()),
    }
}

/// A duration that must be longer than zero; `default` when left out.
pub(super) fn nonzero(
    source: &Source,
    value: Option<Spanned<HumanDuration>>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().0.is_zero() => {
            Err(source.error(v.span(), "must be longer than zero"))
        }
        Some(v) => Ok(v.into_inner().0),
    }
}
