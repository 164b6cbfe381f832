//! Master URLs: `local`, `local[N]`, `local[*]`, `local[N,F]`, `local-cluster[W,C,M]`
//! and `flint://host:port[,host2:port]`.

use crate::Error;

/// A parsed master URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Master {
    /// Tasks on `threads` threads of this process; `max_failures` from `local[N,F]`.
    Local {
        /// Task threads.
        threads: u32,
        /// Failed attempts of a partition that fail its job, when given in the URL.
        max_failures: Option<u32>,
    },
    /// An embedded master and `workers` workers of `cores` cores and `memory_mb` MiB.
    LocalCluster {
        /// Workers.
        workers: u32,
        /// Cores per worker.
        cores: u32,
        /// Memory per worker, MiB.
        memory_mb: u32,
    },
    /// A running cluster: its masters' `host:port`s.
    Cluster {
        /// `host:port` of each master.
        masters: Vec<String>,
    },
}

fn cores_of_machine() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

fn positive(s: &str) -> Option<u32> {
    s.trim().parse::<u32>().ok().filter(|n| *n > 0)
}

/// Parses `url`, naming it and the accepted forms when it is none of them.
pub(crate) fn parse(url: &str) -> Result<Master, Error> {
    let bad = || Error::BadMaster {
        master: url.to_string(),
    };
    let u = url.trim();
    if u == "local" {
        return Ok(Master::Local {
            threads: 1,
            max_failures: None,
        });
    }
    if let Some(inner) = u.strip_prefix("local[").and_then(|r| r.strip_suffix(']')) {
        let mut parts = inner.split(',');
        let threads = match parts.next().map(str::trim) {
            Some("*") => cores_of_machine(),
            Some(n) => positive(n).ok_or_else(bad)?,
            None => return Err(bad()),
        };
        let max_failures = match parts.next() {
            Some(f) => Some(positive(f).ok_or_else(bad)?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        return Ok(Master::Local {
            threads,
            max_failures,
        });
    }
    if let Some(inner) = u
        .strip_prefix("local-cluster[")
        .and_then(|r| r.strip_suffix(']'))
    {
        let nums: Vec<Option<u32>> = inner.split(',').map(positive).collect();
        return match nums.as_slice() {
            [Some(w), Some(c), Some(m)] => Ok(Master::LocalCluster {
                workers: *w,
                cores: *c,
                memory_mb: *m,
            }),
            _ => Err(bad()),
        };
    }
    if let Some(rest) = u.strip_prefix("flint://") {
        let mut masters = Vec::new();
        for hp in rest.split(',') {
            let hp = hp.trim().trim_start_matches("flint://");
            let (host, port) = hp.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
                return Err(bad());
            }
            masters.push(hp.to_string());
        }
        return Ok(Master::Cluster { masters });
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse("local").unwrap(),
            Master::Local {
                threads: 1,
                max_failures: None
            }
        );
        assert_eq!(
            parse("local[3]").unwrap(),
            Master::Local {
                threads: 3,
                max_failures: None
            }
        );
        assert_eq!(
            parse("local[2,5]").unwrap(),
            Master::Local {
                threads: 2,
                max_failures: Some(5)
            }
        );
        assert!(
            matches!(parse("local[*]").unwrap(), Master::Local { threads, .. } if threads >= 1)
        );
        assert_eq!(
            parse("local-cluster[2,1,512]").unwrap(),
            Master::LocalCluster {
                workers: 2,
                cores: 1,
                memory_mb: 512
            }
        );
        assert_eq!(
            parse("flint://a:7077,b:7078").unwrap(),
            Master::Cluster {
                masters: vec!["a:7077".into(), "b:7078".into()]
            }
        );
        assert_eq!(
            parse("flint://a:7077,flint://b:7078").unwrap(),
            Master::Cluster {
                masters: vec!["a:7077".into(), "b:7078".into()]
            }
        );
    }

    #[test]
    fn rejected_forms_name_the_value_and_the_accepted_forms() {
        for bad in [
            "",
            "lokal",
            "local[]",
            "local[0]",
            "local[x]",
            "local[2,0]",
            "local[1,2,3]",
            "local-cluster[2,1]",
            "local-cluster[0,1,512]",
            "flint://",
            "flint://h",
            "flint://h:0",
            "flint://:7077",
            "spark://h:7077",
            "local[2",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(
                e.contains("local[N]") && e.contains("flint://host:port"),
                "{e}"
            );
        }
    }
}
