//! The shared-object-store check: a cluster's members must read one object
//! store (log chunks and task outputs written on one member are read on
//! another after a failover), so that is checked, not assumed.
//!
//! Each member writes a random nonce, new at every start, to
//! `cluster/probes/<node id>` in its store. Two members exchange probes over
//! the peer transport (`/gantry/store-probe`): each names its nonce and reads
//! the other's from its own store; the pair shares a store only when both
//! reads find the other's nonce and neither store lies inside a member's
//! data directory (the default `<data-dir>/objects`).
//!
//! Invariants: a node about to join (`--join`, `gantry cluster join`)
//! exchanges probes with the member it joins through and every member that
//! answers, and is refused before it becomes even a learner when any pair
//! does not share the store; every member repeats the exchange with every
//! other every [`CHECK_INTERVAL`] and keeps the last verdict per member (a
//! member that does not answer is `Unknown`, never `Diverged`); a member
//! whose store is shared with fewer than a majority of the members (itself
//! included) is not ready ([`StoreProbes::problem`]). A cluster of one
//! checks nothing, so `gantry dev` and a single server keep the default
//! directory.

use crate::object_storage::{ObjectStorage, ObjectStorageError};
use gantry_raft::transport::{PeerTransport, StoreProbe, StoreProbeAnswer};
use gantry_raft::{NodeId, RaftNode};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where probes live in the store.
pub const PROBE_PREFIX: &str = "cluster/probes";
/// How often every member exchanges probes with every other.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What to configure, said wherever a store is found not shared.
pub const SHARED_STORE_ADVICE: &str = "a cluster of more than one member needs one object store that every member reads: set --object-store (or GANTRY_OBJECT_STORE) on every member to the same S3-compatible URL (s3://bucket/prefix?endpoint=URL) or to a file:// path on a filesystem every member mounts (file:///mnt/gantry-objects)";

/// The probe key of node `id`.
pub fn probe_key(id: NodeId) -> String {
    format!("{PROBE_PREFIX}/{id}")
}

/// Whether this member and another share the store, as last checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Shared,
    /// They do not; why.
    Diverged(String),
    /// The exchange did not happen (the member did not answer); why.
    Unknown(String),
}

impl Verdict {
    /// The word `cluster members` shows.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Shared => "SHARED",
            Verdict::Diverged(_) => "DIVERGED",
            Verdict::Unknown(_) => "UNKNOWN",
        }
    }
}

/// Why one probe exchange did not find the two stores one.
#[derive(Debug)]
pub enum ExchangeFailure {
    /// The other member did not answer: nothing is known.
    Unreachable(String),
    /// They are not one store; why.
    Diverged(String),
}

/// Why a node may not join (see [`StoreProbes::check_before_join`]).
#[derive(Debug)]
pub enum JoinCheck {
    /// The member joined through did not answer: ask again later.
    Unreachable(String),
    /// The stores are not shared: asking again will not help.
    Refused(String),
}

/// This member's probe, and its verdict on every other member's store.
pub struct StoreProbes {
    objects: ObjectStorage,
    own: StoreProbe,
    written: AtomicBool,
    verdicts: std::sync::Mutex<BTreeMap<NodeId, Verdict>>,
}

fn in_data_dir_message(who: &str, probe: &StoreProbe) -> String {
    format!(
        "{who} keeps its objects inside its own data directory ({}; the default when --object-store is not set), which no other member reads",
        probe.store
    )
}

impl StoreProbes {
    /// This member's probe for `objects` (a new nonce); nothing is written
    /// yet ([`StoreProbes::ensure_written`]).
    pub fn new(
        objects: ObjectStorage,
        id: NodeId,
        data_dir: &Path,
    ) -> anyhow::Result<Arc<StoreProbes>> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("generating a nonce: {e}"))?;
        let data_dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_path_buf());
        let in_data_dir = objects
            .local_root()
            .is_some_and(|root| root.starts_with(&data_dir));
        Ok(Arc::new(StoreProbes {
            own: StoreProbe {
                id,
                nonce: hex::encode(bytes),
                store: objects.display.clone(),
                in_data_dir,
            },
            objects,
            written: AtomicBool::new(false),
            verdicts: std::sync::Mutex::new(BTreeMap::new()),
        }))
    }

    pub fn own(&self) -> &StoreProbe {
        &self.own
    }

    /// Why this member may not be part of a cluster of more than one
    /// whatever its peers say: its store lies in its data directory.
    pub fn refusal_of_own_store(&self) -> Option<String> {
        self.own.in_data_dir.then(|| {
            format!(
                "{}; {SHARED_STORE_ADVICE}",
                in_data_dir_message("this node", &self.own)
            )
        })
    }

    /// Writes this start's probe unless it is written already.
    pub async fn ensure_written(&self) -> Result<(), String> {
        if self.written.load(Ordering::Acquire) {
            return Ok(());
        }
        let key = probe_key(self.own.id);
        self.objects
            .put(&key, self.own.nonce.clone().into_bytes())
            .await
            .map_err(|error| format!("cannot write this node's probe {key}: {error}"))?;
        self.written.store(true, Ordering::Release);
        tracing::info!(store = %self.own.store, %key, "object-store probe written");
        Ok(())
    }

    /// Whether `probe` is in this member's store, its nonce and all.
    async fn read(&self, probe: &StoreProbe) -> Result<(), String> {
        let key = probe_key(probe.id);
        match self.objects.get(&key).await {
            Ok(bytes) if bytes.as_ref() == probe.nonce.as_bytes() => Ok(()),
            Ok(_) => Err(format!(
                "{key} in {} holds another start's nonce (not the store node {} wrote to)",
                self.own.store, probe.id
            )),
            Err(ObjectStorageError::Store(object_store::Error::NotFound { .. })) => {
                Err(format!("{key} is not in {}", self.own.store))
            }
            Err(error) => Err(format!("reading {key}: {error}")),
        }
    }

    /// The callee's half of an exchange: reads the caller's probe from this
    /// store and names this member's own probe and the other members.
    pub async fn answer(
        &self,
        from: StoreProbe,
        members: Vec<(NodeId, String)>,
    ) -> StoreProbeAnswer {
        if let Err(error) = self.ensure_written().await {
            tracing::warn!(%error, "object-store probe");
        }
        StoreProbeAnswer {
            read_yours: self.read(&from).await,
            probe: self.own.clone(),
            members: members
                .into_iter()
                .filter(|(id, _)| *id != from.id)
                .collect(),
        }
    }

    /// One exchange with the member at `peer`: both probes read, both
    /// stores outside a data directory.
    pub async fn exchange(
        &self,
        transport: &PeerTransport,
        peer: &str,
    ) -> Result<StoreProbeAnswer, ExchangeFailure> {
        self.ensure_written()
            .await
            .map_err(ExchangeFailure::Diverged)?;
        let answer = transport
            .store_probe(peer, &self.own)
            .await
            .map_err(|error| ExchangeFailure::Unreachable(error.to_string()))?;
        let theirs = &answer.probe;
        let them = format!("node {} at {peer}", theirs.id);
        if self.own.in_data_dir {
            return Err(ExchangeFailure::Diverged(in_data_dir_message(
                "this node",
                &self.own,
            )));
        }
        if theirs.in_data_dir {
            return Err(ExchangeFailure::Diverged(in_data_dir_message(
                &them, theirs,
            )));
        }
        if let Err(why) = &answer.read_yours {
            return Err(ExchangeFailure::Diverged(format!(
                "{them} (store {}) cannot read this node's probe (store {}): {why}",
                theirs.store, self.own.store
            )));
        }
        if let Err(why) = self.read(theirs).await {
            return Err(ExchangeFailure::Diverged(format!(
                "this node cannot read the probe of {them} (store {}): {why}",
                theirs.store
            )));
        }
        Ok(answer)
    }

    /// Before this node asks to join through `peer`: its store and every
    /// member's that answers must be one. A member that does not answer
    /// (other than `peer`) is left to the periodic check.
    pub async fn check_before_join(
        &self,
        transport: &PeerTransport,
        peer: &str,
    ) -> Result<(), JoinCheck> {
        let refused = |why: String| JoinCheck::Refused(format!("{why}; {SHARED_STORE_ADVICE}"));
        if let Some(refusal) = self.refusal_of_own_store() {
            return Err(JoinCheck::Refused(refusal));
        }
        let answer = match self.exchange(transport, peer).await {
            Ok(answer) => answer,
            Err(ExchangeFailure::Diverged(why)) => return Err(refused(why)),
            Err(ExchangeFailure::Unreachable(why)) => return Err(JoinCheck::Unreachable(why)),
        };
        for (id, address) in &answer.members {
            if *id == self.own.id || *id == answer.probe.id {
                continue;
            }
            match self.exchange(transport, address).await {
                Ok(_) => {}
                Err(ExchangeFailure::Diverged(why)) => return Err(refused(why)),
                Err(ExchangeFailure::Unreachable(why)) => {
                    tracing::warn!(node_id = id, %address, reason = %why, "member did not answer the object-store probe; the periodic check will")
                }
            }
        }
        Ok(())
    }

    /// One round: an exchange with every other member of this node's
    /// membership; verdicts of nodes no longer members are dropped.
    pub async fn check_members(&self, node: &RaftNode, transport: &PeerTransport) {
        let members = node.members();
        let before = self.verdicts();
        let mut verdicts = BTreeMap::new();
        for member in members.iter().filter(|m| m.id != self.own.id) {
            let verdict = match self.exchange(transport, &member.node.peer).await {
                Ok(_) => Verdict::Shared,
                Err(ExchangeFailure::Diverged(why)) => Verdict::Diverged(why),
                Err(ExchangeFailure::Unreachable(why)) => Verdict::Unknown(why),
            };
            // Said when it changes, not every round.
            if before.get(&member.id) != Some(&verdict) {
                match &verdict {
                    Verdict::Diverged(why) => tracing::error!(
                        node_id = member.id,
                        "object store not shared: {why}; {SHARED_STORE_ADVICE}"
                    ),
                    Verdict::Shared => tracing::info!(node_id = member.id, "object store shared"),
                    Verdict::Unknown(_) => {}
                }
            }
            verdicts.insert(member.id, verdict);
        }
        let diverged = verdicts
            .values()
            .filter(|v| matches!(v, Verdict::Diverged(_)))
            .count();
        metrics::gauge!(crate::metrics::OBJECT_STORE_DIVERGED_MEMBERS).set(diverged as f64);
        *self.lock_verdicts() = verdicts;
    }

    /// The last verdict on every other member.
    pub fn verdicts(&self) -> BTreeMap<NodeId, Verdict> {
        self.lock_verdicts().clone()
    }

    /// Why this member is not ready: it is one of a cluster of more than
    /// one and its store is in its data directory, or the last checks found
    /// it shared with fewer than a majority of the members (itself
    /// included; a member that did not answer counts as sharing).
    pub fn problem(&self, node: &RaftNode) -> Option<String> {
        let members = node.members();
        if members.len() <= 1 {
            return None;
        }
        if let Some(refusal) = self.refusal_of_own_store() {
            return Some(refusal);
        }
        let verdicts = self.lock_verdicts();
        let diverged: Vec<&str> = members
            .iter()
            .filter_map(|member| match verdicts.get(&member.id) {
                Some(Verdict::Diverged(why)) => Some(why.as_str()),
                _ => None,
            })
            .collect();
        let sharing = members.len() - diverged.len();
        (sharing * 2 <= members.len()).then(|| {
            format!(
                "this member's object store is shared with {sharing} of {} members, not a majority: {}; {SHARED_STORE_ADVICE}",
                members.len(),
                diverged.join("; ")
            )
        })
    }

    fn lock_verdicts(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Verdict>> {
        self.verdicts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The `/gantry/store-probe` route of this member.
pub fn peer_routes(probes: Arc<StoreProbes>, node: RaftNode) -> axum::Router {
    gantry_raft::transport::store_probe_router(move |from: StoreProbe| {
        let probes = probes.clone();
        let members: Vec<(NodeId, String)> = node
            .members()
            .into_iter()
            .filter(|member| member.id != node.id())
            .map(|member| (member.id, member.node.peer))
            .collect();
        async move { probes.answer(from, members).await }
    })
}

/// Exchanges probes with every other member every [`CHECK_INTERVAL`] while
/// this node is a member, until `shutdown`.
pub async fn run(
    probes: Arc<StoreProbes>,
    node: RaftNode,
    transport: PeerTransport,
    shutdown: CancellationToken,
) {
    loop {
        if node.is_initialized_member() {
            if let Err(error) = probes.ensure_written().await {
                tracing::warn!(%error, "object-store probe");
            }
            probes.check_members(&node, &transport).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}
