//! `costream sign`: compute an Alibaba Cloud RPC signature (V1, HMAC-SHA1) for a parameter map.
//!
//! For comparing with what an SDK or a server computed when a call fails with
//! `SignatureDoesNotMatch`: it prints the three intermediate values of the algorithm.

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use costream_alibaba::credentials::ACCESS_KEY_SECRET_VAR;
use costream_alibaba::sign::{sign, Method};
use secrecy::ExposeSecret as _;

/// Sign an Alibaba Cloud OpenAPI (RPC, signature V1 / HMAC-SHA1) parameter map
///
/// Reads a JSON object of parameter name -> string value: the COMPLETE map that will be sent,
/// common parameters included (Action, Version, Format, AccessKeyId, SignatureMethod,
/// SignatureVersion, SignatureNonce, Timestamp, ...), without Signature. Prints JSON with
/// canonicalized_query_string, string_to_sign and signature.
///
/// Example:
///   echo '{"Action":"StopLiveMPUTask","AppId":"a1",...}' | costream sign --method POST
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SignArgs {
    /// HTTP method the request is sent with; it is part of the signed string.
    #[arg(long, value_enum, ignore_case = true)]
    pub method: MethodArg,
    /// Name of the environment variable holding the AccessKey secret.
    #[arg(long, value_name = "VAR", default_value = ACCESS_KEY_SECRET_VAR)]
    pub secret_env: String,
    /// JSON file with the parameters, or - for standard input.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub params: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MethodArg {
    #[value(name = "GET")]
    Get,
    #[value(name = "POST")]
    Post,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Get => Method::Get,
            MethodArg::Post => Method::Post,
        }
    }
}

pub fn run(args: &SignArgs) -> anyhow::Result<()> {
    let secret = super::secret_from_env(&args.secret_env, "the AccessKey secret")?;
    let text = read_input(&args.params)?;
    let params = parse_params(&text)
        .with_context(|| format!("invalid parameters in {}", display_source(&args.params)))?;
    let signed = sign(args.method.into(), &params, secret.expose_secret());
    super::print_json(&signed)
}

fn display_source(source: &str) -> &str {
    if source == "-" {
        "standard input"
    } else {
        source
    }
}

fn read_input(source: &str) -> anyhow::Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read parameters from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))
    }
}

/// A JSON object whose values are all strings. Numbers and booleans are refused rather than
/// guessed at: `1` vs `"1"` or `true` vs `"True"` is exactly the kind of difference that breaks a
/// signature.
fn parse_params(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    let serde_json::Value::Object(object) = value else {
        bail!("expected a JSON object of parameter name -> string value");
    };
    let mut params = BTreeMap::new();
    for (name, value) in object {
        match value {
            serde_json::Value::String(s) => {
                params.insert(name, s);
            }
            other => bail!(
                "parameter {name:?} must be a JSON string, got {}; quote it (e.g. \"{}\")",
                kind(&other),
                other
            ),
        }
    }
    if params.contains_key("Signature") {
        bail!("remove \"Signature\": it is computed here and is not itself signed");
    }
    Ok(params)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_string_values_only() {
        let ok = parse_params(r#"{"A":"1","B":""}"#).expect("strings");
        assert_eq!(ok.len(), 2);
        let err = parse_params(r#"{"MixMode":1}"#).expect_err("number");
        assert!(err.to_string().contains("MixMode"), "{err}");
        assert!(parse_params("[]").is_err());
        assert!(parse_params("{").is_err());
        assert!(parse_params(r#"{"Signature":"x"}"#).is_err());
    }
}
