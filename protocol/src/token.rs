//! Signed, scoped, expiring, revocable tokens: `tr2.<key id>.<claims>.<mac>`, HMAC-SHA256 under
//! one key of a rotating key set, verified in constant time.
//!
//! A runner token may write one job; a project token may read one project; an admin token may do
//! anything. Each token carries an id, so it can be revoked. Keys rotate: a new key signs from
//! then on, and the old key keeps verifying until its retirement time (the grace period). Token
//! strings and keys are credentials: types here never print them.

use std::collections::HashSet;
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Version of the token format, the first dot-separated field.
const PREFIX: &str = "tr2";

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is malformed: expected tr2.<key>.<claims>.<signature> (tokens from before key rotation are no longer accepted; issue a new one)")]
    Malformed,
    #[error("token was signed by a key this server does not have (forged, from another server, or its key was removed); issue a new one")]
    UnknownKey,
    #[error("token signature is invalid (forged, or signed by another server)")]
    BadSignature,
    #[error("token was signed by a retired key (the grace period after key rotation is over); issue a new one")]
    RetiredKey,
    #[error("token expired; create a new one")]
    Expired,
    #[error("token was revoked; issue a new one")]
    Revoked,
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

impl Scope {
    /// `job`, `project` or `admin`, for logs and audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Job { .. } => "job",
            Scope::Project { .. } => "project",
            Scope::Admin => "admin",
        }
    }
}

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(flatten)]
    pub scope: Scope,
    /// Expiry in seconds since the Unix epoch; `None` never expires (admin tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The token's id (random, 128 bits, hex): what revocation names, and what logs and audit
    /// records show instead of the token.
    pub id: String,
}

impl Claims {
    /// Claims with a fresh random id.
    pub fn new(scope: Scope, exp: Option<u64>) -> Self {
        let id: [u8; 16] = rand::random();
        Self { scope, exp, id: id.iter().map(|b| format!("{b:02x}")).collect() }
    }
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

/// One signing key.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id, named in every token it signs.
    pub id: u32,
    /// The secret, hex in files.
    #[serde(with = "hex32")]
    key: [u8; 32],
    /// Seconds since the epoch from which tokens signed by this key are refused; set when a
    /// newer key replaces it (now + the grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<u64>,
}

impl SigningKey {
    pub fn new(id: u32, key: [u8; 32]) -> Self {
        Self { id, key, retire_at: None }
    }
    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length")
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).field("key", &"<redacted>").field("retire_at", &self.retire_at).finish()
    }
}

/// The server's keys: which one signs, and every one that still verifies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySet {
    /// Id of the key that signs new tokens.
    pub current: u32,
    pub keys: Vec<SigningKey>,
}

impl KeySet {
    /// A key set of one fresh random key.
    pub fn generate() -> Self {
        Self::single(rand::random())
    }

    /// A key set of one given key, id 1.
    pub fn single(key: [u8; 32]) -> Self {
        Self { current: 1, keys: vec![SigningKey::new(1, key)] }
    }

    /// Adds a fresh key that signs from now on; the key that signed before retires at
    /// `now + grace_secs`. Keys retired before `now` are dropped. Returns the new key's id.
    pub fn rotate(&mut self, now: u64, grace_secs: u64) -> u32 {
        self.keys.retain(|k| k.retire_at.is_none_or(|t| t > now));
        let id = self.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        for k in &mut self.keys {
            if k.retire_at.is_none() {
                k.retire_at = Some(now.saturating_add(grace_secs));
            }
        }
        self.keys.push(SigningKey::new(id, rand::random()));
        self.current = id;
        id
    }

    /// Checks that the signing key exists and is not retired, and ids are unique.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        if !self.keys.iter().all(|k| ids.insert(k.id)) {
            return Err("two keys have the same id".into());
        }
        match self.keys.iter().find(|k| k.id == self.current) {
            None => Err(format!("current key {} is not in the key list", self.current)),
            Some(k) if k.retire_at.is_some() => Err(format!("current key {} has a retirement time", self.current)),
            Some(_) => Ok(()),
        }
    }

    fn current(&self) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.id == self.current)
    }
}

/// Keys and revoked token ids, shared by every request; updated in place on rotation and
/// revocation.
#[derive(Debug)]
pub struct Keyring {
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: KeySet,
    revoked: HashSet<String>,
}

impl Keyring {
    /// A keyring over a validated key set.
    pub fn new(keys: KeySet) -> Result<Self, String> {
        keys.validate()?;
        Ok(Self { inner: RwLock::new(Inner { keys, revoked: HashSet::new() }) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the key set (after rotation); refuses an invalid one and keeps the old.
    pub fn set_keys(&self, keys: KeySet) -> Result<(), String> {
        keys.validate()?;
        self.write().keys = keys;
        Ok(())
    }

    /// Id of the key that signs.
    pub fn current_key(&self) -> u32 {
        self.read().keys.current
    }

    /// Adds revoked token ids (from the metadata store). Never removes one: a reload that read
    /// the store just before a revocation on this node must not undo it. Ids stay until the
    /// process ends (a few bytes each; revoked tokens expire anyway).
    pub fn add_revoked(&self, ids: impl IntoIterator<Item = String>) {
        self.write().revoked.extend(ids);
    }

    /// Adds one revoked token id.
    pub fn revoke(&self, id: &str) {
        self.write().revoked.insert(id.to_string());
    }

    /// Signs `claims` into a token string with the current key.
    pub fn sign(&self, claims: &Claims) -> String {
        let inner = self.read();
        let Some(key) = inner.keys.current() else {
            // `validate` guarantees the current key exists; an unusable token is the safe answer.
            return String::new();
        };
        let head = format!("{PREFIX}.{}.{}", key.id, B64.encode(serde_json::to_vec(claims).unwrap_or_default()));
        let mut mac = key.mac();
        mac.update(head.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{head}.{sig}")
    }

    /// Checks format, key, signature (in constant time), key retirement, expiry and revocation
    /// at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let token = token.trim();
        let (head, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = head.split('.');
        let (Some(PREFIX), Some(kid), Some(body), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let kid: u32 = kid.parse().map_err(|_| TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let inner = self.read();
        let key = inner.keys.keys.iter().find(|k| k.id == kid).ok_or(TokenError::UnknownKey)?;
        let mut mac = key.mac();
        mac.update(head.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        if key.retire_at.is_some_and(|t| now >= t) {
            return Err(TokenError::RetiredKey);
        }
        let claims: Claims =
            B64.decode(body).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(TokenError::Malformed)?;
        if claims.exp.is_some_and(|exp| now >= exp) {
            return Err(TokenError::Expired);
        }
        if inner.revoked.contains(&claims.id) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        bytes
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("a key must be 64 hex digits (32 bytes)"))
    }
}

#[cfg(test)]
mod tests;
