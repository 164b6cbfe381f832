//! Typed ids with Spark's formats.
//!
//! | id | format | example |
//! |---|---|---|
//! | [`AppId`] | `app-<yyyyMMddHHmmss>-<nnnn>` | `app-20261122035500-0000` |
//! | [`DriverId`] | `driver-<yyyyMMddHHmmss>-<nnnn>` | `driver-20261122035500-0003` |
//! | [`WorkerId`] | `worker-<yyyyMMddHHmmss>-<host>-<port>` | `worker-20261122035500-127.0.0.1-7078` |
//! | [`ExecutorId`] | an integer, counted from 0 within one application | `3` |
//!
//! Timestamps are formatted in UTC (Spark uses the master's local zone; a
//! daemon that reads no time zone database cannot, and UTC sorts the same on
//! every host).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest id, in bytes, that parsing accepts.
pub const MAX_ID_LEN: usize = 256;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id does not start with the prefix of its kind.
    #[error("{kind} id {input:?} must start with {prefix:?}")]
    MissingPrefix {
        /// What kind of id was expected ("worker", "app", "driver").
        kind: &'static str,
        /// The prefix ids of that kind start with.
        prefix: &'static str,
        /// The rejected input.
        input: String,
    },
    /// Nothing follows the prefix.
    #[error("{kind} id {input:?} has nothing after {prefix:?}")]
    Empty {
        /// What kind of id was expected.
        kind: &'static str,
        /// The prefix ids of that kind start with.
        prefix: &'static str,
        /// The rejected input.
        input: String,
    },
    /// The id contains whitespace, a control character or `/`.
    #[error("{kind} id {input:?} contains {ch:?}; ids may not contain whitespace, control characters or '/'")]
    BadChar {
        /// What kind of id was expected.
        kind: &'static str,
        /// The offending character.
        ch: char,
        /// The rejected input.
        input: String,
    },
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("{kind} id is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// What kind of id was expected.
        kind: &'static str,
        /// The length of the input in bytes.
        len: usize,
        /// The limit, [`MAX_ID_LEN`].
        max: usize,
    },
    /// An executor id that is not a non-negative 32-bit integer.
    #[error("executor id {input:?} is not a non-negative integer")]
    BadExecutorId {
        /// The rejected input.
        input: String,
    },
}

/// Formats epoch milliseconds as `yyyyMMddHHmmss` in UTC, the timestamp part
/// of Spark's app, driver and worker ids.
///
/// ```
/// assert_eq!(flint_types::compact_timestamp(1_795_319_700_000), "20261122035500");
/// ```
pub fn compact_timestamp(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Shifts the calendar so that years start on March 1st (the leap day is then
/// the last day of a year) and counts in 400-year eras of 146 097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 719 468 days separate 0000-03-01 from 1970-01-01.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month counted from March = 0.
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

fn validate(input: &str, kind: &'static str, prefix: &'static str) -> Result<(), IdError> {
    if input.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: input.len(),
            max: MAX_ID_LEN,
        });
    }
    let Some(rest) = input.strip_prefix(prefix) else {
        return Err(IdError::MissingPrefix {
            kind,
            prefix,
            input: input.to_owned(),
        });
    };
    if rest.is_empty() {
        return Err(IdError::Empty {
            kind,
            prefix,
            input: input.to_owned(),
        });
    }
    if let Some(ch) = input
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
    {
        return Err(IdError::BadChar {
            kind,
            ch,
            input: input.to_owned(),
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, kind = $kind:literal, prefix = $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                validate(s, $kind, $prefix)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(s: String) -> Result<Self, IdError> {
                validate(&s, $kind, $prefix)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A worker's id: `worker-<yyyyMMddHHmmss>-<host>-<port>`, chosen by the
    /// worker when it starts.
    WorkerId, kind = "worker", prefix = "worker-"
);

string_id!(
    /// An application's id: `app-<yyyyMMddHHmmss>-<nnnn>`, chosen by the
    /// master when the application registers.
    AppId, kind = "app", prefix = "app-"
);

string_id!(
    /// A cluster-mode driver's id: `driver-<yyyyMMddHHmmss>-<nnnn>`, chosen by
    /// the master when the driver is submitted.
    DriverId, kind = "driver", prefix = "driver-"
);

impl WorkerId {
    /// Builds Spark's worker id `worker-<yyyyMMddHHmmss>-<host>-<port>` from
    /// the worker's start time (epoch ms) and its RPC address.
    ///
    /// Fails when `host` contains whitespace, a control character or `/`.
    pub fn generate(start_ms: u64, host: &str, port: u16) -> Result<Self, IdError> {
        format!("worker-{}-{host}-{port}", compact_timestamp(start_ms)).parse()
    }
}

impl AppId {
    /// Builds Spark's app id `app-<yyyyMMddHHmmss>-<number:04>` from the
    /// submission time (epoch ms) and the master's running app counter.
    pub fn generate(submit_ms: u64, number: u32) -> Self {
        Self(format!("app-{}-{number:04}", compact_timestamp(submit_ms)))
    }
}

impl DriverId {
    /// Builds Spark's driver id `driver-<yyyyMMddHHmmss>-<number:04>` from the
    /// submission time (epoch ms) and the master's running driver counter.
    pub fn generate(submit_ms: u64, number: u32) -> Self {
        Self(format!(
            "driver-{}-{number:04}",
            compact_timestamp(submit_ms)
        ))
    }
}

/// An executor's id within its application: an integer counted from 0, as in
/// Spark. The full name of an executor is `<app id>/<executor id>`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct ExecutorId(pub u32);

impl ExecutorId {
    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The id that follows this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ExecutorId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        // u32::from_str accepts a leading '+'; an id never has one.
        if s.starts_with('+') {
            return Err(IdError::BadExecutorId {
                input: s.to_owned(),
            });
        }
        s.parse::<u32>()
            .map(ExecutorId)
            .map_err(|_| IdError::BadExecutorId {
                input: s.to_owned(),
            })
    }
}

impl From<u32> for ExecutorId {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_timestamp_matches_known_dates() {
        assert_eq!(compact_timestamp(0), "19700101000000");
        assert_eq!(compact_timestamp(1_795_319_700_000), "20261122035500");
        // A leap day, one second before midnight.
        assert_eq!(compact_timestamp(951_868_799_999), "20000229235959");
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(compact_timestamp(4_107_542_400_000), "21000301000000");
    }

    #[test]
    fn generated_ids_have_spark_formats() {
        let t = 1_795_319_700_000;
        assert_eq!(AppId::generate(t, 0).as_str(), "app-20261122035500-0000");
        assert_eq!(
            AppId::generate(t, 12345).as_str(),
            "app-20261122035500-12345"
        );
        assert_eq!(
            DriverId::generate(t, 7).as_str(),
            "driver-20261122035500-0007"
        );
        assert_eq!(
            WorkerId::generate(t, "127.0.0.1", 7078).map(String::from),
            Ok("worker-20261122035500-127.0.0.1-7078".to_owned())
        );
        assert!(WorkerId::generate(t, "bad host", 1).is_err());
    }

    #[test]
    fn ids_parse_and_display_round_trip() {
        for s in [
            "app-20261122035500-0000",
            "app-x",
            "app-20261122035500-10000",
        ] {
            let id: AppId = s.parse().expect("valid");
            assert_eq!(id.to_string(), s);
        }
        let w: WorkerId = "worker-20261122035500-::1-7078".parse().expect("ipv6 host");
        assert_eq!(w.as_str(), "worker-20261122035500-::1-7078");
        let e: ExecutorId = "42".parse().expect("int");
        assert_eq!(e, ExecutorId(42));
        assert_eq!(e.to_string(), "42");
    }

    #[test]
    fn bad_ids_are_rejected_with_a_reason() {
        assert!(matches!(
            "driver-1".parse::<AppId>(),
            Err(IdError::MissingPrefix { kind: "app", .. })
        ));
        assert!(matches!(
            "app-".parse::<AppId>(),
            Err(IdError::Empty { .. })
        ));
        assert!(matches!(
            "app-a b".parse::<AppId>(),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            "worker-a/b".parse::<WorkerId>(),
            Err(IdError::BadChar { ch: '/', .. })
        ));
        let long = format!("app-{}", "x".repeat(MAX_ID_LEN));
        assert!(matches!(
            long.parse::<AppId>(),
            Err(IdError::TooLong { .. })
        ));
        for bad in ["-1", "+1", "", "x", "4294967296"] {
            assert!(bad.parse::<ExecutorId>().is_err(), "{bad}");
        }
        let msg = "nope".parse::<DriverId>().err().map(|e| e.to_string());
        assert_eq!(
            msg.as_deref(),
            Some("driver id \"nope\" must start with \"driver-\"")
        );
    }

    #[test]
    fn ids_serialize_as_plain_values_and_validate_on_the_way_in() {
        let id = AppId::generate(0, 1);
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, "\"app-19700101000000-0001\"");
        assert_eq!(serde_json::from_str::<AppId>(&json).ok(), Some(id.clone()));
        assert!(serde_json::from_str::<AppId>("\"worker-1\"").is_err());

        let bytes = postcard::to_allocvec(&id).expect("postcard");
        assert_eq!(postcard::from_bytes::<AppId>(&bytes).ok(), Some(id));

        assert_eq!(
            serde_json::to_string(&ExecutorId(3)).ok().as_deref(),
            Some("3")
        );
    }
}
