//! The Kubernetes CRI on nook's socket, driven by the real crictl (cri-tools v1.37.0, installed
//! by .ci/run with `go install` into /var/tmp/go/bin) as the unprivileged test user against a
//! nookd of that user, pulling from Debian's `docker-registry` on 127.0.0.1. What crictl does
//! is also checked through `nook -n k8s.io`: CRI's images are nook's images in that namespace.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{as_user, Nookd, Run};
use nook::image::fixture::{self, TestImage, TestRegistry, TestRegistryOptions};

/// Where .ci/run installs crictl (`NOOK_CRICTL` overrides).
fn crictl_path() -> PathBuf {
    std::env::var_os("NOOK_CRICTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/go/bin/crictl"))
}

/// Whether crictl is installed; a test without it says so in one line and passes.
fn have_crictl() -> bool {
    let p = crictl_path();
    if p.exists() {
        return true;
    }
    eprintln!(
        "skipped: no crictl at {} (.ci/run installs it: GOBIN=/var/tmp/go/bin go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0)",
        p.display()
    );
    false
}

/// Runs `crictl ARGS` as the test user against the daemon's socket.
fn crictl(d: &Nookd, args: &[&str]) -> Run {
    let endpoint = format!("unix://{}", d.address.display());
    let mut c = as_user(&d.user, &d.env(), &crictl_path().display().to_string());
    c.args([
        "--runtime-endpoint",
        &endpoint,
        "--image-endpoint",
        &endpoint,
        "--timeout",
        "60s",
    ])
    .args(args)
    .stdin(Stdio::null());
    let out = c.output().expect("running crictl");
    Run {
        out,
        what: format!("crictl {}", args.join(" ")),
    }
}

/// A scratch directory readable by the test user.
fn scratch(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/nook-cri-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

fn write_public(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn crictl_version_info_runtime_config() {
    if !have_crictl() {
        return;
    }
    let d = Nookd::start();
    let out = crictl(&d, &["version"]).ok();
    assert!(out.contains("RuntimeName:  nook"), "{out}");
    assert!(out.contains("RuntimeApiVersion:  v1"), "{out}");
    assert!(out.contains(nook::VERSION), "{out}");

    let info: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["info", "-o", "json"]).ok()).unwrap();
    let conds = info["status"]["conditions"].as_array().unwrap();
    let cond = |t: &str| {
        conds
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t} condition: {info}"))
            .clone()
    };
    assert_eq!(cond("RuntimeReady")["status"], true, "{info}");
    // NetworkReady follows nook's own link plugin: ready when `nook info` says ok, otherwise
    // false with a reason and the plugin's explanation
    let nook_info = d.nook(&["info"]).ok();
    let net = cond("NetworkReady");
    let link_ok = nook_info
        .lines()
        .any(|l| l.starts_with("Network:") && l.contains("(ok)"));
    if net["status"] == true {
        assert!(link_ok, "NetworkReady true but nook info says: {nook_info}");
    } else {
        assert!(
            net["reason"].as_str().unwrap().starts_with("Network"),
            "{net}"
        );
        assert!(!net["message"].as_str().unwrap().is_empty(), "{net}");
    }
    // verbose info carries nook's view (crictl info asks for it)
    let config = &info["config"];
    assert_eq!(config["namespace"], "k8s.io", "{info}");
    assert_eq!(config["cgroupDriver"], "cgroupfs", "{info}");

    // runtime-config answers the cgroup driver
    let out = crictl(&d, &["runtime-config"]).ok();
    assert!(out.to_lowercase().contains("cgroupfs"), "{out}");

    // what is not served yet says so, naming the call
    let err = crictl(&d, &["pods"]).fails();
    assert!(err.contains("ListPodSandbox is not implemented"), "{err}");
}

#[test]
fn crictl_pull_images_inspecti_rmi() {
    if !have_crictl() {
        return;
    }
    let dir = scratch("pull");
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let host = reg.host();
    let d = Nookd::start();
    let a = TestImage::busybox("cri", true).unwrap();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/a:1", &a)]))
        .ok();
    let name = format!("{host}/test/bb:1");
    d.nook(&["push", "local/a:1", &name]).ok();

    let out = crictl(&d, &["pull", &name]).ok();
    let config_digest = a.config_descriptor.digest.to_string();
    assert!(
        out.contains(&format!("Image is up to date for {config_digest}")),
        "{out}"
    );
    // the same image in nook's own view of k8s.io, unpacked and ready to run
    let ls = d.nook(&["-n", "k8s.io", "images", "ls", "-q"]).ok();
    assert!(ls.contains(&name), "{ls}");
    assert!(!d.nook(&["images", "ls", "-q"]).ok().contains(&name));

    let imgs: serde_json::Value =
        serde_json::from_str(&crictl(&d, &["images", "-o", "json"]).ok()).unwrap();
    let list = imgs["images"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{imgs}");
    assert_eq!(list[0]["id"], config_digest.as_str());
    assert_eq!(list[0]["repoTags"][0], name.as_str());
    assert_eq!(
        list[0]["repoDigests"][0],
        format!("{host}/test/bb@{}", a.manifest_descriptor.digest).as_str()
    );
    assert!(list[0]["size"].as_str().unwrap().parse::<u64>().unwrap() > 500_000);
    let q = crictl(&d, &["images", "-q"]).ok();
    assert_eq!(q.trim(), config_digest);

    // inspecti by tag, by id prefix and by repo digest; an unknown one is an error
    let hex = config_digest.strip_prefix("sha256:").unwrap();
    for by in [
        name.clone(),
        hex[..12].to_string(),
        format!("{host}/test/bb@{}", a.manifest_descriptor.digest),
    ] {
        let st: serde_json::Value =
            serde_json::from_str(&crictl(&d, &["inspecti", "-o", "json", &by]).ok()).unwrap();
        assert_eq!(st["status"]["id"], config_digest.as_str(), "{by}: {st}");
    }
    let err = crictl(&d, &["inspecti", &format!("{host}/test/none:1")]).fails();
    assert!(err.contains("no such image"), "{err}");

    // a missing image: the registry's answer, in one line
    let err = crictl(&d, &["pull", &format!("{host}/test/none:1")]).fails();
    assert!(err.contains("none"), "{err}");

    // imagefsinfo names the snapshotter's directory
    let fs = crictl(&d, &["imagefsinfo", "-o", "json"]).ok();
    assert!(
        fs.contains(&d.root.join("snapshots").display().to_string()),
        "{fs}"
    );

    // rmi by tag removes the image; removing it again is an error crictl reports
    crictl(&d, &["rmi", &name]).ok();
    assert_eq!(crictl(&d, &["images", "-q"]).ok().trim(), "");
    assert!(!d
        .nook(&["-n", "k8s.io", "images", "ls", "-q"])
        .ok()
        .contains(&name));
}

#[test]
fn crictl_pull_with_credentials() {
    if !have_crictl() {
        return;
    }
    let dir = scratch("auth");
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .unwrap();
    assert!(o.status.success());
    write_public(&dir.join("htpasswd"), &o.stdout);
    let reg = TestRegistry::start(
        &dir.join("reg"),
        &TestRegistryOptions {
            tls: None,
            htpasswd: Some(dir.join("htpasswd")),
        },
    )
    .unwrap();
    let host = reg.host();
    let d = Nookd::start();
    let a = TestImage::busybox("auth", true).unwrap();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/a:1", &a)]))
        .ok();
    d.nook_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        b"s3cret\n",
    )
    .ok();
    let name = format!("{host}/secure/a:1");
    d.nook(&["push", "local/a:1", &name]).ok();
    d.nook(&["logout", &host]).ok();

    // without credentials the registry refuses; with wrong ones too; with --creds it pulls
    let err = crictl(&d, &["pull", &name]).fails();
    assert!(err.contains("authentication required"), "{err}");
    let err = crictl(&d, &["pull", "--creds", "alice:wrong", &name]).fails();
    assert!(
        err.contains("refused the credentials given with the request"),
        "{err}"
    );
    crictl(&d, &["pull", "--creds", "alice:s3cret", &name]).ok();
    let q = crictl(&d, &["images", "-q"]).ok();
    assert_eq!(q.trim(), a.config_descriptor.digest.to_string());
}

/// The `NetworkReady` condition of `crictl info`.
fn network_ready(d: &Nookd) -> serde_json::Value {
    let info: serde_json::Value =
        serde_json::from_str(&crictl(d, &["info", "-o", "json"]).ok()).unwrap();
    info["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NetworkReady")
        .unwrap_or_else(|| panic!("no NetworkReady condition: {info}"))
        .clone()
}

#[test]
fn crictl_info_network_not_ready_when_link_down() {
    if !have_crictl() {
        return;
    }
    // the link (pasta or slirp4netns) dies: nookd notices within seconds, and CRI says why
    let d = Nookd::start();
    assert_eq!(network_ready(&d)["status"], true);
    let text = std::fs::read_to_string(d.state.join("netlink.pid")).unwrap();
    let pid: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let net = loop {
        let net = network_ready(&d);
        if net["status"] == false || t0.elapsed() > std::time::Duration::from_secs(15) {
            break net;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(net["status"], false, "{net}");
    assert_eq!(net["reason"], "NetworkError", "{net}");
    assert!(net["message"].as_str().unwrap().contains("link"), "{net}");

    // a daemon configured without a network: not ready, and the reason is the configuration
    let e = Nookd::start_with("[network]\ndriver = \"none\"\n");
    let net = network_ready(&e);
    assert_eq!(net["status"], false, "{net}");
    assert_eq!(net["reason"], "NetworkSkip", "{net}");
    let msg = net["message"].as_str().unwrap();
    assert!(msg.contains("disabled") && msg.contains("none"), "{net}");
}
