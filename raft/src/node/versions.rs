//! Version gating: a leader proposes a command kind that not every build
//! understands only once every member has said that it understands it
//! (Nomad's rule for new Raft messages), so the members of two adjacent
//! builds run side by side through a rolling upgrade.
//!
//! Invariants: kinds below [`COMMAND_KINDS_UNGATED`] pass unasked; a gated
//! kind passes only when every member of the membership (voters and
//! learners: both apply the log) has announced a build that understands
//! it; a member that cannot be asked right now counts with its last
//! announcement, and one never heard from refuses; an announcement older
//! than [`ANNOUNCEMENT_AGE_MAX`] is asked again, so a member restarted on
//! an older build is noticed within that time.

use super::RaftNode;
use crate::error::RaftError;
use crate::transport::BuildInfo;
use crate::types::NodeId;
use gantry_storage::{Command, Outcome, COMMAND_KINDS_UNGATED};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a member's announced build is trusted before it is asked again.
pub const ANNOUNCEMENT_AGE_MAX: Duration = Duration::from_secs(5);

/// What a member says of its build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announced {
    Build(BuildInfo),
    /// A build from before version gating: it understands the ungated kinds.
    BeforeGating,
}

impl Announced {
    /// Command kinds it understands: `0..` this.
    pub fn command_kinds(&self) -> u16 {
        match self {
            Announced::Build(build) => build.command_kinds,
            Announced::BeforeGating => COMMAND_KINDS_UNGATED,
        }
    }
}

impl std::fmt::Display for Announced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Announced::Build(build) => write!(
                f,
                "version {}, {} command kinds",
                build.version, build.command_kinds
            ),
            Announced::BeforeGating => write!(f, "a build from before version gating"),
        }
    }
}

/// The members' last announcements, as this member heard them.
#[derive(Clone, Default)]
pub(super) struct Announcements(Arc<Mutex<BTreeMap<NodeId, (Instant, Announced)>>>);

impl Announcements {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, (Instant, Announced)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RaftNode {
    /// Every member of the membership this node knows, with its peer address.
    fn all_members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.peer.clone()))
            .collect()
    }

    /// What each member announces (this member answers for itself): an
    /// announcement younger than [`ANNOUNCEMENT_AGE_MAX`] as heard, the
    /// others asked now, side by side; for one that could not be asked, why
    /// not. So a caller polling `cluster members` costs the peers at most
    /// one probe each per that age.
    pub async fn member_builds(&self) -> BTreeMap<NodeId, Result<Announced, String>> {
        let mut builds = BTreeMap::new();
        let mut probes = tokio::task::JoinSet::new();
        for (id, peer) in self.all_members() {
            if id == self.id {
                builds.insert(id, Ok(Announced::Build(BuildInfo::this_build())));
                continue;
            }
            let fresh = self
                .announcements
                .lock()
                .get(&id)
                .filter(|(at, _)| at.elapsed() < ANNOUNCEMENT_AGE_MAX)
                .map(|(_, announced)| announced.clone());
            if let Some(announced) = fresh {
                builds.insert(id, Ok(announced));
                continue;
            }
            let Some(transport) = self.transport.clone() else {
                builds.insert(id, Err("this member has no peer transport".to_string()));
                continue;
            };
            probes.spawn(async move {
                let answer = match transport.build_info(&peer).await {
                    Ok(Some(build)) => Ok(Announced::Build(build)),
                    Ok(None) => Ok(Announced::BeforeGating),
                    Err(error) => Err(error.to_string()),
                };
                (id, answer)
            });
        }
        while let Some(joined) = probes.join_next().await {
            if let Ok((id, answer)) = joined {
                if let Ok(announced) = &answer {
                    self.announcements
                        .lock()
                        .insert(id, (Instant::now(), announced.clone()));
                }
                builds.insert(id, answer);
            }
        }
        builds
    }

    /// Proposes on this member as leader, once version gating lets the
    /// command's kinds through.
    pub(super) async fn propose_as_leader(&self, command: Command) -> Result<Outcome, RaftError> {
        let kind = command.newest_kind();
        if kind >= COMMAND_KINDS_UNGATED {
            self.check_understood(kind).await?;
        }
        self.proposer.propose(command).await
    }

    /// Whether every member understands command kind `kind` now (what a
    /// proposal of it would be checked against), for a proposer that
    /// leaves out what cannot pass rather than fail a batch over it.
    pub async fn understands(&self, kind: u16) -> bool {
        kind < COMMAND_KINDS_UNGATED || self.check_understood(kind).await.is_ok()
    }

    /// `Ok` when every member understands command kind `kind`; else which
    /// do not, and what they announced.
    async fn check_understood(&self, kind: u16) -> Result<(), RaftError> {
        let members = self.all_members();
        let fresh = {
            let announced = self.announcements.lock();
            members.iter().all(|(id, _)| {
                *id == self.id
                    || announced
                        .get(id)
                        .is_some_and(|(at, _)| at.elapsed() < ANNOUNCEMENT_AGE_MAX)
            })
        };
        if !fresh {
            self.member_builds().await;
        }
        let announced = self.announcements.lock();
        let behind: Vec<String> = members
            .iter()
            .filter(|(id, _)| *id != self.id)
            .filter_map(|(id, _)| match announced.get(id) {
                Some((_, build)) if build.command_kinds() > kind => None,
                Some((_, build)) => Some(format!("node {id} ({build})")),
                None => Some(format!("node {id} (not heard from)")),
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        Err(RaftError::NotUnderstood(format!(
            "command kind {kind} is new, and not every member understands it yet: {}; \
             finish upgrading every member, then try again",
            behind.join(", ")
        )))
    }
}
