//! Compiles every `.proto` file under `proto/` into tonic services and prost messages, and
//! generates the server side of containerd's v1 services over the message types of the
//! `containerd-client` crate (which compiles containerd's own vendored protos), and
//! Kubernetes' CRI from `proto/cri/api.proto`.
//! nook's protoc comes from `protoc-bin-vendored`; containerd-client's build script needs a
//! system `protoc` (Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos: Vec<std::path::PathBuf> = std::fs::read_dir("proto")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded, so mutating the environment is sound.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    tonic_prost_build::configure().compile_protos(&protos, &[std::path::PathBuf::from("proto")])?;
    // Kubernetes' CRI (proto/cri/README.md): servers only, and the calls nook does not
    // implement answer Unimplemented by themselves
    tonic_prost_build::configure()
        .build_client(false)
        .generate_default_stubs(true)
        .compile_protos(&["proto/cri/api.proto"], &["proto/cri"])?;
    containerd_servers();
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

/// One containerd service: its proto package, name, the Rust module holding its messages, and
/// its methods as `(name, input, output, client streaming, server streaming)`; the method
/// list is containerd's api/services/*/v1/*.proto (as vendored by containerd-client 0.9).
type Methods = &'static [(&'static str, &'static str, &'static str, bool, bool)];

const CD: &str = "::containerd_client::services::v1";
/// google.protobuf.Empty: prost maps it to `()`, named through an alias (a path is needed).
const EMPTY: &str = "crate::api::containerd::Empty";

fn containerd_servers() {
    let snap = "::containerd_client::services::v1::snapshots";
    let services: &[(&str, &str, &str, Methods)] = &[
        (
            "containerd.services.version.v1",
            "Version",
            CD,
            &[("Version", EMPTY, "VersionResponse", false, false)],
        ),
        (
            "containerd.services.namespaces.v1",
            "Namespaces",
            CD,
            &[
                (
                    "Get",
                    "GetNamespaceRequest",
                    "GetNamespaceResponse",
                    false,
                    false,
                ),
                (
                    "List",
                    "ListNamespacesRequest",
                    "ListNamespacesResponse",
                    false,
                    false,
                ),
                (
                    "Create",
                    "CreateNamespaceRequest",
                    "CreateNamespaceResponse",
                    false,
                    false,
                ),
                (
                    "Update",
                    "UpdateNamespaceRequest",
                    "UpdateNamespaceResponse",
                    false,
                    false,
                ),
                ("Delete", "DeleteNamespaceRequest", EMPTY, false, false),
            ],
        ),
        (
            "containerd.services.introspection.v1",
            "Introspection",
            CD,
            &[
                ("Plugins", "PluginsRequest", "PluginsResponse", false, false),
                ("Server", EMPTY, "ServerResponse", false, false),
                (
                    "PluginInfo",
                    "PluginInfoRequest",
                    "PluginInfoResponse",
                    false,
                    false,
                ),
            ],
        ),
        (
            "containerd.services.content.v1",
            "Content",
            CD,
            &[
                ("Info", "InfoRequest", "InfoResponse", false, false),
                ("Update", "UpdateRequest", "UpdateResponse", false, false),
                (
                    "List",
                    "ListContentRequest",
                    "ListContentResponse",
                    false,
                    true,
                ),
                ("Delete", "DeleteContentRequest", EMPTY, false, false),
                (
                    "Read",
                    "ReadContentRequest",
                    "ReadContentResponse",
                    false,
                    true,
                ),
                ("Status", "StatusRequest", "StatusResponse", false, false),
                (
                    "ListStatuses",
                    "ListStatusesRequest",
                    "ListStatusesResponse",
                    false,
                    false,
                ),
                (
                    "Write",
                    "WriteContentRequest",
                    "WriteContentResponse",
                    true,
                    true,
                ),
                ("Abort", "AbortRequest", EMPTY, false, false),
            ],
        ),
        (
            "containerd.services.images.v1",
            "Images",
            CD,
            &[
                ("Get", "GetImageRequest", "GetImageResponse", false, false),
                (
                    "List",
                    "ListImagesRequest",
                    "ListImagesResponse",
                    false,
                    false,
                ),
                (
                    "Create",
                    "CreateImageRequest",
                    "CreateImageResponse",
                    false,
                    false,
                ),
                (
                    "Update",
                    "UpdateImageRequest",
                    "UpdateImageResponse",
                    false,
                    false,
                ),
                ("Delete", "DeleteImageRequest", EMPTY, false, false),
            ],
        ),
        (
            "containerd.services.leases.v1",
            "Leases",
            CD,
            &[
                ("Create", "CreateRequest", "CreateResponse", false, false),
                ("Delete", "DeleteRequest", EMPTY, false, false),
                ("List", "ListRequest", "ListResponse", false, false),
                ("AddResource", "AddResourceRequest", EMPTY, false, false),
                (
                    "DeleteResource",
                    "DeleteResourceRequest",
                    EMPTY,
                    false,
                    false,
                ),
                (
                    "ListResources",
                    "ListResourcesRequest",
                    "ListResourcesResponse",
                    false,
                    false,
                ),
            ],
        ),
        (
            "containerd.services.snapshots.v1",
            "Snapshots",
            snap,
            &[
                (
                    "Prepare",
                    "PrepareSnapshotRequest",
                    "PrepareSnapshotResponse",
                    false,
                    false,
                ),
                (
                    "View",
                    "ViewSnapshotRequest",
                    "ViewSnapshotResponse",
                    false,
                    false,
                ),
                ("Mounts", "MountsRequest", "MountsResponse", false, false),
                ("Commit", "CommitSnapshotRequest", EMPTY, false, false),
                ("Remove", "RemoveSnapshotRequest", EMPTY, false, false),
                (
                    "Stat",
                    "StatSnapshotRequest",
                    "StatSnapshotResponse",
                    false,
                    false,
                ),
                (
                    "Update",
                    "UpdateSnapshotRequest",
                    "UpdateSnapshotResponse",
                    false,
                    false,
                ),
                (
                    "List",
                    "ListSnapshotsRequest",
                    "ListSnapshotsResponse",
                    false,
                    true,
                ),
                ("Usage", "UsageRequest", "UsageResponse", false, false),
                ("Cleanup", "CleanupRequest", EMPTY, false, false),
            ],
        ),
        (
            "containerd.services.diff.v1",
            "Diff",
            CD,
            &[
                ("Apply", "ApplyRequest", "ApplyResponse", false, false),
                ("Diff", "DiffRequest", "DiffResponse", false, false),
            ],
        ),
        (
            "containerd.services.events.v1",
            "Events",
            CD,
            &[
                ("Publish", "PublishRequest", EMPTY, false, false),
                ("Forward", "ForwardRequest", EMPTY, false, false),
                (
                    "Subscribe",
                    "SubscribeRequest",
                    "::containerd_client::types::Envelope",
                    false,
                    true,
                ),
            ],
        ),
        (
            "containerd.services.containers.v1",
            "Containers",
            CD,
            &[
                (
                    "Get",
                    "GetContainerRequest",
                    "GetContainerResponse",
                    false,
                    false,
                ),
                (
                    "List",
                    "ListContainersRequest",
                    "ListContainersResponse",
                    false,
                    false,
                ),
                (
                    "ListStream",
                    "ListContainersRequest",
                    "ListContainerMessage",
                    false,
                    true,
                ),
                (
                    "Create",
                    "CreateContainerRequest",
                    "CreateContainerResponse",
                    false,
                    false,
                ),
                (
                    "Update",
                    "UpdateContainerRequest",
                    "UpdateContainerResponse",
                    false,
                    false,
                ),
                ("Delete", "DeleteContainerRequest", EMPTY, false, false),
            ],
        ),
        (
            "containerd.services.tasks.v1",
            "Tasks",
            CD,
            &[
                (
                    "Create",
                    "CreateTaskRequest",
                    "CreateTaskResponse",
                    false,
                    false,
                ),
                ("Start", "StartRequest", "StartResponse", false, false),
                (
                    "Delete",
                    "DeleteTaskRequest",
                    "DeleteResponse",
                    false,
                    false,
                ),
                (
                    "DeleteProcess",
                    "DeleteProcessRequest",
                    "DeleteResponse",
                    false,
                    false,
                ),
                ("Get", "GetRequest", "GetResponse", false, false),
                (
                    "List",
                    "ListTasksRequest",
                    "ListTasksResponse",
                    false,
                    false,
                ),
                ("Kill", "KillRequest", EMPTY, false, false),
                ("Exec", "ExecProcessRequest", EMPTY, false, false),
                ("ResizePty", "ResizePtyRequest", EMPTY, false, false),
                ("CloseIO", "CloseIoRequest", EMPTY, false, false),
                ("Pause", "PauseTaskRequest", EMPTY, false, false),
                ("Resume", "ResumeTaskRequest", EMPTY, false, false),
                (
                    "ListPids",
                    "ListPidsRequest",
                    "ListPidsResponse",
                    false,
                    false,
                ),
                (
                    "Checkpoint",
                    "CheckpointTaskRequest",
                    "CheckpointTaskResponse",
                    false,
                    false,
                ),
                ("Update", "UpdateTaskRequest", EMPTY, false, false),
                ("Metrics", "MetricsRequest", "MetricsResponse", false, false),
                ("Wait", "WaitRequest", "WaitResponse", false, false),
            ],
        ),
    ];
    let mut built = Vec::new();
    for (package, name, module, methods) in services {
        let mut b = tonic_build::manual::Service::builder()
            .name(*name)
            .package(*package);
        for (m, input, output, cs, ss) in methods.iter() {
            let ty = |t: &str| {
                if t == EMPTY || t.starts_with("::") || t.starts_with("crate::") {
                    t.to_string()
                } else {
                    format!("{module}::{t}")
                }
            };
            let mut mb = tonic_build::manual::Method::builder()
                .name(snake(m))
                .route_name(*m)
                .input_type(ty(input))
                .output_type(ty(output))
                .codec_path("tonic_prost::ProstCodec");
            if *cs {
                mb = mb.client_streaming();
            }
            if *ss {
                mb = mb.server_streaming();
            }
            b = b.method(mb.build());
        }
        built.push(b.build());
    }
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&built);
}

/// `ListStatuses` → `list_statuses`, `CloseIO` → `close_io`.
fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_upper = true;
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            if !prev_upper {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
        prev_upper = c.is_ascii_uppercase();
    }
    out
}
