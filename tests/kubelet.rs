//! A real kubelet on nook's CRI door: the kubelet of Kubernetes (built from the Go module proxy
//! by tests/kubelet/build-kubelet.sh into /var/tmp/go/bin/kubelet; not in .ci/run, it takes
//! long on 2 cores) runs in standalone mode (no API server: a static pod from
//! `staticPodPath`, no kubeconfig) as the unprivileged test user inside nookd's user and mount
//! namespaces (started by tests/kubelet/run-kubelet.sh) with the feature gate
//! `KubeletInUserNamespace`, its runtime endpoint nook's socket. Ignored by default (about two
//! minutes, mostly the kubelet's grace periods and garbage collection); skipped in one line when
//! no kubelet is built:
//!
//! ```text
//! bash tests/kubelet/build-kubelet.sh
//! cargo test --test kubelet -- --ignored --nocapture
//! ```

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{as_user, free_port, KillOnDrop, Nookd, Run};
use cri::{crictl, crictl_path};
use nook::image::fixture::{self, TestImage, TestRegistry, TestRegistryOptions};

/// Where tests/kubelet/build-kubelet.sh puts the kubelet (`NOOK_KUBELET` overrides).
fn kubelet_path() -> PathBuf {
    std::env::var_os("NOOK_KUBELET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/go/bin/kubelet"))
}

/// A directory the test user owns.
fn user_dir(p: &Path, d: &Nookd) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (uid, gid) = common::ids(&d.user);
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

fn write_public(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// GET / on 127.0.0.1:port from the host ("" while nothing answers).
fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

/// `curl -k` to the kubelet's own HTTPS server (anonymous, AlwaysAllow) on 127.0.0.1.
fn kubelet_http(port: u16, method: &str, path: &str) -> Run {
    let out = std::process::Command::new("curl")
        .args(["-ksS", "--max-time", "30", "-X", method])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("running curl");
    Run {
        out,
        what: format!("curl -X {method} kubelet{path}"),
    }
}

/// The kubelet's configuration for a rootless, standalone kubelet on nook.
fn kubelet_config(d: &Nookd, manifests: &Path, logs: &Path, port: u16) -> String {
    let sock = format!("unix://{}", d.address.display());
    // NOOK_KUBELET_GATES=A,B turns more feature gates on (e.g. the alpha
    // PodAndContainerStatsFromCRI and EventedPLEG, which call nook's pod stats and events)
    let gates: String = std::env::var("NOOK_KUBELET_GATES")
        .unwrap_or_default()
        .split(',')
        .filter(|g| !g.is_empty())
        .map(|g| format!("  {g}: true\n"))
        .collect();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
featureGates:
  KubeletInUserNamespace: true
{gates}containerRuntimeEndpoint: {sock}
imageServiceEndpoint: {sock}
staticPodPath: {manifests}
podLogsDir: {logs}
fileCheckFrequency: 1s
syncFrequency: 5s
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
localStorageCapacityIsolation: false
protectKernelDefaults: false
resolvConf: ''
port: {port}
readOnlyPort: 0
healthzPort: 0
address: 127.0.0.1
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
",
        manifests = manifests.display(),
        logs = logs.display(),
    )
}

/// The static pod: busybox httpd serving on the pod's port 8080 (published on the host's
/// 127.0.0.1:`host_port`) from an emptyDir volume, a second container reading that volume and
/// fetching the page over the pod's shared localhost, and a third that exits 3 after a second
/// (restartPolicy Always: the kubelet makes it again as attempt 1, 2, ...).
fn static_pod(image: &str, host_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels:
    app: web
spec:
  terminationGracePeriodSeconds: 3
  volumes:
  - name: www
    emptyDir: {{}}
  containers:
  - name: server
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello-from-kubelet > /www/index.html && echo serving && exec busybox httpd -f -p 8080 -h /www"]
    volumeMounts:
    - name: www
      mountPath: /www
    ports:
    - containerPort: 8080
      hostPort: {host_port}
      hostIP: 127.0.0.1
  - name: client
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "until [ -s /data/index.html ]; do busybox sleep 0.2; done; echo shared: $(busybox cat /data/index.html); while true; do busybox wget -q -O - http://127.0.0.1:8080/; busybox sleep 1; done"]
    volumeMounts:
    - name: www
      mountPath: /data
  - name: flaky
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo flaky-started; busybox sleep 1; exit 3"]
"#
    )
}

/// A second static pod: a security context (user, groups, read-only root, capabilities, no new
/// privileges), a fieldRef env, exec liveness and readiness probes (ExecSync every 2 s), a
/// preStop hook, and an emptyDir of medium Memory (a tmpfs the kubelet mounts itself).
fn secure_pod(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: secure
  namespace: default
spec:
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsUser: 1000
    runAsGroup: 1000
    supplementalGroups: [2000]
  containers:
  - name: probed
    image: {image}
    command: ["sh", "-c", "echo pod=$MY_POD; busybox grep ' /tmp ' /proc/mounts; id; busybox touch /ro-test && echo WRITABLE || echo READONLY; echo ok > /tmp/ready; exec busybox sleep 1000"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
        add: ["NET_BIND_SERVICE"]
    volumeMounts:
    - name: tmp
      mountPath: /tmp
    env:
    - name: MY_POD
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    livenessProbe:
      exec:
        command: ["busybox", "cat", "/tmp/ready"]
      periodSeconds: 2
      timeoutSeconds: 2
    readinessProbe:
      exec:
        command: ["sh", "-c", "test -f /tmp/ready"]
      periodSeconds: 2
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop > /tmp/prestop"]
  volumes:
  - name: tmp
    emptyDir:
      medium: Memory
"#
    )
}

/// The kubelet as the test user in nookd's user and mount namespaces (where the test user is
/// root, as KubeletInUserNamespace expects), logging to `log`. The kubelet keeps its device
/// plugin socket at the fixed path /var/lib/kubelet/device-plugins and its log links in
/// /var/log/containers, which an unprivileged user cannot create: as rootlesskit's
/// `--copy-up=/var/lib` does for usernetes, the kubelet gets a mount namespace of its own (a
/// child of nookd's) with the test user's `var/lib` and `var/log` bound over /var/lib and
/// /var/log. Its root directory is given by its real path, which nookd sees too, and is a shared
/// mount (a peer in both namespaces) so that the kubelet's own mounts for a pod reach nookd.
/// Mounts for the kubelet, then the kubelet (`sh -c SCRIPT DIR KUBELET ARGS`).
const SPAWN_SCRIPT: &str = include_str!("kubelet/run-kubelet.sh");

fn spawn_kubelet(d: &Nookd, dir: &Path, config: &Path, log: &Path) -> Child {
    let pause = d.pause_pid().expect("no pause process");
    let out = std::fs::File::create(log).unwrap();
    let mut c = as_user(&d.user, &d.env(), "nsenter");
    c.args([
        "--preserve-credentials",
        "-U",
        "-m",
        "-t",
        &pause.to_string(),
    ])
    .args(["sh", "-c", SPAWN_SCRIPT, "run-kubelet.sh"])
    .arg(dir)
    .arg(kubelet_path())
    .arg(format!("--config={}", config.display()))
    // the same path in nookd's mount namespace, where the bind mounts the kubelet gives
    // its containers (/etc/hosts, volumes) are read
    .arg(format!(
        "--root-dir={}",
        dir.join("var/lib/kubelet").display()
    ))
    .arg(format!("--cert-dir={}", dir.join("pki").display()))
    .arg("--hostname-override=nook-node")
    .arg("--v=2")
    .stdin(Stdio::null())
    .stdout(out.try_clone().unwrap())
    .stderr(out);
    c.spawn().expect("spawning the kubelet")
}

/// The kubelet's log and nookd's, for a failure message.
fn logs(kubelet_log: &Path, d: &Nookd) -> String {
    let k = std::fs::read_to_string(kubelet_log).unwrap_or_default();
    if let Some(keep) = std::env::var_os("NOOK_KUBELET_LOG") {
        let _ = std::fs::write(keep, &k);
    }
    let tail: Vec<&str> = k.lines().rev().take(60).collect();
    let n = d.log_text();
    let ntail: Vec<&str> = n.lines().rev().take(30).collect();
    format!(
        "--- kubelet (last lines) ---\n{}\n--- nookd (last lines) ---\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        ntail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Polls `f` every 500 ms for at most `secs`; fails with the logs when it stays false.
fn wait_for(what: &str, secs: u64, kl: &Path, d: &Nookd, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: not after {secs} s\n{}",
            logs(kl, d)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore]
fn kubelet_runs_a_static_pod_on_nook() {
    if !kubelet_path().exists() || !crictl_path().exists() {
        eprintln!(
            "skipped: no kubelet at {} (bash tests/kubelet/build-kubelet.sh builds it) or no crictl",
            kubelet_path().display()
        );
        return;
    }
    let d = Nookd::start();
    let dir = d.base.join("k");
    for sub in [
        "",
        "manifests",
        "pods",
        "var",
        "var/lib",
        "var/lib/kubelet",
        "var/log",
        "pki",
    ] {
        user_dir(&dir.join(sub), &d);
    }
    let reg = TestRegistry::start(&d.base.join("reg"), &TestRegistryOptions::default()).unwrap();
    let img = TestImage::busybox("kubelet", true).unwrap();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/k:1", &img)]))
        .ok();
    let image = format!("{}/test/kubelet:1", reg.host());
    d.nook(&["push", "local/k:1", &image]).ok();

    let config = dir.join("kubelet.yaml");
    let kubelet_port = free_port();
    write_public(
        &config,
        &kubelet_config(&d, &dir.join("manifests"), &dir.join("pods"), kubelet_port),
    );
    let host_port = free_port();
    // the static pod (named web-nook-node: a static pod's name ends in its node's); the kubelet
    // pulls the image itself (PullImage through the CRI)
    write_public(
        &dir.join("manifests/web.yaml"),
        &static_pod(&image, host_port),
    );
    write_public(&dir.join("manifests/secure.yaml"), &secure_pod(&image));
    let kl = dir.join("kubelet.log");
    let mut kubelet = KillOnDrop(spawn_kubelet(&d, &dir, &config, &kl));

    let running = |name: &str| {
        crictl(
            &d,
            &[
                "ps",
                "-q",
                "--state",
                "running",
                "--name",
                name,
                "--label",
                "io.kubernetes.pod.name=web-nook-node",
            ],
        )
        .stdout()
        .trim()
        .len()
            == 64
    };
    wait_for(
        "the static pod's two containers running",
        180,
        &kl,
        &d,
        || {
            if let Ok(Some(st)) = kubelet.0.try_wait() {
                panic!("the kubelet exited ({st})\n{}", logs(&kl, &d));
            }
            running("server") && running("client")
        },
    );
    // the server answers on the published port, and the client fetched it over localhost
    wait_for("GET / on the pod's hostPort", 30, &kl, &d, || {
        http_get(host_port).contains("hello-from-kubelet")
    });
    let client_id = crictl(&d, &["ps", "-q", "--name", "client"])
        .ok()
        .trim()
        .to_string();
    wait_for("the client's log", 30, &kl, &d, || {
        crictl(&d, &["logs", &client_id])
            .stdout()
            .contains("hello-from-kubelet")
    });
    assert!(
        crictl(&d, &["logs", &client_id])
            .stdout()
            .contains("shared: hello-from-kubelet"),
        "the client did not read the emptyDir volume"
    );
    // the container that exits is made again by the kubelet (attempt 1 after a 10 s back-off)
    wait_for("the flaky container's second attempt", 90, &kl, &d, || {
        let all: serde_json::Value =
            serde_json::from_str(&crictl(&d, &["ps", "-a", "--name", "flaky", "-o", "json"]).ok())
                .unwrap();
        all["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metadata"]["attempt"].as_u64() >= Some(1))
    });
    // an exited attempt keeps its exit code (the kubelet removes all but the newest dead
    // one, so which attempt is polled for)
    wait_for(
        "an exited flaky container with exit code 3",
        30,
        &kl,
        &d,
        || {
            let ids = crictl(
                &d,
                &["ps", "-a", "--name", "flaky", "--state", "exited", "-q"],
            )
            .stdout();
            ids.lines().any(|id| {
                serde_json::from_str::<serde_json::Value>(
                    &crictl(&d, &["inspect", "-o", "json", id]).stdout(),
                )
                .is_ok_and(|st| st["status"]["exitCode"] == 3)
            })
        },
    );
    // the kubelet's pod log directory (podLogsDir/NAMESPACE_NAME_UID/CONTAINER/N.log)
    let server_id = crictl(&d, &["ps", "-q", "--name", "server"])
        .ok()
        .trim()
        .to_string();
    let st: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["inspect", "-o", "json", &server_id]).ok()).unwrap();
    let log_path = st["status"]["logPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        log_path.starts_with(&dir.join("pods").display().to_string()),
        "{st}"
    );
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains(" stdout F serving"), "{text}");

    // the kubelet's own server: container logs (the kubelet parses nook's CRI log files
    // itself), /run (ExecSync), the pods it runs
    let klogs = kubelet_http(
        kubelet_port,
        "GET",
        "/containerLogs/default/web-nook-node/client",
    )
    .ok();
    assert!(klogs.contains("hello-from-kubelet"), "{klogs}");
    let ran = kubelet_http(
        kubelet_port,
        "POST",
        "/run/default/web-nook-node/server?cmd=cat+/www/index.html",
    )
    .ok();
    assert_eq!(ran.trim(), "hello-from-kubelet");
    let pods = kubelet_http(kubelet_port, "GET", "/pods").ok();
    // CPU and memory per container from ListContainerStats (the full summary fails in the
    // kubelet's cAdvisor: see docs/kubernetes.md)
    let summary: serde_json::Value = serde_json::from_str(
        &kubelet_http(
            kubelet_port,
            "GET",
            "/stats/summary?only_cpu_and_memory=true",
        )
        .ok(),
    )
    .unwrap();
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "web-nook-node")
        .unwrap_or_else(|| panic!("{summary}"));
    let mut names: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["client", "flaky", "server"], "{pod}");
    assert!(pods.contains("\"web-nook-node\""), "{pods}");

    // the kubelet's own count of its runtime calls while the pods run: every kind made, none
    // failed (once a pod is stopping, the kubelet cancels its own in-flight probes and counts
    // those ExecSyncs as errors)
    let metrics = kubelet_http(kubelet_port, "GET", "/metrics").ok();
    let ops: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kubelet_runtime_operations_"))
        .collect();
    for op in [
        "run_podsandbox",
        "create_container",
        "exec_sync",
        "start_container",
    ] {
        let line = format!("kubelet_runtime_operations_total{{operation_type=\"{op}\"}}");
        assert!(ops.iter().any(|l| l.starts_with(&line)), "{ops:#?}");
    }
    assert!(
        !ops.iter()
            .any(|l| l.starts_with("kubelet_runtime_operations_errors_total")),
        "{ops:#?}"
    );

    // the manifest removed: the kubelet stops and removes the pod
    std::fs::remove_file(dir.join("manifests/web.yaml")).unwrap();
    wait_for("the pod removed", 120, &kl, &d, || {
        crictl(
            &d,
            &[
                "pods",
                "-q",
                "--label",
                "io.kubernetes.pod.name=web-nook-node",
            ],
        )
        .stdout()
        .trim()
        .is_empty()
    });
    // the second pod: its security context and its tmpfs as the container sees them, and its
    // probes keep passing (no restart)
    wait_for("the probed container running", 60, &kl, &d, || {
        crictl(&d, &["ps", "-q", "--state", "running", "--name", "probed"])
            .stdout()
            .trim()
            .len()
            == 64
    });
    let secure_id = crictl(&d, &["ps", "-q", "--name", "probed"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(secure_id.len(), 64, "the probed container is not running");
    let text = crictl(&d, &["logs", &secure_id]).ok();
    for want in [
        "pod=secure-nook-node",
        "tmpfs /tmp tmpfs",
        "uid=1000 gid=1000 groups=1000,2000",
        "READONLY",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    let st: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["inspect", "-o", "json", &secure_id]).ok()).unwrap();
    assert_eq!(st["status"]["metadata"]["attempt"], 0, "{st}");
    std::fs::remove_file(dir.join("manifests/secure.yaml")).unwrap();
    wait_for("every pod removed", 120, &kl, &d, || {
        crictl(&d, &["pods", "-q"]).stdout().trim().is_empty()
    });
    // what the kubelet could not do (its log is removed with the daemon's directory)
    let text = std::fs::read_to_string(&kl).unwrap_or_default();
    if let Some(keep) = std::env::var_os("NOOK_KUBELET_LOG") {
        std::fs::write(keep, &text).unwrap();
    }
    let errors = text.lines().filter(|l| l.starts_with('E')).count();
    eprintln!("the kubelet logged {errors} error lines");
    drop(kubelet);
    drop(reg);
}
