//! A recording Kubernetes API server for tests, served over real HTTPS
//! (a test CA from the project's PKI) so kube-rs talks to it exactly as to a
//! cluster.
//!
//! It implements what the executor uses, generically for any resource path
//! (`/api/v1/...`, `/apis/<group>/<version>/...`, namespaced or not):
//! create (409 on a duplicate), get (404), replace, list and watch with
//! label selectors, delete, delete-collection by label selector, and
//! `pods/<name>/log` with `follow`, and (`streams`) `pods/<name>/exec` and
//! `pods/<name>/portforward` over WebSocket. Every request is recorded
//! with its method, path, query and JSON body.
//!
//! Every object written (create, replace) is first held against
//! Kubernetes' schemas, the CRDs and the apimachinery rules (`schemas`,
//! `object_rules`) and refused with 422 `Invalid` as a real API server
//! would, so every test of the executor checks what it sends.
//!
//! Invariants: one resource-version counter orders every change; a watch
//! replays the changes after the version it asks for and then follows new
//! ones, so a list-then-watch never misses an event. Tests change pod status
//! and log contents through methods here, as a kubelet would.

use crate::tls::{api_server_config, create_ca, create_cert, CertKind, TlsFiles};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gantry_raft::transport::{serve_tls, HttpVersions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod faults;
pub use faults::Fault;
mod object_rules;
mod schemas;
mod streams;
mod watch_streams;
use watch_streams::{log_stream, watch_stream};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn label_selector(&self) -> Option<&str> {
        self.query.get("labelSelector").map(String::as_str)
    }

    pub fn is_watch(&self) -> bool {
        self.query
            .get("watch")
            .is_some_and(|w| w == "true" || w == "1")
    }
}

struct Change {
    version: u64,
    collection: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    version: u64,
    /// Collection path → name → object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    changes: Vec<Change>,
    requests: Vec<Recorded>,
    /// Pod name → (lines, closed).
    logs: HashMap<String, (Vec<String>, bool)>,
    /// (pod, port) → where a port-forward to it connects.
    pod_ports: HashMap<(String, u16), std::net::SocketAddr>,
    /// Terminal sizes sent to execs: (pod, columns, rows).
    resizes: Vec<(String, u64, u64)>,
    /// Why writes were refused as invalid, in order.
    refusals: Vec<String>,
    /// Failures planned by the test (`faults`).
    faults: faults::Plan,
    /// Watches from before this version get 410 `Expired`.
    compacted: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every change, so watches and followed logs wake up.
    changed: watch::Sender<u64>,
    /// Bumped to end every open watch (a dropped connection).
    dropped: watch::Sender<u64>,
    /// Bumped to send a bookmark on every watch that allows them.
    bookmarks: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, inner: &mut Inner) -> u64 {
        inner.version += 1;
        self.changed.send_replace(inner.version);
        inner.version
    }

    /// Stores `object` (new or replaced) and records the change.
    fn put(
        &self,
        inner: &mut Inner,
        collection: &str,
        mut object: Value,
        kind: &'static str,
    ) -> Value {
        let version = self.bump(inner);
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{name}-{version}"));
        }
        inner
            .objects
            .entry(collection.to_string())
            .or_default()
            .insert(name, object.clone());
        inner.changes.push(Change {
            version,
            collection: collection.to_string(),
            kind,
            object: object.clone(),
        });
        object
    }

    fn remove(&self, inner: &mut Inner, collection: &str, name: &str) -> Option<Value> {
        let mut object = inner.objects.get_mut(collection)?.remove(name)?;
        let version = self.bump(inner);
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        inner.changes.push(Change {
            version,
            collection: collection.to_string(),
            kind: "DELETED",
            object: object.clone(),
        });
        Some(object)
    }
}

pub struct FakeApi {
    pub url: String,
    pub ca_der: Vec<u8>,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
        // A refused write fails the test that made it, even where the
        // executor carried on (a test that means to be refused takes them).
        let refusals = std::mem::take(&mut self.shared.lock().refusals);
        if !refusals.is_empty() && !std::thread::panicking() {
            panic!("the fake API server refused writes as invalid: {refusals:#?}");
        }
    }
}

/// Where a request points.
struct Target {
    api_version: String,
    collection: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = match *segments.first()? {
        "api" => 2,
        "apis" => 3,
        _ => return None,
    };
    if segments.len() <= base {
        return None;
    }
    let api_version = segments[1..base].join("/");
    let rest = &segments[base..];
    let (collection_len, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (base + 3, &rest[3..])
    } else {
        (base + 1, &rest[1..])
    };
    Some(Target {
        api_version,
        collection: format!("/{}", segments[..collection_len].join("/")),
        name: rest.first().map(|s| s.to_string()),
        subresource: rest.get(1).map(|s| s.to_string()),
    })
}

/// Kubernetes equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`.
pub fn selector_matches(selector: Option<&str>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    selector.split(',').all(|term| {
        let term = term.trim();
        if let Some((key, value)) = term.split_once("!=") {
            labels[key.trim()].as_str() != Some(value.trim())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[key.trim()].as_str() == Some(value.trim())
        } else if let Some(key) = term.strip_prefix('!') {
            labels[key.trim()].is_null()
        } else {
            !labels[term].is_null()
        }
    })
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        [("content-type", "application/json")],
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

/// 422 `Invalid`, as the API server answers an object it refuses; the
/// refusal is kept for the test to show.
fn invalid(shared: &Shared, why: String) -> Response {
    eprintln!("fake API server refused a write: {why}");
    shared.lock().refusals.push(why.clone());
    status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why)
}

fn ok_json(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let path = uri.path().to_string();
    shared.lock().requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let Some(target) = parse_path(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route {path}"),
        );
    };
    let planned = shared
        .lock()
        .faults
        .take(method.as_str(), &target.collection);
    match planned {
        Some(faults::Fault::Status { code, retry_after }) => {
            return faults::status_answer(code, retry_after)
        }
        Some(faults::Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let selector = query.get("labelSelector").map(String::as_str);
    match (
        method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, None)
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            let since: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let compacted = shared.lock().compacted;
            if since != 0 && since < compacted {
                return Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(faults::expired_event(since, compacted)))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            let bookmarks = query
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true")
                .then(|| target.api_version.clone());
            watch_stream(
                shared,
                target.collection,
                selector.map(str::to_string),
                since,
                bookmarks,
            )
        }
        (Method::GET, None, None) => {
            let inner = shared.lock();
            let items: Vec<Value> = inner
                .objects
                .get(&target.collection)
                .map(|objects| {
                    objects
                        .values()
                        .filter(|o| selector_matches(selector, o))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            ok_json(
                StatusCode::OK,
                &json!({
                    "kind": "List", "apiVersion": target.api_version,
                    "metadata": {"resourceVersion": inner.version.to_string()},
                    "items": items,
                }),
            )
        }
        (Method::POST, None, None) => {
            let Some(mut object) = body else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            if let Some(why) = schemas::refusal(&target.collection, &object) {
                return invalid(&shared, why);
            }
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let mut inner = shared.lock();
            if inner
                .objects
                .get(&target.collection)
                .is_some_and(|o| o.contains_key(&name))
            {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{name} already exists"),
                );
            }
            if target.collection.ends_with("/pods") && object["status"].is_null() {
                object["status"] = json!({"phase": "Pending"});
            }
            let stored = shared.put(&mut inner, &target.collection, object, "ADDED");
            ok_json(StatusCode::CREATED, &stored)
        }
        (Method::DELETE, None, None) => {
            let mut inner = shared.lock();
            let names: Vec<String> = inner
                .objects
                .get(&target.collection)
                .map(|objects| {
                    objects
                        .iter()
                        .filter(|(_, o)| selector_matches(selector, o))
                        .map(|(n, _)| n.clone())
                        .collect()
                })
                .unwrap_or_default();
            let items: Vec<Value> = names
                .iter()
                .filter_map(|name| shared.remove(&mut inner, &target.collection, name))
                .collect();
            ok_json(
                StatusCode::OK,
                &json!({"kind": "List", "apiVersion": target.api_version, "metadata": {}, "items": items}),
            )
        }
        (Method::GET, Some(name), None) => {
            let inner = shared.lock();
            match inner
                .objects
                .get(&target.collection)
                .and_then(|o| o.get(name))
            {
                Some(object) => ok_json(StatusCode::OK, object),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                ),
            }
        }
        (Method::PUT, Some(name), None) => {
            let Some(object) = body else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            if let Some(why) = schemas::refusal(&target.collection, &object) {
                return invalid(&shared, why);
            }
            let mut inner = shared.lock();
            let Some(stored) = inner
                .objects
                .get(&target.collection)
                .and_then(|o| o.get(name))
            else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                );
            };
            // Optimistic concurrency: a replace names the version it read.
            let read = object["metadata"]["resourceVersion"].as_str();
            if read.is_some_and(|read| Some(read) != stored["metadata"]["resourceVersion"].as_str())
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("Operation cannot be fulfilled on {name}: the object has been modified; please apply your changes to the latest version and try again"),
                );
            }
            let stored = shared.put(&mut inner, &target.collection, object, "MODIFIED");
            ok_json(StatusCode::OK, &stored)
        }
        (Method::DELETE, Some(name), None) => {
            let mut inner = shared.lock();
            match shared.remove(&mut inner, &target.collection, name) {
                Some(object) => ok_json(StatusCode::OK, &object),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                ),
            }
        }
        (Method::GET, Some(name), Some("log")) => {
            let exists = shared.lock().logs.contains_key(name);
            if !exists {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("container in pod {name} is waiting to start"),
                );
            }
            let follow = query.get("follow").is_some_and(|f| f == "true");
            log_stream(shared, name.to_string(), follow)
        }
        (method, _, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path} is not implemented by the fake"),
        ),
    }
}

impl FakeApi {
    /// Starts the server on a loopback port with a fresh CA.
    pub async fn start() -> FakeApi {
        let dir = tempfile::tempdir().expect("temp dir");
        create_ca(dir.path()).expect("test CA");
        create_cert(
            dir.path(),
            "kube-apiserver",
            CertKind::Server,
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            dir.path(),
        )
        .expect("server certificate");
        let files = TlsFiles::in_dir(dir.path(), "kube-apiserver");
        let ca_pem = std::fs::read(&files.ca).expect("CA file");
        let ca_der = CertificateDer::from_pem_slice(&ca_pem)
            .expect("CA PEM")
            .to_vec();
        let tls = api_server_config(&files).expect("TLS config");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            dropped: watch::channel(0).0,
            bookmarks: watch::channel(0).0,
        });
        let pods = "/api/v1/namespaces/{namespace}/pods/{pod}";
        let router = Router::new()
            .route(
                &format!("{pods}/exec"),
                get(streams::exec).post(streams::exec),
            )
            .route(&format!("{pods}/portforward"), get(streams::port_forward))
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let server = tokio::spawn(serve_tls(
            listener,
            tls,
            router,
            std::future::pending(),
            HttpVersions::Http1And2,
        ));
        FakeApi {
            url,
            ca_der,
            shared,
            server,
            _dir: dir,
        }
    }

    /// A kube-rs client that trusts only the fake's CA.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.default_namespace = namespace.to_string();
        config.connect_timeout = Some(Duration::from_secs(5));
        kube::Client::try_from(config).expect("kube client")
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Requests other than the executor's watches and the reads it makes
    /// in the background (watch, list of pods/nodes, logs).
    pub fn actions(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                !(r.method == "GET"
                    && (r.is_watch()
                        || r.path.ends_with("/log")
                        || r.path.ends_with("/pods")
                        || r.path.ends_with("/nodes")))
            })
            .collect()
    }

    /// Why writes were refused as invalid (422), in order; taken, so the
    /// fake does not fail the test for them when dropped.
    pub fn take_refusals(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().refusals)
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Objects stored under a collection path.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        self.shared
            .lock()
            .objects
            .get(collection)
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Deletes an object directly (a node leaving the cluster).
    pub fn delete(&self, collection: &str, name: &str) {
        let mut inner = self.shared.lock();
        self.shared.remove(&mut inner, collection, name);
    }

    /// Adds or replaces an object directly (e.g. a Node).
    pub fn insert(&self, collection: &str, object: Value) {
        let mut inner = self.shared.lock();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let exists = inner
            .objects
            .get(collection)
            .is_some_and(|o| o.contains_key(&name));
        let kind = if exists { "MODIFIED" } else { "ADDED" };
        self.shared.put(&mut inner, collection, object, kind);
    }

    /// Plans `fault` for the next `times` requests of `method` on
    /// `collection` (a path without a name).
    pub fn fail(&self, method: &str, collection: &str, fault: faults::Fault, times: usize) {
        self.shared
            .lock()
            .faults
            .add(method, collection, fault, times);
    }

    /// Compacts history (a watch from before now gets 410 `Expired`) and
    /// drops every open watch: the client must list again.
    pub fn expire_watches(&self) {
        {
            let mut inner = self.shared.lock();
            inner.compacted = inner.version + 1;
        }
        self.drop_watches();
    }

    /// Ends every open watch connection, as a load balancer or an API
    /// server restart does; the client watches again from where it was.
    pub fn drop_watches(&self) {
        self.shared.dropped.send_modify(|epoch| *epoch += 1);
    }

    /// Sends a bookmark on every open watch that allows them.
    pub fn bookmark(&self) {
        self.shared.bookmarks.send_modify(|epoch| *epoch += 1);
    }

    /// Sets a pod's `status`, as the kubelet would.
    pub fn set_pod_status(&self, collection: &str, pod: &str, status: Value) {
        let mut inner = self.shared.lock();
        let mut object = inner
            .objects
            .get(collection)
            .and_then(|o| o.get(pod))
            .cloned()
            .unwrap_or_else(|| panic!("pod {pod} does not exist"));
        object["status"] = status;
        self.shared.put(&mut inner, collection, object, "MODIFIED");
    }

    /// Appends lines to a pod's container log (creating it: the container
    /// has started).
    pub fn append_log(&self, pod: &str, lines: &[&str]) {
        let mut inner = self.shared.lock();
        let entry = inner.logs.entry(pod.to_string()).or_default();
        entry.0.extend(lines.iter().map(|l| l.to_string()));
        self.shared.bump(&mut inner);
    }

    /// Port-forwards to `port` of `pod` connect to `address` (the pod's
    /// port, as the kubelet would reach it).
    pub fn serve_pod_port(&self, pod: &str, port: u16, address: std::net::SocketAddr) {
        self.shared
            .lock()
            .pod_ports
            .insert((pod.to_string(), port), address);
    }

    /// Terminal sizes execs were sent: (pod, columns, rows).
    pub fn resizes(&self) -> Vec<(String, u64, u64)> {
        self.shared.lock().resizes.clone()
    }

    /// Ends a pod's log (the container exited).
    pub fn close_log(&self, pod: &str) {
        let mut inner = self.shared.lock();
        inner.logs.entry(pod.to_string()).or_default().1 = true;
        self.shared.bump(&mut inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through kube-rs, as the executor writes: an invalid object is
    /// refused with 422 `Invalid` and nothing is stored.
    #[tokio::test]
    async fn an_invalid_write_is_refused_as_the_api_server_would() {
        let fake = FakeApi::start().await;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(fake.client("w"), "w");
        let mut pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"a": "x".repeat(64)}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}
        }))
        .unwrap();
        let refused = pods
            .create(&Default::default(), &pod)
            .await
            .expect_err("refused");
        match refused {
            kube::Error::Api(status) => {
                assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
                assert!(status.message.contains("metadata.labels.a"), "{status:?}");
            }
            other => panic!("{other}"),
        }
        assert!(fake.objects("/api/v1/namespaces/w/pods").is_empty());
        assert_eq!(fake.take_refusals().len(), 1);
        pod.metadata.labels = None;
        pods.create(&Default::default(), &pod).await.expect("valid");
        assert_eq!(fake.objects("/api/v1/namespaces/w/pods").len(), 1);
    }

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/ns/pods/p1/log").expect("path");
        assert_eq!(t.collection, "/api/v1/namespaces/ns/pods");
        assert_eq!(t.name.as_deref(), Some("p1"));
        assert_eq!(t.subresource.as_deref(), Some("log"));
        let t = parse_path("/apis/scheduling.run.ai/v2/queues/q").expect("path");
        assert_eq!(t.collection, "/apis/scheduling.run.ai/v2/queues");
        assert_eq!(t.api_version, "scheduling.run.ai/v2");
        let t = parse_path("/api/v1/nodes").expect("path");
        assert_eq!(t.collection, "/api/v1/nodes");
        assert!(t.name.is_none());
    }

    #[test]
    fn selectors() {
        let object = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(selector_matches(Some("a=1,b"), &object));
        assert!(selector_matches(Some("a==1,!c"), &object));
        assert!(!selector_matches(Some("a!=1"), &object));
        assert!(!selector_matches(Some("c"), &object));
    }
}
