//! The create pipeline's rollback, driven through the in-memory mounter ([`FakeMounter`])
//! and network kernel ([`FakeKernel`]): a create failing at any privileged step, or at a
//! later step after the rootfs was mounted, leaves no record, no bundle, no snapshot, no
//! mount and no network behind.

use std::sync::Arc;

use super::*;
use crate::events::Publisher;
use crate::image::fixture::{self, FileSpec, TestImage};
use crate::metadata::{Store, NETWORKS};
use crate::network::kernel::fake::FakeKernel;
use crate::snapshot::mount::fake::FakeMounter;
use crate::snapshot::mount::Mounter;

struct Env {
    _dir: tempfile::TempDir,
    kernel: Arc<FakeKernel>,
    mounts: Arc<FakeMounter>,
    m: Arc<Manager>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&root).unwrap();
    let events = Publisher::discard();
    let store = Arc::new(Store::open(&root.join("meta.redb")).unwrap());
    crate::metadata::namespaces::ensure(&store, &events, "default").unwrap();
    let content =
        crate::content::ContentStore::open(&root.join("content"), events.clone()).unwrap();
    let img = TestImage::build(
        &[vec![
            FileSpec::dir("etc"),
            FileSpec::file("etc/motd", "hi\n"),
        ]],
        false,
        &["/bin/true"],
    );
    let tar = fixture::docker_archive(&[(&["seam:1"], &img)]);
    crate::image::archive::import(
        &content,
        &store,
        &events,
        "default",
        &tar[..],
        &Default::default(),
    )
    .unwrap();
    let snapshotters = Arc::new(
        crate::snapshot::Snapshotters::new(&root, store.clone(), "native", events.clone()).unwrap(),
    );
    let kernel = Arc::new(FakeKernel::new(&dir.path().join("pause")));
    let config = crate::config::Config::default();
    let mut s = crate::network::manager::settings_for(&config.network, 1, &state, "slirp4netns");
    s.netns = dir.path().join("pause");
    let network =
        crate::network::Manager::new(store.clone(), s, events.clone()).with_kernel(kernel.clone());
    network.init().unwrap();
    let mounts = Arc::new(FakeMounter::default());
    let (store2, root2) = (store.clone(), root.clone());
    let deps = Deps {
        gc: Arc::new(crate::gc::GcState::new(&config.gc)),
        config,
        paths: crate::config::Paths {
            root,
            state,
            address: dir.path().join("nook.sock"),
            docker: None,
        },
        store,
        content,
        snapshotters,
        network: Arc::new(network),
        events,
        cgroups: Arc::new(crate::cgroup::Cgroups::None {
            why: "unit test".into(),
            user: "test".into(),
        }),
        mounts: mounts.clone(),
        volumes: Arc::new(crate::volumes::Volumes::new(store2, &root2)),
    };
    let m = Manager::with_shim(deps, "/nonexistent/nook-shim".into());
    Env {
        _dir: dir,
        kernel,
        mounts,
        m,
    }
}

fn opts() -> CreateOptions {
    CreateOptions {
        image: "seam:1".into(),
        name: "victim".into(),
        snapshotter: "native".into(),
        ..Default::default()
    }
}

/// Nothing of any container is left: records, bundles, the containers' snapshots, mounts,
/// network records, addresses, veths, namespaces.
fn assert_nothing_left(e: &Env, step: &str) {
    let d = e.m.deps();
    assert!(
        e.m.records("default").unwrap().is_empty(),
        "{step}: a record"
    );
    let bundles = e.m.tasks.bundle_dir("default", "x");
    let left: Vec<_> = std::fs::read_dir(bundles.parent().unwrap())
        .map(|rd| rd.flatten().map(|f| f.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{step}: bundles {left:?}");
    let sn = d.snapshotters.get(Some("native")).unwrap();
    let active: Vec<_> = crate::snapshot::Snapshotter::walk(sn.as_ref(), "default")
        .unwrap()
        .into_iter()
        .filter(|i| i.labels.contains_key("nook.container"))
        .collect();
    assert!(active.is_empty(), "{step}: snapshots {active:?}");
    assert!(
        e.mounts.mounted().is_empty(),
        "{step}: {:?}",
        e.mounts.mounted()
    );
    let atts = d
        .store
        .list_all::<crate::network::manager::AttachmentRecord>(NETWORKS)
        .unwrap();
    assert!(atts.is_empty(), "{step}: attachments");
    for n in d.network.list().unwrap() {
        assert!(n.record.pool.held.is_empty(), "{step}: addresses");
    }
    let st = e.kernel.state();
    assert_eq!(
        st.namespaces.len(),
        1,
        "{step}: namespaces {:?}",
        st.namespaces.keys()
    );
    let host = st.namespaces.keys().next().unwrap();
    assert!(
        !st.links(host).iter().any(|l| l.starts_with("nk")),
        "{step}: veths"
    );
}

/// Waits until the veths deleted on threads of their own are gone.
fn settle(e: &Env) {
    for _ in 0..200 {
        let st = e.kernel.state();
        if !st
            .namespaces
            .values()
            .any(|l| l.keys().any(|k| k.starts_with("nk")))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_remove_leaves_nothing() {
    let e = env();
    let rec = e.m.create("default", opts()).await.unwrap();
    let rootfs = e.m.rootfs("default", &rec.id);
    assert_eq!(e.mounts.mounted().len(), 1);
    assert!(e.mounts.is_mounted(&rootfs));
    assert_eq!(
        e.m.deps()
            .network
            .attachment("default", &rec.id)
            .unwrap()
            .unwrap()
            .name,
        "victim"
    );
    e.m.remove("default", &rec, true).await.unwrap();
    // the veth goes on a thread of its own
    for _ in 0..200 {
        if !e
            .kernel
            .state()
            .namespaces
            .values()
            .any(|l| l.keys().any(|k| k.starts_with("nk")))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_nothing_left(&e, "remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_failing_at_each_privileged_step_leaves_nothing() {
    // the kernel calls of a successful create
    let e = env();
    let before = e.kernel.faults.count();
    e.m.create("default", opts()).await.unwrap();
    let n = e.kernel.faults.count() - before;
    assert!(n >= 4, "{n}");
    for k in 1..=n {
        let e = env();
        e.kernel.faults.fail_nth(k);
        let err = e.m.create("default", opts()).await.unwrap_err().to_string();
        assert!(err.contains("injected failure"), "network step {k}: {err}");
        assert_nothing_left(&e, &format!("network step {k}"));
        e.m.create("default", opts()).await.unwrap();
    }
    // mounting the rootfs
    let e = env();
    e.mounts.faults.fail_nth(1);
    let err = e.m.create("default", opts()).await.unwrap_err().to_string();
    assert!(err.contains("injected failure"), "mount: {err}");
    assert_nothing_left(&e, "mount");
}

/// A failure after the rootfs was mounted (here: the spec cannot be built) unmounts it and
/// removes the snapshot, the bundle and the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_failing_after_the_mount_unmounts_and_removes() {
    let e = env();
    let mut o = opts();
    o.security_opt = vec!["seccomp=not-sent.json".into()];
    let err = e.m.create("default", o).await.unwrap_err().to_string();
    assert!(err.contains("not sent"), "{err}");
    let calls = e.mounts.faults.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].starts_with("mount ") && calls[1].starts_with("unmount "),
        "{calls:?}"
    );
    assert_nothing_left(&e, "spec");
}

/// A panic at any privileged step (a bug, not a killed daemon) still undoes the create: the
/// steps run on blocking threads, whose panic skipped the rollback before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_privileged_step_of_create_still_undoes_it() {
    let e = env();
    let before = e.kernel.faults.count();
    e.m.create("default", opts()).await.unwrap();
    let n = e.kernel.faults.count() - before;
    for k in 1..=n {
        let e = env();
        e.kernel.faults.crash_at(k);
        let err = e.m.create("default", opts()).await.unwrap_err().to_string();
        assert!(err.contains("panic"), "network step {k}: {err}");
        settle(&e);
        assert_nothing_left(&e, &format!("panic at network step {k}"));
    }
    let e = env();
    e.mounts.faults.crash_at(1);
    let err = e.m.create("default", opts()).await.unwrap_err().to_string();
    assert!(err.contains("panic"), "mount: {err}");
    settle(&e);
    assert_nothing_left(&e, "panic at the mount");
}

/// What a killed nookd left mid-create (a bundle with its rootfs mounted, no record, no spec)
/// is removed by the next start's recovery; bundles of recorded containers, and any with a
/// spec, are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_removes_what_a_killed_create_left() {
    let e = env();
    let kept = e.m.create("default", opts()).await.unwrap();
    let half = e.m.tasks.bundle_dir("default", "half");
    let rootfs = half.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let bind = crate::snapshot::Mount {
        kind: "bind".into(),
        source: "/nonexistent".into(),
        options: vec!["rbind".into()],
    };
    e.mounts.mount_all(&[bind], &rootfs).unwrap();
    let specced = e.m.tasks.bundle_dir("default", "specced");
    std::fs::create_dir_all(&specced).unwrap();
    std::fs::write(specced.join("config.json"), "{}").unwrap();
    e.m.recover().await;
    assert!(!half.exists(), "the half-made bundle is still there");
    assert!(!e.mounts.is_mounted(&rootfs));
    assert!(specced.exists());
    assert!(e.m.tasks.bundle_dir("default", &kept.id).exists());
    assert!(e.mounts.is_mounted(&e.m.rootfs("default", &kept.id)));
}
