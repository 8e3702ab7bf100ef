//! Access tokens in replicated state: stored by hash, found by hash,
//! replaced by name, revoked, carried by snapshots.

use gantry_storage::{Command, Outcome, RejectionKind, Store, TokenRecord};

fn token(name: &str, hash_byte: char) -> TokenRecord {
    TokenRecord {
        name: name.to_string(),
        service: false,
        hash: hash_byte.to_string().repeat(64),
        user: "admin".to_string(),
        roles: vec!["admin".to_string()],
        description: "test".to_string(),
        created: 1_000,
        expires: None,
    }
}

fn apply(store: &Store, command: Command) -> Outcome {
    store
        .apply(&[std::slice::from_ref(&command)], b"m", true)
        .expect("apply")
        .remove(0)
        .remove(0)
}

#[test]
fn tokens_are_found_by_hash_replaced_by_name_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    assert_eq!(
        apply(
            &store,
            Command::IssueToken {
                token: token("ci", 'a')
            }
        ),
        Outcome::Applied
    );
    assert_eq!(
        store
            .read()
            .unwrap()
            .token_by_hash(&"a".repeat(64))
            .unwrap()
            .unwrap()
            .name,
        "ci"
    );

    // Re-issuing a name replaces the old secret: the old hash no longer matches.
    assert_eq!(
        apply(
            &store,
            Command::IssueToken {
                token: token("ci", 'b')
            }
        ),
        Outcome::Applied
    );
    let view = store.read().unwrap();
    assert!(view.token_by_hash(&"a".repeat(64)).unwrap().is_none());
    assert_eq!(view.token("ci").unwrap().unwrap().hash, "b".repeat(64));
    drop(view);

    // A snapshot carries tokens.
    let other = Store::open(&dir.path().join("other.redb")).unwrap();
    other
        .install_snapshot(&store.export_snapshot().unwrap(), b"m")
        .unwrap();
    assert!(other
        .read()
        .unwrap()
        .token_by_hash(&"b".repeat(64))
        .unwrap()
        .is_some());

    assert_eq!(
        apply(&store, Command::RevokeToken { name: "ci".into() }),
        Outcome::Applied
    );
    assert!(store
        .read()
        .unwrap()
        .token_by_hash(&"b".repeat(64))
        .unwrap()
        .is_none());
    match apply(&store, Command::RevokeToken { name: "ci".into() }) {
        Outcome::Rejected(rejection) => assert_eq!(rejection.kind, RejectionKind::NotFound),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn malformed_tokens_are_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let before = store.export_snapshot().unwrap();
    for bad in [
        token("", 'a'),
        TokenRecord {
            hash: "XYZ".into(),
            ..token("x", 'a')
        },
        token("upper", 'A'),
    ] {
        match apply(&store, Command::IssueToken { token: bad }) {
            Outcome::Rejected(rejection) => assert_eq!(rejection.kind, RejectionKind::Invalid),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(store.export_snapshot().unwrap(), before);
}

#[test]
fn a_token_name_of_another_user_cannot_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    assert_eq!(
        apply(
            &store,
            Command::IssueToken {
                token: token("ci", 'a')
            }
        ),
        Outcome::Applied
    );
    let before = store.export_snapshot().unwrap();
    let theirs = TokenRecord {
        user: "mallory".into(),
        ..token("ci", 'b')
    };
    match apply(&store, Command::IssueToken { token: theirs }) {
        Outcome::Rejected(rejection) => {
            assert_eq!(rejection.kind, RejectionKind::Conflict);
            assert!(rejection.message.contains("taken"), "{rejection:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(store.export_snapshot().unwrap(), before);
    let view = store.read().unwrap();
    assert_eq!(view.token("ci").unwrap().unwrap().user, "admin");
    assert_eq!(view.tokens().unwrap().len(), 1);
}
