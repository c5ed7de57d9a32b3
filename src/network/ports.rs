//! Port publishing: `-p` parsing and the mappings (the relay that serves them is in
//! [`super::forward`]).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::config::PORT_DRIVERS;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port. `host_port` 0 means "pick a free one" (resolved when it is bound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.proto, self.host_ip, self.host_port
        )
    }
}

fn parse_range(s: &str, what: &str, spec: &str) -> Result<(u16, u16)> {
    let bad = |m: &str| {
        Error::InvalidArgument(format!(
            "invalid port mapping {spec:?}: {what} {m} (expected [HOSTIP:]HOSTPORT:PORT[/tcp|/udp], PORT, or ranges like 8000-8005:80-85)"
        ))
    };
    let one = |p: &str| -> Result<u16> {
        p.parse::<u16>()
            .map_err(|_| bad(&format!("{p:?} is not a port number")))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if a > b {
        return Err(bad(&format!("range {s:?} runs backwards")));
    }
    Ok((a, b))
}

/// Parses one `-p` value into its mappings (one per port of a range).
pub fn parse(spec: &str) -> Result<Vec<PortMapping>> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Proto::Tcp),
        Some((b, "udp")) => (b, Proto::Udp),
        Some((_, p)) => {
            return Err(Error::InvalidArgument(format!(
                "invalid port mapping {spec:?}: unknown protocol {p:?} (use tcp or udp)"
            )))
        }
        None => (spec, Proto::Tcp),
    };
    // host IP: an IPv4 address, or [IPv6] in brackets
    let (host_ip, rest): (IpAddr, &str) = if let Some(r) = body.strip_prefix('[') {
        let (ip, rest) = r.split_once("]:").ok_or_else(|| {
            Error::InvalidArgument(format!("invalid port mapping {spec:?}: unclosed [IPv6]"))
        })?;
        let ip = ip.parse().map_err(|_| {
            Error::InvalidArgument(format!("invalid port mapping {spec:?}: bad address {ip:?}"))
        })?;
        (ip, rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), body),
            3 => {
                let ip = if parts[0].is_empty() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    parts[0].parse().map_err(|_| {
                        Error::InvalidArgument(format!(
                            "invalid port mapping {spec:?}: {:?} is not an IP address",
                            parts[0]
                        ))
                    })?
                };
                (ip, &body[parts[0].len() + 1..])
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "invalid port mapping {spec:?}: too many ':' (expected [HOSTIP:]HOSTPORT:PORT)"
                )))
            }
        }
    };
    let (host, cont) = match rest.split_once(':') {
        Some(("", c)) => (None, c),
        Some((h, c)) => (Some(h), c),
        None => (None, rest),
    };
    let (c0, c1) = parse_range(cont, "container port", spec)?;
    if c0 == 0 {
        return Err(Error::InvalidArgument(format!(
            "invalid port mapping {spec:?}: container port 0"
        )));
    }
    let n = c1 - c0;
    let hosts: Vec<u16> = match host {
        None => vec![0; usize::from(n) + 1],
        Some(h) => {
            let (h0, h1) = parse_range(h, "host port", spec)?;
            if h1 - h0 != n {
                return Err(Error::InvalidArgument(format!(
                    "invalid port mapping {spec:?}: the host range has {} ports, the container range {}",
                    h1 - h0 + 1,
                    n + 1
                )));
            }
            if h0 == 0 && n > 0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid port mapping {spec:?}: host port 0 in a range"
                )));
            }
            (h0..=h1).collect()
        }
    };
    Ok(hosts
        .into_iter()
        .zip(c0..=c1)
        .map(|(host_port, container_port)| PortMapping {
            host_ip,
            host_port,
            container_port,
            proto,
        })
        .collect())
}

/// Parses all `-p` values and rejects duplicates of the same host address, port and protocol.
pub fn parse_all(specs: &[String]) -> Result<Vec<PortMapping>> {
    let mut out: Vec<PortMapping> = Vec::new();
    for s in specs {
        for m in parse(s)? {
            if m.host_port != 0
                && out.iter().any(|o| {
                    o.host_port == m.host_port
                        && o.proto == m.proto
                        && (o.host_ip == m.host_ip
                            || o.host_ip.is_unspecified()
                            || m.host_ip.is_unspecified())
                })
            {
                return Err(Error::InvalidArgument(format!(
                    "host port {}/{} is published twice",
                    m.host_port, m.proto
                )));
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// The lowest port an unprivileged process may bind (`net.ipv4.ip_unprivileged_port_start`).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: &str, h: u16, c: u16, p: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.parse().unwrap(),
            host_port: h,
            container_port: c,
            proto: p,
        }
    }

    #[test]
    fn parses_forms() {
        assert_eq!(
            parse("18080:80").unwrap(),
            vec![m("0.0.0.0", 18080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse("127.0.0.1:18080:80/udp").unwrap(),
            vec![m("127.0.0.1", 18080, 80, Proto::Udp)]
        );
        assert_eq!(parse("80").unwrap(), vec![m("0.0.0.0", 0, 80, Proto::Tcp)]);
        assert_eq!(
            parse("127.0.0.1::80").unwrap(),
            vec![m("127.0.0.1", 0, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse("[::1]:8080:80").unwrap(),
            vec![m("::1", 8080, 80, Proto::Tcp)]
        );
        let r = parse("8000-8002:80-82/tcp").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2], m("0.0.0.0", 8002, 82, Proto::Tcp));
        let r = parse("80-81").unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| x.host_port == 0));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "abc",
            "8000-8005:80-81",
            "80/sctp",
            "1.2.3:80:80",
            "70000:80",
            "81-80",
            "1:2:3:4",
            "8080:0",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("port mapping"), "{bad}: {e}");
        }
        let e = parse_all(&["8080:80".into(), "127.0.0.1:8080:81".into()]).unwrap_err();
        assert!(e.to_string().contains("published twice"));
        assert!(parse_all(&["8080:80".into(), "8080:80/udp".into()]).is_ok());
    }
}
