//! Named volumes end to end: a real nookd as the unprivileged test user, `nook volume ...` and
//! `nook run -v NAME:/path`, with an image whose directory at the mount path is owned by a
//! non-root user (docker's copy-up keeps that owner, mapped as the rootfs is).

mod common;

use std::os::unix::fs::MetadataExt;

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

const IMG: &str = "vol:latest";

/// A busybox image with /var/lib/db owned by 1234:2345 (mode 0750) holding `seed`.
fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut files = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("etc"),
        FileSpec::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        FileSpec::file("etc/group", "root:x:0:\n"),
        FileSpec::dir("tmp"),
        FileSpec::dir("var"),
        FileSpec::dir("var/lib"),
        FileSpec::dir("var/lib/db").owned(1234, 2345, 0o750),
        FileSpec::file("var/lib/db/seed", "seed\n").owned(1234, 2345, 0o640),
    ];
    for a in ["sh", "cat", "echo", "stat", "ls", "sleep", "true"] {
        files.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[files.clone()], false, &["sh"]);
    // the same with `VOLUME /var/lib/db`
    let with_volume = TestImage::build_with(
        &[files],
        false,
        &["sh"],
        &nook::image::manifest::Platform::host(),
        serde_json::json!({"Volumes": {"/var/lib/db": {}}}),
    );
    docker_archive(&[(&[IMG], &img), (&[IMG_VOLUME], &with_volume)])
}

/// [`IMG`] declaring `VOLUME /var/lib/db`.
const IMG_VOLUME: &str = "volimg:latest";

fn daemon() -> Nookd {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    d
}

/// The first subordinate uid and gid of the test user (container uid N is host uid
/// start + N - 1: the user itself is 0).
fn sub_start() -> (u32, u32) {
    let read = |f: &str| -> u32 {
        std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .find_map(|l| {
                let mut it = l.split(':');
                (it.next() == Some(common::USER)).then(|| it.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{} has no entry in {f}", common::USER))
    };
    (read("/etc/subuid"), read("/etc/subgid"))
}

fn names(d: &Nookd) -> Vec<String> {
    d.nook(&["volume", "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn create_copy_up_with_owners_and_data_that_outlives_containers_and_nookd() {
    let mut d = daemon();
    assert_eq!(
        d.nook(&["volume", "create", "data", "-l", "app=db"])
            .ok()
            .trim(),
        "data"
    );
    // create is idempotent, as docker's
    d.nook(&["volume", "create", "data"]).ok();
    let js: serde_json::Value =
        serde_json::from_str(&d.nook(&["volume", "ls", "--format", "json"]).ok()).unwrap();
    assert_eq!(js[0]["name"], "data", "{js}");
    assert_eq!(js[0]["driver"], "local");
    assert_eq!(js[0]["labels"]["app"], "db");

    // the first mount fills the empty volume from the image, owners and modes kept
    let out = d
        .nook(&[
            "run",
            "--rm",
            "-v",
            "data:/var/lib/db",
            IMG,
            "sh",
            "-c",
            "stat -c '%u:%g %a' /var/lib/db /var/lib/db/seed; cat /var/lib/db/seed; echo new > /var/lib/db/new",
        ])
        .ok();
    assert_eq!(out, "1234:2345 750\n1234:2345 640\nseed\n");
    // on the host: the ids mapped as the rootfs's are (container 1234 → start + 1233)
    let (su, sg) = sub_start();
    let info: serde_json::Value =
        serde_json::from_str(&d.nook(&["volume", "inspect", "data"]).ok()).unwrap();
    let mp = std::path::PathBuf::from(info[0]["mountpoint"].as_str().unwrap());
    assert!(mp.starts_with(&d.root), "{}", mp.display());
    let m = std::fs::metadata(mp.join("seed")).unwrap();
    assert_eq!((m.uid(), m.gid()), (su + 1233, sg + 2344));
    let m = std::fs::metadata(&mp).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (su + 1233, sg + 2344, 0o750)
    );

    // the data outlives the container; a volume with content is not filled again
    let out = d
        .nook(&[
            "run",
            "--rm",
            "-v",
            "data:/var/lib/db",
            IMG,
            "cat",
            "/var/lib/db/new",
        ])
        .ok();
    assert_eq!(out, "new\n");
    // read-only
    let e = d
        .nook(&[
            "run",
            "--rm",
            "-v",
            "data:/var/lib/db:ro",
            IMG,
            "sh",
            "-c",
            "echo x > /var/lib/db/ro",
        ])
        .fails();
    assert!(e.contains("Read-only file system"), "{e}");

    // a name used for the first time makes the volume; nocopy leaves it empty
    let out = d
        .nook(&[
            "run",
            "--rm",
            "-v",
            "fresh:/var/lib/db",
            IMG,
            "cat",
            "/var/lib/db/seed",
        ])
        .ok();
    assert_eq!(out, "seed\n");
    let out = d
        .nook(&[
            "run",
            "--rm",
            "-v",
            "nc:/var/lib/db:nocopy",
            IMG,
            "ls",
            "-A",
            "/var/lib/db",
        ])
        .ok();
    assert_eq!(out, "");
    let mut n = names(&d);
    n.sort();
    assert_eq!(n, ["data", "fresh", "nc"]);

    // in use (running or only created): refused, naming the container
    d.nook(&[
        "run",
        "-d",
        "--name",
        "user1",
        "-v",
        "data:/var/lib/db",
        IMG,
        "sleep",
        "300",
    ])
    .ok();
    d.nook(&["create", "--name", "holder", "-v", "fresh:/x", IMG, "true"])
        .ok();
    let e = d.nook(&["volume", "rm", "data"]).fails();
    assert!(e.contains("in use by container user1"), "{e}");
    let e = d.nook(&["volume", "rm", "fresh"]).fails();
    assert!(e.contains("holder"), "{e}");
    let info: serde_json::Value =
        serde_json::from_str(&d.nook(&["volume", "inspect", "data"]).ok()).unwrap();
    assert_eq!(info[0]["containers"], serde_json::json!(["user1"]));

    // nookd restarts: volumes, their data and their users are still there
    d.restart();
    let out = d.nook(&["exec", "user1", "cat", "/var/lib/db/new"]).ok();
    assert_eq!(out, "new\n");
    let e = d.nook(&["volume", "rm", "data"]).fails();
    assert!(e.contains("user1"), "{e}");

    // gc never collects volumes
    d.nook(&["rm", "-f", "user1", "holder"]).ok();
    d.nook(&["gc"]).ok();
    let mut n = names(&d);
    n.sort();
    assert_eq!(n, ["data", "fresh", "nc"]);
    let out = d
        .nook(&[
            "run",
            "--rm",
            "-v",
            "data:/var/lib/db",
            IMG,
            "cat",
            "/var/lib/db/new",
        ])
        .ok();
    assert_eq!(out, "new\n");

    // rm: unused now; -f makes a missing one no error
    d.nook(&["volume", "rm", "data"]).ok();
    assert!(!mp.exists(), "the data went with the volume");
    let e = d.nook(&["volume", "rm", "data"]).fails();
    assert!(e.contains("no such volume"), "{e}");
    d.nook(&["volume", "rm", "-f", "data"]).ok();
}

#[test]
fn anonymous_volumes_prune_and_refusals() {
    let d = daemon();
    // `-v /path`: an anonymous volume, removed by `rm -v`
    d.nook(&[
        "run",
        "--name",
        "anon",
        "-v",
        "/scratch",
        IMG,
        "sh",
        "-c",
        "echo a > /scratch/f",
    ])
    .ok();
    let n = names(&d);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].len(), 64, "{n:?}");
    d.nook(&["rm", "-v", "anon"]).ok();
    assert!(names(&d).is_empty());
    // an image's VOLUME gets an anonymous volume, filled from the image; a -v covering the
    // path replaces it
    let out = d
        .nook(&["run", "--name", "iv", IMG_VOLUME, "cat", "/var/lib/db/seed"])
        .ok();
    assert_eq!(out, "seed\n");
    assert_eq!(names(&d).len(), 1);
    d.nook(&["rm", "-v", "iv"]).ok();
    d.nook(&["run", "--rm", "-v", "cover:/var/lib/db", IMG_VOLUME, "true"])
        .ok();
    assert_eq!(names(&d), ["cover"]);
    d.nook(&["volume", "rm", "cover"]).ok();
    // --rm removes its anonymous volumes too; a named one stays
    d.nook(&[
        "run", "--rm", "-v", "/scratch", "-v", "kept:/k", IMG, "true",
    ])
    .ok();
    assert_eq!(names(&d), ["kept"]);
    // plain rm keeps the anonymous volume; prune takes it (anonymous only by default)
    d.nook(&["run", "--name", "a2", "-v", "/scratch", IMG, "true"])
        .ok();
    d.nook(&["rm", "a2"]).ok();
    d.nook(&["volume", "create", "lonely", "-l", "keep=yes"])
        .ok();
    assert_eq!(names(&d).len(), 3);
    let e = d.nook(&["volume", "prune"]).fails();
    assert!(e.contains("-f"), "{e}");
    let out = d.nook(&["volume", "prune", "-f"]).ok();
    assert!(out.contains("Total reclaimed space"), "{out}");
    let mut n = names(&d);
    n.sort();
    assert_eq!(n, ["kept", "lonely"]);
    // --all with a label filter, then --all
    d.nook(&["volume", "prune", "-f", "--all", "--filter", "label!=keep"])
        .ok();
    assert_eq!(names(&d), ["lonely"]);
    let out = d
        .nook(&["volume", "prune", "-f", "--all", "--format", "json"])
        .ok();
    let js: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(js["volumes"], serde_json::json!(["lonely"]), "{out}");
    assert!(names(&d).is_empty());

    // what nook cannot do is refused by name
    let e = d.nook(&["volume", "create", "-d", "nfs", "x1"]).fails();
    assert!(e.contains("\"nfs\""), "{e}");
    let e = d
        .nook(&["volume", "create", "-o", "type=tmpfs", "x1"])
        .fails();
    assert!(e.contains("\"type\""), "{e}");
    let e = d.nook(&["volume", "create", "a/b"]).fails();
    assert!(e.contains("invalid volume name"), "{e}");
    let e = d.nook(&["run", "--rm", "-v", "x:/d", IMG, "true"]).fails();
    assert!(e.contains("invalid volume"), "{e}");
    assert!(names(&d).is_empty());
}
