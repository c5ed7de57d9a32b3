//! Every stored fuzz input — the seed corpora (`fuzz/seeds/<target>/`) and the minimized inputs
//! of crashes the fuzzers found (`fuzz/regressions/<target>/`) — run through the same bodies the
//! `cargo fuzz` targets run (`nook::fuzzing`), without libFuzzer. A panic there is a regression.
//!
//! Layer tars named `escape-*` try to write outside the snapshot: both whiteout modes must
//! reject them, `reject-*` must fail, `ok-*` must apply (the no-escape check itself runs inside
//! `nook::fuzzing::layer_tar_in` for every input).
//!
//! `cargo test --test fuzz_regressions -- --ignored write_seeds` regenerates the seed corpora
//! from the test fixtures.

use std::path::{Path, PathBuf};

use nook::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The stored inputs of `target`: (file name, bytes).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    // the targets' scratch files (config rootfs, archive store) go under cargo's tmp dir
    static SCRATCH: std::sync::Once = std::sync::Once::new();
    SCRATCH.call_once(|| {
        std::env::set_var(
            "NOOK_FUZZ_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-regressions"),
        )
    });
    let mut out = Vec::new();
    for set in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(set).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = format!("{set}/{target}/{}", e.file_name().to_string_lossy());
            out.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

fn run_all(target: &str, f: impl Fn(&[u8])) -> usize {
    let all = inputs(target);
    assert!(!all.is_empty(), "no stored inputs for {target}");
    for (name, data) in &all {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(data)));
        assert!(r.is_ok(), "{name} panicked the {target} target");
    }
    all.len()
}

#[test]
fn reference_inputs() {
    run_all("reference", |d| {
        fuzzing::reference(d);
    });
}

#[test]
fn manifest_inputs() {
    run_all("manifest", |d| {
        fuzzing::manifest(d);
    });
}

#[test]
fn config_inputs() {
    run_all("config", |d| {
        fuzzing::config(d);
    });
}

#[test]
fn archive_inputs() {
    let imported: usize = inputs("archive")
        .iter()
        .map(|(name, data)| {
            std::panic::catch_unwind(|| fuzzing::archive(data))
                .unwrap_or_else(|_| panic!("{name} panicked the archive target"))
        })
        .sum();
    assert!(imported >= 3, "the fixture archives import ({imported})");
}

#[test]
fn www_authenticate_inputs() {
    run_all("www_authenticate", fuzzing::www_authenticate);
}

#[test]
fn layer_tar_inputs_never_escape() {
    let base = tempfile::tempdir().unwrap();
    let mut escapes = 0;
    for (name, data) in inputs("layer_tar") {
        let out = std::panic::catch_unwind(|| fuzzing::layer_tar_in(base.path(), &data))
            .unwrap_or_else(|_| panic!("{name} panicked or escaped the snapshot"));
        if name.contains("/escape-") {
            escapes += 1;
            assert!(
                out.direct.is_err() && out.overlay.is_err(),
                "{name} was not rejected: {out:?}"
            );
            for e in [out.direct.unwrap_err(), out.overlay.unwrap_err()] {
                assert!(e.contains("layer rejected"), "{name}: {e}");
            }
        } else if name.contains("/reject-") {
            assert!(
                out.direct.is_err() && out.overlay.is_err(),
                "{name} was not rejected: {out:?}"
            );
        } else if name.contains("/ok-") {
            assert!(
                out.direct.is_ok() && out.overlay.is_ok(),
                "{name} should apply: {out:?}"
            );
        }
    }
    assert!(escapes >= 5, "the escape seeds are missing ({escapes})");
    // every box was removed again
    assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Seed generation (run by hand; the output is committed)

mod seeds {
    use nook::image::fixture::{self, FileSpec, TestImage};
    use nook::image::manifest::{self, Platform};

    /// A tar entry: path, kind, link target, content.
    pub type Raw<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    pub fn tar_with(entries: &[Raw]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if kind.is_symlink() || kind.is_hard_link() {
                b.append_link(&mut h, path, link).unwrap();
            } else {
                // set_path refuses '..'; write the name bytes directly for hostile paths
                let name = h.as_old_mut();
                name.name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    pub fn layer_tar() -> Vec<(String, Vec<u8>)> {
        use tar::EntryType as T;
        let base = fixture::layer_tar(&[
            FileSpec::dir("etc"),
            FileSpec::file("etc/hostname", "box\n"),
            FileSpec::exec("usr/bin/tool", "#!/bin/sh\necho hi\n"),
            FileSpec::symlink("bin", "usr/bin"),
            FileSpec::symlink("lib/libx.so", "libc.so"),
            FileSpec::whiteout("etc/passwd"),
            FileSpec::whiteout("usr/lib"),
        ]);
        let opaque = tar_with(&[
            ("var/", T::Directory, "", b""),
            ("var/.wh..wh..opq", T::Regular, "", b""),
            ("var/new", T::Regular, "", b"x"),
            ("usr/bin/.wh.sh", T::Regular, "", b""),
        ]);
        let links = tar_with(&[
            ("data", T::Regular, "", b"payload"),
            ("data2", T::Link, "data", b""),
            ("copied", T::Link, "usr/bin/sh", b""),
            ("fifo", T::Fifo, "", b""),
            ("lib/inside", T::Regular, "", b"through an in-root symlink"),
        ]);
        let mut v = vec![
            ("ok-fixture".to_string(), base.clone()),
            ("ok-fixture-gzip".to_string(), fixture::gzip(&base)),
            (
                "ok-fixture-zstd".to_string(),
                zstd::encode_all(&base[..], 1).unwrap(),
            ),
            ("ok-opaque".to_string(), opaque),
            ("ok-links".to_string(), links),
            ("ok-empty".to_string(), Vec::new()),
        ];
        let escapes: &[(&str, &[Raw])] = &[
            ("dotdot", &[("../outside/x", T::Regular, "", b"x")]),
            ("dotdot-deep", &[("a/../../x", T::Regular, "", b"x")]),
            ("symlink-parent-up", &[("up/x", T::Regular, "", b"x")]),
            (
                "symlink-parent-out",
                &[("out/sentinel", T::Regular, "", b"x")],
            ),
            (
                "symlink-parent-abs",
                &[("abs/sentinel", T::Regular, "", b"x")],
            ),
            (
                "symlink-parent-slash",
                &[("slash/tmp/x", T::Regular, "", b"x")],
            ),
            (
                "symlink-parent-deep",
                &[("lib/deep/x", T::Regular, "", b"x")],
            ),
            (
                "new-symlink-then-write",
                &[
                    ("esc", T::Symlink, "../outside", b""),
                    ("esc/sentinel", T::Regular, "", b"x"),
                ],
            ),
            (
                "new-abs-symlink-then-write",
                &[
                    ("esc", T::Symlink, "/tmp", b""),
                    ("esc/x", T::Regular, "", b"x"),
                ],
            ),
            (
                "hardlink-out",
                &[("h", T::Link, "../outside/sentinel", b"")],
            ),
            (
                "hardlink-through-symlink",
                &[("h", T::Link, "out/sentinel", b"")],
            ),
            ("whiteout-out", &[("up/.wh.outside", T::Regular, "", b"")]),
        ];
        for (name, entries) in escapes {
            v.push((format!("escape-{name}"), tar_with(entries)));
        }
        v
    }

    pub fn images() -> (TestImage, TestImage) {
        let a = TestImage::build(
            &[vec![
                FileSpec::file("etc/hostname", "a"),
                FileSpec::symlink("bin", "usr/bin"),
            ]],
            true,
            &["sh", "-c", "echo hi"],
        );
        let b = TestImage::build_for(
            &[
                vec![FileSpec::file("x", "b")],
                vec![FileSpec::whiteout("x")],
            ],
            false,
            &["true"],
            &Platform::parse("linux/arm64/v8").unwrap(),
        );
        (a, b)
    }

    pub fn manifest() -> Vec<(String, Vec<u8>)> {
        let (a, b) = images();
        let (idx, _) = fixture::index(&[
            (&a, Platform::parse("linux/amd64").unwrap()),
            (&b, Platform::parse("linux/arm64/v8").unwrap()),
        ]);
        let docker = String::from_utf8(a.manifest.clone())
            .unwrap()
            .replace(manifest::OCI_MANIFEST, manifest::DOCKER_MANIFEST)
            .replace(manifest::OCI_CONFIG, manifest::DOCKER_CONFIG)
            .replace(manifest::OCI_LAYER_GZIP, manifest::DOCKER_LAYER_GZIP);
        let list = String::from_utf8(idx.clone())
            .unwrap()
            .replace(manifest::OCI_INDEX, manifest::DOCKER_LIST)
            .replace(manifest::OCI_MANIFEST, manifest::DOCKER_MANIFEST);
        let with = |p: u8, b: &[u8]| [&[p][..], b].concat();
        vec![
            ("oci-manifest".into(), with(0, &a.manifest)),
            ("oci-manifest-declared".into(), with(1, &b.manifest)),
            ("oci-index".into(), with(0, &idx)),
            ("oci-index-declared".into(), with(2, &idx)),
            ("docker-manifest".into(), with(3, docker.as_bytes())),
            ("docker-list".into(), with(4, list.as_bytes())),
            (
                "schema1".into(),
                with(5, br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#),
            ),
        ]
    }

    pub fn config() -> Vec<(String, Vec<u8>)> {
        let (a, b) = images();
        let full = serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {
                "User": "alice:staff", "Env": ["PATH=/bin", "A=1", "HOME=/x"],
                "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo $A"], "WorkingDir": "/srv",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}},
                "Labels": {"a": "b"}, "StopSignal": "SIGTERM"
            },
            "rootfs": {"type": "layers", "diff_ids": [
                "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]},
            "history": [{"created_by": "x", "empty_layer": true}, {"created_by": "y"}]
        });
        vec![
            ("fixture-a".into(), a.config),
            ("fixture-b".into(), b.config),
            ("full".into(), serde_json::to_vec(&full).unwrap()),
            (
                "user-uid-gid".into(),
                br#"{"architecture":"arm","os":"linux","variant":"v7","config":{"User":"1000:50","Cmd":["x"]}}"#.to_vec(),
            ),
        ]
    }

    pub fn reference() -> Vec<(String, Vec<u8>)> {
        let d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "library/busybox".into(),
            "docker.io/busybox".into(),
            "index.docker.io/library/busybox".into(),
            "localhost:5000/x/y:v1".into(),
            "127.0.0.1:5000/a-b/c__d.e".into(),
            "quay.io/a/b/c:t_1.0-x".into(),
            "[::1]:5000/x".into(),
            format!("host:5000/x/y@{d}"),
            format!("busybox:1@{d}"),
            "linux/arm64/v8".into(),
            "a/-b".into(),
            "host:port/x".into(),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("s{i:02}"), s.into_bytes()))
        .collect()
    }

    pub fn archive() -> Vec<(String, Vec<u8>)> {
        let (a, b) = images();
        vec![
            (
                "docker-archive".into(),
                fixture::docker_archive(&[(&["busybox:a", "example.com/x/y:1"], &a)]),
            ),
            (
                "oci-layout".into(),
                fixture::oci_layout(&[("localhost:5000/bb:v1", &a), ("", &b)]),
            ),
            (
                "oci-layout-index".into(),
                fixture::oci_layout_index(
                    "multi:1",
                    &[
                        (&a, Platform::parse("linux/amd64").unwrap()),
                        (&b, Platform::parse("linux/arm64/v8").unwrap()),
                    ],
                ),
            ),
        ]
    }

    pub fn www_authenticate() -> Vec<(String, Vec<u8>)> {
        [
            r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull""#,
            r#"Basic realm="Registry Realm""#,
            r#"Bearer realm=https://x/token, scope="a,b",error="insufficient_scope""#,
        ]
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("h{i}"), s.as_bytes().to_vec()))
        .collect()
    }
}

#[test]
#[ignore = "writes the seed corpora into fuzz/seeds; run by hand"]
fn write_seeds() {
    let sets = [
        ("layer_tar", seeds::layer_tar()),
        ("manifest", seeds::manifest()),
        ("config", seeds::config()),
        ("reference", seeds::reference()),
        ("www_authenticate", seeds::www_authenticate()),
        ("archive", seeds::archive()),
    ];
    for (target, files) in sets {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    let dir = fuzz_dir().join("regressions/layer_tar");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("reject-sparse-exabyte"),
        nook::image::fixture::sparse_tar("big", 1 << 60),
    )
    .unwrap();
}
