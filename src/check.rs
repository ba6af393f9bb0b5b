//! `tailrace serve --check-config`: validates a configuration against the machine and the
//! services it names — data directory, listen addresses, TLS files, signing keys, metadata
//! store, object store — and says, check by check, what is wrong and what to do. Starts nothing.

use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::config::ServeConfig;

/// One check's outcome: `Ok(detail)` or `Err(what is wrong and what to do)`.
type Outcome = Result<String, String>;

/// How long the object-store probe may take before it counts as unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check, prints one line each, and returns the exit code (0: all passed).
pub async fn check_config(cfg: &ServeConfig) -> i32 {
    let results: Vec<(&str, Outcome)> = vec![
        ("data directory", data_dir(cfg)),
        ("HTTP address", bind_tcp(cfg)),
        ("QUIC address", bind_udp(cfg)),
        ("QUIC TLS", quic_tls(cfg)),
        ("HTTP TLS", http_tls(cfg)),
        ("signing keys", keys(cfg)),
        ("live tier", live(cfg).await),
        ("metadata store", meta(cfg).await),
        ("object store", store(cfg).await),
    ];
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(detail) => println!("ok    {name}: {detail}"),
            Err(why) => {
                failed += 1;
                println!("FAIL  {name}: {why}");
            }
        }
    }
    if failed == 0 {
        println!("configuration is usable");
        0
    } else {
        println!("{failed} check(s) failed");
        1
    }
}

fn data_dir(cfg: &ServeConfig) -> Outcome {
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}; pick a writable data_dir", dir.display()))?;
    let probe = dir.join(".check-config");
    let write = std::fs::write(&probe, b"probe").and_then(|_| std::fs::File::open(&probe)?.sync_all());
    let _ = std::fs::remove_file(&probe);
    write.map_err(|e| format!("cannot write and sync a file in {}: {e}", dir.display()))?;
    Ok(format!("{} is writable", dir.display()))
}

fn bind_tcp(cfg: &ServeConfig) -> Outcome {
    std::net::TcpListener::bind(cfg.http_addr)
        .map(|_| format!("{} is free", cfg.http_addr))
        .map_err(|e| format!("cannot listen on {}: {e} (another tailrace running? set http_addr)", cfg.http_addr))
}

fn bind_udp(cfg: &ServeConfig) -> Outcome {
    std::net::UdpSocket::bind(cfg.quic_addr)
        .map(|_| format!("{} is free", cfg.quic_addr))
        .map_err(|e| format!("cannot bind UDP {}: {e} (another tailrace running? set quic_addr)", cfg.quic_addr))
}

fn quic_tls(cfg: &ServeConfig) -> Outcome {
    match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => Ok("self-signed, in <data_dir>/tls (agents pin its fingerprint)".into()),
        (Some(c), Some(k)) => tailrace_ingest::tls::load_or_create(Some(c), Some(k), std::path::Path::new(""))
            .map(|m| format!("{} (sha256 {})", c.display(), m.fingerprint))
            .map_err(|e| e.to_string()),
        _ => Err("set both tls_cert and tls_key, or neither".into()),
    }
}

fn http_tls(cfg: &ServeConfig) -> Outcome {
    match (&cfg.http_tls_cert, &cfg.http_tls_key) {
        (None, None) => Ok("off: plain HTTP (put TLS in a proxy, or set http_tls_cert and http_tls_key)".into()),
        (Some(c), Some(k)) => tailrace_ingest::tls::ReloadingCert::load(c, k)
            .map(|r| format!("{} (sha256 {})", c.display(), r.fingerprint()))
            .map_err(|e| e.to_string()),
        _ => Err("set both http_tls_cert and http_tls_key, or neither".into()),
    }
}

fn keys(cfg: &ServeConfig) -> Outcome {
    let path = crate::keys::path(cfg);
    if !path.exists() {
        return Ok(format!("{} will be created on first start", path.display()));
    }
    let set = crate::keys::load(&path)?;
    Ok(format!("{}: key {} signs, {} key(s) verify", path.display(), set.current, set.keys.len()))
}

async fn live(cfg: &ServeConfig) -> Outcome {
    let at = crate::serve::live_location(cfg);
    if cfg.live_url.is_none() {
        // Staging files live in the data directory, checked above.
        return Ok(at);
    }
    let tier = crate::serve::open_live(cfg).await?;
    tier.health().await.map_err(|e| format!("{at} does not answer: {e}"))?;
    let probe = tailrace_storage::StepKey::new(
        tailrace_protocol::JobId::new("check-config-probe").map_err(|e| e.to_string())?,
        tailrace_protocol::StepId::new("probe").map_err(|e| e.to_string())?,
    );
    // Runs the scripts once: a Redis that refuses Lua (or this user's commands) fails here.
    let step = async {
        tier.open(&probe).await?;
        tier.append(&probe, 0, 0, bytes::Bytes::from_static(b"probe")).await?;
        let read = tier.read(&probe, 0, 5).await?;
        tier.release(&probe).await?;
        Ok::<_, tailrace_storage::LiveError>(read)
    };
    let notes = tier.settings().await.map_err(|e| format!("{at}: {e}"))?;
    let notes: String = notes.iter().map(|n| format!("; note: {n}")).collect();
    match step.await {
        Ok(r) if &r[..] == b"probe" => Ok(format!("{at}: append, read and release work{notes}")),
        Ok(_) => Err(format!("{at}: a probe step read back different bytes")),
        Err(e) => Err(format!("{at}: a probe step failed: {e}")),
    }
}

async fn meta(cfg: &ServeConfig) -> Outcome {
    let meta = crate::serve::open_meta(cfg).await?;
    let probe = tailrace_protocol::JobId::new("check-config-probe").map_err(|e| e.to_string())?;
    let at = crate::serve::meta_location(cfg);
    meta.job(&probe).await.map_err(|e| format!("{at} does not answer: {e}"))?;
    Ok(match cfg.meta_url {
        None => at,
        Some(_) => format!("{at}: connected, indexes in place, transactions work"),
    })
}

async fn store(cfg: &ServeConfig) -> Outcome {
    let store = crate::store::build(cfg)?;
    let nonce: u64 = rand::random();
    let path = ObjectPath::from(format!("tailrace-check/{nonce:016x}"));
    let where_ = match (&cfg.archive_bucket, &cfg.archive_endpoint) {
        (Some(b), Some(e)) => format!("{:?} bucket {b} at {e}", cfg.archive_store),
        (Some(b), None) => format!("{:?} bucket {b}", cfg.archive_store),
        _ => format!("{:?} store", cfg.archive_store),
    };
    let probe = async {
        store.put(&path, bytes::Bytes::from_static(b"tailrace check-config").into()).await.map_err(|e| format!("cannot write to the {where_}: {e}"))?;
        let got = store.get(&path).await.map_err(|e| format!("wrote but cannot read back from the {where_}: {e}"))?;
        let body = got.bytes().await.map_err(|e| format!("cannot read back from the {where_}: {e}"))?;
        store.delete(&path).await.map_err(|e| format!("cannot delete from the {where_} (expiry needs delete permission): {e}"))?;
        if body.as_ref() != b"tailrace check-config" {
            return Err(format!("the {where_} returned other bytes than were written"));
        }
        Ok(format!("{where_}: write, read and delete work"))
    };
    match tokio::time::timeout(STORE_TIMEOUT, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!("the {where_} did not answer within {}s; check the endpoint, network and credentials", STORE_TIMEOUT.as_secs())),
    }
}
