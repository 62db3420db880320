//! What the dispatch (`forward/mod.rs`) hands back to the interception
//! for one system call; every call module answers with it.

/// What to do with an intercepted system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Not ours: execute it on the host unchanged.
    Local,
    /// Handled (forwarded or emulated): this is the raw result (-errno on error).
    Done(i64),
}
