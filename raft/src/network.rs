//! The network of a member opened without a peer transport.
//!
//! A cluster of one never sends an RPC. A node opened without a
//! [`crate::PeerTransport`] that is asked to reach a peer answers
//! "unreachable", which openraft treats like a down peer (it retries with
//! backoff). Servers use [`crate::transport`].

use crate::types::GantryNode;
use crate::types::{NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

/// Network for nodes without a peer transport: every peer is unreachable.
#[derive(Clone, Default)]
pub struct NoPeerTransport;

pub struct UnreachablePeer {
    target: NodeId,
}

impl UnreachablePeer {
    fn error<E: std::error::Error>(&self) -> RPCError<NodeId, GantryNode, E> {
        let reason = std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!("node {} has no peer transport configured", self.target),
        );
        RPCError::Unreachable(Unreachable::new(&NetworkError::new(&reason)))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeerTransport {
    type Network = UnreachablePeer;

    async fn new_client(&mut self, target: NodeId, _node: &GantryNode) -> Self::Network {
        UnreachablePeer { target }
    }
}

impl RaftNetwork<TypeConfig> for UnreachablePeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, GantryNode, RaftError<NodeId>>>
    {
        Err(self.error())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, GantryNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.error())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, GantryNode, RaftError<NodeId>>> {
        Err(self.error())
    }
}
