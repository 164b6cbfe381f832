//! The cluster secret as the `flint` commands use it. Commands that run a master
//! (`master`, `local`, `run-example`, `start-cluster`) create the default secret
//! file when no secret is configured; every other command only reads it and fails
//! naming the file when it is missing (see [`flint_rpc::secret`] for the order in
//! which settings are consulted). Workers hand the secret to their executors and
//! drivers through the environment, never on a command line.

use anyhow::Context as _;
use flint_conf::Conf;
use flint_rpc::secret::{self, Resolved, SecretSource};

/// The secret for a process that runs a master: the configured one, else the
/// default file, created if missing.
pub fn for_master(conf: &Conf) -> anyhow::Result<Resolved> {
    secret::find_or_create(conf).context("cannot set up the cluster secret")
}

/// The secret for a worker or client: the configured one, else the default file,
/// which must exist.
pub fn find(conf: &Conf) -> Result<Resolved, flint_rpc::RpcError> {
    secret::find(conf)
}

/// Makes executors and drivers started by the workers of this process get the
/// secret (or `auth.enabled = false`) in their environment.
pub fn hand_to_children(auth: &Resolved) {
    match (&auth.secret, &auth.source) {
        (Some(s), _) => flint_worker::runner::set_child_secret(Some(s.clone())),
        (None, SecretSource::Disabled) => flint_worker::runner::set_child_secret(None),
        // TLS: children inherit the worker's environment and settings.
        (None, _) => {}
    }
}

/// Where the secret came from, in a few words.
pub fn describe(auth: &Resolved) -> String {
    match &auth.source {
        SecretSource::Disabled => "none: authentication is off (auth.enabled = false)".into(),
        SecretSource::Tls => "none: peers authenticate with TLS certificates (rpc.tls.*)".into(),
        SecretSource::Setting { command_line } => {
            if *command_line {
                "from auth.secret on the command line".into()
            } else {
                "from auth.secret".into()
            }
        }
        SecretSource::Env => format!("from {}", secret::SECRET_ENV),
        SecretSource::File(p) => format!("from {}", p.display()),
        SecretSource::DefaultFile { path, created } => {
            let verb = if *created { "created" } else { "using" };
            format!("{verb} {} (mode 0600)", path.display())
        }
    }
}

/// The lines a master prints at start-up: where the secret is and how workers and
/// clients on other hosts get it.
pub fn master_lines(auth: &Resolved, rpc_address: &str) -> Vec<String> {
    let copy = "(mode 0600) and set auth.secret_file (FLINT_AUTH_SECRET_FILE) to its path there";
    match &auth.source {
        SecretSource::Disabled => vec![format!(
            "authentication: OFF (auth.enabled = false); anyone who can reach {rpc_address} \
             can run commands on the workers"
        )],
        SecretSource::Tls => vec![format!("authentication: {}", describe(auth))],
        SecretSource::DefaultFile { path, .. } => vec![
            format!(
                "cluster secret: {}; workers, `flint status` and drivers of this user on this \
                 machine find it there",
                describe(auth)
            ),
            format!(
                "  other hosts: copy {} to ~/.flint/secret there (mode 0600), or copy it \
                 anywhere {copy}; `flint start-cluster` copies it to the hosts in conf/workers",
                path.display()
            ),
        ],
        SecretSource::File(path) => vec![
            format!("cluster secret: {}", describe(auth)),
            format!("  other hosts: copy {} there {copy}", path.display()),
        ],
        SecretSource::Setting { .. } | SecretSource::Env => vec![
            format!("cluster secret: {}", describe(auth)),
            format!(
                "  other hosts: give them the same secret, best in a file only they can read \
                 {copy}"
            ),
        ],
    }
}
