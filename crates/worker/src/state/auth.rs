//! Masters that refuse this worker's credentials: recognising the RPC
//! layer's reason, saying clearly what is wrong and what to do (rate-limited
//! per master), and naming it when registration gives up instead of "All
//! masters are unresponsive!".
//!
//! The registration retry schedule is Spark's either way: a master may be
//! restarted with the right secret while the worker retries.

use super::{Effect, Now, WorkerCore};
use flint_types::log::Logs as _;

/// How often the same refusal by the same master is logged again, in
/// monotonic ms (the first is logged at once; a different kind of refusal
/// is logged at once too).
pub const AUTH_REFUSAL_LOG_INTERVAL_MS: u64 = 5 * 60 * 1000;

/// Where operators get the secret, for the messages.
const SECRET_HINT: &str = "copy the master's secret file (~/.flint/secret by default) here and \
                           point auth.secret_file / FLINT_AUTH_SECRET_FILE at it";

/// Why a master's handshake refused this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// The master's secret is not this worker's.
    WrongSecret,
    /// The master requires a secret and this worker has none.
    NoSecret,
    /// This worker has a secret and the master does not authenticate.
    MasterUnauthenticated,
}

impl AuthRefusal {
    /// Recognises an authentication failure in a reason the RPC layer gave
    /// for a failed connect (`Endpoint::on_network_error`) or an undelivered
    /// message (`AskError::NotDelivered`), e.g. `handshake with
    /// flint://m:7077 failed: refused by peer: authentication failed (wrong
    /// secret?)`. `None` for every other failure.
    pub fn classify(reason: &str) -> Option<Self> {
        let r = reason.to_ascii_lowercase();
        if r.contains("the peer does not authenticate") {
            Some(AuthRefusal::MasterUnauthenticated)
        } else if r.contains("the peer requires authentication") || r.contains("the peer has none")
        {
            Some(AuthRefusal::NoSecret)
        } else if r.contains("authentication failed") || r.contains("wrong secret") {
            Some(AuthRefusal::WrongSecret)
        } else {
            None
        }
    }

    /// What an operator reads: what the master refused, the RPC layer's
    /// reason, and what to do.
    pub fn message(self, master_url: &str, detail: &str) -> String {
        match self {
            AuthRefusal::WrongSecret => {
                format!("master {master_url} refused this worker's secret: {detail}; {SECRET_HINT}")
            }
            AuthRefusal::NoSecret => format!(
                "master {master_url} requires a secret and this worker has none: {detail}; \
                 {SECRET_HINT}"
            ),
            AuthRefusal::MasterUnauthenticated => format!(
                "master {master_url} does not authenticate, but this worker has a secret: \
                 {detail}; give the master the same secret (auth.secret_file / \
                 FLINT_AUTH_SECRET_FILE) or turn authentication off here (auth.enabled = false)"
            ),
        }
    }
}

/// The last refusal by one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RefusalRecord {
    refusal: AuthRefusal,
    /// The message last logged.
    pub(super) message: String,
    /// When it was last logged (monotonic ms).
    logged_mono_ms: u64,
}

impl WorkerCore {
    /// [`Event::MasterRefusedAuth`](super::Event::MasterRefusedAuth): log the
    /// refusal (first time, new kind, or after the log interval) and keep it
    /// for the give-up message. Refusals by peers that are not a master of
    /// this worker are left to the RPC layer's own warning.
    pub(super) fn master_refused_auth(
        &mut self,
        now: Now,
        master_url: String,
        refusal: AuthRefusal,
        detail: &str,
        out: &mut Vec<Effect>,
    ) {
        let is_master = self.config.master_urls.contains(&master_url)
            || self
                .master
                .as_ref()
                .is_some_and(|m| m.url == master_url || m.address_to_connect == master_url);
        if !is_master {
            return;
        }
        let message = refusal.message(&master_url, detail);
        let log = match self.auth_refusals.get(&master_url) {
            None => true,
            Some(r) => {
                r.refusal != refusal
                    || now.mono_since(r.logged_mono_ms) >= AUTH_REFUSAL_LOG_INTERVAL_MS
            }
        };
        if log {
            out.error(message.clone());
            self.auth_refusals.insert(
                master_url,
                RefusalRecord {
                    refusal,
                    message,
                    logged_mono_ms: now.mono_ms,
                },
            );
        }
    }

    /// The refusal messages of the given masters, in order.
    pub(super) fn refusals_of(&self, masters: &[String]) -> Vec<String> {
        masters
            .iter()
            .filter_map(|m| self.auth_refusals.get(m).map(|r| r.message.clone()))
            .collect()
    }
}
