//! The AccessKey credentials used to sign Live API calls.
//!
//! Owns the one place where the secret lives: as a `secrecy::SecretString`, so `Debug` prints
//! `[REDACTED]` and nothing can format it by accident. It is exposed only inside
//! `LiveClient` for the HMAC computation. Reading the environment is left to the caller
//! through a lookup function, which keeps this testable and `std::env` out of library code.

use std::fmt;

use secrecy::SecretString;

pub const ACCESS_KEY_ID_VAR: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ACCESS_KEY_SECRET_VAR: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub const SECURITY_TOKEN_VAR: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("environment variable {var} is not set (or empty)")]
    Missing { var: &'static str },
}

/// An AccessKey pair, optionally with an STS token (then sent as `SecurityToken`).
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: SecretString,
    pub security_token: Option<SecretString>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, access_key_secret: SecretString) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            access_key_secret,
            security_token: None,
        }
    }

    pub fn with_security_token(mut self, token: SecretString) -> Self {
        self.security_token = Some(token);
        self
    }

    /// Reads `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and the optional
    /// `ALIBABA_CLOUD_SECURITY_TOKEN` through `lookup` (e.g. `|k| std::env::var(k).ok()` at the
    /// edge, a map in tests). Empty values count as missing: an empty secret would only surface
    /// later as a confusing `SignatureDoesNotMatch`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.is_empty());
        let access_key_id = get(ACCESS_KEY_ID_VAR).ok_or(CredentialsError::Missing {
            var: ACCESS_KEY_ID_VAR,
        })?;
        let access_key_secret = get(ACCESS_KEY_SECRET_VAR).ok_or(CredentialsError::Missing {
            var: ACCESS_KEY_SECRET_VAR,
        })?;
        Ok(Credentials {
            access_key_id,
            access_key_secret: SecretString::from(access_key_secret),
            security_token: get(SECURITY_TOKEN_VAR).map(SecretString::from),
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"[REDACTED]")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_all_three_variables() {
        let creds = Credentials::from_lookup(lookup(&[
            (ACCESS_KEY_ID_VAR, "id"),
            (ACCESS_KEY_SECRET_VAR, "s3cr3t-value"),
            (SECURITY_TOKEN_VAR, "sts-t0ken"),
        ]))
        .expect("complete credentials");
        assert_eq!(creds.access_key_id, "id");
        assert_eq!(creds.access_key_secret.expose_secret(), "s3cr3t-value");
        assert_eq!(
            creds.security_token.as_ref().map(|t| t.expose_secret()),
            Some("sts-t0ken")
        );
    }

    #[test]
    fn names_the_missing_variable() {
        let err = Credentials::from_lookup(lookup(&[(ACCESS_KEY_ID_VAR, "id")]))
            .expect_err("secret missing");
        assert_eq!(
            err,
            CredentialsError::Missing {
                var: ACCESS_KEY_SECRET_VAR
            }
        );
        assert!(err.to_string().contains(ACCESS_KEY_SECRET_VAR));
        let err = Credentials::from_lookup(lookup(&[
            (ACCESS_KEY_ID_VAR, ""),
            (ACCESS_KEY_SECRET_VAR, "x"),
        ]))
        .expect_err("empty id");
        assert!(err.to_string().contains(ACCESS_KEY_ID_VAR));
    }

    #[test]
    fn token_is_optional_and_empty_means_absent() {
        let creds = Credentials::from_lookup(lookup(&[
            (ACCESS_KEY_ID_VAR, "id"),
            (ACCESS_KEY_SECRET_VAR, "x"),
            (SECURITY_TOKEN_VAR, ""),
        ]))
        .expect("credentials");
        assert!(creds.security_token.is_none());
    }

    #[test]
    fn debug_redacts_secret_and_token() {
        let creds = Credentials::new("visible-id", SecretString::from("s3cr3t-value"))
            .with_security_token(SecretString::from("sts-t0ken"));
        let shown = format!("{creds:?} {creds:#?}");
        assert!(shown.contains("visible-id"));
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("sts-t0ken"), "{shown}");
    }
}
