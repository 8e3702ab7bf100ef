//! OSMO's status vocabulary for workflows, groups and tasks, with the
//! predicates the lifecycle rules are written in.
//!
//! Invariant: the string form of every status is exactly OSMO's enum name, so
//! JSON, CLI filters and stored rows all speak the same words.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Status of a task or of a group (OSMO's `TaskGroupStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskStatus {
    Submitting,
    Waiting,
    Processing,
    Scheduling,
    Initializing,
    Running,
    Completed,
    Rescheduled,
    Failed,
    FailedCanceled,
    FailedServerError,
    FailedBackendError,
    FailedExecTimeout,
    FailedQueueTimeout,
    FailedImagePull,
    FailedUpstream,
    FailedEvicted,
    FailedStartError,
    FailedStartTimeout,
    FailedPreempted,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 20] = [
        TaskStatus::Submitting,
        TaskStatus::Waiting,
        TaskStatus::Processing,
        TaskStatus::Scheduling,
        TaskStatus::Initializing,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Rescheduled,
        TaskStatus::Failed,
        TaskStatus::FailedCanceled,
        TaskStatus::FailedServerError,
        TaskStatus::FailedBackendError,
        TaskStatus::FailedExecTimeout,
        TaskStatus::FailedQueueTimeout,
        TaskStatus::FailedImagePull,
        TaskStatus::FailedUpstream,
        TaskStatus::FailedEvicted,
        TaskStatus::FailedStartError,
        TaskStatus::FailedStartTimeout,
        TaskStatus::FailedPreempted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Submitting => "SUBMITTING",
            TaskStatus::Waiting => "WAITING",
            TaskStatus::Processing => "PROCESSING",
            TaskStatus::Scheduling => "SCHEDULING",
            TaskStatus::Initializing => "INITIALIZING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Rescheduled => "RESCHEDULED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::FailedCanceled => "FAILED_CANCELED",
            TaskStatus::FailedServerError => "FAILED_SERVER_ERROR",
            TaskStatus::FailedBackendError => "FAILED_BACKEND_ERROR",
            TaskStatus::FailedExecTimeout => "FAILED_EXEC_TIMEOUT",
            TaskStatus::FailedQueueTimeout => "FAILED_QUEUE_TIMEOUT",
            TaskStatus::FailedImagePull => "FAILED_IMAGE_PULL",
            TaskStatus::FailedUpstream => "FAILED_UPSTREAM",
            TaskStatus::FailedEvicted => "FAILED_EVICTED",
            TaskStatus::FailedStartError => "FAILED_START_ERROR",
            TaskStatus::FailedStartTimeout => "FAILED_START_TIMEOUT",
            TaskStatus::FailedPreempted => "FAILED_PREEMPTED",
        }
    }

    /// Finished for good: no further transition is accepted.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            TaskStatus::Submitting
                | TaskStatus::Waiting
                | TaskStatus::Processing
                | TaskStatus::Scheduling
                | TaskStatus::Initializing
                | TaskStatus::Running
                | TaskStatus::Rescheduled
        )
    }

    pub fn is_failure(self) -> bool {
        self.is_finished() && self != TaskStatus::Completed
    }

    /// OSMO's `canceled()` family.
    pub fn is_canceled_family(self) -> bool {
        matches!(
            self,
            TaskStatus::FailedCanceled
                | TaskStatus::FailedExecTimeout
                | TaskStatus::FailedQueueTimeout
        )
    }

    /// The statuses an executor may report; the rest are decided by the control plane.
    pub fn is_reportable(self) -> bool {
        !matches!(
            self,
            TaskStatus::Submitting
                | TaskStatus::Waiting
                | TaskStatus::Processing
                | TaskStatus::Rescheduled
                | TaskStatus::FailedUpstream
                | TaskStatus::FailedCanceled
                | TaskStatus::FailedExecTimeout
                | TaskStatus::FailedQueueTimeout
        )
    }

    /// Position in the forward path; a report may only move a task forward.
    pub fn phase_rank(self) -> u8 {
        match self {
            TaskStatus::Submitting => 0,
            TaskStatus::Waiting => 1,
            TaskStatus::Processing => 2,
            TaskStatus::Scheduling => 3,
            TaskStatus::Initializing => 4,
            TaskStatus::Running => 5,
            _ => 6,
        }
    }

    /// OSMO's exit code for control-plane decided failures (§2.4).
    pub fn default_exit_code(self) -> Option<i32> {
        match self {
            TaskStatus::FailedUpstream => Some(3000),
            TaskStatus::FailedBackendError => Some(3001),
            TaskStatus::FailedServerError => Some(3002),
            TaskStatus::FailedStartError => Some(3003),
            TaskStatus::FailedEvicted => Some(3004),
            TaskStatus::FailedStartTimeout => Some(3005),
            TaskStatus::FailedPreempted => Some(3006),
            _ => None,
        }
    }
}

/// Status of a workflow (OSMO's `WorkflowStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkflowStatus {
    Pending,
    Running,
    Waiting,
    Completed,
    Failed,
    FailedSubmission,
    FailedServerError,
    FailedExecTimeout,
    FailedQueueTimeout,
    FailedCanceled,
    FailedBackendError,
    FailedImagePull,
    FailedEvicted,
    FailedStartError,
    FailedStartTimeout,
    FailedPreempted,
}

impl WorkflowStatus {
    pub const ALL: [WorkflowStatus; 16] = [
        WorkflowStatus::Pending,
        WorkflowStatus::Running,
        WorkflowStatus::Waiting,
        WorkflowStatus::Completed,
        WorkflowStatus::Failed,
        WorkflowStatus::FailedSubmission,
        WorkflowStatus::FailedServerError,
        WorkflowStatus::FailedExecTimeout,
        WorkflowStatus::FailedQueueTimeout,
        WorkflowStatus::FailedCanceled,
        WorkflowStatus::FailedBackendError,
        WorkflowStatus::FailedImagePull,
        WorkflowStatus::FailedEvicted,
        WorkflowStatus::FailedStartError,
        WorkflowStatus::FailedStartTimeout,
        WorkflowStatus::FailedPreempted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "PENDING",
            WorkflowStatus::Running => "RUNNING",
            WorkflowStatus::Waiting => "WAITING",
            WorkflowStatus::Completed => "COMPLETED",
            WorkflowStatus::Failed => "FAILED",
            WorkflowStatus::FailedSubmission => "FAILED_SUBMISSION",
            WorkflowStatus::FailedServerError => "FAILED_SERVER_ERROR",
            WorkflowStatus::FailedExecTimeout => "FAILED_EXEC_TIMEOUT",
            WorkflowStatus::FailedQueueTimeout => "FAILED_QUEUE_TIMEOUT",
            WorkflowStatus::FailedCanceled => "FAILED_CANCELED",
            WorkflowStatus::FailedBackendError => "FAILED_BACKEND_ERROR",
            WorkflowStatus::FailedImagePull => "FAILED_IMAGE_PULL",
            WorkflowStatus::FailedEvicted => "FAILED_EVICTED",
            WorkflowStatus::FailedStartError => "FAILED_START_ERROR",
            WorkflowStatus::FailedStartTimeout => "FAILED_START_TIMEOUT",
            WorkflowStatus::FailedPreempted => "FAILED_PREEMPTED",
        }
    }

    pub fn is_alive(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Pending | WorkflowStatus::Running | WorkflowStatus::Waiting
        )
    }

    /// Stable one-byte code used in index keys; never reorder.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The workflow status a finished group's failure maps to, when all
    /// failures agree (OSMO's aggregation, §2.2).
    pub fn from_group_failure(status: TaskStatus) -> WorkflowStatus {
        match status {
            TaskStatus::FailedCanceled => WorkflowStatus::FailedCanceled,
            TaskStatus::FailedServerError => WorkflowStatus::FailedServerError,
            TaskStatus::FailedExecTimeout => WorkflowStatus::FailedExecTimeout,
            TaskStatus::FailedQueueTimeout => WorkflowStatus::FailedQueueTimeout,
            TaskStatus::FailedBackendError => WorkflowStatus::FailedBackendError,
            TaskStatus::FailedImagePull => WorkflowStatus::FailedImagePull,
            TaskStatus::FailedEvicted => WorkflowStatus::FailedEvicted,
            TaskStatus::FailedStartError => WorkflowStatus::FailedStartError,
            TaskStatus::FailedStartTimeout => WorkflowStatus::FailedStartTimeout,
            TaskStatus::FailedPreempted => WorkflowStatus::FailedPreempted,
            _ => WorkflowStatus::Failed,
        }
    }
}

macro_rules! display_and_parse {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let wanted = s.trim().to_ascii_uppercase();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|status| status.as_str() == wanted)
                    .ok_or_else(|| format!("unknown {} '{}'", $what, s))
            }
        }
    };
}
display_and_parse!(TaskStatus, "task status");
display_and_parse!(WorkflowStatus, "workflow status");

/// Scheduling priority of a workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
            Priority::Low => "LOW",
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HIGH" => Ok(Priority::High),
            "NORMAL" => Ok(Priority::Normal),
            "LOW" => Ok(Priority::Low),
            _ => Err(format!("unknown priority '{s}': use HIGH, NORMAL or LOW")),
        }
    }
}
