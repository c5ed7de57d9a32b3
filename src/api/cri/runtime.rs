//! CRI's RuntimeService: Version, Status and RuntimeConfig answer from the daemon's plugins and
//! config; pod sandboxes go to [`super::sandbox`], containers to [`super::containers`], stats
//! and metrics to [`super::stats`] and [`super::metrics`], events to [`super::events`]; what
//! is not served (CheckpointContainer) answers Unimplemented naming the call.

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::cri::v1 as cri;
use crate::api::cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{not_yet, API_VERSION};
use crate::daemon::Daemon;
use crate::plugins::{self, Plugin};

/// The RuntimeService over a daemon.
pub struct Runtime {
    pub(super) d: Arc<Daemon>,
    /// The streaming server behind Exec, Attach and PortForward.
    pub(super) stream: Arc<super::stream::Server>,
}

type R<T> = Result<Response<T>, Status>;

/// A CRI runtime condition from a plugin: ready when it is ok, otherwise false with the
/// plugin's status as reason and its explanation as message.
fn condition(kind: &str, p: Option<&Plugin>, what: &str) -> cri::RuntimeCondition {
    match p {
        Some(p) if p.status == plugins::Status::Ok => cri::RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Some(p) => cri::RuntimeCondition {
            r#type: kind.into(),
            status: false,
            reason: format!("{}{}", what, capitalized(p.status.as_str())),
            message: format!("{} {}: {}", p.kind, p.id, p.reason),
        },
        None => cri::RuntimeCondition {
            r#type: kind.into(),
            status: false,
            reason: format!("{what}Missing"),
            message: format!("nookd reports no {what} plugin"),
        },
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _r: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "nook".into(),
            runtime_version: crate::VERSION.into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let verbose = r.into_inner().verbose;
        let d = &self.d;
        let list = d.plugins.list();
        let default_runtime = crate::runtime::plugin::default_name(&d.config);
        let rt = list
            .iter()
            .filter(|p| p.kind == plugins::RUNTIME)
            .find(|p| p.id == default_runtime)
            .or_else(|| list.iter().find(|p| p.kind == plugins::RUNTIME));
        let link = list
            .iter()
            .find(|p| p.kind == plugins::NETWORK && p.id == "link");
        let mut info = HashMap::new();
        if verbose {
            let config = serde_json::json!({
                "runtime": default_runtime,
                "namespace": super::NAMESPACE,
                "networkDriver": d.network_driver(),
                "netns": d.netns_path(),
                "root": d.paths.root,
                "state": d.paths.state,
                "cgroupDriver": "cgroupfs",
                "cgroupVersion": crate::daemon::sysinfo::cgroup_version(),
                "plugins": list.iter().map(|p| serde_json::json!({
                    "type": p.kind, "id": p.id, "status": p.status.as_str(), "reason": p.reason,
                })).collect::<Vec<_>>(),
            });
            info.insert("config".to_string(), config.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", rt, "Runtime"),
                    condition("NetworkReady", link, "Network"),
                ],
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
                user_namespaces_host_network: false,
                mount_options: false,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        // nookd makes its containers' cgroup directories itself (no systemd scopes)
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        _r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        // the only field is the pod CIDR, which nook's own network config decides
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> R<super::events::Stream> {
        super::events::stream(self.d.clone()).map(Response::new)
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        super::sandbox::run(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        super::sandbox::stop(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        super::sandbox::remove(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        super::sandbox::status(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        super::sandbox::list(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        super::containers::create(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        super::containers::start(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        super::containers::stop(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        super::containers::remove(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        super::containers::list(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        super::containers::status(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        super::containers::update_resources(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        super::containers::reopen_log(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        super::containers::exec_sync(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        self.stream.exec(r.into_inner()).await.map(Response::new)
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        self.stream.attach(r.into_inner()).await.map(Response::new)
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        self.stream
            .port_forward(r.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        super::stats::container(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        super::stats::list_containers(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        super::stats::pod(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        super::stats::list_pods(&self.d, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        Err(not_yet("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(super::metrics::descriptors()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        super::metrics::pods(&self.d).await.map(Response::new)
    }
}
