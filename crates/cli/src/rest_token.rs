//! `flint rest-token [--ttl 1h]`: prints a bearer token for the master's REST
//! submission server (`rest.enabled`): an HS256 JWS expiring after `--ttl`, signed
//! with the key the master derives from the cluster secret
//! ([`flint_master::service::rest::jws`]). The secret is found as `flint status`
//! finds it (settings, `FLINT_AUTH_SECRET*`, else `$FLINT_HOME/secret`).
//!
//! Use it as `curl -H "Authorization: Bearer $(flint rest-token)" …`. Anyone holding
//! the token can submit drivers until it expires: keep the TTL short.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use flint_master::service::rest::jws::TokenKey;

use crate::settings::{self, CommonArgs};

/// The longest `--ttl` accepted.
const MAX_TTL_S: u64 = 30 * 24 * 3600;

/// Arguments of `flint rest-token`.
#[derive(clap::Args, Debug)]
pub struct RestTokenArgs {
    /// How long the token is valid (at most 30d).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub ttl: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Prints the token.
pub fn run(args: &RestTokenArgs) -> anyhow::Result<()> {
    let ttl = flint_conf::parse_duration(&args.ttl, flint_conf::TimeUnit::Seconds)
        .map_err(|e| anyhow::anyhow!("--ttl {} is not a duration ({e}); e.g. 1h or 10m", args.ttl))?
        .as_secs();
    if ttl == 0 || ttl > MAX_TTL_S {
        bail!(
            "--ttl {}: give at least 1s and at most 30d (a token cannot be revoked before it expires)",
            args.ttl
        );
    }
    let conf = settings::load(&args.common, &crate::known_keys())?;
    let found = crate::auth::find(&conf).context("cannot find the cluster secret")?;
    let Some(secret) = found.secret else {
        bail!(
            "no cluster secret ({}); REST tokens are signed with it, so a master without \
             one serves REST only with rest.allow_unauthenticated = true, and needs no token",
            crate::auth::describe(&found)
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    println!("{}", TokenKey::derive(secret.expose()).issue(now, ttl));
    Ok(())
}
