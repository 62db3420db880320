//! The answer to a request that carries no descriptors (every request but
//! a granted registration), shared by the request handlers.

use virtuos_abi::control::DaemonReply;

/// A reply without descriptors.
pub struct Answer {
    pub reply: DaemonReply,
    /// After sending: stop the daemon.
    pub shutdown: bool,
}

pub(super) fn error(message: impl Into<String>) -> Answer {
    Answer {
        reply: DaemonReply::Error {
            message: message.into(),
        },
        shutdown: false,
    }
}

pub(super) fn plain(reply: DaemonReply) -> Answer {
    Answer {
        reply,
        shutdown: false,
    }
}
