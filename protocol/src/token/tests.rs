use super::*;

fn job_claims(exp: Option<u64>) -> Claims {
    Claims::new(Scope::Job { job: "j1".into(), project: "gh/acme/app".into() }, exp)
}

fn ring(key: u8) -> Keyring {
    Keyring::new(KeySet::single([key; 32])).unwrap()
}

#[test]
fn tokens_verify_scope_and_expiry() {
    let keys = ring(7);
    let token = keys.sign(&job_claims(Some(100)));
    let claims = keys.verify(&token, 99).unwrap();
    assert!(claims.can_write_job("j1"));
    assert!(!claims.can_write_job("j2"));
    assert!(claims.can_read("other", "j1"));
    assert!(!claims.can_read("gh/acme/app", "j2"));
    assert_eq!(keys.verify(&token, 100), Err(TokenError::Expired));
}

#[test]
fn forged_and_foreign_tokens_are_refused() {
    let keys = ring(7);
    let token = ring(8).sign(&Claims::new(Scope::Admin, None));
    assert_eq!(keys.verify(&token, 0), Err(TokenError::BadSignature));
    // Swap in admin claims under a job token's signature.
    let job = keys.sign(&job_claims(None));
    let admin = keys.sign(&Claims::new(Scope::Admin, None));
    let (admin_head, _) = admin.rsplit_once('.').unwrap();
    let (_, job_sig) = job.rsplit_once('.').unwrap();
    assert_eq!(keys.verify(&format!("{admin_head}.{job_sig}"), 0), Err(TokenError::BadSignature));
    // Name another key id.
    let other_kid = admin.replacen("tr2.1.", "tr2.2.", 1);
    assert_eq!(keys.verify(&other_kid, 0), Err(TokenError::UnknownKey));
    for bad in ["", "tr2", "tr2...", "tr1.a.b", "tr2.x.a.b", "tr2.1.a.b.c", "tr2.1.!!.??", "tr2.99999999999.a.b"] {
        assert!(keys.verify(bad, 0).is_err(), "{bad:?}");
    }
}

#[test]
fn revoked_tokens_are_refused_and_others_are_not() {
    let keys = ring(7);
    let a = job_claims(None);
    let b = job_claims(None);
    assert_ne!(a.id, b.id, "token ids are random");
    let (ta, tb) = (keys.sign(&a), keys.sign(&b));
    keys.revoke(&a.id);
    assert_eq!(keys.verify(&ta, 0), Err(TokenError::Revoked));
    assert_eq!(keys.verify(&tb, 0).unwrap().id, b.id);
    // A reload from a store that did not have the revocation yet does not undo it.
    keys.add_revoked(Vec::new());
    assert_eq!(keys.verify(&ta, 0), Err(TokenError::Revoked));
    keys.add_revoked(vec![b.id.clone()]);
    assert_eq!(keys.verify(&tb, 0), Err(TokenError::Revoked));
}

#[test]
fn rotation_keeps_old_tokens_for_the_grace_period() {
    let mut set = KeySet::single([7; 32]);
    let keys = Keyring::new(set.clone()).unwrap();
    let old = keys.sign(&job_claims(None));
    let new_id = set.rotate(1000, 60);
    assert_eq!(new_id, 2);
    keys.set_keys(set.clone()).unwrap();
    assert_eq!(keys.current_key(), 2);
    let new = keys.sign(&job_claims(None));
    assert!(new.starts_with("tr2.2."));
    assert!(keys.verify(&old, 1059).is_ok(), "old key valid during grace");
    assert_eq!(keys.verify(&old, 1060), Err(TokenError::RetiredKey));
    assert!(keys.verify(&new, 5000).is_ok());
    // A second rotation after the grace period drops the retired key.
    set.rotate(2000, 60);
    assert_eq!(set.keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![2, 3]);
    keys.set_keys(set.clone()).unwrap();
    assert_eq!(keys.verify(&old, 2000), Err(TokenError::UnknownKey));
    // The file form round-trips and never prints keys in Debug.
    let json = serde_json::to_string(&set).unwrap();
    let back: KeySet = serde_json::from_str(&json).unwrap();
    back.validate().unwrap();
    assert!(!format!("{back:?}").contains(&json[json.find("\"key\":\"").unwrap() + 7..][..16]));
}

#[test]
fn invalid_key_sets_are_refused() {
    let mut set = KeySet::single([1; 32]);
    set.current = 9;
    assert!(Keyring::new(set).is_err());
    assert!(serde_json::from_str::<KeySet>(r#"{"current":1,"keys":[{"id":1,"key":"abc"}]}"#).is_err());
}
