//! Restreaming targets: RTMP URLs a room's task pushes to besides costream's own CDN stream
//! (Alibaba `MultiStreamURL` entries with `IsAliCdn` false).
//!
//! They carry other platforms' stream keys, so they are never shown or logged in full: `Debug`
//! and `Display` print the masked form (scheme, host and at most the first path segment).
//! Only `Serialize` (the stored room, the request to Alibaba) has the whole URL.

use std::fmt;

use serde::{Deserialize, Serialize};

/// At most this many extra outputs per room.
pub const MAX_EXTRA_OUTPUTS: usize = 9;
/// Alibaba's limit on an ingest URL's length.
pub const MAX_OUTPUT_URL_LEN: usize = 2048;

/// One restreaming target: an `rtmp://` URL (the MPU service pushes RTMP only).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OutputUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputUrlError {
    #[error("an output must be an rtmp:// URL")]
    Scheme,
    #[error("an output URL is {0} characters long, the limit is 2048")]
    TooLong(usize),
    #[error("an output URL must name a host")]
    NoHost,
    #[error("an output URL must not contain whitespace or control characters")]
    Whitespace,
}

impl OutputUrl {
    pub fn parse(s: impl Into<String>) -> Result<OutputUrl, OutputUrlError> {
        let s = s.into();
        let Some(rest) = s.strip_prefix("rtmp://") else {
            return Err(OutputUrlError::Scheme);
        };
        if s.len() > MAX_OUTPUT_URL_LEN {
            return Err(OutputUrlError::TooLong(s.len()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(OutputUrlError::Whitespace);
        }
        if rest.split(['/', '?']).next().is_none_or(str::is_empty) {
            return Err(OutputUrlError::NoHost);
        }
        Ok(OutputUrl(s))
    }

    /// The whole URL, stream key included: only for the request to Alibaba and the store.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `rtmp://host/app/***`: the host and, when the path has more than one segment, its first
    /// one (the RTMP application); the rest (the stream key) and any query are hidden.
    pub fn masked(&self) -> String {
        let rest = &self.0["rtmp://".len()..];
        let path_and_query = rest.find('/').map_or("", |i| &rest[i + 1..]);
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let path = path_and_query.split('?').next().unwrap_or_default();
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        match (segments.next(), segments.next()) {
            (Some(app), Some(_)) => format!("rtmp://{host}/{app}/***"),
            _ => format!("rtmp://{host}/***"),
        }
    }
}

impl fmt::Debug for OutputUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputUrl({})", self.masked())
    }
}

impl fmt::Display for OutputUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl TryFrom<String> for OutputUrl {
    type Error = OutputUrlError;
    fn try_from(s: String) -> Result<Self, OutputUrlError> {
        OutputUrl::parse(s)
    }
}

impl From<OutputUrl> for String {
    fn from(u: OutputUrl) -> String {
        u.0
    }
}

/// The extra outputs of a task, in the order the backend gave them, without duplicates, at most
/// [`MAX_EXTRA_OUTPUTS`]. Empty for most rooms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(try_from = "Vec<OutputUrl>", into = "Vec<OutputUrl>")]
pub struct Outputs(Vec<OutputUrl>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputsError {
    #[error("at most {MAX_EXTRA_OUTPUTS} extra outputs, got {0}")]
    TooMany(usize),
    #[error("output {0} is listed twice")]
    Duplicate(String),
}

impl Outputs {
    pub const NONE: Outputs = Outputs(Vec::new());

    pub fn new(urls: Vec<OutputUrl>) -> Result<Outputs, OutputsError> {
        if urls.len() > MAX_EXTRA_OUTPUTS {
            return Err(OutputsError::TooMany(urls.len()));
        }
        for (i, u) in urls.iter().enumerate() {
            if urls[..i].contains(u) {
                return Err(OutputsError::Duplicate(u.masked()));
            }
        }
        Ok(Outputs(urls))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn urls(&self) -> &[OutputUrl] {
        &self.0
    }
}

impl TryFrom<Vec<OutputUrl>> for Outputs {
    type Error = OutputsError;
    fn try_from(urls: Vec<OutputUrl>) -> Result<Self, OutputsError> {
        Outputs::new(urls)
    }
}

impl From<Outputs> for Vec<OutputUrl> {
    fn from(o: Outputs) -> Vec<OutputUrl> {
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rtmp_urls_with_a_host() {
        assert!(OutputUrl::parse("rtmp://a.example/live/key").is_ok());
        assert_eq!(
            OutputUrl::parse("https://a.example/live/key"),
            Err(OutputUrlError::Scheme)
        );
        assert_eq!(OutputUrl::parse("rtmp:///x"), Err(OutputUrlError::NoHost));
        assert_eq!(
            OutputUrl::parse("rtmp://a.example/live/k ey"),
            Err(OutputUrlError::Whitespace)
        );
        let long = format!("rtmp://a.example/{}", "k".repeat(2040));
        assert_eq!(
            OutputUrl::parse(long.clone()),
            Err(OutputUrlError::TooLong(long.len()))
        );
    }

    #[test]
    fn keys_never_show() {
        let u = OutputUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh?x=1").expect("url");
        assert_eq!(u.to_string(), "rtmp://a.rtmp.youtube.com/live2/***");
        assert!(!format!("{u:?}").contains("abcd"));
        let bare = OutputUrl::parse("rtmp://h.example/secretkey").expect("url");
        assert_eq!(bare.masked(), "rtmp://h.example/***");
        let query = OutputUrl::parse("rtmp://h.example?key=s").expect("url");
        assert_eq!(query.masked(), "rtmp://h.example/***");
        // The store keeps the whole URL.
        assert_eq!(
            serde_json::to_string(&u).expect("json"),
            "\"rtmp://a.rtmp.youtube.com/live2/abcd-efgh?x=1\""
        );
    }

    #[test]
    fn at_most_nine_distinct() {
        let url = |i: usize| OutputUrl::parse(format!("rtmp://h{i}.example/a/k")).expect("url");
        assert!(Outputs::new((0..9).map(url).collect()).is_ok());
        assert_eq!(
            Outputs::new((0..10).map(url).collect()),
            Err(OutputsError::TooMany(10))
        );
        assert!(matches!(
            Outputs::new(vec![url(1), url(1)]),
            Err(OutputsError::Duplicate(_))
        ));
    }
}
