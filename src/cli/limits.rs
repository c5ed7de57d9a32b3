//! Resource limits on the command line: docker's flags of `nook run`/`create` and `nook
//! update`, and the `stats`, `pause` and `unpause` commands.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::StatusExt;
use super::output::{self, Format};
use super::Ctx;
use crate::proto::containers as pb;

type Cl = pb::containers_client::ContainersClient<tonic::transport::Channel>;

fn client(c: &super::Client) -> Cl {
    pb::containers_client::ContainersClient::new(c.channel.clone())
}

/// cgroup limits (need the controllers delegated: `nook-rootless-setuptool.sh delegate`).
#[derive(Args, Debug, Clone, Default)]
pub struct ResourceArgs {
    /// Memory limit (bytes, or with a unit: 64m, 1g). Past it the kernel's OOM killer kills
    /// in the container (exit 137, OOMKilled in `nook inspect`).
    #[arg(short = 'm', long, value_parser = parse_size, value_name = "BYTES")]
    pub memory: Option<i64>,
    /// Memory plus swap limit (-1: unlimited swap; default: twice --memory).
    #[arg(long, value_parser = parse_swap, allow_hyphen_values = true, value_name = "BYTES")]
    pub memory_swap: Option<i64>,
    /// Soft memory limit, enforced when the host runs short.
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub memory_reservation: Option<i64>,
    /// CPUs the container may use (0.5: half of one CPU's time).
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<f64>,
    /// Relative CPU weight against other containers (default 1024).
    #[arg(short = 'c', long, value_name = "SHARES")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (0-1, 0,2).
    #[arg(long, value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// Relative block I/O weight, 10 to 1000 (where the kernel's io scheduler has weights).
    #[arg(long, value_name = "WEIGHT")]
    pub blkio_weight: Option<u16>,
}

/// Limits of `run`/`create`: the cgroup ones and two that need no controller.
#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Size of /dev/shm (default 64m).
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub shm_size: Option<i64>,
    /// Adjust the OOM killer's preference for the container's processes (-1000 to 1000).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub oom_score_adj: Option<i32>,
}

impl ResourceArgs {
    /// The request's `Resources` (None when no flag was given).
    pub fn to_pb(&self) -> Option<pb::Resources> {
        let r = pb::Resources {
            memory: self.memory,
            memory_swap: self.memory_swap,
            memory_reservation: self.memory_reservation,
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.clone(),
            pids_limit: self.pids_limit,
            blkio_weight: self.blkio_weight.map(u32::from),
        };
        (r != pb::Resources::default()).then_some(r)
    }
}

/// Parses docker's sizes: `1024`, `512k`, `64m`, `1g` (powers of 1024, b/k/m/g/t, any case,
/// an optional trailing `b` as in `64mb`).
pub fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|x| x.ends_with(['k', 'm', 'g', 't']))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: use bytes or a unit, as in 64m or 1g"))?;
    if v < 0.0 {
        return Err(format!("{s:?}: a size cannot be negative"));
    }
    Ok((v * mult as f64) as i64)
}

fn parse_swap(s: &str) -> Result<i64, String> {
    if s.trim() == "-1" {
        Ok(-1)
    } else {
        parse_size(s)
    }
}

/// `nook update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub resources: ResourceArgs,
    /// Containers (names or ids).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `nook stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample and exit (default: refresh every second until Ctrl-C).
    #[arg(long)]
    pub no_stream: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Containers (default: every running one).
    pub containers: Vec<String>,
}

/// `nook pause` / `nook unpause`.
#[derive(Args, Debug)]
pub struct PauseArgs {
    /// Containers (names or ids).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn update(ctx: &Ctx, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let Some(res) = a.resources.to_pb() else {
        anyhow::bail!("nothing to update: give a limit (--memory, --cpus, --pids-limit, ...)");
    };
    let c = ctx.connect().await?;
    Ok(output::each(a.containers, |id| {
        let (c, res) = (c.clone(), res.clone());
        async move {
            client(&c)
                .update(c.req(pb::UpdateRequest {
                    id,
                    resources: Some(res),
                }))
                .await
                .or_fail()?;
            Ok(())
        }
    })
    .await)
}

pub async fn pause(ctx: &Ctx, a: PauseArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    Ok(output::each(a.containers, |id| {
        let c = c.clone();
        async move {
            let req = c.req(pb::ContainerRef { id });
            if pause {
                client(&c).pause(req).await.or_fail()?;
            } else {
                client(&c).resume(req).await.or_fail()?;
            }
            Ok(())
        }
    })
    .await)
}

/// One row of `nook stats`, as `--format json` prints it.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub cpu_percent: f64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
}

/// A row from two samples of the same container: CPU % is CPU time over wall time (100% is
/// one CPU, as docker shows it).
pub fn row(prev: Option<&pb::ContainerStats>, s: &pb::ContainerStats) -> Row {
    let cpu_percent = match prev {
        Some(p) if s.read_at_ns > p.read_at_ns && s.cpu_ns >= p.cpu_ns => {
            (s.cpu_ns - p.cpu_ns) as f64 / (s.read_at_ns - p.read_at_ns) as f64 * 100.0
        }
        _ => 0.0,
    };
    Row {
        id: s.id.clone(),
        name: s.name.clone(),
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
        memory_usage: s.memory_usage,
        memory_limit: s.memory_limit,
        memory_percent: if s.memory_limit > 0 {
            ((s.memory_usage as f64 / s.memory_limit as f64 * 100.0) * 100.0).round() / 100.0
        } else {
            0.0
        },
        net_rx: s.net_rx,
        net_tx: s.net_tx,
        block_read: s.block_read,
        block_write: s.block_write,
        pids: s.pids,
    }
}

/// Sizes in powers of 1024, as docker's stats show memory.
fn bin(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.2}{}", U[i])
    }
}

fn render(rows: &[Row]) -> String {
    output::render_table(
        &[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.id.chars().take(12).collect(),
                    r.name.clone(),
                    format!("{:.2}%", r.cpu_percent),
                    format!("{} / {}", bin(r.memory_usage), bin(r.memory_limit)),
                    format!("{:.2}%", r.memory_percent),
                    format!("{} / {}", output::size(r.net_rx), output::size(r.net_tx)),
                    format!(
                        "{} / {}",
                        output::size(r.block_read),
                        output::size(r.block_write)
                    ),
                    r.pids.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub async fn stats(ctx: &Ctx, a: StatsArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let sample = || async {
        client(&c)
            .stats(c.req(pb::StatsRequest {
                ids: a.containers.clone(),
            }))
            .await
            .or_fail()
            .map(|r| r.stats)
    };
    let mut prev = sample().await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample().await?;
        let rows: Vec<Row> = now
            .iter()
            .map(|s| row(prev.iter().find(|p| p.id == s.id), s))
            .collect();
        match a.format {
            Format::Json => {
                if a.no_stream {
                    output::json(&rows)?;
                } else {
                    // one line per sample, for scripts that follow
                    println!("{}", serde_json::to_string(&rows)?);
                }
            }
            Format::Table => {
                if !a.no_stream {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&rows));
            }
        }
        if a.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        prev = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_swap("-1"), Ok(-1));
    }

    #[test]
    fn cpu_percent_from_two_samples() {
        let p = pb::ContainerStats {
            id: "a".into(),
            cpu_ns: 1_000_000_000,
            read_at_ns: 10_000_000_000,
            ..Default::default()
        };
        let s = pb::ContainerStats {
            id: "a".into(),
            cpu_ns: 1_500_000_000,
            read_at_ns: 11_000_000_000,
            memory_usage: 32 << 20,
            memory_limit: 64 << 20,
            ..Default::default()
        };
        let r = row(Some(&p), &s);
        assert_eq!(r.cpu_percent, 50.0);
        assert_eq!(r.memory_percent, 50.0);
        assert_eq!(row(None, &s).cpu_percent, 0.0);
        assert!(render(&[r]).contains("32.00MiB / 64.00MiB"));
    }
}
