//! The Kubernetes manifests under `ops/kubernetes/`: every YAML document
//! parses and carries what the API server and Gantry need — known kinds and
//! API versions, namespaces that exist, selectors that match pod labels,
//! ports and volumes that are declared, probes on `/readyz` and `/healthz`,
//! RBAC for everything the operator touches, and container arguments that
//! `gantry` itself accepts.

mod common;

use common::{gantry_ok, repo_path, DevServer, BINARY};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Kinds used, with their API version.
const KINDS: [(&str, &str); 10] = [
    ("Namespace", "v1"),
    ("Service", "v1"),
    ("ServiceAccount", "v1"),
    ("StatefulSet", "apps/v1"),
    ("Deployment", "apps/v1"),
    ("PodDisruptionBudget", "policy/v1"),
    ("Role", "rbac.authorization.k8s.io/v1"),
    ("RoleBinding", "rbac.authorization.k8s.io/v1"),
    ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
];

const CLUSTER_SCOPED: [&str; 3] = ["Namespace", "ClusterRole", "ClusterRoleBinding"];

struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
    fn at(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }
}

fn documents() -> Vec<Doc> {
    let dir = repo_path("ops/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v.as_str()
                            .unwrap_or_else(|| panic!("label {k:?} not a string"))
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

fn sequence(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

/// The flags a `gantry <verb> --help` lists, or `None` if the verb does not exist.
fn help_flags(verb: &str) -> Option<String> {
    let output = Command::new(BINARY)
        .args([verb, "--help"])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).to_string())
}

/// `--flag=value` arguments as (flag, value).
fn flags(args: &[Value]) -> Vec<(String, String)> {
    args.iter()
        .filter_map(Value::as_str)
        .filter(|arg| arg.starts_with("--"))
        .map(|arg| match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), value.to_string()),
            None => (arg.to_string(), String::new()),
        })
        .collect()
}

/// Kubernetes' `$(VAR)` expansion with the given variables.
fn expand(text: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = text.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

#[test]
fn every_document_is_a_known_kind_in_an_existing_namespace() {
    let docs = documents();
    assert!(docs.len() >= 12, "only {} documents", docs.len());
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d.kind() == "Namespace")
        .map(Doc::name)
        .collect();
    let mut names = BTreeSet::new();
    for doc in &docs {
        let version = KINDS
            .iter()
            .find(|(kind, _)| *kind == doc.kind())
            .unwrap_or_else(|| panic!("{}: unknown kind", doc.at()))
            .1;
        assert_eq!(
            doc.value["apiVersion"].as_str(),
            Some(version),
            "{}",
            doc.at()
        );
        assert!(!doc.name().is_empty(), "{}: no name", doc.at());
        if CLUSTER_SCOPED.contains(&doc.kind()) {
            assert!(doc.namespace().is_none(), "{}: cluster-scoped", doc.at());
        } else {
            let namespace = doc
                .namespace()
                .unwrap_or_else(|| panic!("{}: no namespace", doc.at()));
            assert!(
                namespaces.contains(namespace),
                "{}: namespace {namespace}",
                doc.at()
            );
        }
        assert!(
            names.insert((
                doc.kind().to_string(),
                doc.namespace().map(str::to_string),
                doc.name().to_string()
            )),
            "{} defined twice",
            doc.at()
        );
    }
    // The kustomization applies every file.
    let kustomization: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_path("ops/kubernetes/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<&str> = sequence(&kustomization["resources"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let files: BTreeSet<&str> = docs.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(listed, files);
}

#[test]
fn workloads_selectors_ports_volumes_and_probes_fit_together() {
    let docs = documents();
    let workloads: Vec<&Doc> = docs
        .iter()
        .filter(|d| matches!(d.kind(), "StatefulSet" | "Deployment"))
        .collect();
    assert_eq!(workloads.len(), 2);
    let reference = regex::Regex::new(r"\$\((\w+)\)").unwrap();
    let mut pod_labels = Vec::new();
    for workload in &workloads {
        let spec = &workload.value["spec"];
        let selector = string_map(&spec["selector"]["matchLabels"]);
        let labels = string_map(&spec["template"]["metadata"]["labels"]);
        assert!(
            is_subset(&selector, &labels),
            "{}: selector does not match the pod labels",
            workload.at()
        );
        pod_labels.push((workload, labels));
        let pod = &spec["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{}",
            workload.at()
        );
        let mut volumes: BTreeSet<String> = sequence(&pod["volumes"])
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        for claim in sequence(&spec["volumeClaimTemplates"]) {
            volumes.insert(claim["metadata"]["name"].as_str().unwrap().to_string());
        }
        for volume in sequence(&pod["volumes"]) {
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                assert!(
                    secret.starts_with("gantry"),
                    "{}: secret {secret}",
                    workload.at()
                );
            }
        }
        let containers = sequence(&pod["containers"]);
        assert!(!containers.is_empty());
        for container in containers {
            let ports: BTreeSet<&str> = sequence(&container["ports"])
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for mount in sequence(&container["volumeMounts"]) {
                let name = mount["name"].as_str().unwrap();
                assert!(
                    volumes.contains(name),
                    "{}: mount of undeclared volume {name}",
                    workload.at()
                );
            }
            assert_eq!(
                container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{}",
                workload.at()
            );
            for (probe, path) in [
                ("readinessProbe", "/readyz"),
                ("livenessProbe", "/healthz"),
                ("startupProbe", "/healthz"),
            ] {
                let get = &container[probe]["httpGet"];
                if get.is_null() {
                    continue;
                }
                assert_eq!(
                    get["path"].as_str(),
                    Some(path),
                    "{}: {probe}",
                    workload.at()
                );
                let port = get["port"].as_str().unwrap();
                assert!(
                    ports.contains(port),
                    "{}: {probe} port {port}",
                    workload.at()
                );
                assert_eq!(
                    get["scheme"].as_str(),
                    Some("HTTPS"),
                    "{}: {probe}",
                    workload.at()
                );
            }
            // $(VAR) in arguments must be defined in env.
            let env: BTreeSet<&str> = sequence(&container["env"])
                .iter()
                .filter_map(|e| e["name"].as_str())
                .collect();
            for arg in sequence(&container["args"])
                .iter()
                .filter_map(Value::as_str)
            {
                for captures in reference.captures_iter(arg) {
                    assert!(
                        env.contains(&captures[1]),
                        "{}: $({}) undefined",
                        workload.at(),
                        &captures[1]
                    );
                }
            }
        }
    }

    // Services select pods of a workload and name its ports.
    for service in docs.iter().filter(|d| d.kind() == "Service") {
        let selector = string_map(&service.value["spec"]["selector"]);
        let (workload, _) = pod_labels
            .iter()
            .find(|(_, labels)| is_subset(&selector, labels))
            .unwrap_or_else(|| panic!("{}: selects no pods", service.at()));
        let container_ports: BTreeSet<&str> =
            sequence(&workload.value["spec"]["template"]["spec"]["containers"])
                .iter()
                .flat_map(|c| sequence(&c["ports"]))
                .filter_map(|p| p["name"].as_str())
                .collect();
        for port in sequence(&service.value["spec"]["ports"]) {
            let target = port["targetPort"].as_str().unwrap();
            assert!(
                container_ports.contains(target),
                "{}: targetPort {target}",
                service.at()
            );
        }
    }

    // The PodDisruptionBudget keeps a quorum of the servers.
    let statefulset = workloads
        .iter()
        .find(|w| w.kind() == "StatefulSet")
        .unwrap();
    let pdb = docs
        .iter()
        .find(|d| d.kind() == "PodDisruptionBudget")
        .unwrap();
    let replicas = statefulset.value["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3);
    assert_eq!(
        string_map(&pdb.value["spec"]["selector"]["matchLabels"]),
        string_map(&statefulset.value["spec"]["selector"]["matchLabels"])
    );
    let max_unavailable = pdb.value["spec"]["maxUnavailable"].as_u64().unwrap();
    assert!(
        replicas - max_unavailable > replicas / 2,
        "the budget allows losing the quorum"
    );
    assert!(!sequence(&statefulset.value["spec"]["volumeClaimTemplates"]).is_empty());
}

#[test]
fn servers_find_each_other_by_stable_names_with_flags_gantry_accepts() {
    let docs = documents();
    let statefulset = docs.iter().find(|d| d.kind() == "StatefulSet").unwrap();
    let spec = &statefulset.value["spec"];
    let namespace = statefulset.namespace().unwrap();
    let service_name = spec["serviceName"].as_str().unwrap();
    let headless = docs
        .iter()
        .find(|d| d.kind() == "Service" && d.name() == service_name)
        .unwrap_or_else(|| panic!("no Service {service_name}"));
    assert_eq!(headless.value["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless.value["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));

    let container = &sequence(&spec["template"]["spec"]["containers"])[0];
    let args = sequence(&container["args"]);
    assert_eq!(args[0].as_str(), Some("server"));
    let help = help_flags("server").unwrap();
    let flags = flags(args);
    for (flag, _) in &flags {
        assert!(help_has(&help, flag), "`gantry server` has no {flag}");
    }
    let flag = |name: &str| {
        flags
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let base_name = statefulset.name();
    for ordinal in 0..3 {
        let pod = format!("{base_name}-{ordinal}");
        let vars = BTreeMap::from([
            ("POD_NAME", pod.clone()),
            ("POD_NAMESPACE", namespace.to_string()),
        ]);
        let advertised = expand(&flag("--advertise-peer"), &vars);
        assert_eq!(
            advertised,
            format!("{pod}.{service_name}.{namespace}.svc.cluster.local:8471"),
            "the advertised peer address is the pod's stable DNS name"
        );
        let join = expand(&flag("--join"), &vars);
        // Pod 0 joins through itself, i.e. starts the cluster; the others join it.
        assert_eq!(join == advertised, ordinal == 0, "{pod}: --join {join}");
    }
    // TLS comes from the Secret volume mounted where the flags point.
    let mounts = sequence(&container["volumeMounts"]);
    for tls_flag in ["--tls-ca", "--tls-cert", "--tls-key"] {
        let path = flag(tls_flag);
        assert!(
            mounts
                .iter()
                .any(|m| path.starts_with(m["mountPath"].as_str().unwrap())),
            "{tls_flag} {path} is not on a mounted volume"
        );
    }
    let data = flag("--data-dir");
    assert!(mounts
        .iter()
        .any(|m| m["name"] == "data" && m["mountPath"].as_str() == Some(data.as_str())));
}

#[test]
fn the_operator_has_its_token_certificate_and_rbac() {
    let docs = documents();
    let deployment = docs.iter().find(|d| d.kind() == "Deployment").unwrap();
    let pod = &deployment.value["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap();
    assert!(docs
        .iter()
        .any(|d| d.kind() == "ServiceAccount" && d.name() == account));
    let container = &sequence(&pod["containers"])[0];
    let args = sequence(&container["args"]);
    assert_eq!(args[0].as_str(), Some("operator"));
    let flags = flags(args);
    for required in [
        "--servers",
        "--backend",
        "--token-file",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--executor",
        "--namespace",
    ] {
        assert!(
            flags.iter().any(|(f, _)| f == required),
            "operator lacks {required}"
        );
    }
    match help_flags("operator") {
        Some(help) => {
            for (flag, _) in &flags {
                assert!(help_has(&help, flag), "`gantry operator` has no {flag}");
            }
        }
        None => println!("SKIPPED (flags only): this build has no `gantry operator` command yet"),
    }
    // The token file lives on the token Secret's volume.
    let token_path = flags
        .iter()
        .find(|(f, _)| f == "--token-file")
        .unwrap()
        .1
        .clone();
    let mount = sequence(&container["volumeMounts"])
        .iter()
        .find(|m| token_path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("token file is mounted");
    let volume = sequence(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("gantry-operator-token")
    );

    // The operator's workload namespace exists, and RBAC covers what it touches.
    let namespace = flags
        .iter()
        .find(|(f, _)| f == "--namespace")
        .unwrap()
        .1
        .clone();
    assert!(docs
        .iter()
        .any(|d| d.kind() == "Namespace" && d.name() == namespace));
    let mut granted = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| matches!(d.kind(), "RoleBinding" | "ClusterRoleBinding"))
    {
        let subject_ok = sequence(&binding.value["subjects"]).iter().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"].as_str() == Some(account)
                && s["namespace"].as_str() == deployment.namespace()
        });
        if !subject_ok {
            continue;
        }
        let role_kind = binding.value["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding.value["roleRef"]["name"].as_str().unwrap();
        let role = docs
            .iter()
            .find(|d| {
                d.kind() == role_kind
                    && d.name() == role_name
                    && (role_kind == "ClusterRole" || d.namespace() == binding.namespace())
            })
            .unwrap_or_else(|| panic!("{}: no {role_kind} {role_name}", binding.at()));
        if role_kind == "Role" {
            assert_eq!(
                role.namespace(),
                Some(namespace.as_str()),
                "pods are made in {namespace}"
            );
        }
        for rule in sequence(&role.value["rules"]) {
            for resource in sequence(&rule["resources"])
                .iter()
                .filter_map(Value::as_str)
            {
                granted.insert(resource.to_string());
            }
        }
    }
    for resource in [
        "pods",
        "podgroups",
        "queues",
        "services",
        "secrets",
        "nodes",
        "priorityclasses",
        "topologies",
    ] {
        assert!(
            granted.contains(resource),
            "the operator may not touch {resource}"
        );
    }
}

#[test]
fn the_container_image_holds_only_the_static_binary() {
    let text = std::fs::read_to_string(repo_path("packaging/Containerfile")).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(instructions.first(), Some(&"FROM scratch"));
    assert!(instructions
        .iter()
        .any(|i| i.starts_with("COPY ") && i.ends_with(" /usr/local/bin/gantry")));
    assert!(instructions.contains(&"ENTRYPOINT [\"/usr/local/bin/gantry\"]"));
    // The manifests run as the image's user.
    assert!(instructions.contains(&"USER 65532:65532"));
}

/// Whether `--help` text lists `flag` (followed by its value or the line end).
fn help_has(help: &str, flag: &str) -> bool {
    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"))
}

/// A free port on 127.0.0.1 now (the server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The StatefulSet's pattern with real processes: every member gets the
/// same `--join NAME0:PORT`, advertises a DNS name (here `localhost`), and
/// the one whose name is the join target starts the cluster.
#[test]
fn members_told_to_join_the_first_name_form_one_cluster_by_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_text = pki.to_str().unwrap();
    gantry_ok(&["tls", "ca", "create", "--out", pki_text]);
    gantry_ok(&[
        "tls",
        "cert",
        "create",
        "--ca",
        pki_text,
        "--name",
        "server",
        "--kind",
        "server",
        "--dns",
        "localhost",
        "--out",
        pki_text,
    ]);
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let join = format!("localhost:{}", ports[0]);
    let start = |index: usize| {
        let data = dir.path().join(format!("node{index}"));
        let args: Vec<String> = vec![
            "server".into(),
            format!("--object-store={}", common::shared_store_flags(&data)[1]),
            "--listen".into(),
            "127.0.0.1:0".into(),
            format!("--peer-listen=127.0.0.1:{}", ports[index]),
            format!("--advertise-peer=localhost:{}", ports[index]),
            format!("--join={join}"),
            format!("--tls-ca={pki_text}/ca.pem"),
            format!("--tls-cert={pki_text}/server.pem"),
            format!("--tls-key={pki_text}/server-key.pem"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(&data, &args)
    };
    let first = start(0);
    // The first started the cluster: it made the bootstrap token.
    let token = std::fs::read_to_string(first.data_dir.join("bootstrap-admin-token"))
        .expect("the member named by --join bootstrapped");
    let second = start(1);
    assert!(!second.data_dir.join("bootstrap-admin-token").exists());
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let members: serde_json::Value = http
        .get(format!(
            "{}/api/cluster/members",
            second.url.replace("127.0.0.1", "localhost")
        ))
        .bearer_auth(token.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut peers: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peer_address"].as_str().unwrap())
        .collect();
    peers.sort();
    let mut expected: Vec<String> = ports.iter().map(|p| format!("localhost:{p}")).collect();
    expected.sort();
    assert_eq!(peers, expected, "{members}");
    assert!(members["leader_id"].as_u64().is_some(), "{members}");
}
