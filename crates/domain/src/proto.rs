//! The internal protocol between the domain's main process and its shadows.
//!
//! Each shadow has one `SOCK_SEQPACKET` socket to the main process (its
//! "control socket", kept in the shadow's own descriptor range), carrying the same JSON
//! framing as the daemon protocol (`virtuos_abi::control::{send, recv}`).
//! A shadow executes its client's calls, so the main process treats every
//! message from it as untrusted: tokens are checked against the process tree
//! and the sender's client id before anything is done with them.

use serde::{Deserialize, Serialize};

/// Shadow -> main.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ShadowMsg {
    /// Set up and serving (the first message of every shadow, sent after
    /// `AddClient`'s fork or after `Attach`).
    Ready,
    /// Setup failed; the shadow exits.
    SetupFailed { message: String },
    /// `OP_FORK_PREPARE`: a forked child shadow, process `pid`, waits for
    /// its regions on the attached socket (1 descriptor). `token` (random,
    /// `sys::random_token`) is what the client claims it with.
    ForkPending { token: u64, pid: u32 },
    /// `OP_FORK_ABORT`: drop the pending shadow `token`.
    ForkAbort { token: u64 },
    /// The client's queue is malformed (a looping or broken submit list):
    /// the shadow stopped serving and marked the client's state page
    /// FAILED; the main process logs it (with the client's pid and uid)
    /// and ends the shadow. Only this client is affected.
    QueueBroken { reason: String },
}

/// Main -> a shadow (`Attach` only to a pending, forked one).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum MainMsg {
    /// You serve `client_id` now; descriptors [region, state page,
    /// credentials table]. VM backend: the first two are the DAX view of
    /// region slot `slot`. `corrupt`: fault injection `corrupt` happened
    /// before, misbehave from the first request.
    Attach {
        client_id: u64,
        #[serde(default)]
        slot: Option<u8>,
        #[serde(default)]
        corrupt: bool,
    },
    /// Fault injection (`virtuos domain crash --how corrupt`): complete
    /// every request from now on with garbage.
    Corrupt,
}
