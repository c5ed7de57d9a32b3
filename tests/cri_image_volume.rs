//! CRI image volumes (`Mount.image`, Kubernetes' ImageVolume) through the real crictl as the
//! unprivileged test user: an image mounted read-only into a container, whole and as a
//! sub-path, its layers' whiteouts applied, reported in ContainerStatus with the image's id,
//! and unmounted when the container goes; bad requests refused in one line at create.

mod common;
#[path = "common/cri.rs"]
mod cri;

use common::Nookd;
use cri::{
    crictl, crictl_json, have_crictl, pulled_busybox, run_pod, scratch, wait_state, write_json,
};

/// A field of crictl's JSON under its proto name or its JSON name.
fn field<'a>(v: &'a serde_json::Value, proto: &str, json: &str) -> &'a serde_json::Value {
    if v.get(proto).is_some() {
        &v[proto]
    } else {
        &v[json]
    }
}

#[test]
fn crictl_image_volume_mounts_an_image_read_only() {
    if !have_crictl() {
        return;
    }
    let dir = scratch("imagevol");
    let d = Nookd::start();
    let mut regs = Vec::new();
    let image = pulled_busybox(&d, &dir, &mut regs);
    let image_id = crictl_json(&d, &["inspecti", &image])["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = run_pod(&d, &dir, "iv");
    let config = |name: &str, mounts: serde_json::Value| {
        write_json(
            &dir.join(format!("{name}.json")),
            &serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": image},
                "command": ["busybox", "sleep", "600"],
                "mounts": mounts,
            }),
        )
    };
    let c = config(
        "c",
        serde_json::json!([
            {"container_path": "/mnt/img", "readonly": true, "image": {"image": image}},
            {"container_path": "/mnt/etc", "readonly": true, "image": {"image": image},
             "image_sub_path": "etc"},
        ]),
    );
    let id = crictl(&d, &["create", &pod.0, &c, &pod.1])
        .ok()
        .trim()
        .to_string();
    crictl(&d, &["start", &id]).ok();
    wait_state(&d, &id, "CONTAINER_RUNNING");
    let ex = |args: &[&str]| {
        let mut a = vec!["exec", "-s", id.as_str()];
        a.extend_from_slice(args);
        crictl(&d, &a)
    };
    // the whole image, its programs runnable (not noexec), the last layer's files and whiteouts
    assert_eq!(
        ex(&["/mnt/img/bin/busybox", "echo", "ran"]).ok().trim(),
        "ran"
    );
    assert_eq!(
        ex(&["cat", "/mnt/img/etc/passwd"]).ok().trim(),
        "root:x:0:0:root:/root:/bin/sh"
    );
    assert_eq!(ex(&["cat", "/mnt/img/etc/extra"]).ok().trim(), "pod");
    assert_ne!(
        ex(&["ls", "/mnt/img/etc/motd"]).code(),
        0,
        "a whiteout is applied"
    );
    // read-only
    let err = ex(&["busybox", "touch", "/mnt/img/new"]).fails();
    assert!(err.contains("Read-only file system"), "{err}");
    // the sub-path: the image's /etc at /mnt/etc, and nothing above it
    assert_eq!(
        ex(&["cat", "/mnt/etc/passwd"]).ok().trim(),
        "root:x:0:0:root:/root:/bin/sh"
    );
    assert_ne!(ex(&["ls", "/mnt/etc/bin"]).code(), 0);
    // ContainerStatus names the image and its id for each image volume
    let st = crictl_json(&d, &["inspect", &id]);
    let mounts = st["status"]["mounts"].as_array().expect("mounts").clone();
    for (path, sub) in [("/mnt/img", ""), ("/mnt/etc", "etc")] {
        let m = mounts
            .iter()
            .find(|m| field(m, "container_path", "containerPath") == path)
            .unwrap_or_else(|| panic!("no mount at {path}: {st}"));
        assert_eq!(
            field(&m["image"], "image_ref", "imageRef"),
            &image_id[..],
            "{m}"
        );
        assert_eq!(m["readonly"], true, "{m}");
        let got = field(m, "image_sub_path", "imageSubPath")
            .as_str()
            .unwrap_or("");
        assert_eq!(got, sub, "{m}");
    }
    // the views are mounted in nookd's mount namespace while the container lives
    let mounted = || {
        d.in_ns("grep -c image-volumes /proc/self/mountinfo || true")
            .ok()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(mounted(), 2);
    let views = d.nook(&["-n", "k8s.io", "snapshots", "ls"]).ok();
    assert_eq!(views.matches("-image-volume-").count(), 2, "{views}");
    // and are gone with it
    crictl(&d, &["stop", "-t", "0", &id]).ok();
    crictl(&d, &["rm", &id]).ok();
    assert_eq!(mounted(), 0);

    // refused at create, in one line, with nothing left behind
    for (name, mounts, want) in [
        (
            "rw",
            serde_json::json!([{"container_path": "/mnt/img", "image": {"image": image}}]),
            "image volumes are read-only",
        ),
        (
            "nosub",
            serde_json::json!([{"container_path": "/mnt/x", "readonly": true,
                "image": {"image": image}, "image_sub_path": "no/such/dir"}]),
            "has no \\\"no/such/dir",
        ),
        (
            "escape",
            serde_json::json!([{"container_path": "/mnt/x", "readonly": true,
                "image": {"image": image}, "image_sub_path": "etc/../../x"}]),
            "must not contain",
        ),
        (
            "absent",
            serde_json::json!([{"container_path": "/mnt/x", "readonly": true,
                "image": {"image": "127.0.0.1:1/no/such:image"}}]),
            "pull it first",
        ),
    ] {
        let err = crictl(&d, &["create", &pod.0, &config(name, mounts), &pod.1]).fails();
        assert!(err.contains(want), "{name}: {err}");
    }
    assert_eq!(crictl(&d, &["ps", "-a", "-q"]).ok().trim(), "");
    assert_eq!(mounted(), 0);
    crictl(&d, &["rmp", "-f", &pod.0]).ok();
}
