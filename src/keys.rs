//! The signing-key file (`<data_dir>/signing-keys.json`, or `signing_keys_file`): loaded at
//! start, created on first start, rotated by `tailrace keys rotate`, and reloaded by a running
//! server when it changes — so a rotation needs no restart, and in a cluster every node picks up
//! the same file (a mounted secret).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tailrace_protocol::token::{Claims, KeySet, Keyring, Scope};
use tailrace_storage::AuditLog;
use tracing::{info, warn};

use crate::config::ServeConfig;

/// How often a running server looks at the key file.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where the key file of `cfg` is.
pub fn path(cfg: &ServeConfig) -> PathBuf {
    cfg.signing_keys_file.clone().unwrap_or_else(|| cfg.data_dir.join("signing-keys.json"))
}

/// Reads the key file.
pub fn load(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read(path).map_err(|e| format!("could not read signing keys {}: {e}", path.display()))?;
    let set: KeySet = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a signing-key file: {e}", path.display()))?;
    set.validate().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(set)
}

/// Reads the key file, creating it on first start. A 32-byte `signing-key` file of an older
/// data directory becomes key 1, so its tokens' key is kept.
pub fn load_or_create(path: &Path, data_dir: &Path) -> Result<KeySet, String> {
    if path.exists() {
        return load(path);
    }
    let set = match std::fs::read(data_dir.join("signing-key")) {
        Ok(old) => KeySet::single(old.try_into().map_err(|_| "signing-key is not a 32-byte key; delete it".to_string())?),
        Err(_) => KeySet::generate(),
    };
    save(path, &set)?;
    Ok(set)
}

/// Writes the key file atomically, readable by its owner only.
pub fn save(path: &Path, set: &KeySet) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(set).map_err(|e| e.to_string())?;
    crate::serve::write_private_atomic(path, &text)
}

/// `tailrace keys rotate`: a new key signs from now on; the old one verifies for `grace`. With no
/// file yet, creates one with a first key.
pub fn rotate(path: &Path, grace: Duration) -> Result<String, String> {
    if !path.exists() {
        // A cluster's shared key file (e.g. for a Kubernetes Secret) is made before any server.
        save(path, &KeySet::generate())?;
        return Ok(format!("created {} with a first signing key; give every node this file (signing_keys_file)", path.display()));
    }
    let mut set = load(path)?;
    let now = tailrace_storage::meta::now_ms() / 1000;
    let old = set.current;
    let new = set.rotate(now, grace.as_secs());
    save(path, &set)?;
    Ok(format!(
        "key {new} signs new tokens from now on; tokens signed by key {old} are accepted until {} ({}s from now).\n\
         A running server picks the change up within {}s and rewrites its admin-token file.",
        tailrace_storage::time::rfc3339((now + grace.as_secs()) * 1000),
        grace.as_secs(),
        RELOAD_EVERY.as_secs()
    ))
}

/// Makes sure `<data_dir>/admin-token` holds an admin token the keyring accepts and that the
/// current key signed; rewrites it otherwise (first start, rotation, older token format).
pub fn ensure_admin_token(path: &Path, keys: &Keyring, audit: &AuditLog) -> Result<(), String> {
    let now = tailrace_storage::meta::now_ms() / 1000;
    let current = keys.current_key();
    let ok = std::fs::read_to_string(path).ok().is_some_and(|t| {
        keys.verify(&t, now).is_ok() && t.trim().starts_with(&format!("tr2.{current}."))
    });
    if ok {
        return Ok(());
    }
    let claims = Claims::new(Scope::Admin, None);
    crate::serve::write_private_atomic(path, format!("{}\n", keys.sign(&claims)).as_bytes())?;
    info!(file = %path.display(), token_id = %claims.id, key = current, "admin token written");
    audit.record("token_created", None, json!({"token_id": claims.id, "scope": "admin", "key": current, "by": "server"}));
    Ok(())
}

/// Reloads the key file when it changes; after a rotation, rewrites the admin token.
pub async fn watch(path: PathBuf, admin_token: PathBuf, keys: Arc<Keyring>, audit: Arc<AuditLog>) {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = stamp(&path);
    let mut every = tokio::time::interval(RELOAD_EVERY);
    loop {
        every.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&path).and_then(|set| {
            let ids: Vec<u32> = set.keys.iter().map(|k| k.id).collect();
            let current = set.current;
            keys.set_keys(set).map(|_| (current, ids))
        }) {
            Ok((current, ids)) => {
                info!(current_key = current, keys = ?ids, "signing keys reloaded");
                audit.record("signing_keys_loaded", None, json!({"current_key": current, "key_ids": ids}));
                if let Err(e) = ensure_admin_token(&admin_token, &keys, &audit) {
                    warn!(error = %e, "could not rewrite the admin token after key rotation");
                }
                audit.flush_for_a_while().await;
            }
            Err(e) => warn!(error = %e, "signing-key file changed but is invalid; keeping the keys in use"),
        }
    }
}
