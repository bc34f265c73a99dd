//! Ingest and playback URLs, and their type-A `auth_key` signature (spec §5.2).
//!
//! Owns the URL shapes (`rtmp://{push}/{app}/{stream}` for the MPU task's `StreamURL`;
//! HTTP-FLV, RTMP and HLS for viewers, in that order of preference) and the `auth_key` that
//! the CDN checks when URL signing is on for a domain. Pure: the timestamp and `rand` come from
//! the caller.
//!
//! ```text
//! auth_key = {timestamp}-{rand}-{uid}-md5("{URI}-{timestamp}-{rand}-{uid}-{key}")
//! ```
//! `URI` is the path only (with the `.flv`/`.m3u8` suffix, without the query). The CDN accepts
//! the URL until `timestamp` + the validity period configured on the domain, so `timestamp` is
//! effectively "valid from" plus an optional extension: `now + 3600` adds an hour.

use md5::{Digest as _, Md5};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlSignError {
    #[error("not an absolute URL (scheme://host/path): {0:?}")]
    NotAbsolute(String),
    #[error("URL has no path to sign: {0:?}")]
    NoPath(String),
}

/// Lowercase hex MD5, the digest form of both `auth_key` and `ALI-LIVE-SIGNATURE`.
pub(crate) fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

/// The parts of a type-A signature, kept for debugging output (`sstring` is what was hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub uri: String,
    pub md5hash: String,
    pub auth_key: String,
    pub signed_url: String,
}

/// Signs `url` (which may already carry query arguments such as `vhost=`) with type A.
///
/// `rand` is `0` or a UUID without hyphens, `uid` is normally `0`. An existing `auth_key`
/// argument is replaced, so re-signing a signed URL gives a fresh signature rather than two.
pub fn sign_url(
    url: &str,
    key: &str,
    timestamp: u64,
    rand: &str,
    uid: &str,
) -> Result<String, UrlSignError> {
    sign_url_parts(url, key, timestamp, rand, uid).map(|a| a.signed_url)
}

/// [`sign_url`] with the intermediate values.
pub fn sign_url_parts(
    url: &str,
    key: &str,
    timestamp: u64,
    rand: &str,
    uid: &str,
) -> Result<AuthKey, UrlSignError> {
    let (without_query, query) = match url.split_once('?') {
        Some((base, q)) => (base, Some(q)),
        None => (url, None),
    };
    let Some((_scheme, rest)) = without_query.split_once("://") else {
        return Err(UrlSignError::NotAbsolute(url.to_owned()));
    };
    let Some(path_start) = rest.find('/') else {
        return Err(UrlSignError::NoPath(url.to_owned()));
    };
    if path_start == 0 {
        return Err(UrlSignError::NotAbsolute(url.to_owned()));
    }
    let uri = &rest[path_start..];
    let md5hash = md5_hex(&format!("{uri}-{timestamp}-{rand}-{uid}-{key}"));
    let auth_key = format!("{timestamp}-{rand}-{uid}-{md5hash}");
    let kept: Vec<&str> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|arg| !arg.is_empty() && !arg.starts_with("auth_key="))
        .collect();
    let mut signed_url = String::with_capacity(url.len() + auth_key.len() + 10);
    signed_url.push_str(without_query);
    signed_url.push('?');
    for arg in kept {
        signed_url.push_str(arg);
        signed_url.push('&');
    }
    signed_url.push_str("auth_key=");
    signed_url.push_str(&auth_key);
    Ok(AuthKey {
        uri: uri.to_owned(),
        md5hash,
        auth_key,
        signed_url,
    })
}

/// Where a stream lives: `{domain}/{app_name}/{stream_name}`. Stream uniqueness is by stream
/// name within the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLocation<'a> {
    pub domain: &'a str,
    pub app_name: &'a str,
    pub stream_name: &'a str,
}

impl StreamLocation<'_> {
    /// `rtmp://{push}/{app}/{stream}`: the RTMP ingest URL, passed as `StreamURL`.
    pub fn ingest_url(&self) -> String {
        format!(
            "rtmp://{}/{}/{}",
            self.domain, self.app_name, self.stream_name
        )
    }

    /// Unsigned playback URLs on a streaming (play) domain.
    pub fn playback_urls(&self) -> PlaybackUrls {
        let StreamLocation {
            domain,
            app_name,
            stream_name,
        } = self;
        PlaybackUrls {
            flv: format!("https://{domain}/{app_name}/{stream_name}.flv"),
            rtmp: format!("rtmp://{domain}/{app_name}/{stream_name}"),
            hls: format!("https://{domain}/{app_name}/{stream_name}.m3u8"),
        }
    }

    /// The ingest URL signed with the ingest domain's key. Make `timestamp` generous: the MPU
    /// service only starts pushing when the host publishes and reconnects with the same URL.
    pub fn signed_ingest_url(&self, key: &str, timestamp: u64) -> Result<String, UrlSignError> {
        sign_url(&self.ingest_url(), key, timestamp, "0", "0")
    }

    /// Playback URLs signed with the streaming domain's key.
    pub fn signed_playback_urls(
        &self,
        key: &str,
        timestamp: u64,
    ) -> Result<PlaybackUrls, UrlSignError> {
        let urls = self.playback_urls();
        Ok(PlaybackUrls {
            flv: sign_url(&urls.flv, key, timestamp, "0", "0")?,
            rtmp: sign_url(&urls.rtmp, key, timestamp, "0", "0")?,
            hls: sign_url(&urls.hls, key, timestamp, "0", "0")?,
        })
    }
}

/// Viewer URLs in order of preference: HTTP-FLV (lowest latency in browsers), RTMP, HLS (widest
/// support, highest latency). Serialized in that order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlaybackUrls {
    pub flv: String,
    pub rtmp: String,
    pub hls: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct File {
        url_signing_type_a: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        url: String,
        key: String,
        exp: u64,
        rand: String,
        uid: String,
        uri_signed: String,
        md5hash: String,
        signed_url: String,
    }

    fn cases() -> Vec<Case> {
        let text = std::fs::read_to_string(crate::vector_path("url_signing_and_tokens.json"))
            .expect("read url_signing_and_tokens.json");
        serde_json::from_str::<File>(&text)
            .expect("parse url vectors")
            .url_signing_type_a
    }

    #[test]
    fn every_type_a_vector_is_reproduced() {
        let cases = cases();
        assert_eq!(cases.len(), 6);
        for c in cases {
            let parts =
                sign_url_parts(&c.url, &c.key, c.exp, &c.rand, &c.uid).expect("sign vector");
            assert_eq!(parts.uri, c.uri_signed, "{}", c.url);
            assert_eq!(parts.md5hash, c.md5hash, "{}", c.url);
            assert_eq!(parts.signed_url, c.signed_url, "{}", c.url);
        }
    }

    #[test]
    fn location_helpers_build_the_vector_urls() {
        let cases = cases();
        let find = |url: &str| {
            cases
                .iter()
                .find(|c| c.url == url)
                .map(|c| c.signed_url.clone())
                .expect("vector present")
        };
        let ingest = StreamLocation {
            domain: "push.example.com",
            app_name: "live",
            stream_name: "room-1001_main",
        };
        assert_eq!(
            ingest
                .signed_ingest_url("ingestkey", 1_704_164_645)
                .expect("sign"),
            find("rtmp://push.example.com/live/room-1001_main")
        );
        let play = StreamLocation {
            domain: "pull.example.com",
            ..ingest
        };
        let urls = play
            .signed_playback_urls("playkey", 1_704_164_645)
            .expect("sign");
        assert_eq!(
            urls.flv,
            find("https://pull.example.com/live/room-1001_main.flv")
        );
        assert_eq!(
            urls.rtmp,
            find("rtmp://pull.example.com/live/room-1001_main")
        );
        assert_eq!(
            urls.hls,
            find("https://pull.example.com/live/room-1001_main.m3u8")
        );
        let json = serde_json::to_string(&urls).expect("json");
        let (flv, rtmp, hls) = (
            json.find("\"flv\""),
            json.find("\"rtmp\""),
            json.find("\"hls\""),
        );
        assert!(flv < rtmp && rtmp < hls, "{json}");
    }

    #[test]
    fn re_signing_replaces_the_auth_key() {
        let once =
            sign_url("rtmp://push.example.com/live/s?vhost=v", "k", 1, "0", "0").expect("sign");
        let twice = sign_url(&once, "k", 2, "0", "0").expect("re-sign");
        assert_eq!(twice.matches("auth_key=").count(), 1);
        assert!(twice.starts_with("rtmp://push.example.com/live/s?vhost=v&auth_key=2-0-0-"));
    }

    #[test]
    fn rejects_urls_without_scheme_or_path() {
        assert!(matches!(
            sign_url("push.example.com/live/s", "k", 1, "0", "0"),
            Err(UrlSignError::NotAbsolute(_))
        ));
        assert!(matches!(
            sign_url("rtmp://push.example.com", "k", 1, "0", "0"),
            Err(UrlSignError::NoPath(_))
        ));
    }

    /// The CDN type-B doc example pins the MD5 helper to a value Alibaba printed (spec §5.2).
    #[test]
    fn md5_helper_matches_alibaba_documentation() {
        assert_eq!(
            md5_hex("aliyuncdnexp1234201508150800/4/44/44c0909bcfc20a01afaf256ca99a8b8b.mp3"),
            "9044548ef1527deadafa49a890a377f0"
        );
    }
}
