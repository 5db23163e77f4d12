//! What the engine talks to: the Hub for channel events, the Node for
//! control commands and figures.

use std::sync::Arc;

use herald_auth::ChannelPolicy;
use herald_bus::{BrokerEvents, ControlCommand, NodeInfo, SurveyReply, SurveyRequest};
use herald_protocol::{ClientInfo, Publication};

use super::hub::Hub;
use super::Node;

/// What the engine talks to: the Hub for channel events, the Node for
/// control commands and figures. Created before the Node (the engine needs
/// it, the Node needs the engine), so it reaches the Node through a late link.
pub(crate) struct NodeEvents {
    hub: Arc<Hub>,
    node: std::sync::OnceLock<std::sync::Weak<Node>>,
    /// Set when a namespace carries binary data: publications of its
    /// channels are marked so before they are framed.
    binary_channels: Option<Arc<ChannelPolicy>>,
    /// The node's uid, known before the Node: the engine registers the node
    /// under it, and connect results name it (`/emulation` routes by it).
    uid: String,
}

impl NodeEvents {
    pub(crate) fn new(hub: Arc<Hub>, policy: &Arc<ChannelPolicy>, uid: String) -> Self {
        Self {
            hub,
            uid,
            node: std::sync::OnceLock::new(),
            binary_channels: policy.has_binary_data().then(|| policy.clone()),
        }
    }

    fn is_binary(&self, channel: &str) -> bool {
        self.binary_channels.as_ref().is_some_and(|policy| {
            policy
                .resolve(channel)
                .is_ok_and(|r| r.options.binary_data())
        })
    }

    pub(crate) fn link(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.node.get().and_then(std::sync::Weak::upgrade)
    }
}

impl BrokerEvents for NodeEvents {
    fn on_publication(&self, channel: &str, mut publication: Publication, epoch: &str) {
        if !super::hub::is_internal(channel) {
            crate::metrics::METRICS.broker_messages_received.inc();
        }
        if self.is_binary(channel) {
            publication.data.mark_binary();
        }
        self.hub.on_publication(channel, publication, epoch);
    }

    fn on_join(&self, channel: &str, info: ClientInfo) {
        crate::metrics::METRICS.broker_messages_received.inc();
        self.hub.on_join(channel, info);
    }

    fn on_leave(&self, channel: &str, info: ClientInfo) {
        crate::metrics::METRICS.broker_messages_received.inc();
        self.hub.on_leave(channel, info);
    }

    fn on_control(&self, command: ControlCommand) {
        if let Some(node) = self.node() {
            node.dispatch(command);
        }
    }

    fn on_gap(&self, channel: &str) {
        self.hub.on_gap(channel);
    }

    fn on_emulation(&self, session: &str, data: Vec<u8>) -> herald_bus::EmulationFuture {
        let node = self.node();
        let session = session.to_owned();
        Box::pin(async move {
            match node {
                Some(node) => node.emulation.deliver(&session, data.into()).await,
                None => false,
            }
        })
    }

    fn node_info(&self) -> NodeInfo {
        self.node().map(|n| n.info()).unwrap_or_else(|| NodeInfo {
            uid: self.uid.clone(),
            ..NodeInfo::default()
        })
    }

    fn on_survey(&self, request: &SurveyRequest) -> SurveyReply {
        match request {
            SurveyRequest::Channels => SurveyReply::Channels {
                channels: self.hub.channel_counts(),
            },
            _ => SurveyReply::Channels {
                channels: Default::default(),
            },
        }
    }
}
