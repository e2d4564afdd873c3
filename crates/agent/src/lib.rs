//! The node agent: registers this machine as a Node, runs the pods bound to it through
//! `pier-runtime`, probes them as the kubelet does, and reports their status to the API.
//!
//! The decisions are pure functions ([`envvars`], [`probes`]); the loop that watches the API
//! and drives the runtime is a thin shell around them.

pub mod envvars;
pub mod machine;
pub mod node;
pub mod pods;
pub mod probes;
pub mod services;

/// Why the agent could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("pod runtime: {0}")]
    Runtime(String),
}
