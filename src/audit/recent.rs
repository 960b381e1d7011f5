//! The last access decisions this node made, for the admin console: a bounded, node-local
//! list (the audit file and the SIEM keep the full record).

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

/// Decisions kept; older ones fall off.
pub const KEPT: usize = 1000;

/// One decision as the console lists it.
#[derive(Debug, Clone)]
pub struct RecentDecision {
    /// When (Unix seconds).
    pub at_unix: u64,
    /// The app's id.
    pub app: String,
    /// `allow`, `deny`, `login`, ... (the audit record's decision).
    pub decision: &'static str,
    /// The deciding rule (`-` for none).
    pub rule: String,
    /// Who (`-` for anonymous), as the audit record writes it.
    pub user: String,
    /// Request method.
    pub method: String,
    /// Normalised path (never the query), control characters escaped.
    pub path: String,
    /// The client address.
    pub client: String,
    /// The request id (also in the log and on the page the user saw).
    pub request_id: String,
}

static RECENT: LazyLock<Mutex<VecDeque<RecentDecision>>> =
    LazyLock::new(|| Mutex::new(VecDeque::with_capacity(KEPT)));

/// Keeps `decision`, dropping the oldest beyond [`KEPT`].
pub fn remember(decision: RecentDecision) {
    // A panic elsewhere while holding the lock leaves the list as it was: still usable.
    let mut list = RECENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if list.len() >= KEPT {
        list.pop_front();
    }
    list.push_back(decision);
}

/// Up to `limit` decisions that `wanted` accepts, newest first.
pub fn recent(wanted: impl Fn(&RecentDecision) -> bool, limit: usize) -> Vec<RecentDecision> {
    let list = RECENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    list.iter()
        .rev()
        .filter(|d| wanted(d))
        .take(limit)
        .cloned()
        .collect()
}
