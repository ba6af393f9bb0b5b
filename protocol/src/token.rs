//! Signed, scoped, expiring tokens: `tr1.<claims>.<mac>`, HMAC-SHA256, verified in constant time.
//!
//! A runner token may write one job; a project token may read one project; an admin token may do
//! anything. Token strings are credentials: types here never print them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "tr1";

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is malformed: expected tr1.<claims>.<signature>")]
    Malformed,
    #[error("token signature is invalid (forged, or signed by another server)")]
    BadSignature,
    #[error("token expired; create a new one")]
    Expired,
    #[error("token does not grant {needed}")]
    Forbidden { needed: String },
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    /// Write (and read) one job's output.
    Job { job: String, project: String },
    /// Read everything of one project.
    Project { project: String },
    /// Everything.
    Admin,
}

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(flatten)]
    pub scope: Scope,
    /// Expiry in seconds since the Unix epoch; `None` never expires (admin tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Claims {
    /// May the holder write output of `job`?
    pub fn can_write_job(&self, job: &str) -> bool {
        match &self.scope {
            Scope::Job { job: j, .. } => j == job,
            Scope::Admin => true,
            Scope::Project { .. } => false,
        }
    }
    /// May the holder read `job` of `project`?
    pub fn can_read(&self, project: &str, job: &str) -> bool {
        match &self.scope {
            Scope::Job { job: j, .. } => j == job,
            Scope::Project { project: p } => p == project,
            Scope::Admin => true,
        }
    }
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// The server's signing key.
#[derive(Clone)]
pub struct TokenKey {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length")
    }

    /// Signs `claims` into a token string.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(PREFIX.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{PREFIX}.{body}.{sig}")
    }

    /// Checks the signature (in constant time) and expiry at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(PREFIX), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(PREFIX.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp.is_some_and(|exp| now >= exp) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_claims(exp: Option<u64>) -> Claims {
        Claims { scope: Scope::Job { job: "j1".into(), project: "gh/acme/app".into() }, exp }
    }

    #[test]
    fn tokens_verify_scope_and_expiry() {
        let key = TokenKey::from_bytes([7; 32]);
        let token = key.sign(&job_claims(Some(100)));
        let claims = key.verify(&token, 99).unwrap();
        assert!(claims.can_write_job("j1"));
        assert!(!claims.can_write_job("j2"));
        assert!(claims.can_read("other", "j1"));
        assert!(!claims.can_read("gh/acme/app", "j2"));
        assert_eq!(key.verify(&token, 100), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let key = TokenKey::from_bytes([7; 32]);
        let other = TokenKey::from_bytes([8; 32]);
        let token = other.sign(&Claims { scope: Scope::Admin, exp: None });
        assert_eq!(key.verify(&token, 0), Err(TokenError::BadSignature));
        // Swap in admin claims under a job token's signature.
        let job = key.sign(&job_claims(None));
        let admin = key.sign(&Claims { scope: Scope::Admin, exp: None });
        let forged = format!(
            "tr1.{}.{}",
            admin.split('.').nth(1).unwrap(),
            job.split('.').nth(2).unwrap()
        );
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
        for bad in ["", "tr1", "tr1..", "tr2.a.b", "tr1.a.b.c", "tr1.!!.??"] {
            assert!(key.verify(bad, 0).is_err(), "{bad:?}");
        }
    }
}
