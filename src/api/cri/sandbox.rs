//! CRI pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox, translated onto the pods service ([`crate::services::pods`]), which holds
//! the pod's namespaces with a small process of nook's own (no pause image).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::api::cri::v1 as cri;
use tonic::Status;

use super::{ensure_namespace, NAMESPACE};
use crate::daemon::Daemon;
use crate::services::pods::{Dns, PidMode, PodRecord, PodSpec};

type R<T> = Result<T, Status>;

/// CRI's NamespaceMode values.
const MODE_POD: i32 = 0;
const MODE_CONTAINER: i32 = 1;
const MODE_NODE: i32 = 2;

/// The pod's port mappings as nook's (`[IP:]HOST:CONTAINER/PROTO`); a host port of 0 maps
/// nothing (as with containerd's CNI port mapping). On the host network a container's port is
/// the node's own in Kubernetes; nook's host network is its own namespace, so there the port
/// is published on the host at the same number (where the user may bind it).
fn ports(
    ms: &[cri::PortMapping],
    host_network: bool,
) -> R<Vec<crate::network::ports::PortMapping>> {
    let mut out = Vec::new();
    for m in ms {
        let mut m = m.clone();
        if host_network && m.host_port <= 0 {
            let start = crate::network::ports::unprivileged_port_start();
            if m.container_port < i32::from(start) {
                tracing::warn!(
                    "host-network pod: port {} stays inside nook's network namespace (below net.ipv4.ip_unprivileged_port_start, {start})",
                    m.container_port
                );
                continue;
            }
            m.host_port = m.container_port;
        }
        if m.host_port <= 0 {
            continue;
        }
        let proto = match cri::Protocol::try_from(m.protocol) {
            Ok(cri::Protocol::Tcp) => "tcp",
            Ok(cri::Protocol::Udp) => "udp",
            _ => {
                return Err(Status::invalid_argument(format!(
                    "port mapping {}:{}: only TCP and UDP can be published",
                    m.host_port, m.container_port
                )))
            }
        };
        let ip = if m.host_ip.is_empty() {
            String::new()
        } else if m.host_ip.contains(':') {
            format!("[{}]:", m.host_ip)
        } else {
            format!("{}:", m.host_ip)
        };
        let s = format!("{ip}{}:{}/{proto}", m.host_port, m.container_port);
        out.extend(crate::network::ports::parse(&s)?);
    }
    Ok(out)
}

/// The nook pod a CRI config asks for.
fn spec(c: cri::PodSandboxConfig, handler: String) -> R<PodSpec> {
    let meta = c
        .metadata
        .ok_or_else(|| Status::invalid_argument("the pod config has no metadata"))?;
    let ns_opts = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let host_network = match ns_opts.network {
        MODE_NODE => true,
        MODE_POD | MODE_CONTAINER => false,
        m => {
            return Err(Status::invalid_argument(format!(
                "network namespace mode {m}"
            )))
        }
    };
    let pid = match ns_opts.pid {
        MODE_POD => PidMode::Pod,
        MODE_CONTAINER => PidMode::Container,
        MODE_NODE => {
            return Err(Status::failed_precondition(
                "the host's PID namespace (hostPID) is not available to a rootless runtime: nook's containers live in their own user namespace",
            ))
        }
        m => return Err(Status::invalid_argument(format!("pid namespace mode {m}"))),
    };
    if ns_opts.ipc == MODE_NODE {
        return Err(Status::failed_precondition(
            "the host's IPC namespace (hostIPC) is not available to a rootless runtime: nook's containers live in their own user namespace",
        ));
    }
    let sysctls = c
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone().into_iter().collect())
        .unwrap_or_default();
    let dns = c.dns_config.unwrap_or_default();
    Ok(PodSpec {
        name: meta.name,
        kube_namespace: meta.namespace,
        uid: meta.uid,
        attempt: meta.attempt,
        hostname: c.hostname,
        log_directory: c.log_directory,
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        dns: Dns {
            servers: dns.servers,
            searches: dns.searches,
            options: dns.options,
        },
        ports: ports(&c.port_mappings, host_network)?,
        host_network,
        pid,
        runtime_handler: handler,
        sysctls,
    })
}

fn state(p: &PodRecord) -> i32 {
    if p.ready {
        cri::PodSandboxState::SandboxReady as i32
    } else {
        cri::PodSandboxState::SandboxNotready as i32
    }
}

pub(super) fn metadata(p: &PodRecord) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: p.name.clone(),
        uid: p.uid.clone(),
        namespace: p.kube_namespace.clone(),
        attempt: p.attempt,
    }
}

pub(super) fn to_map(m: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Whether `labels` has every pair of `selector`.
pub(super) fn selected(
    labels: &std::collections::BTreeMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pods(d: &Daemon) -> R<&Arc<crate::services::Pods>> {
    d.pods().map_err(Into::into)
}

pub(super) async fn run(
    d: &Arc<Daemon>,
    r: cri::RunPodSandboxRequest,
) -> R<cri::RunPodSandboxResponse> {
    let c = r
        .config
        .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
    if !r.runtime_handler.is_empty() && !d.config.runtimes.contains_key(&r.runtime_handler) {
        return Err(Status::not_found(format!(
            "no runtime handler {:?}: nook's runtimes are {:?} ([runtimes] in config.toml)",
            r.runtime_handler,
            d.config.runtimes.keys().collect::<Vec<_>>()
        )));
    }
    let s = spec(c, r.runtime_handler)?;
    ensure_namespace(d).await?;
    let p = pods(d)?.run(NAMESPACE, s).await?;
    Ok(cri::RunPodSandboxResponse {
        pod_sandbox_id: p.id,
    })
}

pub(super) async fn stop(
    d: &Arc<Daemon>,
    r: cri::StopPodSandboxRequest,
) -> R<cri::StopPodSandboxResponse> {
    match pods(d)?
        .stop(NAMESPACE, &r.pod_sandbox_id, Duration::ZERO)
        .await
    {
        // stopping what is gone succeeds, as CRI asks
        Ok(_) | Err(crate::error::Error::NotFound(_)) => Ok(cri::StopPodSandboxResponse {}),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn remove(
    d: &Arc<Daemon>,
    r: cri::RemovePodSandboxRequest,
) -> R<cri::RemovePodSandboxResponse> {
    pods(d)?.remove(NAMESPACE, &r.pod_sandbox_id).await?;
    Ok(cri::RemovePodSandboxResponse {})
}

pub(super) async fn status(
    d: &Arc<Daemon>,
    r: cri::PodSandboxStatusRequest,
) -> R<cri::PodSandboxStatusResponse> {
    let svc = pods(d)?;
    let p = svc.find(NAMESPACE, &r.pod_sandbox_id)?;
    let mut info = HashMap::new();
    if r.verbose {
        let v = serde_json::json!({
            "holderPid": p.holder_pid,
            "netns": p.netns,
            "hostNetwork": p.host_network,
            "pid": p.pid,
            "hostname": p.hostname,
            "logDirectory": p.log_directory,
            "ports": p.ports,
            "dns": p.dns,
            "runtimeHandler": p.runtime_handler,
            "containers": svc.members(NAMESPACE, &p.id)?.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        });
        info.insert("info".to_string(), v.to_string());
    }
    let node = |b: bool| if b { MODE_NODE } else { MODE_POD };
    Ok(cri::PodSandboxStatusResponse {
        status: Some(cri::PodSandboxStatus {
            id: p.id.clone(),
            metadata: Some(metadata(&p)),
            state: state(&p),
            created_at: p.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: p.ip.map(|i| i.to_string()).unwrap_or_default(),
                additional_ips: vec![],
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: node(p.host_network),
                        pid: if p.pid == PidMode::Pod {
                            MODE_POD
                        } else {
                            MODE_CONTAINER
                        },
                        ipc: MODE_POD,
                        target_id: String::new(),
                        userns_options: None,
                    }),
                }),
            }),
            labels: to_map(&p.labels),
            annotations: to_map(&p.annotations),
            runtime_handler: p.runtime_handler.clone(),
        }),
        info,
        // a kubelet with EventedPLEG takes the pod's containers from here
        containers_statuses: member_statuses(d, &p.id).await,
        timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
    })
}

/// The CRI statuses of the pod's containers now.
pub(super) async fn member_statuses(d: &Arc<Daemon>, pod: &str) -> Vec<cri::ContainerStatus> {
    let members = d
        .pods()
        .and_then(|p| p.members(NAMESPACE, pod))
        .unwrap_or_default();
    let mut statuses = Vec::new();
    for m in members {
        let st = super::containers::status(
            d,
            cri::ContainerStatusRequest {
                container_id: m.id,
                verbose: false,
            },
        )
        .await;
        if let Some(s) = st.ok().and_then(|r| r.status) {
            statuses.push(s);
        }
    }
    statuses
}

pub(super) async fn list(
    d: &Arc<Daemon>,
    r: cri::ListPodSandboxRequest,
) -> R<cri::ListPodSandboxResponse> {
    let f = r.filter.unwrap_or_default();
    let mut all = pods(d)?.list(NAMESPACE)?;
    all.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    let items = all
        .into_iter()
        .filter(|p| f.id.is_empty() || p.id.starts_with(&f.id))
        .filter(|p| f.state.as_ref().is_none_or(|s| s.state == state(p)))
        .filter(|p| selected(&p.labels, &f.label_selector))
        .map(|p| cri::PodSandbox {
            id: p.id.clone(),
            metadata: Some(metadata(&p)),
            state: state(&p),
            created_at: p.created_at,
            labels: to_map(&p.labels),
            annotations: to_map(&p.annotations),
            runtime_handler: p.runtime_handler.clone(),
        })
        .collect();
    Ok(cri::ListPodSandboxResponse { items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings() {
        let m = |h, c, ip: &str, p| cri::PortMapping {
            protocol: p,
            container_port: c,
            host_port: h,
            host_ip: ip.into(),
        };
        let got = ports(
            &[
                m(8080, 80, "", 0),
                m(0, 53, "", 1),
                m(5353, 53, "127.0.0.1", 1),
            ],
            false,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].host_port, got[0].container_port), (8080, 80));
        assert_eq!(got[1].host_ip.to_string(), "127.0.0.1");
        assert!(ports(&[m(1, 1, "", 2)], false).is_err());
        // the host network: the container's port is the node's (a privileged one stays inside)
        let got = ports(&[m(0, 12003, "", 0), m(0, 1, "", 0)], true).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].host_port, got[0].container_port), (12003, 12003));
    }
}
