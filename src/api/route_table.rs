//! The route table: every API route, declared once, with its method, path,
//! handler, access rule and documentation. The router, the authorization
//! check and the OpenAPI document (`openapi`) are all built from it.
//!
//! Invariants: paths and parameter names are OSMO's where OSMO has the
//! route (`tests/openapi.rs` holds them against OSMO's document); a route's
//! query parameters are declared here, so the document says what the
//! handler reads (Gantry's own additions are marked as such).

use super::access::{Access, Target};
use super::routes::{gantry, optional, required, Content, Kind, QueryParam, Route};
use super::{
    access_tokens, agent_session, cluster, configs, credentials, events, jwt, operator_stream,
    osmo_router, port_forward, resources, submit, tasks, users, workflow, workflow_logs,
};
use axum::http::Method;
use axum::routing::{delete, get, post};
use gantry_storage::ConfigType;

/// `stale=true` reads this replica's state without asking the leader.
const STALE: QueryParam = gantry("stale", Kind::Boolean);

fn allow(action: &'static str, target: Target) -> Access {
    Access::Rule { action, target }
}

const ANY: Target = Target::Fixed("*");
const WORKFLOW_POOL: Target = Target::WorkflowPool;

/// The config types with one config per name: their collection path (and
/// what its listing reads), item path, and the resource their rules name.
type NamedConfig = (
    ConfigType,
    &'static str,
    &'static [QueryParam],
    &'static str,
    &'static str,
);
const NAMED_CONFIGS: [NamedConfig; 4] = [
    (
        ConfigType::Pool,
        "/api/configs/pool",
        &[optional("backend", Kind::String)],
        "/api/configs/pool/{name}",
        "config/pool",
    ),
    (
        ConfigType::PodTemplate,
        "/api/configs/pod_template",
        &[],
        "/api/configs/pod_template/{name}",
        "config/pod_template",
    ),
    (
        ConfigType::ResourceValidation,
        "/api/configs/resource_validation",
        &[],
        "/api/configs/resource_validation/{name}",
        "config/resource_validation",
    ),
    (
        ConfigType::Role,
        "/api/configs/role",
        &[],
        "/api/configs/role/{name}",
        "config/role",
    ),
];

/// The singleton config types, their path and resource.
const SINGLETON_CONFIGS: [(ConfigType, &str, &str); 2] = [
    (
        ConfigType::Service,
        "/api/configs/service",
        "config/service",
    ),
    (
        ConfigType::Workflow,
        "/api/configs/workflow",
        "config/workflow",
    ),
];

/// Every route of the API, one a line (kept unformatted: a table reads
/// best as a table).
#[rustfmt::skip]
pub fn routes() -> Vec<Route> {
    use Kind::{Boolean, Integer, List, String};
    use Method as M;
    let token_query = [required("expires_at", String), optional("description", String), optional("roles", List), gantry("service", Boolean)];
    let user = Target::Param("user/", "user_id");
    let mut routes = vec![
        // Probes, version, metrics, this document: open.
        Route::new(M::GET, "/health", "Liveness as OSMO reports it", Access::Open, get(super::health)),
        Route::new(M::GET, "/healthz", "Liveness: the process and its Raft core run, and its state reads clean", Access::Open, get(super::liveness)),
        Route::new(M::GET, "/readyz", "Readiness: a linearizable read succeeds", Access::Open, get(super::ready)),
        Route::new(M::GET, "/api/version", "The server's version", Access::Open, get(super::version)),
        Route::new(M::GET, "/metrics", "Prometheus metrics", Access::Open, get(super::prometheus_metrics)).response(Content::Text),
        Route::new(M::GET, "/api/openapi.json", "This document", Access::Open, get(super::openapi_document)),
        // Pools and resources.
        Route::new(M::GET, "/api/pool", "Pools with their status and capacity", allow("pool:List", ANY), get(workflow::list_pools))
            .query(&[STALE]),
        Route::new(M::GET, "/api/pool_quota", "GPU quota and use per pool", allow("pool:List", ANY), get(resources::pool_quota))
            .query(&[optional("pools", List)]),
        Route::new(M::GET, "/api/resources", "Nodes the operators report", allow("resources:Read", ANY), get(resources::resources))
            .query(&[optional("pools", List), optional("platforms", List)]),
        Route::new(M::GET, "/api/resources/{name}", "One node as the operators report it", allow("resources:Read", ANY), get(resources::resource)),
        // Workflows.
        Route::new(M::POST, "/api/pool/{pool_name}/workflow", "Submit a workflow", allow("workflow:Create", Target::Param("pool/", "pool_name")), post(submit::submit))
            .query(&[optional("workflow_id", String), optional("dry_run", Boolean), optional("validation_only", Boolean), optional("priority", String), optional("env_vars", List), optional("label", List)])
            .body(Content::Json),
        Route::new(M::POST, "/api/pool/{pool_name}/workflow/{workflow_id}/restart", "Restart a failed workflow from its groups that did not complete", allow("workflow:Create", Target::Param("pool/", "pool_name")), post(submit::restart)),
        Route::new(M::GET, "/api/workflow", "List workflows", allow("workflow:List", ANY), get(workflow::list))
            .query(&[optional("users", List), optional("all_users", Boolean), optional("name", String), optional("statuses", List), optional("pools", List), optional("all_pools", Boolean), optional("submitted_before", String), optional("submitted_after", String), optional("tags", List), optional("priority", List), optional("label", List), optional("no_label", List), optional("offset", Integer), optional("limit", Integer), optional("order", String), STALE]),
        Route::new(M::GET, "/api/workflow/{name}", "A workflow with its groups and tasks", allow("workflow:Read", WORKFLOW_POOL), get(workflow::query))
            .query(&[optional("skip_groups", Boolean), optional("verbose", Boolean), STALE]),
        Route::new(M::POST, "/api/workflow/{name}/cancel", "Cancel a workflow", allow("workflow:Cancel", WORKFLOW_POOL), post(workflow::cancel))
            .query(&[optional("message", String), optional("force", Boolean)]),
        Route::new(M::GET, "/api/workflow/{name}/spec", "The workflow's spec, rendered or as templated", allow("workflow:Read", WORKFLOW_POOL), get(workflow::spec))
            .query(&[optional("use_template", Boolean), STALE]).response(Content::Text),
        Route::new(M::GET, "/api/workflow/{name}/logs", "The workflow's logs, followed while it runs", allow("workflow:Read", WORKFLOW_POOL), get(workflow_logs::logs))
            .query(&[optional("last_n_lines", Integer), optional("task_name", String), optional("retry_id", Integer), optional("query", String), gantry("format", String), gantry("after", String), STALE])
            .response(Content::Text),
        Route::new(M::GET, "/api/workflow/{name}/error_logs", "The last lines of failed task runs", allow("workflow:Read", WORKFLOW_POOL), get(workflow_logs::error_logs))
            .query(&[optional("last_n_lines", Integer), optional("task_name", String), optional("retry_id", Integer), optional("query", String), STALE]).response(Content::Text),
        Route::new(M::GET, "/api/workflow/{name}/events", "The workflow's events in time order", allow("workflow:Read", WORKFLOW_POOL), get(events::events))
            .query(&[optional("task_name", String), optional("retry_id", Integer), STALE]).response(Content::Text),
        Route::new(M::POST, "/api/workflow/{name}/tag", "Remove, then add tags of a workflow", allow("workflow:Update", WORKFLOW_POOL), post(workflow::tag))
            .query(&[optional("add", List), optional("remove", List)]),
        Route::new(M::GET, "/api/tag", "The tags users may give workflows", allow("workflow:List", ANY), get(workflow::allowed_tags))
            .query(&[STALE]),
        Route::new(M::GET, "/api/workflow/{name}/task/{task_name}", "A task's latest run", allow("workflow:Read", WORKFLOW_POOL), get(tasks::get))
            .query(&[STALE]),
        Route::new(M::GET, "/api/workflow/{name}/portforward/{task_name}", "A TCP connection to a port of a running task: the request upgraded (HTTP/1.1 `Upgrade: gantry-port-forward`) to the byte stream", allow("workflow:PortForward", WORKFLOW_POOL), get(port_forward::port_forward)).relayed()
            .query(&[gantry("port", Integer), gantry("udp", Boolean)]),
        Route::new(M::GET, "/api/workflow/{name}/exec/task/{task_name}", "A command run inside a running task: the request upgraded (HTTP/1.1 `Upgrade: gantry-exec`) to a stream of exec frames (stdin, resize; stdout, stderr, exit code)", allow("workflow:Exec", WORKFLOW_POOL), get(port_forward::exec)).relayed()
            .query(&[gantry("entry", String), gantry("tty", Boolean), gantry("columns", Integer), gantry("rows", Integer)]),
        Route::new(M::POST, "/api/workflow/{name}/portforward/{task_name}", "OSMO's port-forward ticket per port (its router protocol): `{router_address, key, cookie}` each; with `use_udp` a UDP socket per port", allow("workflow:PortForward", WORKFLOW_POOL), post(osmo_router::port_forward)).relayed()
            .query(&[optional("task_ports", List), optional("use_udp", Boolean)]),
        Route::new(M::POST, "/api/workflow/{name}/exec/task/{task_name}", "OSMO's exec ticket (its router protocol): `{router_address, key, cookie}`", allow("workflow:Exec", WORKFLOW_POOL), post(osmo_router::exec_task)).relayed()
            .query(&[required("entry_command", String)]),
        Route::new(M::POST, "/api/workflow/{name}/exec/group/{group_name}", "OSMO's exec tickets for every running task of a group, by task name", allow("workflow:Exec", WORKFLOW_POOL), post(osmo_router::exec_group)).relayed()
            .query(&[required("entry_command", String)]),
        Route::new(M::GET, "/api/router/version", "OSMO's router version (what OSMO's CLI asks before each forwarded connection)", Access::Open, get(osmo_router::version)),
        Route::new(M::GET, "/api/router/exec/{name}/client/{key}", "OSMO's exec socket (WebSocket): the terminal's size, then its bytes both ways", allow("workflow:Exec", WORKFLOW_POOL), get(osmo_router::exec_socket)).relayed(),
        Route::new(M::GET, "/api/router/portforward/{name}/client/{key}", "OSMO's port-forward sockets (WebSocket): a port's control socket, or one forwarded connection", allow("workflow:PortForward", WORKFLOW_POOL), get(osmo_router::port_forward_socket)).relayed(),
        Route::new(M::GET, "/api/task", "Task runs across workflows, or their requests summed", allow("workflow:List", ANY), get(tasks::list))
            .query(&[optional("workflow_id", String), optional("statuses", List), optional("users", List), optional("all_users", Boolean), optional("pools", List), optional("all_pools", Boolean), optional("nodes", List), optional("started_after", String), optional("started_before", String), optional("offset", Integer), optional("limit", Integer), optional("order", String), optional("summary", Boolean), optional("aggregate_by_workflow", Boolean), optional("priority", List), STALE]),
        // Operators: a stream for as long as the operator lives. Each frame
        // is bounded (`protocol::wire::FRAME_BYTES_MAX`), the whole body is not.
        Route::new(M::POST, "/api/agent/connect", "The operator stream (mutual TLS, HTTP/2)", allow("backend:Connect", Target::Query("backend/", "backend")),
            post(operator_stream::connect).layer(axum::extract::DefaultBodyLimit::disable()))
            .query(&[gantry("backend", String), gantry("instance", Integer)]).body(Content::Frames).response(Content::Frames),
        Route::new(M::POST, "/api/agent/session/{session_id}", "An operator's end of a session into a task (mutual TLS, HTTP/2)", allow("backend:Connect", Target::Query("backend/", "backend")),
            post(agent_session::attach).layer(axum::extract::DefaultBodyLimit::disable()))
            .query(&[gantry("backend", String)]).body(Content::Frames).response(Content::Frames),
        // Cluster membership and backups.
        Route::new(M::GET, "/api/cluster/members", "Members, their roles and replication", allow("cluster:Read", ANY), get(cluster::members)),
        Route::new(M::POST, "/api/cluster/leave", "Remove a member", allow("cluster:Update", ANY), post(cluster::leave))
            .query(&[gantry("id", Integer)]),
        Route::new(M::POST, "/api/cluster/init", "Make this waiting node a new cluster of one", Access::ClusterSetup, post(cluster::init)),
        Route::new(M::POST, "/api/cluster/join", "Make this waiting node join a cluster", Access::ClusterSetup, post(cluster::join))
            .query(&[gantry("peer", String)]),
        Route::new(M::POST, "/api/cluster/key/reseal", "Seal the stored credentials with the newest cluster key", allow("config:Update", Target::Fixed("config/workflow")), post(configs::reseal)),
        Route::new(M::GET, "/api/cluster/snapshot", "The whole state as a snapshot archive", allow("cluster:Update", ANY), get(cluster::snapshot))
            .response(Content::Archive),
        // An access token exchanged for a short-lived JWT (the body or query carries the token).
        Route::new(M::POST, "/api/auth/jwt/access_token", "A short-lived JWT for an access token", Access::Open, post(jwt::from_access_token))
            .body(Content::Json),
        Route::new(M::GET, "/api/auth/jwt/access_token", "A short-lived JWT for an access token (OSMO's deprecated form)", Access::Open, get(jwt::from_access_token_query))
            .query(&[required("access_token", String)]),
        // Where a CLI signs in, and users with their roles (admins).
        Route::new(M::GET, "/api/auth/login", "Where a CLI signs in: the identity provider's endpoints and client ids", Access::Open, get(users::login_info)),
        Route::new(M::GET, "/api/auth/user", "Users, by name prefix and role", allow("user:List", ANY), get(users::list))
            .query(&[optional("start_index", Integer), optional("count", Integer), optional("id_prefix", String), optional("roles", List)]),
        Route::new(M::POST, "/api/auth/user", "Create a user", allow("user:Update", ANY), post(users::create))
            .body(Content::Json),
        Route::new(M::GET, "/api/auth/user/{user_id}", "A user with its roles", allow("user:List", ANY), get(users::get_one)),
        Route::new(M::DELETE, "/api/auth/user/{user_id}", "Delete a user with its tokens, credentials and profile", allow("user:Update", ANY), delete(users::delete)),
        Route::new(M::GET, "/api/auth/user/{user_id}/roles", "The roles given to a user", allow("user:List", ANY), get(users::roles)),
        Route::new(M::POST, "/api/auth/user/{user_id}/roles", "Give a user a role", allow("user:Update", ANY), post(users::assign))
            .body(Content::Json),
        Route::new(M::DELETE, "/api/auth/user/{user_id}/roles/{role_name}", "Take a role from a user", allow("user:Update", ANY), delete(users::unassign)),
        Route::new(M::POST, "/api/auth/user/{user_id}/sessions/revoke", "Refuse every sign-in of the user issued until now (Gantry's)", allow("user:Update", ANY), post(users::revoke_sessions)),
        Route::new(M::GET, "/api/auth/roles/{role_name}/users", "Users given a role", allow("user:List", ANY), get(users::role_users)),
        Route::new(M::POST, "/api/auth/roles/{role_name}/users", "Give a role to several users", allow("user:Update", ANY), post(users::bulk_assign))
            .body(Content::Json),
        Route::new(M::GET, "/api/users", "Every user's name", allow("user:List", ANY), get(users::names)),
        // The caller's credentials.
        Route::new(M::GET, "/api/credentials", "The caller's credentials (names, types and profiles, never values)", allow("credentials:Read", ANY), get(credentials::list)),
        Route::new(M::POST, "/api/credentials/{cred_name}", "Create or replace one of the caller's credentials", allow("credentials:Update", ANY), post(credentials::set))
            .body(Content::Json),
        Route::new(M::DELETE, "/api/credentials/{cred_name}", "Delete one of the caller's credentials", allow("credentials:Delete", ANY), delete(credentials::delete)),
        // Profile and access tokens.
        Route::new(M::GET, "/api/profile/settings", "The caller's profile", allow("profile:Read", ANY), get(access_tokens::profile)),
        Route::new(M::POST, "/api/profile/settings", "Save the caller's preferences (default pool)", allow("profile:Update", ANY), post(access_tokens::set_profile))
            .query(&[optional("set_default_backend", Boolean)])
            .body(Content::Json),
        Route::new(M::GET, "/api/auth/access_token", "The caller's tokens", allow("token:List", Target::Caller), get(access_tokens::list_own))
            .query(&[gantry("service", Boolean)]),
        Route::new(M::POST, "/api/auth/access_token/{token_name}", "Create a token for the caller", allow("token:Create", Target::Caller), post(access_tokens::create_own))
            .query(&token_query),
        Route::new(M::DELETE, "/api/auth/access_token/{token_name}", "Delete one of the caller's tokens", allow("token:Delete", Target::Caller), delete(access_tokens::delete_own)),
        Route::new(M::GET, "/api/auth/user/{user_id}/access_token", "A user's tokens", allow("token:List", user), get(access_tokens::list_for_user))
            .query(&[gantry("service", Boolean)]),
        Route::new(M::POST, "/api/auth/user/{user_id}/access_token/{token_name}", "Create a token for a user", allow("token:Create", user), post(access_tokens::create_for_user))
            .query(&token_query),
        Route::new(M::DELETE, "/api/auth/user/{user_id}/access_token/{token_name}", "Delete a user's token", allow("token:Delete", user), delete(access_tokens::delete_for_user)),
        // Configs: BACKEND, history, rollback, revision tags and diff; the other types below.
        Route::new(M::GET, "/api/configs/backend", "Every backend", allow("config:Read", Target::Fixed("config/backend")), configs::list(ConfigType::Backend)),
        Route::new(M::GET, "/api/configs/backend/{name}", "One backend", allow("config:Read", Target::Fixed("config/backend")), configs::read(ConfigType::Backend)),
        Route::new(M::POST, "/api/configs/backend/{name}", "Create or partly update a backend", allow("config:Update", Target::Fixed("config/backend")), post(configs::post_backend))
            .body(Content::Json),
        Route::new(M::DELETE, "/api/configs/backend/{name}", "Delete a backend", allow("config:Update", Target::Fixed("config/backend")), configs::delete(ConfigType::Backend))
            .body(Content::Json),
        Route::new(M::GET, "/api/configs/history", "Every revision of the configs", allow("config:Read", Target::Fixed("config/*")), get(configs::history))
            .query(&[optional("config_types", List), optional("name", String), optional("revision", Integer), optional("tags", List), optional("created_before", String), optional("created_after", String), optional("at_timestamp", String), optional("omit_data", Boolean), optional("offset", Integer), optional("limit", Integer), optional("order", String)]),
        Route::new(M::POST, "/api/configs/history/rollback", "Write a new revision equal to an old one", allow("config:Update", Target::Fixed("config/*")), post(configs::rollback))
            .body(Content::Json),
        Route::new(M::DELETE, "/api/configs/history/{config_type}/revision/{revision}", "Remove a revision from its type's history (never the one in force)", allow("config:Update", Target::Fixed("config/*")), delete(configs::delete_revision)),
        Route::new(M::POST, "/api/configs/history/{config_type}/revision/{revision}/tags", "Add, then remove tags of a revision", allow("config:Update", Target::Fixed("config/*")), post(configs::tag_revision))
            .body(Content::Json),
        Route::new(M::GET, "/api/configs/diff", "A type's configs as they stood at two of its revisions, secrets masked", allow("config:Read", Target::Fixed("config/*")), get(configs::diff))
            .query(&[required("config_type", String), required("first_revision", Integer), required("second_revision", Integer)]),
    ];
    for (config_type, path, resource) in SINGLETON_CONFIGS {
        let (read, update) = (allow("config:Read", Target::Fixed(resource)), allow("config:Update", Target::Fixed(resource)));
        routes.push(Route::new(M::GET, path, "The config", read, configs::read_singleton(config_type)));
        routes.push(Route::new(M::PUT, path, "Replace the config", update, configs::put(config_type)).body(Content::Json));
        routes.push(Route::new(M::PATCH, path, "Change fields of the config", update, configs::patch_singleton(config_type)).body(Content::Json));
    }
    for (config_type, collection, list_query, item, resource) in NAMED_CONFIGS {
        let (read, update) = (allow("config:Read", Target::Fixed(resource)), allow("config:Update", Target::Fixed(resource)));
        routes.push(Route::new(M::GET, collection, "Every config of the type", read, configs::list(config_type)).query(list_query));
        routes.push(Route::new(M::GET, item, "One config", read, configs::read(config_type)));
        routes.push(Route::new(M::PUT, item, "Create or replace a config", update, configs::put(config_type)).body(Content::Json));
        routes.push(Route::new(M::DELETE, item, "Delete a config", update, configs::delete(config_type)).body(Content::Json));
    }
    // Only in the rolling-upgrade rehearsal build (ops/upgrade/drill.sh).
    #[cfg(feature = "upgrade-drill")]
    routes.push(Route::new(M::POST, "/api/cluster/upgrade-drill", "Propose the command kind only this build knows", allow("cluster:Update", ANY), post(cluster::upgrade_drill)));
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn each_method_and_path_is_declared_once() {
        let mut seen = BTreeSet::new();
        for route in routes() {
            assert!(
                seen.insert((route.method.to_string(), route.path)),
                "{} {} is declared twice",
                route.method,
                route.path
            );
        }
    }

    /// Authentication matches tokenless routes by their exact path, which
    /// only works for paths without parameters.
    #[test]
    fn tokenless_routes_have_no_path_parameters() {
        for route in routes() {
            if matches!(route.access, Access::Open | Access::ClusterSetup) {
                assert!(!route.path.contains('{'), "{} {}", route.method, route.path);
            }
        }
    }

    #[test]
    fn parameters_of_a_target_are_in_its_path() {
        for route in routes() {
            let param = match route.access {
                Access::Rule {
                    target: Target::Param(_, name),
                    ..
                } => Some(name),
                Access::Rule {
                    target: Target::WorkflowPool,
                    ..
                } => Some("name"),
                _ => None,
            };
            if let Access::Rule {
                target: Target::Query(_, name),
                ..
            } = route.access
            {
                assert!(
                    route.query.iter().any(|query| query.name == name),
                    "{} {}: the access rule reads query parameter {name}",
                    route.method,
                    route.path
                );
            }
            if let Some(name) = param {
                assert!(
                    route.path.contains(&format!("{{{name}}}")),
                    "{} {}: the access rule reads {{{name}}}",
                    route.method,
                    route.path
                );
            }
        }
    }

    /// Every query parameter a handler of this module tree reads is declared
    /// on some route, so the document does not hide one. A probe of the
    /// source text: `params.get("x")`, `.list("x")`, `.number("x")`, ...
    #[test]
    fn every_query_parameter_read_is_declared() {
        let declared: BTreeSet<&str> = routes()
            .iter()
            .flat_map(|route| route.query.iter().map(|q| q.name))
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let reads = regex::Regex::new(r#"\.(?:get|list|all|number|flag)\(\s*"([a-z_]+)"\s*\)"#)
            .expect("regex");
        let mut undeclared = Vec::new();
        for entry in walkdir::WalkDir::new(&dir) {
            let path = entry.expect("src/api").into_path();
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("route_table.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            // Only what reads a `Params` (`params.`, possibly on the next line).
            let text = text.replace("params\n", "params");
            for line in text.lines().filter(|line| line.contains("params")) {
                for found in reads.captures_iter(line) {
                    let name = &found[1];
                    if !declared.contains(name) {
                        undeclared.push(format!("{}: {name}", path.display()));
                    }
                }
            }
        }
        // `retry_id` is read through `Params::retry_id`.
        assert!(declared.contains("retry_id"));
        assert!(
            undeclared.is_empty(),
            "read but not declared: {undeclared:?}"
        );
    }
}
