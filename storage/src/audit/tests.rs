use super::*;
use futures_util::TryStreamExt;
use object_store::memory::InMemory;
use tailrace_protocol::token::Scope;

async fn lines(store: &InMemory) -> Vec<Value> {
    let objects: Vec<_> = store.list(Some(&ObjectPath::from(PREFIX))).try_collect().await.unwrap();
    let mut keys: Vec<_> = objects.into_iter().map(|o| o.location).collect();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let body = store.get(&k).await.unwrap().bytes().await.unwrap();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn events_are_batched_into_json_lines_objects() {
    let store = Arc::new(InMemory::new());
    let log = AuditLog::start(store.clone(), "n1", AuditConfig { batch: 2, ..Default::default() });
    let admin = Claims::new(Scope::Admin, None);
    log.record("job_created", Some(&admin), serde_json::json!({"job": "j1"}));
    log.record("auth_failed", None, serde_json::json!({"reason": "token expired"}));
    log.record("keys_loaded", None, serde_json::json!({"current_key": 2}));
    log.flush().await;
    let got = lines(&store).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0]["event"], "job_created");
    assert_eq!(got[0]["actor"]["token_id"], admin.id.as_str());
    assert_eq!(got[0]["actor"]["scope"], "admin");
    assert_eq!(got[0]["job"], "j1");
    assert!(got[1].get("actor").is_none());
    assert_eq!(got[2]["current_key"], 2);
    let objects: Vec<_> = store.list(Some(&ObjectPath::from(PREFIX))).try_collect().await.unwrap();
    assert_eq!(objects.len(), 2, "batches of at most 2 events");
    assert!(objects.iter().all(|o| o.location.as_ref().ends_with(".jsonl") && o.location.as_ref().contains("-n1-")));
    assert_eq!(log.metrics.written.load(Relaxed), 3);
}

#[test]
fn keys_sort_by_time_within_a_day() {
    assert_eq!(object_key(86_400_000 + 5, "ab", 7), "audit/1970/01/02/0000086400005-ab-00000007.jsonl");
}
