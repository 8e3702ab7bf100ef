//! The Grafana dashboards and Prometheus alert rules under `ops/grafana/`
//! query only what exists: every PromQL expression parses, names only
//! metrics from [`super::METRICS`] or from the exporters listed in
//! [`EXTERNAL`], and uses only labels those metrics carry.

use super::{exported, Kind, METRICS};
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Metrics of other exporters the dashboards use: exporter, name, labels.
const EXTERNAL: [(&str, &str, &[&str]); 10] = [
    (
        "kube-state-metrics",
        "kube_pod_labels",
        &["namespace", "pod", "uid"],
    ),
    (
        "kube-state-metrics",
        "kube_pod_status_phase",
        &["namespace", "pod", "uid", "phase"],
    ),
    (
        "kube-state-metrics",
        "kube_pod_container_resource_requests",
        &[
            "namespace",
            "pod",
            "uid",
            "container",
            "node",
            "resource",
            "unit",
        ],
    ),
    (
        "kube-state-metrics",
        "kube_pod_container_status_restarts_total",
        &["namespace", "pod", "uid", "container"],
    ),
    (
        "cAdvisor (kubelet)",
        "container_cpu_usage_seconds_total",
        &[
            "namespace",
            "pod",
            "container",
            "id",
            "image",
            "name",
            "cpu",
        ],
    ),
    (
        "cAdvisor (kubelet)",
        "container_memory_working_set_bytes",
        &["namespace", "pod", "container", "id", "image", "name"],
    ),
    (
        "dcgm-exporter",
        "DCGM_FI_DEV_GPU_UTIL",
        &[
            "gpu",
            "UUID",
            "device",
            "modelName",
            "Hostname",
            "namespace",
            "pod",
            "container",
        ],
    ),
    (
        "dcgm-exporter",
        "DCGM_FI_DEV_FB_USED",
        &[
            "gpu",
            "UUID",
            "device",
            "modelName",
            "Hostname",
            "namespace",
            "pod",
            "container",
        ],
    ),
    (
        "dcgm-exporter",
        "DCGM_FI_DEV_POWER_USAGE",
        &[
            "gpu",
            "UUID",
            "device",
            "modelName",
            "Hostname",
            "namespace",
            "pod",
            "container",
        ],
    ),
    ("prometheus", "up", &[]),
];

/// OSMO's pod labels (`osmo.<name>`), as kube-state-metrics spells them
/// on `kube_pod_labels` (`label_osmo_<name>`) once allow-listed.
const OSMO_POD_LABELS: [&str; 12] = [
    "workflow_id",
    "workflow_uuid",
    "group_name",
    "group_uuid",
    "submitted_by",
    "task_name",
    "task_uuid",
    "retry_id",
    "lead_container",
    "pool",
    "platform",
    "priority",
];

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/grafana")
}

/// The labels a series name may carry, or why it is not known.
fn labels_of(series: &str) -> Result<BTreeSet<String>, String> {
    let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    if let Some((metric, bucket)) = exported(series) {
        labels.extend(metric.labels.iter().map(|l| l.to_string()));
        if bucket {
            labels.insert("le".to_string());
        }
        return Ok(labels);
    }
    if let Some((_, _, external)) = EXTERNAL.iter().find(|(_, name, _)| *name == series) {
        labels.extend(external.iter().map(|l| l.to_string()));
        if series == "kube_pod_labels" {
            labels.extend(OSMO_POD_LABELS.iter().map(|l| format!("label_osmo_{l}")));
        }
        return Ok(labels);
    }
    Err(format!(
        "`{series}` is neither a Gantry metric nor one of the listed exporters' metrics"
    ))
}

/// Collects problems while walking one expression.
#[derive(Default)]
struct Checker {
    /// Labels of every selector in the expression.
    available: BTreeSet<String>,
    /// Labels named by `by`, `without`, `on`, `ignoring` and `group_*`.
    grouping: BTreeSet<String>,
    problems: Vec<String>,
}

impl Checker {
    fn selector(&mut self, selector: &VectorSelector) {
        let Some(name) = &selector.name else {
            self.problems
                .push("a selector without a metric name".to_string());
            return;
        };
        match labels_of(name) {
            Ok(labels) => {
                let matchers = selector
                    .matchers
                    .matchers
                    .iter()
                    .chain(selector.matchers.or_matchers.iter().flatten());
                for matcher in matchers {
                    if matcher.name != "__name__" && !labels.contains(&matcher.name) {
                        self.problems
                            .push(format!("`{name}` has no label `{}`", matcher.name));
                    }
                }
                self.available.extend(labels);
            }
            Err(problem) => self.problems.push(problem),
        }
    }

    fn modifier(&mut self, modifier: &Option<LabelModifier>) {
        if let Some(modifier) = modifier {
            self.grouping
                .extend(modifier.labels().labels.iter().cloned());
        }
    }
}

impl ExprVisitor for Checker {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(selector) => self.selector(selector),
            Expr::MatrixSelector(matrix) => self.selector(&matrix.vs),
            Expr::Aggregate(aggregate) => self.modifier(&aggregate.modifier),
            Expr::Binary(binary) => {
                if let Some(modifier) = &binary.modifier {
                    self.modifier(&modifier.matching);
                    if let Some(labels) = modifier.card.labels() {
                        self.grouping.extend(labels.labels.iter().cloned());
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Grafana's variables replaced by values PromQL accepts.
fn substitute_variables(expr: &str) -> String {
    let variable = regex::Regex::new(r"\$\{?(\w+)\}?").unwrap();
    variable
        .replace_all(expr, |captures: &regex::Captures| {
            match &captures[1] {
                "__rate_interval" | "__interval" | "__range" => "5m".to_string(),
                // Inside label values: any text will do.
                _ => "value".to_string(),
            }
        })
        .into_owned()
}

/// Problems with one PromQL expression (empty: fine).
fn check_promql(expr: &str) -> Vec<String> {
    let text = substitute_variables(expr);
    let parsed = match parser::parse(&text) {
        Ok(parsed) => parsed,
        Err(error) => return vec![format!("does not parse: {error}")],
    };
    let mut checker = Checker::default();
    let Ok(_) = walk_expr(&mut checker, &parsed);
    for label in &checker.grouping {
        if !checker.available.contains(label) {
            checker
                .problems
                .push(format!("groups by `{label}`, which no selected metric has"));
        }
    }
    checker.problems
}

/// Every `expr` in a dashboard (panel targets, nested rows) and every
/// `label_values(metric, label)` variable query, with where it is.
fn dashboard_queries(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{at}/{key}");
                match (key.as_str(), child) {
                    ("expr", Value::String(expr)) => out.push((here, expr.clone())),
                    _ => dashboard_queries(child, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                dashboard_queries(child, &format!("{at}[{index}]"), out);
            }
        }
        _ => {}
    }
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(grafana_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            found.push((path, value));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn the_checker_catches_unknown_metrics_labels_and_syntax() {
    assert!(check_promql("sum by (status) (gantry_workflows)").is_empty());
    assert!(check_promql(
        "histogram_quantile(0.99, sum by (le, route) (rate(gantry_api_request_seconds_bucket[$__rate_interval])))"
    )
    .is_empty());
    assert!(!check_promql("gantry_workflow_count").is_empty());
    assert!(!check_promql("gantry_workflows{backend=\"x\"}").is_empty());
    assert!(!check_promql("sum by (backend) (gantry_workflows)").is_empty());
    assert!(!check_promql("sum(rate(gantry_api_requests_total[5m])").is_empty());
    assert!(!check_promql("kube_pod_labels{label_osmo_nonsense=\"a\"}").is_empty());
    // `le` exists only on bucket series.
    assert!(!check_promql("sum by (le) (gantry_api_request_seconds_count)").is_empty());
}

#[test]
fn dashboards_query_only_exported_metrics() {
    let dashboards = dashboards();
    let names: Vec<String> = dashboards
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for expected in [
        "control-plane.json",
        "workflow-resources.json",
        "operators.json",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
    let mut used = BTreeSet::new();
    let label_values = regex::Regex::new(r"^label_values\((\w+),\s*(\w+)\)$").unwrap();
    for (path, dashboard) in &dashboards {
        let file = path.file_name().unwrap().to_string_lossy();
        for field in ["uid", "title", "panels", "templating", "schemaVersion"] {
            assert!(dashboard.get(field).is_some(), "{file}: no {field}");
        }
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let id = panel["id"].as_u64().unwrap();
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            if panel["type"] != "row" {
                let targets = panel["targets"].as_array().unwrap();
                assert!(!targets.is_empty(), "{file}: panel {id} has no query");
            }
        }
        let mut queries = Vec::new();
        dashboard_queries(dashboard, "", &mut queries);
        // Variables: label_values(metric, label) is Grafana's, not PromQL.
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            let Some(query) = variable["definition"].as_str() else {
                continue;
            };
            let captures = label_values
                .captures(query)
                .unwrap_or_else(|| panic!("{file}: variable query {query}"));
            let labels = labels_of(&captures[1]).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(labels.contains(&captures[2]), "{file}: {query}");
        }
        assert!(queries.len() >= 5, "{file}: only {} queries", queries.len());
        for (at, expr) in queries {
            let problems = check_promql(&expr);
            assert!(problems.is_empty(), "{file}{at}: {expr}\n{problems:#?}");
            let parsed = parser::parse(&substitute_variables(&expr)).unwrap();
            let mut collect = Names(&mut used);
            let Ok(_) = walk_expr(&mut collect, &parsed);
        }
    }
    // The control-plane dashboards cover every Gantry metric but the
    // scrape's own bookkeeping.
    for metric in METRICS {
        if metric.name.starts_with("gantry_scrape_") {
            continue;
        }
        let shown = used.iter().any(|series| {
            series == metric.name
                || (metric.kind == Kind::Histogram && series.starts_with(metric.name))
        });
        assert!(shown, "no dashboard shows {}", metric.name);
    }
}

/// Collects the metric names an expression selects.
struct Names<'a>(&'a mut BTreeSet<String>);

impl ExprVisitor for Names<'_> {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        let selector = match expr {
            Expr::VectorSelector(selector) => Some(selector),
            Expr::MatrixSelector(matrix) => Some(&matrix.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|s| s.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let path = grafana_dir().join("alerts.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut alerts = BTreeSet::new();
    let duration_pattern = regex::Regex::new(r"^\d+[smh]$").unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(name.to_string()), "{name} twice");
            let expr = rule["expr"].as_str().unwrap();
            let problems = check_promql(expr);
            assert!(problems.is_empty(), "{name}: {expr}\n{problems:#?}");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}");
            if let Some(duration) = rule["for"].as_str() {
                assert!(
                    duration_pattern.is_match(duration),
                    "{name}: for {duration}"
                );
            }
        }
    }
    for required in [
        "GantryNoLeader",
        "GantryFollowerLagging",
        "GantryTimerLag",
        "GantryBackendOffline",
        "GantryObjectStoreErrors",
        "GantryObjectStoreNotShared",
    ] {
        assert!(alerts.contains(required), "no {required} alert");
    }
}
