//! Making a running node a cluster member: a new cluster of one
//! (`--bootstrap`, `gantry cluster init`) or a member of an existing cluster
//! (`--join`, `gantry cluster join`).
//!
//! Invariants: the server flags and the API routes run this same code; both
//! calls are idempotent (a node that already belongs to a cluster is left as
//! it is and told so); one change at a time per node; a new cluster gets pool
//! `default` on backend `local`, and, with auth on, a bootstrap admin token
//! whose secret goes only to the data directory (mode 0600) and the server's
//! stdout, never to an API caller. With auth on, a node waiting for init or
//! join holds a one-time join token (secret in `<data>/join-token`, 0600,
//! and on stdout; only its SHA-256 in memory) that the API demands for
//! those two calls; it is spent (forgotten, its file removed) once the node
//! is a member, after which they need `cluster:Update`. A node joins only
//! once its object store and the members' are found to be one
//! (`store_probe`); otherwise the join is refused before it is asked.

use super::store_probe::{JoinCheck, StoreProbes};
use crate::clock::now_ms;
use anyhow::Context;
use gantry_raft::transport::{MembershipChange, PeerTransport};
use gantry_raft::RaftNode;
use gantry_storage::{Command, ConfigData, ConfigMeta, ConfigType, PoolConfig, PoolRecord};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Backend and pool a new cluster starts with.
pub const LOCAL_BACKEND: &str = "local";
pub const DEFAULT_POOL: &str = "default";
/// Pause between attempts to join while the cluster cannot take the change.
const JOIN_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What [`Membership::init`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new cluster of one; the bootstrap token's file, with auth on.
    Initialized { token_file: Option<PathBuf> },
    /// The node already belonged to a cluster, with these voters.
    AlreadyMember { voters: usize },
}

/// What [`Membership::join`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined; the voters afterwards.
    Joined { voters: Vec<u64> },
    /// The node already belonged to a cluster, with these voters.
    AlreadyMember { voters: usize },
}

/// The warning for an even number of voters, if `voters` is one.
pub fn even_voters_warning(voters: usize) -> Option<String> {
    (voters > 0 && voters.is_multiple_of(2)).then(|| {
        format!(
            "the cluster now has {voters} voters: an even number tolerates no more failures than one fewer; use 3 or 5"
        )
    })
}

pub struct Membership {
    node: RaftNode,
    transport: Option<PeerTransport>,
    /// This node's object-store probe (with a peer transport).
    probes: Option<Arc<StoreProbes>>,
    data_dir: PathBuf,
    auth_required: bool,
    changing: tokio::sync::Mutex<()>,
    /// SHA-256 of the join token while this node waits (auth on).
    join_token: std::sync::Mutex<Option<String>>,
}

/// Where a waiting node keeps its one-time join token (mode 0600).
pub const JOIN_TOKEN_FILE: &str = "join-token";

impl Membership {
    pub fn new(
        node: RaftNode,
        transport: Option<PeerTransport>,
        probes: Option<Arc<StoreProbes>>,
        data_dir: &Path,
        auth_required: bool,
    ) -> Membership {
        Membership {
            node,
            transport,
            probes,
            data_dir: data_dir.to_path_buf(),
            auth_required,
            changing: tokio::sync::Mutex::new(()),
            join_token: std::sync::Mutex::new(None),
        }
    }

    /// Arms the one-time join token of a node that waits for init or join
    /// (auth on): the secret a previous start left in `<data>/join-token`,
    /// else a new one written there (0600). Returns the file and the secret
    /// to print; `None` with auth off (nothing to protect on loopback).
    pub fn arm_join_token(&self) -> anyhow::Result<Option<(PathBuf, String)>> {
        if !self.auth_required {
            return Ok(None);
        }
        let path = self.data_dir.join(JOIN_TOKEN_FILE);
        let kept = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_string()).filter(|secret| !secret.is_empty()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        let secret = match kept {
            Some(secret) => secret,
            None => {
                let secret =
                    crate::access_token::new_secret().context("generating the join token")?;
                write_secret(&path, &secret)?;
                secret
            }
        };
        *self.lock_join_token() = Some(crate::access_token::hash_token(&secret));
        Ok(Some((path, secret)))
    }

    /// Whether `secret` is this waiting node's join token. (Hashes are
    /// compared: timing tells nothing about the secret.)
    pub fn join_token_matches(&self, secret: &str) -> bool {
        !self.is_member()
            && self
                .lock_join_token()
                .as_deref()
                .is_some_and(|hash| hash == crate::access_token::hash_token(secret))
    }

    /// Spends the join token once this node is a member: forgotten, and its
    /// file removed (also at the start of a member a crash left it with).
    pub fn spend_join_token(&self) {
        *self.lock_join_token() = None;
        let path = self.data_dir.join(JOIN_TOKEN_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "join token spent"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot remove the spent join token")
            }
        }
    }

    fn lock_join_token(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.join_token
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether the node already belongs to a cluster.
    pub fn is_member(&self) -> bool {
        self.node.is_initialized_member()
    }

    /// This node's object-store probe and its verdicts (with a peer transport).
    pub fn store_probes(&self) -> Option<&Arc<StoreProbes>> {
        self.probes.as_ref()
    }

    /// Whether this node can join a cluster (it has a peer transport).
    pub fn can_join(&self) -> bool {
        self.transport.is_some()
    }

    fn voters(&self) -> usize {
        self.node.members().iter().filter(|m| m.voter).count()
    }

    /// Makes this node the only voter of a new cluster, with pool `default`
    /// and (auth on) the bootstrap admin token.
    pub async fn init(&self) -> anyhow::Result<InitOutcome> {
        let _one_at_a_time = self.changing.lock().await;
        if self.is_member() {
            return Ok(InitOutcome::AlreadyMember {
                voters: self.voters(),
            });
        }
        self.node
            .bootstrap()
            .await
            .context("bootstrapping the cluster")?;
        tracing::info!(node_id = self.node.id(), "initialized a new cluster of one");
        self.spend_join_token();
        ensure_pool(&self.node, true).await?;
        let token_file = if self.auth_required {
            ensure_bootstrap_token(&self.node, &self.data_dir, None, true).await?;
            Some(self.data_dir.join(BOOTSTRAP_TOKEN_FILE))
        } else {
            None
        };
        Ok(InitOutcome::Initialized { token_file })
    }

    /// Asks the cluster, through the member at `peer` (its peer address),
    /// to add this node as a learner and then a voter; keeps asking while
    /// the cluster cannot take the change, for at most `wait_max`. First
    /// checks that this node and the members share one object store, and
    /// refuses at once when they do not.
    pub async fn join(&self, peer: &str, wait_max: Duration) -> anyhow::Result<JoinOutcome> {
        let _one_at_a_time = self.changing.lock().await;
        if self.is_member() {
            return Ok(JoinOutcome::AlreadyMember {
                voters: self.voters(),
            });
        }
        let Some(transport) = &self.transport else {
            anyhow::bail!(
                "this node runs without --tls-ca/--tls-cert/--tls-key: peers talk over mutual TLS, so it cannot join a cluster"
            );
        };
        let change = MembershipChange::Join {
            id: self.node.id(),
            node: self.node.address().clone(),
        };
        let deadline = tokio::time::Instant::now() + wait_max;
        loop {
            let checked = match &self.probes {
                Some(probes) => probes.check_before_join(transport, peer).await,
                None => Ok(()),
            };
            let error = match checked {
                Err(JoinCheck::Refused(why)) => {
                    anyhow::bail!("refusing to join the cluster through {peer}: {why}")
                }
                Err(JoinCheck::Unreachable(why)) => {
                    format!("the object-store probe exchange did not happen: {why}")
                }
                Ok(()) => match transport.change_membership(peer, &change).await {
                    Ok(Ok(voters)) => {
                        tracing::info!(node_id = self.node.id(), ?voters, "joined the cluster");
                        self.spend_join_token();
                        if let Some(warning) = even_voters_warning(voters.len()) {
                            tracing::warn!("{warning}");
                        }
                        return Ok(JoinOutcome::Joined { voters });
                    }
                    Ok(Err(error)) => format!("{error:?}"),
                    Err(error) => error.to_string(),
                },
            };
            if tokio::time::Instant::now() + JOIN_RETRY_PAUSE > deadline {
                anyhow::bail!("could not join the cluster through {peer}: {error}");
            }
            tracing::warn!(%peer, %error, "joining the cluster; retrying");
            tokio::time::sleep(JOIN_RETRY_PAUSE).await;
        }
    }
}

/// Creates pool `default` on backend `local` unless it exists. With
/// `forward`, proposes through the leader and waits out an election (right
/// after bootstrapping); without, proposes only if this node leads (the
/// leader loop, whose effects are fenced by term).
pub async fn ensure_pool(node: &RaftNode, forward: bool) -> anyhow::Result<()> {
    if node.read_local()?.pool(DEFAULT_POOL)?.is_some() {
        return Ok(());
    }
    let pool = PoolRecord {
        name: DEFAULT_POOL.to_string(),
        description: "Tasks run as sandboxed processes on this host".to_string(),
        backend: LOCAL_BACKEND.to_string(),
        default_platform: None,
        platforms: Vec::new(),
    };
    let command = Command::PutConfig {
        now: now_ms(),
        config_type: ConfigType::Pool,
        name: DEFAULT_POOL.to_string(),
        meta: ConfigMeta {
            user: "system".to_string(),
            description: "pool created by the server".to_string(),
            tags: Vec::new(),
        },
        data: Box::new(ConfigData::Pool(PoolConfig::from_record(&pool))),
    };
    if forward {
        node.propose(command).await
    } else {
        node.propose_here(command).await
    }
    .context("creating the default pool")?;
    Ok(())
}

/// Name of the admin token a new cluster's first node creates.
const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";
/// Where that token's secret is written (mode 0600), under the data directory.
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-admin-token";
/// The secret while its token is not known to be committed.
const BOOTSTRAP_PENDING_FILE: &str = "bootstrap-admin-token.pending";
/// Shortest bootstrap secret accepted from `--bootstrap-token-file`.
const BOOTSTRAP_SECRET_CHARS_MIN: usize = 16;

fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Reads a bootstrap secret from the operator's file (unattended installs).
pub fn read_bootstrap_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("reading the bootstrap token from {}", path.display()))?
        .trim()
        .to_string();
    if secret.len() < BOOTSTRAP_SECRET_CHARS_MIN || secret.contains(char::is_whitespace) {
        anyhow::bail!(
            "{}: the bootstrap token must be at least {BOOTSTRAP_SECRET_CHARS_MIN} characters without spaces",
            path.display()
        );
    }
    Ok(secret)
}

async fn commit_bootstrap_token(node: &RaftNode, secret: &str) -> anyhow::Result<()> {
    let token = gantry_storage::TokenRecord {
        name: BOOTSTRAP_TOKEN_NAME.to_string(),
        service: false,
        hash: crate::access_token::hash_token(secret),
        user: "admin".to_string(),
        roles: vec!["admin".to_string()],
        description: "created when the cluster was bootstrapped".to_string(),
        created: now_ms(),
        expires: None,
    };
    match node.propose(Command::IssueToken { token }).await? {
        gantry_storage::Outcome::Applied => Ok(()),
        other => anyhow::bail!("could not store the bootstrap token: {other:?}"),
    }
}

/// Makes sure a bootstrapped cluster has a usable admin token.
///
/// The secret is written to `<data>/bootstrap-admin-token.pending` (0600)
/// first, then its token is committed, then the file is renamed to
/// `bootstrap-admin-token` and the secret printed once. A crash or a failed
/// proposal in between leaves the pending file, and the next start commits
/// the same secret again (re-issuing a token of the same name and user is
/// idempotent), so the cluster never ends up without a token that someone
/// holds. With `secret_from_file` (unattended installs) the operator holds
/// the secret: it is committed whenever the token is missing and nothing is
/// written or printed.
pub async fn ensure_bootstrap_token(
    node: &RaftNode,
    data_dir: &std::path::Path,
    secret_from_file: Option<String>,
    first_start: bool,
) -> anyhow::Result<()> {
    if let Some(secret) = secret_from_file {
        let known = node.read_local()?.token(BOOTSTRAP_TOKEN_NAME)?;
        if known.is_none_or(|token| token.hash != crate::access_token::hash_token(&secret)) {
            commit_bootstrap_token(node, &secret).await?;
            println!("Bootstrap admin token '{BOOTSTRAP_TOKEN_NAME}' taken from the given file");
        }
        return Ok(());
    }
    let pending = data_dir.join(BOOTSTRAP_PENDING_FILE);
    let secret = match std::fs::read_to_string(&pending) {
        Ok(secret) => secret.trim().to_string(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A member that was bootstrapped before and has no pending
            // secret finished this already (or its admin removed the file).
            if !first_start || node.read_local()?.token(BOOTSTRAP_TOKEN_NAME)?.is_some() {
                return Ok(());
            }
            let secret =
                crate::access_token::new_secret().context("generating the bootstrap token")?;
            write_secret(&pending, &secret)?;
            secret
        }
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", pending.display()));
        }
    };
    commit_bootstrap_token(node, &secret).await?;
    let path = data_dir.join(BOOTSTRAP_TOKEN_FILE);
    std::fs::rename(&pending, &path)
        .with_context(|| format!("moving {} to {}", pending.display(), path.display()))?;
    println!(
        "Bootstrap admin token (shown once; also in {}):\n{secret}",
        path.display()
    );
    Ok(())
}
