//! The launcher variables of torchrun, Slurm (`srun` with a torchrun-style wrapper) and Kubernetes'
//! PyTorchJob: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK. Read and checked here, so
//! that a bad value is named before anything loads. A world of more than one process trains
//! data-parallel (crate::data_parallel) over a gloo process group at MASTER_ADDR:MASTER_PORT.

/// A process's place in a launched job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub master_addr: String,
    pub master_port: u16,
    pub world_size: u32,
    pub rank: u32,
    pub local_rank: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchEnvError {
    #[error("{name}={value:?} is not {expected}; {hint}")]
    Bad {
        name: &'static str,
        value: String,
        expected: &'static str,
        hint: &'static str,
    },
    #[error("{name} is not set, but {set} is: a launcher sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK together (torchrun, srun with a torchrun-style wrapper, Kubernetes PyTorchJob); set it or unset the others")]
    Missing {
        name: &'static str,
        set: &'static str,
    },
    #[error(
        "RANK={rank} is not below WORLD_SIZE={world_size}: ranks count from 0 to WORLD_SIZE-1"
    )]
    RankOutOfRange { rank: u32, world_size: u32 },
}

const NAMES: [&str; 5] = [
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
];

impl LaunchEnv {
    /// The launch from `var` (the environment, or a map in tests): `None` when no launcher
    /// variable is set, an error naming the variable when one is missing or wrong.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, LaunchEnvError> {
        let Some(set) = NAMES.into_iter().find(|n| var(n).is_some()) else {
            return Ok(None);
        };
        let get = |name: &'static str| var(name).ok_or(LaunchEnvError::Missing { name, set });
        let number = |name: &'static str, hint: &'static str| -> Result<u32, LaunchEnvError> {
            let value = get(name)?;
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| LaunchEnvError::Bad {
                    name,
                    value,
                    expected: "a whole number from 0",
                    hint,
                })
        };
        let master_addr = get("MASTER_ADDR")?;
        if master_addr.trim().is_empty() || master_addr.contains(char::is_whitespace) {
            return Err(LaunchEnvError::Bad {
                name: "MASTER_ADDR",
                value: master_addr,
                expected: "a host name or address",
                hint: "use the first node's host name, e.g. the first of `scontrol show hostnames $SLURM_JOB_NODELIST`",
            });
        }
        let port = get("MASTER_PORT")?;
        let master_port = match port.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(LaunchEnvError::Bad {
                    name: "MASTER_PORT",
                    value: port,
                    expected: "a port from 1 to 65535",
                    hint: "use a free port such as 29500",
                })
            }
        };
        let world_size = number("WORLD_SIZE", "the number of processes of the job, e.g. 2")?;
        if world_size == 0 {
            return Err(LaunchEnvError::Bad {
                name: "WORLD_SIZE",
                value: "0".into(),
                expected: "at least 1",
                hint: "the number of processes of the job, e.g. 2",
            });
        }
        let rank = number("RANK", "this process's rank, 0 to WORLD_SIZE-1")?;
        let local_rank = number(
            "LOCAL_RANK",
            "this process's rank on its machine (its GPU index)",
        )?;
        if rank >= world_size {
            return Err(LaunchEnvError::RankOutOfRange { rank, world_size });
        }
        Ok(Some(LaunchEnv {
            master_addr,
            master_port,
            world_size,
            rank,
            local_rank,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>, LaunchEnvError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    const GOOD: [(&str, &str); 5] = [
        ("MASTER_ADDR", "node-0"),
        ("MASTER_PORT", "29500"),
        ("WORLD_SIZE", "4"),
        ("RANK", "3"),
        ("LOCAL_RANK", "1"),
    ];

    fn with(name: &str, value: &str) -> Vec<(&'static str, String)> {
        GOOD.iter()
            .map(|&(k, v)| {
                (
                    k,
                    if k == name {
                        value.to_string()
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect()
    }

    fn env_owned(pairs: &[(&'static str, String)]) -> Result<Option<LaunchEnv>, LaunchEnvError> {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env(&borrowed)
    }

    #[test]
    fn no_launcher_is_a_plain_run_and_a_full_set_reads() {
        assert_eq!(env(&[]), Ok(None));
        let launch = env(&GOOD).unwrap().unwrap();
        assert_eq!(
            (
                launch.master_port,
                launch.world_size,
                launch.rank,
                launch.local_rank
            ),
            (29500, 4, 3, 1)
        );
    }

    #[test]
    fn bad_values_are_named_with_what_to_do() {
        let message =
            |pairs: Vec<(&'static str, String)>| env_owned(&pairs).unwrap_err().to_string();
        assert!(message(with("MASTER_PORT", "http")).contains("MASTER_PORT=\"http\" is not a port"));
        assert!(message(with("MASTER_PORT", "0")).contains("a port from 1 to 65535"));
        assert!(
            message(with("WORLD_SIZE", "-2")).contains("WORLD_SIZE=\"-2\" is not a whole number")
        );
        assert!(message(with("WORLD_SIZE", "0")).contains("at least 1"));
        assert!(message(with("RANK", "4")).contains("RANK=4 is not below WORLD_SIZE=4"));
        assert!(message(with("LOCAL_RANK", "x")).contains("LOCAL_RANK=\"x\""));
        assert!(message(with("MASTER_ADDR", "")).contains("a host name or address"));
        let missing = env(&GOOD[..4]).unwrap_err().to_string();
        assert!(
            missing.contains("LOCAL_RANK is not set, but MASTER_ADDR is"),
            "{missing}"
        );
    }
}
