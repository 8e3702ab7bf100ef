//! Unit tests of the parent module.

#[test]
fn only_writes_the_server_keys_get_a_key() {
    for (method, path, keyed) in [
        (Method::POST, "/api/pool/default/workflow", true),
        (Method::POST, "/api/pool/my%20pool/workflow", true),
        (
            Method::POST,
            "/api/pool/default/workflow/wf-1/restart",
            true,
        ),
        (Method::POST, "/api/workflow/wf-1/cancel", true),
        (Method::GET, "/api/workflow/wf-1", false),
        (Method::POST, "/api/auth/access_token/user/a/b", false),
        (Method::PUT, "/api/configs/pool/default", false),
        (Method::POST, "/api/workflow/wf-1/cancel/extra", false),
    ] {
        assert_eq!(honours_request_key(&method, path), keyed, "{method} {path}");
    }
}

use super::*;

#[test]
fn error_body_osmo_shape() {
    let body =
        br#"{"message": "Workflow wf-3 not found", "error_code": "USER", "workflow_id": "wf-3"}"#;
    match ClientError::from_response_body(StatusCode::NOT_FOUND, body) {
        ClientError::Http {
            status,
            message,
            error_code,
            workflow_id,
        } => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(message, "Workflow wf-3 not found");
            assert_eq!(error_code.as_deref(), Some("USER"));
            assert_eq!(workflow_id.as_deref(), Some("wf-3"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn error_body_fallbacks() {
    let e = ClientError::from_response_body(
        StatusCode::BAD_REQUEST,
        br#"{"message": "bad", "error_code": null, "workflow_id": null}"#,
    );
    assert!(matches!(
        &e,
        ClientError::Http { error_code: None, workflow_id: None, message, .. } if message == "bad"
    ));
    let e = ClientError::from_response_body(
        StatusCode::UNPROCESSABLE_ENTITY,
        br#"{"detail": [{"loc": ["body", "file"], "msg": "field required"}]}"#,
    );
    assert!(e.to_string().contains("field required"), "{e}");
    let e = ClientError::from_response_body(StatusCode::BAD_GATEWAY, b"upstream down\n");
    assert_eq!(e.to_string(), "upstream down");
    let e = ClientError::from_response_body(StatusCode::SERVICE_UNAVAILABLE, b"");
    assert_eq!(e.to_string(), "HTTP 503 Service Unavailable");
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
}

#[test]
fn urls_are_normalized() {
    assert_eq!(
        normalize_url("127.0.0.1:8470/").unwrap(),
        "http://127.0.0.1:8470"
    );
    assert_eq!(
        normalize_url("https://gantry.example/").unwrap(),
        "https://gantry.example"
    );
    assert!(normalize_url("ftp://x").is_err());
    assert!(normalize_url("http://").is_err());
}

#[test]
fn path_segments_are_encoded() {
    assert_eq!(encode_segment("wf-1"), "wf-1");
    assert_eq!(encode_segment("a/b?c d"), "a%2Fb%3Fc%20d");
}
