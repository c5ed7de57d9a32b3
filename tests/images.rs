//! Images end to end: nookd as the unprivileged test user against Debian's real
//! `docker-registry` on 127.0.0.1 (plain, and with TLS from a CA made here plus htpasswd basic
//! auth), driven through the `nook` CLI. Test images are built from /bin/busybox.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Nookd;
use nook::content::Digest;
use nook::image::fixture::{self, FileSpec, TestImage, TestRegistry, TestRegistryOptions};

/// A scratch directory readable by the test user.
fn scratch(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/nook-img-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

fn write_public(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn images_json(d: &Nookd, ns: &str) -> Vec<serde_json::Value> {
    let out = d.nook(&["-n", ns, "images", "ls", "--format", "json"]).ok();
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

fn digest_of(d: &Nookd, ns: &str, name: &str) -> String {
    images_json(d, ns)
        .into_iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in {:?}", images_json(d, ns)))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn blob_files(d: &Nookd) -> Vec<String> {
    let dir = d.root.join("content/blobs/sha256");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn pull_push_plain_registry_and_mirror() {
    let dir = scratch("plain");
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let host = reg.host();
    let d = Nookd::start_with(&format!(
        "[registry.\"docker.io\"]\nmirrors = [\"http://{host}\"]\n"
    ));
    // two images sharing their two lower layers, imported from an OCI layout on stdin
    let a = TestImage::busybox("a", true).unwrap();
    let b = TestImage::busybox("b", true).unwrap();
    let tar = fixture::oci_layout(&[("local/a:1", &a), ("local/b:1", &b)]);
    d.nook_stdin(&["images", "import", "-"], &tar).ok();
    d.nook(&["push", "local/a:1", &format!("{host}/test/a:1")])
        .ok();
    let out = d
        .nook(&["push", "local/b:1", &format!("{host}/test/b:1")])
        .ok();
    assert!(
        out.contains("2 mounted"),
        "cross-repository mount expected: {out}"
    );

    // a fresh daemon pulls both: the shared base layer is stored once
    let e = Nookd::start();
    let out = e.nook(&["pull", &format!("{host}/test/a:1")]).ok();
    assert!(
        out.contains(&a.manifest_descriptor.digest.to_string()),
        "{out}"
    );
    e.nook(&["images", "pull", &format!("{host}/test/b:1")])
        .ok();
    let blobs = blob_files(&e);
    assert_eq!(
        blobs.len(),
        8,
        "2 manifests + 2 configs + 4 distinct layers: {blobs:?}"
    );
    let base = a.layers[0].0.digest.to_string();
    assert_eq!(blobs.iter().filter(|x| **x == base).count(), 1);
    assert_eq!(
        std::fs::read(
            e.root
                .join("content/blobs/sha256")
                .join(a.layers[0].0.digest.hex())
        )
        .unwrap(),
        a.layers[0].1
    );
    let ls = images_json(&e, "default");
    assert_eq!(ls.len(), 2);
    assert_eq!(
        ls[0]["platforms"][0],
        nook::image::Platform::host().to_string()
    );
    // push back under a new name, then pull that by digest
    e.nook(&[
        "tag",
        &format!("{host}/test/a:1"),
        &format!("{host}/copy/a:2"),
    ])
    .ok();
    e.nook(&["push", &format!("{host}/copy/a:2")]).ok();
    let by_digest = format!("{host}/copy/a@{}", a.manifest_descriptor.digest);
    let f = Nookd::start();
    f.nook(&["pull", "-q", &by_digest]).ok();
    assert_eq!(
        digest_of(&f, "default", &by_digest),
        a.manifest_descriptor.digest.to_string()
    );
    // inspect shows manifest and config
    let insp: serde_json::Value =
        serde_json::from_str(&f.nook(&["images", "inspect", &by_digest]).ok()).unwrap();
    assert_eq!(
        insp["manifests"][0]["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // content commands
    let cfg = a.config_descriptor.digest.to_string();
    let got = f.nook(&["content", "get", &cfg]).out.stdout;
    assert_eq!(got, a.config);
    assert!(f.nook(&["content", "ls", "-q"]).ok().contains(&cfg));
    assert!(f
        .nook(&["-n", "default", "content", "info", &cfg])
        .ok()
        .contains("distribution.source"));
    // removing the image keeps the blobs until gc
    f.nook(&["images", "rm", &by_digest]).ok();
    assert!(images_json(&f, "default").is_empty());
    assert!(blob_files(&f).contains(&cfg));
    // a manifest the registry does not have
    let err = f.nook(&["pull", &format!("{host}/test/a:nope")]).fails();
    assert!(err.contains("manifest unknown"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // an invalid reference
    let err = f.nook(&["pull", "Not/Valid"]).fails();
    assert!(err.contains("must be lowercase"), "{err}");

    // docker.io through the configured mirror (no internet here): library/x → the local registry
    d.nook(&["push", "local/a:1", &format!("{host}/library/mirrored:1")])
        .ok();
    let out = d.nook(&["pull", "mirrored:1"]).ok();
    assert!(out.contains("docker.io/library/mirrored:1"), "{out}");
    assert_eq!(
        digest_of(&d, "default", "docker.io/library/mirrored:1"),
        a.manifest_descriptor.digest.to_string()
    );
}

/// Makes a CA and a server certificate for 127.0.0.1 with openssl.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=nook test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn tls_registry_with_basic_auth() {
    let dir = scratch("tls");
    let (ca, cert, key) = make_certs(&dir);
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .unwrap();
    assert!(o.status.success());
    write_public(&dir.join("htpasswd"), &o.stdout);
    let reg = TestRegistry::start(
        &dir.join("reg"),
        &TestRegistryOptions {
            tls: Some((cert, key)),
            htpasswd: Some(dir.join("htpasswd")),
        },
    )
    .unwrap();
    let host = reg.host();
    let d = Nookd::start_with(&format!(
        "[registry.\"{host}\"]\nca_file = \"{}\"\n",
        ca.display()
    ));
    let a = TestImage::busybox("tls", true).unwrap();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/a:1", &a)]))
        .ok();
    let dest = format!("{host}/secure/a:1");
    // no credentials: a clear error
    let err = d.nook(&["push", "local/a:1", &dest]).fails();
    assert!(
        err.contains("authentication required by 127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("nook login"), "{err}");
    // wrong password
    let err = d
        .nook_stdin(
            &["login", "-u", "alice", "--password-stdin", &host],
            b"wrong\n",
        )
        .fails();
    assert!(err.contains("wrong username or password"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    d.nook_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        b"s3cret\n",
    )
    .ok();
    d.nook(&["push", "local/a:1", &dest]).ok();
    d.nook(&["rmi", "local/a:1"]).ok();
    // a fresh namespace pulls over TLS with the stored credentials
    d.nook(&["namespaces", "create", "other"]).ok();
    d.nook(&["-n", "other", "pull", &dest]).ok();
    assert_eq!(
        digest_of(&d, "other", &dest),
        a.manifest_descriptor.digest.to_string()
    );
    // without the CA, TLS fails with advice
    let e = Nookd::start();
    let err = e.nook(&["pull", &dest]).fails();
    assert!(
        err.contains("ca_file") || err.contains("TLS") || err.contains("certificate"),
        "{err}"
    );
    // stored credentials that became wrong
    d.nook(&["logout", &host]).ok();
    let err = d.nook(&["-n", "other", "pull", &dest]).fails();
    assert!(err.contains("authentication required"), "{err}");
}

#[test]
fn registry_stopped_mid_pull_then_resumed() {
    let dir = scratch("resume");
    let mut reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    // a 16 MB incompressible layer on top of busybox
    let mut big = vec![0u8; 16 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut layers = fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), "big");
    layers.push(vec![FileSpec::file("big.bin", big)]);
    let img = TestImage::build(&layers, false, &["sh"]);
    let d = Nookd::start();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/big:1", &img)]))
        .ok();
    d.nook(&["push", "local/big:1", &format!("{}/test/big:1", reg.host())])
        .ok();

    let pport = fixture::free_port().unwrap();
    let mut proxy = common::SlowProxy::start(pport, reg.port, 4 << 20);
    let name = format!("127.0.0.1:{pport}/test/big:1");
    let e = Nookd::start();
    let mut c = common::as_user(common::USER, &e.env(), "nook");
    c.args(["pull", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // wait until part of the big layer has arrived, then stop the registry (and the way to it)
    let ingest = e.root.join("content/ingest");
    let t0 = Instant::now();
    let arrived = loop {
        let n: u64 = std::fs::read_dir(&ingest)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if n > 2 << 20 {
            break n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the pull did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reg.stop();
    proxy.stop();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the pull should fail: {err}");
    let last = err.trim().lines().last().unwrap_or("");
    assert!(last.contains("connection refused by 127.0.0.1"), "{err}");
    assert!(images_json(&e, "default").is_empty());
    // the partial layer is kept for the next pull
    let ing = e.nook(&["content", "ingests"]).ok();
    assert!(ing.contains("fetch-sha256:"), "{ing}");

    reg.restart().unwrap();
    let _proxy = common::SlowProxy::start(pport, reg.port, 64 << 20);
    let run = e.nook(&["pull", &name]);
    let out = run.ok();
    assert!(
        out.contains(&img.manifest_descriptor.digest.to_string()),
        "{out}"
    );
    let err = run.stderr();
    assert!(
        err.contains("resuming at"),
        "the layer download should resume: {err}"
    );
    let big_digest: &Digest = &img.layers[3].0.digest;
    let data = std::fs::read(e.root.join("content/blobs/sha256").join(big_digest.hex())).unwrap();
    assert_eq!(Digest::sha256(&data), *big_digest);
    assert!(arrived > 0);
}

#[test]
fn corrupt_blob_is_refused_and_not_stored() {
    let dir = scratch("corrupt");
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let d = Nookd::start();
    let a = TestImage::busybox("c", true).unwrap();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/c:1", &a)]))
        .ok();
    d.nook(&["push", "local/c:1", &format!("{}/test/c:1", reg.host())])
        .ok();
    // flip a byte of the top layer in the registry's storage
    let victim = &a.layers[2].0.digest;
    let f = reg.blob_file(victim);
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x55;
    std::fs::write(&f, bytes).unwrap();
    let e = Nookd::start();
    let err = e
        .nook(&["pull", &format!("{}/test/c:1", reg.host())])
        .fails();
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!blob_files(&e).contains(&victim.to_string()));
    assert!(images_json(&e, "default").is_empty());
}

#[test]
fn import_docker_archive_and_export_round_trip() {
    let dir = scratch("archive");
    let d = Nookd::start();
    let a = TestImage::busybox("x", false).unwrap();
    let b = TestImage::busybox("y", false).unwrap();
    // docker save style: several images and tags in one file
    let tar = fixture::docker_archive(&[
        (&["busybox:x", "registry.example:5000/team/bb:x"], &a),
        (&["busybox:y"], &b),
    ]);
    write_public(&dir.join("docker.tar"), &tar);
    let out = d
        .nook(&["images", "import", dir.join("docker.tar").to_str().unwrap()])
        .ok();
    assert_eq!(out.lines().count(), 3, "{out}");
    let names: Vec<String> = images_json(&d, "default")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "docker.io/library/busybox:x",
            "docker.io/library/busybox:y",
            "registry.example:5000/team/bb:x"
        ]
    );
    // layers shared by the two images are stored once
    assert_eq!(blob_files(&d).len(), 2 + 2 + 4);
    let ls = d.nook(&["images", "ls"]).ok();
    assert!(ls.contains("busybox:x"), "{ls}");
    assert_eq!(d.nook(&["images", "ls", "-q"]).ok().lines().count(), 3);

    // export → import into another namespace and another daemon keeps digests
    let exp = dir.join("export.tar");
    d.nook(&[
        "save",
        "-o",
        exp.to_str().unwrap(),
        "busybox:x",
        "busybox:y",
    ])
    .ok();
    let dx = digest_of(&d, "default", "docker.io/library/busybox:x");
    let e = Nookd::start();
    let bytes = std::fs::read(&exp).unwrap();
    e.nook_stdin(&["load"], &bytes).ok();
    assert_eq!(digest_of(&e, "default", "docker.io/library/busybox:x"), dx);
    assert_eq!(blob_files(&e), {
        let mut v = blob_files(&d);
        // registry.example's image shares all its blobs with busybox:x
        v.dedup();
        v
    });
    d.nook(&["namespaces", "create", "copy"]).ok();
    d.nook(&["-n", "copy", "images", "import", exp.to_str().unwrap()])
        .ok();
    assert_eq!(digest_of(&d, "copy", "docker.io/library/busybox:x"), dx);

    // podman accepts the export too
    let pr = dir.join("podman");
    let o = Command::new("podman")
        .args([
            "--root",
            pr.join("root").to_str().unwrap(),
            "--runroot",
            pr.join("run").to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "load",
            "-i",
            exp.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let po = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "podman load: {po}");
    assert!(po.contains("busybox:x"), "{po}");

    // an OCI layout and garbage
    let oci = fixture::oci_layout(&[("quay.io/x/y:2", &a)]);
    e.nook_stdin(&["images", "import", "-"], &oci).ok();
    assert_eq!(
        digest_of(&e, "default", "quay.io/x/y:2"),
        a.manifest_descriptor.digest.to_string()
    );
    // archives written by another tool (skopeo) from our export: docker-archive and OCI archive
    // (of an OCI-typed image: skopeo 1.9 ignores Docker-typed manifests in an OCI index)
    let exp = dir.join("export-oci.tar");
    e.nook(&["images", "export", exp.to_str().unwrap(), "quay.io/x/y:2"])
        .ok();
    let sk_docker = dir.join("skopeo-docker.tar");
    let sk_oci = dir.join("skopeo-oci.tar");
    for (dst, fmt, n) in [
        (&sk_docker, "docker-archive", "d"),
        (&sk_oci, "oci-archive", "o"),
    ] {
        let o = Command::new("skopeo")
            .arg("copy")
            .arg("--quiet")
            .arg(format!("oci-archive:{}:2", exp.display()))
            .arg(format!("{fmt}:{}:example.org/sk/{n}:1", dst.display()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    e.nook(&["images", "import", sk_docker.to_str().unwrap()])
        .ok();
    e.nook(&[
        "images",
        "import",
        "--base-name",
        "example.org/sk/o",
        sk_oci.to_str().unwrap(),
    ])
    .ok();
    let insp = |n: &str| -> serde_json::Value {
        serde_json::from_str(&e.nook(&["images", "inspect", n]).ok()).unwrap()
    };
    let want = insp("quay.io/x/y:2")["manifests"][0]["config"]["rootfs"].clone();
    assert_eq!(
        insp("example.org/sk/d:1")["manifests"][0]["config"]["rootfs"],
        want
    );
    let o_name = images_json(&e, "default")
        .into_iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .find(|n| n.starts_with("docker.io/library/example") || n.starts_with("example.org/sk/o"))
        .expect("the OCI archive's image");
    assert_eq!(insp(&o_name)["manifests"][0]["config"]["rootfs"], want);
    let err = e
        .nook_stdin(&["load"], b"this is not a tar archive at all")
        .fails();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn multi_platform_index_push_pull_by_platform() {
    use nook::image::Platform;
    let dir = scratch("multi");
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let host = reg.host();
    let layers = fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), "multi");
    let here = Platform::host();
    let other = Platform::parse(if here.architecture == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    })
    .unwrap();
    let i_here = TestImage::build_for(&layers, true, &["sh"], &here);
    let i_other = TestImage::build_for(&layers, true, &["sh"], &other);
    let (_, idesc) = fixture::index(&[(&i_here, here.clone()), (&i_other, other.clone())]);
    let d = Nookd::start();
    d.nook_stdin(
        &["load"],
        &fixture::oci_layout_index(
            "local/multi:1",
            &[(&i_here, here.clone()), (&i_other, other.clone())],
        ),
    )
    .ok();
    let ls = images_json(&d, "default");
    assert_eq!(ls[0]["digest"], idesc.digest.to_string());
    assert_eq!(ls[0]["platforms"].as_array().unwrap().len(), 2, "{ls:?}");
    let name = format!("{host}/multi/bb:1");
    d.nook(&["push", "local/multi:1", &name]).ok();

    // default: the index and this machine's manifest only
    let e = Nookd::start();
    e.nook(&["pull", &name]).ok();
    assert_eq!(digest_of(&e, "default", &name), idesc.digest.to_string());
    let blobs = blob_files(&e);
    assert!(blobs.contains(&i_here.manifest_descriptor.digest.to_string()));
    assert!(!blobs.contains(&i_other.manifest_descriptor.digest.to_string()));
    // --platform picks the other one (into another namespace)
    e.nook(&["namespaces", "create", "o"]).ok();
    e.nook(&["-n", "o", "pull", "--platform", &other.to_string(), &name])
        .ok();
    let insp: serde_json::Value =
        serde_json::from_str(&e.nook(&["-n", "o", "images", "inspect", &name]).ok()).unwrap();
    assert_eq!(insp["manifests"][0]["platform"], other.to_string());
    // --all-platforms fetches both
    let f = Nookd::start();
    f.nook(&["pull", "--all-platforms", &name]).ok();
    let blobs = blob_files(&f);
    assert!(blobs.contains(&i_other.manifest_descriptor.digest.to_string()));
    assert!(blobs.contains(&i_other.config_descriptor.digest.to_string()));
    // a platform the index lacks: the error lists what it offers
    let err = f
        .nook(&["pull", "--platform", "linux/s390x", &name])
        .fails();
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    // exporting the partial pull writes this machine's manifest; importing it elsewhere works
    let exp = dir.join("partial.tar");
    e.nook(&["save", "-o", exp.to_str().unwrap(), &name]).ok();
    let g = Nookd::start();
    g.nook_stdin(&["load"], &std::fs::read(&exp).unwrap()).ok();
    assert_eq!(
        digest_of(&g, "default", &name),
        i_here.manifest_descriptor.digest.to_string()
    );
}
