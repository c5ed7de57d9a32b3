//! Task metrics in containerd's cgroup types (`io.containerd.cgroups.v1.Metrics` and
//! `io.containerd.cgroups.v2.Metrics`, from containerd/cgroups' stats protos), filled from
//! the figures nook reads from a container's delegated cgroup (the same as `nook stats`).
//! Only the messages and fields nook has figures for are declared; the field numbers are
//! those of containerd's protos, so clients decode them as containerd's.

use crate::cgroup::{Cgroups, Stats};

/// The type URL of a Metrics message (what `typeurl` resolves in containerd's clients).
pub fn type_url(v2: bool) -> &'static str {
    if v2 {
        "io.containerd.cgroups.v2.Metrics"
    } else {
        "io.containerd.cgroups.v1.Metrics"
    }
}

/// containerd/cgroups `stats/v1` (package io.containerd.cgroups.v1), in part.
pub mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "2")]
        pub pids: Option<PidsStat>,
        #[prost(message, optional, tag = "3")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
        #[prost(message, optional, tag = "5")]
        pub blkio: Option<BlkIoStat>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PidsStat {
        #[prost(uint64, tag = "1")]
        pub current: u64,
        #[prost(uint64, tag = "2")]
        pub limit: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(message, optional, tag = "1")]
        pub usage: Option<CpuUsage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuUsage {
        /// Nanoseconds.
        #[prost(uint64, tag = "1")]
        pub total: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(message, optional, tag = "33")]
        pub usage: Option<MemoryEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEntry {
        #[prost(uint64, tag = "1")]
        pub limit: u64,
        #[prost(uint64, tag = "2")]
        pub usage: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlkIoStat {
        #[prost(message, repeated, tag = "1")]
        pub io_service_bytes_recursive: Vec<BlkIoEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlkIoEntry {
        #[prost(string, tag = "1")]
        pub op: String,
        #[prost(uint64, tag = "5")]
        pub value: u64,
    }
}

/// containerd/cgroups `cgroup2/stats` (package io.containerd.cgroups.v2), in part.
pub mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "1")]
        pub pids: Option<PidsStat>,
        #[prost(message, optional, tag = "2")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
        #[prost(message, optional, tag = "6")]
        pub io: Option<IoStat>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PidsStat {
        #[prost(uint64, tag = "1")]
        pub current: u64,
        #[prost(uint64, tag = "2")]
        pub limit: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(uint64, tag = "1")]
        pub usage_usec: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(uint64, tag = "32")]
        pub usage: u64,
        #[prost(uint64, tag = "33")]
        pub usage_limit: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IoStat {
        #[prost(message, repeated, tag = "1")]
        pub usage: Vec<IoEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IoEntry {
        #[prost(uint64, tag = "3")]
        pub rbytes: u64,
        #[prost(uint64, tag = "4")]
        pub wbytes: u64,
    }
}

/// The metrics of one container in the type of nook's cgroup version (`pids_limit`: the
/// container's limit, 0 for none), as containerd's typed Any.
pub fn encode(cg: &Cgroups, s: &Stats, pids_limit: u64) -> Option<prost_types::Any> {
    use prost::Message;
    // containerd reports "no limit" as the largest value the kernel shows
    let mem_limit = s.memory_limit.unwrap_or(u64::MAX);
    let (v2, value) = match cg {
        Cgroups::None { .. } => return None,
        Cgroups::V1(_) => (
            false,
            v1::Metrics {
                pids: Some(v1::PidsStat {
                    current: s.pids,
                    limit: pids_limit,
                }),
                cpu: Some(v1::CpuStat {
                    usage: Some(v1::CpuUsage { total: s.cpu_ns }),
                }),
                memory: Some(v1::MemoryStat {
                    usage: Some(v1::MemoryEntry {
                        limit: mem_limit,
                        usage: s.memory_usage,
                    }),
                }),
                blkio: Some(v1::BlkIoStat {
                    io_service_bytes_recursive: vec![
                        v1::BlkIoEntry {
                            op: "Read".into(),
                            value: s.block_read,
                        },
                        v1::BlkIoEntry {
                            op: "Write".into(),
                            value: s.block_write,
                        },
                    ],
                }),
            }
            .encode_to_vec(),
        ),
        Cgroups::V2(_) => (
            true,
            v2::Metrics {
                pids: Some(v2::PidsStat {
                    current: s.pids,
                    limit: pids_limit,
                }),
                cpu: Some(v2::CpuStat {
                    usage_usec: s.cpu_ns / 1000,
                }),
                memory: Some(v2::MemoryStat {
                    usage: s.memory_usage,
                    usage_limit: mem_limit,
                }),
                io: Some(v2::IoStat {
                    usage: vec![v2::IoEntry {
                        rbytes: s.block_read,
                        wbytes: s.block_write,
                    }],
                }),
            }
            .encode_to_vec(),
        ),
    };
    Some(prost_types::Any {
        type_url: type_url(v2).to_string(),
        value,
    })
}
