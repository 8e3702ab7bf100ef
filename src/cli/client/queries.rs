//! The shapes of the requests the workflow verbs send: a submit, the
//! filters of a workflow listing, what a log request asks for.

use serde::Serialize;

/// One submit call; [`Client::submit`] is the short form without priority.
#[derive(Debug, Clone, Copy)]
pub struct SubmitRequest<'a> {
    pub pool: &'a str,
    /// The workflow YAML text as written (templates are rendered server-side).
    pub file_text: &'a str,
    pub set: &'a [String],
    pub set_string: &'a [String],
    /// `K=V` pairs sent as repeated `env_vars` query parameters.
    pub set_env: &'a [String],
    /// `HIGH`, `NORMAL` or `LOW`; None leaves the server's default.
    pub priority: Option<&'a str>,
    /// `KEY=VALUE` labels over the spec's own, sent as repeated `label`.
    pub labels: &'a [String],
    pub dry_run: bool,
    pub validation_only: bool,
}

/// OSMO's `TemplateSpec` body.
#[derive(Serialize)]
pub(super) struct TemplateSpec<'a> {
    pub(super) file: &'a str,
    pub(super) set_variables: &'a [String],
    pub(super) set_string_variables: &'a [String],
}

/// The filters and paging of `GET /api/workflow`, as OSMO's CLI sends them
/// (lists as repeated keys; what is unset is left out).
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub statuses: Vec<String>,
    pub name: Option<String>,
    pub pools: Vec<String>,
    /// Submitted by any of these users (none: the caller, unless `all_users`).
    pub users: Vec<String>,
    pub all_users: bool,
    pub tags: Vec<String>,
    pub priorities: Vec<String>,
    /// `KEY=SELECTOR` each.
    pub labels: Vec<String>,
    pub no_labels: Vec<String>,
    /// `YYYY-MM-DDTHH:MM:SS` in UTC.
    pub submitted_after: Option<String>,
    pub submitted_before: Option<String>,
    pub offset: u64,
    pub limit: u64,
    pub order_desc: bool,
}

impl ListQuery {
    pub(super) fn pairs(&self) -> Vec<(&'static str, String)> {
        let optional = |value: &Option<String>| value.iter().cloned().collect::<Vec<_>>();
        let all_users = if self.all_users {
            vec!["true".to_owned()]
        } else {
            Vec::new()
        };
        let lists: [(&'static str, Vec<String>); 11] = [
            ("statuses", self.statuses.clone()),
            ("name", optional(&self.name)),
            ("pools", self.pools.clone()),
            ("users", self.users.clone()),
            ("all_users", all_users),
            ("tags", self.tags.clone()),
            ("priority", self.priorities.clone()),
            ("label", self.labels.clone()),
            ("no_label", self.no_labels.clone()),
            ("submitted_after", optional(&self.submitted_after)),
            ("submitted_before", optional(&self.submitted_before)),
        ];
        let mut query: Vec<(&'static str, String)> = lists
            .into_iter()
            .flat_map(|(key, values)| values.into_iter().map(move |value| (key, value)))
            .collect();
        query.push(("offset", self.offset.to_string()));
        query.push(("limit", self.limit.to_string()));
        query.push((
            "order",
            if self.order_desc { "DESC" } else { "ASC" }.to_owned(),
        ));
        query
    }
}

/// What `gantry workflow logs` asks for.
#[derive(Clone, Copy, Default)]
pub struct LogQuery<'a> {
    pub task: Option<&'a str>,
    pub last_n_lines: Option<u64>,
    pub retry_id: Option<u32>,
    /// `/error_logs`: the last lines of failed tasks.
    pub errors_only: bool,
}

impl LogQuery<'_> {
    /// The query parameters of `/logs` and `/error_logs`.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(n) = self.last_n_lines {
            query.push(("last_n_lines", n.to_string()));
        }
        if let Some(task) = self.task {
            query.push(("task_name", task.to_owned()));
        }
        if let Some(retry) = self.retry_id {
            query.push(("retry_id", retry.to_string()));
        }
        query
    }
}
