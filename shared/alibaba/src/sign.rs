//! Alibaba Cloud RPC signature V1 (`SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`).
//!
//! Owns the byte-exact algorithm of spec §1.2 and nothing else: no clock, no nonce, no I/O. Keeping
//! it pure is what lets every case of `signature_v1.json` and every captured wire request be
//! replayed in a unit test; the transport (`client.rs`) only decides *which* map to sign.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// The HTTP method is the first token of the StringToSign, so it is part of the signature: the
/// same parameters signed for `GET` and `POST` differ (vectors `live_stop_get_simple` and
/// `live_stop_post_simple`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three intermediate results, all of which the official SDK vectors pin down. Keeping the
/// canonical string lets the transport reuse it as the form body instead of encoding twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signed {
    pub canonicalized_query_string: String,
    pub string_to_sign: String,
    pub signature: String,
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 percent-encoding as Alibaba's signers do it: UTF-8 bytes, only `A-Z a-z 0-9 - _ . ~`
/// left as is, everything else `%XY` with upper-case hex. Unlike form encoding, a space is
/// `%20` (never `+`) and `*` is `%2A`; any deviation changes the signature.
pub fn percent_encode(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + input.len() / 2);
    for &byte in input.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(UPPER_HEX[usize::from(byte >> 4)]));
            out.push(char::from(UPPER_HEX[usize::from(byte & 0x0F)]));
        }
    }
    out
}

/// `CanonicalizedQueryString`: parameters sorted by name in plain byte order (a `BTreeMap<String,
/// _>` already iterates that way, so `ZExtra` < `aExtra` and `Users.10` < `Users.2`), each as
/// `encode(name)=encode(value)`, joined by `&`. Empty values are kept as `Name=`.
pub fn canonicalize(params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(params.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (name, value) in params {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// `METHOD&%2F&encode(canonical)`: the canonical string is percent-encoded a second time, so
/// `%3A` in a value becomes `%253A` here.
pub fn string_to_sign(method: Method, canonicalized_query_string: &str) -> String {
    format!(
        "{}&%2F&{}",
        method.as_str(),
        percent_encode(canonicalized_query_string)
    )
}

/// Signs a complete parameter map (common parameters included, `Signature` excluded).
///
/// The HMAC key is `access_key_secret + "&"`; the trailing `&` is the empty "token secret" of the
/// original OAuth-style scheme and every official signer appends it. The secret is taken as a
/// plain `&str` so this stays a pure function; callers holding a `SecretString` expose it only for
/// the duration of this call.
pub fn sign(method: Method, params: &BTreeMap<String, String>, access_key_secret: &str) -> Signed {
    let canonicalized_query_string = canonicalize(params);
    let string_to_sign = string_to_sign(method, &canonicalized_query_string);
    let signature = hmac_sha1_base64(access_key_secret, &string_to_sign);
    Signed {
        canonicalized_query_string,
        string_to_sign,
        signature,
    }
}

fn hmac_sha1_base64(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut key = Vec::with_capacity(access_key_secret.len() + 1);
    key.extend_from_slice(access_key_secret.as_bytes());
    key.push(b'&');
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha1>::new_from_slice(&key)
        .expect("HMAC accepts keys of any length (longer ones are hashed first)");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct VectorFile {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        http_method: String,
        access_key_secret: String,
        params: BTreeMap<String, String>,
        canonicalized_query_string: String,
        string_to_sign: String,
        signature: String,
    }

    fn method(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => panic!("vector uses unexpected method {other}"),
        }
    }

    #[test]
    fn every_signature_v1_vector_is_reproduced() {
        let text = std::fs::read_to_string(crate::vector_path("signature_v1.json"))
            .expect("read signature_v1.json");
        let file: VectorFile = serde_json::from_str(&text).expect("parse signature_v1.json");
        assert_eq!(file.vectors.len(), 10, "the spec lists 10 cases");
        for v in &file.vectors {
            let signed = sign(method(&v.http_method), &v.params, &v.access_key_secret);
            assert_eq!(
                signed.canonicalized_query_string, v.canonicalized_query_string,
                "canonical string of {}",
                v.name
            );
            assert_eq!(
                signed.string_to_sign, v.string_to_sign,
                "StringToSign of {}",
                v.name
            );
            assert_eq!(signed.signature, v.signature, "Signature of {}", v.name);
        }
    }

    /// Every wire request the official SDKs sent (13 of them, RPC V1) re-signs to its captured
    /// `Signature` with the captured method.
    #[test]
    fn every_captured_wire_request_re_signs_to_its_signature() {
        let text = std::fs::read_to_string(crate::vector_path("mpu_requests.json"))
            .expect("read mpu_requests.json");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("parse mpu_requests.json");
        let secret = doc["fixed"]["AccessKeySecret"]
            .as_str()
            .expect("fixed.AccessKeySecret");
        let mut captures: Vec<(&str, &serde_json::Value)> = Vec::new();
        for group in ["flow", "other_operations", "classic_sdk_for_comparison"] {
            let entries = doc[group].as_object().expect("capture group is an object");
            captures.extend(entries.iter().map(|(k, v)| (k.as_str(), v)));
        }
        captures.push((
            "old_rtc_StartMPUTask_for_contrast",
            &doc["old_rtc_StartMPUTask_for_contrast"],
        ));
        assert_eq!(captures.len(), 13);
        for (name, capture) in captures {
            let mut params: BTreeMap<String, String> =
                serde_json::from_value(capture["query_params"].clone()).expect("query_params");
            let expected = params.remove("Signature").expect("captured Signature");
            let m = method(capture["http_method"].as_str().expect("http_method"));
            assert_eq!(sign(m, &params, secret).signature, expected, "{name}");
        }
    }

    #[test]
    fn percent_encode_follows_the_rpc_rules() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode(" */+=&%:"), "%20%2A%2F%2B%3D%26%25%3A");
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn empty_map_canonicalizes_to_empty_string() {
        assert_eq!(canonicalize(&BTreeMap::new()), "");
    }
}
