//! The application client's settings, read from a [`Conf`] with Spark's
//! values: `StandaloneAppClient` hard-codes `REGISTRATION_TIMEOUT_SECONDS = 20`
//! and `REGISTRATION_RETRIES = 3`; here they are settings so tests (and
//! impatient operators) can shorten them.

use std::time::Duration;

use flint_conf::{Conf, TimeUnit};

use crate::ClientError;

/// `client.registration.timeout`: how long one registration round waits for a
/// master to answer before the next round (Spark: 20 s; a bare number is
/// seconds).
pub const REGISTRATION_TIMEOUT: &str = "client.registration.timeout";
/// `client.registration.retries`: how many registration rounds (each sent to
/// every master) before the client gives up with "All masters are
/// unresponsive! Giving up." (Spark: 3).
pub const REGISTRATION_RETRIES: &str = "client.registration.retries";

/// Every key this crate reads (the RPC environment reads its own,
/// `flint_rpc::conf::KEYS`), for `FLINT_*` environment mapping and docs.
pub const KEYS: &[&str] = &[REGISTRATION_TIMEOUT, REGISTRATION_RETRIES];

/// Spark's registration round length.
pub const DEFAULT_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Spark's number of registration rounds.
pub const DEFAULT_REGISTRATION_RETRIES: u32 = 3;

/// The application client's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Length of one registration round ([`REGISTRATION_TIMEOUT`]).
    pub registration_timeout: Duration,
    /// Number of registration rounds ([`REGISTRATION_RETRIES`]), at least 1.
    pub registration_retries: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            registration_timeout: DEFAULT_REGISTRATION_TIMEOUT,
            registration_retries: DEFAULT_REGISTRATION_RETRIES,
        }
    }
}

impl ClientSettings {
    /// Reads the settings, failing with the key and the reason when a value
    /// is wrong.
    pub fn from_conf(conf: &Conf) -> Result<Self, ClientError> {
        let registration_timeout = conf.duration(
            REGISTRATION_TIMEOUT,
            DEFAULT_REGISTRATION_TIMEOUT,
            TimeUnit::Seconds,
        )?;
        if registration_timeout.is_zero() {
            return Err(ClientError::Setting {
                key: REGISTRATION_TIMEOUT,
                message: "must be positive".into(),
            });
        }
        let retries = conf.u64(
            REGISTRATION_RETRIES,
            u64::from(DEFAULT_REGISTRATION_RETRIES),
        )?;
        let registration_retries = match u32::try_from(retries) {
            Ok(0) => {
                return Err(ClientError::Setting {
                    key: REGISTRATION_RETRIES,
                    message: "must be at least 1".into(),
                })
            }
            Ok(n) => n,
            Err(_) => {
                return Err(ClientError::Setting {
                    key: REGISTRATION_RETRIES,
                    message: format!("{retries} is larger than {}", u32::MAX),
                })
            }
        };
        Ok(ClientSettings {
            registration_timeout,
            registration_retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sparks() {
        let s = ClientSettings::from_conf(&Conf::new()).expect("defaults");
        assert_eq!(s, ClientSettings::default());
        assert_eq!(s.registration_timeout, Duration::from_secs(20));
        assert_eq!(s.registration_retries, 3);
    }

    #[test]
    fn settings_are_read_with_units() {
        let conf = Conf::new()
            .set(REGISTRATION_TIMEOUT, "250ms")
            .set(REGISTRATION_RETRIES, "5");
        let s = ClientSettings::from_conf(&conf).expect("valid");
        assert_eq!(s.registration_timeout, Duration::from_millis(250));
        assert_eq!(s.registration_retries, 5);
        let bare = Conf::new().set(REGISTRATION_TIMEOUT, "7");
        assert_eq!(
            ClientSettings::from_conf(&bare)
                .expect("valid")
                .registration_timeout,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            (REGISTRATION_TIMEOUT, "soon"),
            (REGISTRATION_TIMEOUT, "0"),
            (REGISTRATION_RETRIES, "0"),
            (REGISTRATION_RETRIES, "-1"),
            (REGISTRATION_RETRIES, "99999999999"),
        ] {
            let e = ClientSettings::from_conf(&Conf::new().set(key, value)).expect_err(value);
            assert!(e.to_string().contains(key), "{key}={value}: {e}");
        }
    }
}
