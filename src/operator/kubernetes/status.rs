//! Pod state → OSMO task status, exit code and message (OSMO's
//! `calculate_pod_status`, §2.3), checked against OSMO's 35 golden cases.
//!
//! Invariants:
//! - Pure: the pod and the current time in, an outcome out.
//! - Precedence, highest first: pod reason (Evicted, StartError,
//!   UnexpectedAdmissionError), conditions (preemption, disruption),
//!   container waiting errors (even over a Succeeded phase), phase.
//! - Exit codes: the highest of the failed containers, each with its offset
//!   (`osmo-init` +255, `preflight-test` +1000, `osmo-ctrl` +2000, the
//!   latter taking the `code` of a JSON termination message when present);
//!   containers that ended `Completed` never count.

use crate::data;
use gantry_storage::TaskStatus;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

pub const INIT_OFFSET: i32 = 255;
pub const PREFLIGHT_OFFSET: i32 = 1000;
pub const CTRL_OFFSET: i32 = 2000;
pub const EXIT_UNKNOWN: i32 = 4000;

const INIT_CONTAINER: &str = "osmo-init";
const PREFLIGHT_CONTAINER: &str = "preflight-test";
const CTRL_CONTAINER: &str = "osmo-ctrl";

/// How long a pod may sit in `CreateContainerConfigError` (a missing Secret
/// or ConfigMap may still appear) before it is a backend error.
const CONFIG_ERROR_GRACE_MS: i64 = 10 * 60 * 1000;
/// How long a container may be `ContainerStatusUnknown` (node unreachable).
const STATUS_UNKNOWN_GRACE_MS: i64 = 30 * 60 * 1000;

/// A task's state as read from its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodOutcome {
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

impl PodOutcome {
    fn of(status: TaskStatus) -> PodOutcome {
        PodOutcome {
            status,
            exit_code: None,
            message: None,
        }
    }

    fn failed(status: TaskStatus, exit_code: i32, message: String) -> PodOutcome {
        PodOutcome {
            status,
            exit_code: Some(exit_code),
            message: Some(message),
        }
    }
}

/// The outcome a pod shows at `now_ms`; `None` when the pod says nothing
/// usable (phase `Unknown`: the node lost contact; wait for news).
pub fn pod_status(pod: &Pod, now_ms: i64) -> Option<PodOutcome> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let Some(status) = pod.status.as_ref() else {
        return Some(PodOutcome::of(TaskStatus::Scheduling));
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let pod_message = status.message.as_deref().filter(|m| !m.is_empty());
    let detail = |what: &str, extra: Option<&str>| match extra {
        Some(extra) => format!("Pod {name} {what}: {extra}"),
        None => format!("Pod {name} {what}"),
    };

    match status.reason.as_deref() {
        Some("Evicted") => {
            return Some(PodOutcome::failed(
                TaskStatus::FailedEvicted,
                3004,
                detail("was evicted", pod_message),
            ))
        }
        Some("StartError") => {
            return Some(PodOutcome::failed(
                TaskStatus::FailedStartError,
                3003,
                detail("failed to start", pod_message),
            ))
        }
        Some("UnexpectedAdmissionError") => {
            return Some(PodOutcome::failed(
                TaskStatus::FailedBackendError,
                3001,
                detail("was rejected by its node", pod_message),
            ))
        }
        _ => {}
    }

    let conditions = status.conditions.as_deref().unwrap_or_default();
    for condition in conditions.iter().filter(|c| c.status == "True") {
        let reason = condition.reason.as_deref().unwrap_or("");
        let preempted = condition.type_ == "PreemptionByScheduler"
            || (condition.type_ == "DisruptionTarget" && reason.starts_with("PreemptionBy"));
        if preempted {
            return Some(PodOutcome::failed(
                TaskStatus::FailedPreempted,
                3006,
                detail(
                    "was preempted by the scheduler",
                    condition.message.as_deref(),
                ),
            ));
        }
    }
    if let Some(condition) = conditions
        .iter()
        .find(|c| c.status == "True" && c.type_ == "DisruptionTarget")
    {
        let reason = condition.reason.as_deref().unwrap_or("DisruptionTarget");
        return Some(PodOutcome::failed(
            TaskStatus::FailedBackendError,
            3001,
            detail(
                &format!("is being disrupted ({reason})"),
                condition.message.as_deref(),
            ),
        ));
    }

    let init = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let main = status.container_statuses.as_deref().unwrap_or_default();
    let all = || init.iter().chain(main.iter());

    for container in all() {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or("");
        let message = format!(
            "Container {}: {reason}: {}",
            container.name,
            waiting.message.as_deref().unwrap_or("")
        );
        match reason {
            "ImagePullBackOff" => {
                return Some(PodOutcome::failed(
                    TaskStatus::FailedImagePull,
                    301,
                    message,
                ))
            }
            "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(PodOutcome::failed(
                    TaskStatus::FailedImagePull,
                    302,
                    message,
                ))
            }
            "CreateContainerConfigError" => {
                let since_ms = stuck_since_ms(pod);
                return Some(match since_ms {
                    Some(since) if now_ms - since > CONFIG_ERROR_GRACE_MS => {
                        PodOutcome::failed(TaskStatus::FailedBackendError, 3001, message)
                    }
                    _ => PodOutcome::of(TaskStatus::Scheduling),
                });
            }
            "CrashLoopBackOff" => {
                return Some(PodOutcome::failed(TaskStatus::Failed, 304, message))
            }
            _ => {}
        }
    }

    for container in all() {
        let Some(terminated) = container.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        if terminated.reason.as_deref() != Some("ContainerStatusUnknown") {
            continue;
        }
        let since = terminated
            .finished_at
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .or_else(|| stuck_since_ms(pod));
        if since.is_some_and(|since| now_ms - since > STATUS_UNKNOWN_GRACE_MS) {
            return Some(PodOutcome::failed(
                TaskStatus::FailedBackendError,
                3001,
                format!(
                    "Container {} has been in an unknown state for over 30 minutes",
                    container.name
                ),
            ));
        }
    }

    match phase {
        "Pending" => {
            let starting = |c: &ContainerStatus| {
                let waiting = c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref());
                matches!(waiting, Some("ContainerCreating" | "PodInitializing"))
            };
            let init_ran = init.iter().any(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            });
            if init.iter().any(starting) || main.iter().any(starting) || init_ran {
                Some(PodOutcome::of(TaskStatus::Initializing))
            } else {
                Some(PodOutcome::of(TaskStatus::Scheduling))
            }
        }
        "Running" => {
            let triggered = main.iter().any(|c| {
                let reason = terminated_reason(c);
                (c.name == CTRL_CONTAINER && reason.is_some_and(|r| r != "Completed"))
                    || reason == Some("StartError")
            });
            if !triggered {
                return Some(PodOutcome::of(TaskStatus::Running));
            }
            let failures = failures(main);
            Some(failed_from(name, pod_message, &failures))
        }
        "Succeeded" => Some(PodOutcome {
            status: TaskStatus::Completed,
            exit_code: Some(0),
            message: None,
        }),
        "Failed" => {
            let failures: Vec<Failure> = failures(init).into_iter().chain(failures(main)).collect();
            if let Some(oom) = failures.iter().find(|f| f.reason == "OOMKilled") {
                return Some(PodOutcome::failed(
                    TaskStatus::FailedEvicted,
                    3004,
                    format!(
                        "Pod {name}: container {} ran out of memory (OOMKilled)",
                        oom.container
                    ),
                ));
            }
            Some(failed_from(name, pod_message, &failures))
        }
        _ => None,
    }
}

/// One container that ended with an error.
struct Failure {
    container: String,
    reason: String,
    exit_code: i32,
    raw_exit_code: i32,
    message: String,
}

fn terminated_reason(container: &ContainerStatus) -> Option<&str> {
    let terminated = container.state.as_ref()?.terminated.as_ref()?;
    Some(terminated.reason.as_deref().unwrap_or(""))
}

/// Terminated containers that did not end `Completed`, with offset codes.
fn failures(containers: &[ContainerStatus]) -> Vec<Failure> {
    containers
        .iter()
        .filter_map(|container| {
            let terminated = container.state.as_ref()?.terminated.as_ref()?;
            let reason = terminated.reason.clone().unwrap_or_default();
            if reason == "Completed" {
                return None;
            }
            let raw = terminated.exit_code;
            let text = terminated.message.clone().unwrap_or_default();
            let (exit_code, message) = match container.name.as_str() {
                INIT_CONTAINER => (INIT_OFFSET + raw, text),
                PREFLIGHT_CONTAINER => (PREFLIGHT_OFFSET + raw, text),
                CTRL_CONTAINER => match ctrl_message(&text) {
                    Some((code, error)) => (CTRL_OFFSET + code, error),
                    None => (CTRL_OFFSET + raw, text),
                },
                // The in-pod runtime's data phases (2010, 2012) say their
                // code in the termination message: exit codes are 8-bit.
                // Only those two: the user's command can write this file too.
                _ => match ctrl_message(&text) {
                    Some((code, error))
                        if code == data::EXIT_DOWNLOAD_FAILED
                            || code == data::EXIT_UPLOAD_FAILED =>
                    {
                        (code, error)
                    }
                    _ => (raw, text),
                },
            };
            Some(Failure {
                container: container.name.clone(),
                reason,
                exit_code,
                raw_exit_code: raw,
                message,
            })
        })
        .collect()
}

/// `{"code": N, "error": "..."}` as written by the control sidecar.
fn ctrl_message(text: &str) -> Option<(i32, String)> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let code = i32::try_from(value.get("code")?.as_i64()?).ok()?;
    let error = value
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("")
        .to_string();
    Some((code, error))
}

fn display_name(container: &str) -> String {
    match container {
        CTRL_CONTAINER => format!("OSMO Control ({container})"),
        INIT_CONTAINER => format!("OSMO Init ({container})"),
        PREFLIGHT_CONTAINER => format!("Preflight Test ({container})"),
        other => format!("Container {other}"),
    }
}

fn failed_from(pod: &str, pod_message: Option<&str>, failures: &[Failure]) -> PodOutcome {
    let mut parts = Vec::new();
    if let Some(message) = pod_message {
        parts.push(format!("Pod {pod}: {message}"));
    }
    for failure in failures {
        let mut line = format!(
            "{} failed with Exit code {} ({})",
            display_name(&failure.container),
            failure.raw_exit_code,
            failure.reason
        );
        if !failure.message.is_empty() {
            line.push_str(": ");
            line.push_str(&failure.message);
        }
        parts.push(line);
    }
    let exit_code = failures.iter().map(|f| f.exit_code).max();
    if exit_code.is_none() {
        parts.push(format!("Pod {pod} failed without an exit code"));
    }
    PodOutcome::failed(
        TaskStatus::Failed,
        exit_code.unwrap_or(EXIT_UNKNOWN),
        parts.join("; "),
    )
}

/// Since when the pod has been stuck: its Ready condition's last change,
/// else its start time.
fn stuck_since_ms(pod: &Pod) -> Option<i64> {
    let status = pod.status.as_ref()?;
    status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(status.start_time.as_ref())
        .map(|t| t.0.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};

    fn terminated(name: &str, exit_code: i32, message: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.to_string(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    reason: Some("Error".to_string()),
                    message: Some(message.to_string()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn a_data_phase_code_comes_from_the_termination_message() {
        let message =
            r#"{"code":2010,"error":"input 0 (task a): nothing is stored at s3://b/wf/a"}"#;
        let failure = &failures(&[terminated("train", 1, message)])[0];
        assert_eq!(failure.exit_code, 2010);
        assert_eq!(failure.raw_exit_code, 1);
        assert!(
            failure.message.starts_with("input 0"),
            "{}",
            failure.message
        );
        // A code the user's command wrote there does not replace the exit code.
        for forged in [r#"{"code":7}"#, r#"{"code":3001}"#] {
            let failure = &failures(&[terminated("train", 3, forged)])[0];
            assert_eq!(failure.exit_code, 3, "{forged}");
        }
    }
}
