//! Every session a user opens into a task becomes an event of its workflow
//! (`Command::RecordSession`): who, when, into which run, and what (the
//! command, or the port). `gantry workflow events` and OSMO's event view
//! show them beside the task's own.
//!
//! Invariants: recorded once the operator has the session's end (a refused
//! session is no event, the server's log says why); a port-forward's
//! connections of one user to one port of one run within [`QUIET`] of the
//! last one recorded are one event, so a browser behind a forward does not
//! write an entry per connection; recording never delays or fails the
//! session (the proposal runs beside it, and a failure, such as a member
//! still on a build that cannot apply it, is logged).

use crate::protocol::SessionKind;
use crate::text::{printable, truncated};
use gantry_raft::RaftNode;
use gantry_storage::{
    Command, Outcome, SessionEventInput, TaskKey, SESSION_DETAIL_BYTES_MAX, SESSION_NAME_BYTES_MAX,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port-forward's connections this close together are one event.
pub const QUIET: Duration = Duration::from_secs(60);
/// Port-forwards remembered for [`QUIET`], at most (older ones are
/// forgotten first: the worst case is one event more).
const REMEMBERED_MAX: usize = 4096;

/// What identifies one port-forward for [`QUIET`]: user, run, and port
/// with its protocol.
type ForwardKey = (String, TaskKey, String);

/// The recorder, shared by the API's session routes.
#[derive(Default)]
pub struct SessionEvents {
    recent_forwards: Mutex<HashMap<ForwardKey, Instant>>,
}

impl SessionEvents {
    /// Records `user`'s session of `kind` into run `key`, beside the
    /// session (`runtime` runs the proposal).
    pub fn record(
        &self,
        node: &RaftNode,
        runtime: &tokio::runtime::Handle,
        user: &str,
        key: &TaskKey,
        kind: &SessionKind,
    ) {
        let detail = match kind {
            SessionKind::PortForward { port } | SessionKind::UdpForward { port } => {
                let detail = match kind {
                    SessionKind::UdpForward { .. } => format!("{port}/udp"),
                    _ => port.to_string(),
                };
                if !self.first_in_a_while((user.to_string(), key.clone(), detail.clone())) {
                    return;
                }
                detail
            }
            SessionKind::Exec(request) => {
                let command = shlex::try_join(request.argv.iter().map(String::as_str))
                    .unwrap_or_else(|_| request.argv.join(" "));
                if request.tty {
                    format!("{command} (terminal)")
                } else {
                    command
                }
            }
        };
        let command = Command::RecordSession {
            now: crate::clock::now_ms(),
            workflow_id: key.workflow_id.clone(),
            event: SessionEventInput {
                user: truncated(&printable(user), SESSION_NAME_BYTES_MAX),
                task: key.task.clone(),
                retry_id: key.retry_id,
                kind: kind.verb().to_string(),
                detail: truncated(&printable(&detail), SESSION_DETAIL_BYTES_MAX),
            },
        };
        let node = node.clone();
        let (workflow, task) = (key.workflow_id.clone(), key.task.clone());
        runtime.spawn(async move {
            match node.propose(command).await {
                Ok(Outcome::Applied) => {}
                Ok(other) => {
                    tracing::warn!(%workflow, %task, ?other, "the session was not recorded as an event");
                }
                Err(error) => {
                    tracing::warn!(%workflow, %task, %error, "the session was not recorded as an event");
                }
            }
        });
    }

    /// Whether `forward` was not recorded within [`QUIET`] (and remembers
    /// it now if so).
    fn first_in_a_while(&self, forward: ForwardKey) -> bool {
        let now = Instant::now();
        let mut recent = self
            .recent_forwards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if recent
            .get(&forward)
            .is_some_and(|last| now.duration_since(*last) < QUIET)
        {
            return false;
        }
        if recent.len() >= REMEMBERED_MAX {
            recent.retain(|_, last| now.duration_since(*last) < QUIET);
            if recent.len() >= REMEMBERED_MAX {
                if let Some(oldest) = recent
                    .iter()
                    .min_by_key(|(_, last)| **last)
                    .map(|(key, _)| key.clone())
                {
                    recent.remove(&oldest);
                }
            }
        }
        recent.insert(forward, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(task: &str) -> TaskKey {
        TaskKey {
            workflow_id: "wf-1".into(),
            task: task.into(),
            retry_id: 0,
        }
    }

    #[test]
    fn a_forwards_connections_close_together_are_one_event() {
        let events = SessionEvents::default();
        let forward =
            |user: &str, task: &str, port: &str| (user.to_string(), key(task), port.to_string());
        assert!(events.first_in_a_while(forward("ann", "a", "80")));
        assert!(!events.first_in_a_while(forward("ann", "a", "80")));
        // Another port, protocol, task or user is another event.
        assert!(events.first_in_a_while(forward("ann", "a", "81")));
        assert!(events.first_in_a_while(forward("ann", "a", "80/udp")));
        assert!(events.first_in_a_while(forward("ann", "b", "80")));
        assert!(events.first_in_a_while(forward("bob", "a", "80")));
    }

    #[test]
    fn the_remembered_forwards_stay_bounded() {
        let events = SessionEvents::default();
        for port in 0..(REMEMBERED_MAX + 10) {
            events.first_in_a_while(("ann".into(), key("a"), port.to_string()));
        }
        let remembered = events.recent_forwards.lock().map(|r| r.len()).unwrap_or(0);
        assert!(remembered <= REMEMBERED_MAX, "{remembered}");
    }

    #[test]
    fn a_command_cannot_write_lines_of_its_own() {
        let forged = "true\n2020/01/01 00:00:00 [work] COMPLETED\r\u{1b}[2K";
        let shown = printable(forged);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(
            shown,
            "true\\n2020/01/01 00:00:00 [work] COMPLETED\\r\\u{1b}[2K"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncated(&text, SESSION_DETAIL_BYTES_MAX);
        assert!(cut.len() <= SESSION_DETAIL_BYTES_MAX);
        assert!(cut.ends_with('…'));
        assert_eq!(truncated("short", 10), "short");
    }
}
