//! The runtime's typed errors. Messages name the object and the step that failed, so the agent
//! can put them in a Pod's status as they are.

use std::io;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid runtime configuration: {0}")]
    InvalidConfig(String),
    /// The request itself is malformed (a bad uid, hostname, container name, argv or env).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("state directory {} is in use by another pier runtime", path.display())]
    StateDirLocked { path: PathBuf },
    #[error("pod sandbox {uid} already exists")]
    SandboxExists { uid: String },
    #[error("pod sandbox {uid} not found")]
    SandboxNotFound { uid: String },
    /// The sandbox's holder process is gone (for example after a reboot); remove and recreate it.
    #[error("pod sandbox {uid} is not ready: {reason}")]
    SandboxNotReady { uid: String, reason: String },
    #[error("no free IP address left in pod CIDR {cidr}")]
    PodCidrExhausted { cidr: Ipv4Net },
    #[error("container {container:?} in pod sandbox {uid} is already running")]
    ContainerRunning { uid: String, container: String },
    #[error("container {container:?} in pod sandbox {uid} is not running")]
    ContainerNotRunning { uid: String, container: String },
    #[error("container {container:?} not found in pod sandbox {uid}")]
    ContainerNotFound { uid: String, container: String },
    /// Upstream's wording for `kubectl logs --previous` without a previous instance.
    #[error("previous terminated container {container:?} in pod sandbox {uid} not found")]
    PreviousNotFound { uid: String, container: String },
    /// containerd's wording, which users know from `RunContainerError`.
    #[error("exec: {argv0:?}: executable file not found in $PATH")]
    ExecutableNotFound { argv0: String },
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The holder process could not build the pod's namespaces or root.
    #[error("pod sandbox setup failed: {0}")]
    SandboxSetup(String),
    #[error("network setup failed ({op}): {source}")]
    Network {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The node's state database (addresses and sandbox records) failed.
    #[error("node state: {0}")]
    State(String),
    #[error("timed out {0}")]
    Timeout(String),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        RuntimeError::Io { context: context.into(), source }
    }

    pub(crate) fn net(op: impl Into<String>, source: io::Error) -> Self {
        RuntimeError::Network { op: op.into(), source }
    }
}

/// Why an image cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Neither a built-in image nor a `command`: there is nothing to run.
    #[error("image {image:?} has no built-in entrypoint: set command")]
    NoEntrypoint { image: String },
    #[error("invalid image reference {image:?}")]
    InvalidReference { image: String },
}
