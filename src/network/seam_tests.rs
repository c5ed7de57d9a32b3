//! The manager's rollback and reconcile logic, driven through the in-memory kernel
//! ([`FakeKernel`]) without root: every step of attach, detach, network create and ensure is
//! made to fail (or to "crash", a panic standing in for a killed daemon), and what is left —
//! in the fake kernel, on disk, in the records — is checked against what should be.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::kernel::fake::{FakeKernel, Kind};
use super::manager::*;
use crate::events::Publisher;
use crate::metadata::{Store, NETWORKS};

struct Env {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    kernel: Arc<FakeKernel>,
    m: Manager,
}

impl Env {
    fn host(&self) -> PathBuf {
        self.dir.path().join("pause")
    }

    fn hosts_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.hosts"))
    }

    /// A manager on the same store and kernel, as after a daemon restart.
    fn restart(&mut self) {
        self.m = manager(self.dir.path(), &self.store, &self.kernel);
    }

    fn attach(&self, id: &str, network: &str) -> crate::error::Result<Attachment> {
        let hosts = self.hosts_file(id);
        std::fs::write(&hosts, "").unwrap();
        self.m.attach(
            "default",
            id,
            &AttachRequest {
                container_name: format!("{id}-name"),
                network: network.into(),
                hosts_path: Some(hosts),
                ..Default::default()
            },
        )
    }
}

fn manager(dir: &Path, store: &Arc<Store>, kernel: &Arc<FakeKernel>) -> Manager {
    Manager::new(
        store.clone(),
        Settings {
            netns: dir.join("pause"),
            netns_dir: dir.join("netns"),
            driver: "slirp4netns".into(),
            mtu: 65520,
            bridge: "nook0".into(),
            subnet: "10.88.0.0/16".into(),
            subnet6: "fd88::/64".into(),
            host_resolv: "nameserver 127.0.0.53\n".into(),
        },
        Publisher::discard(),
    )
    .with_kernel(kernel.clone())
}

/// An initialized manager on a fake kernel, with container `peer` attached to the default
/// network (its hosts file shows who else is there).
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kernel = Arc::new(FakeKernel::new(&dir.path().join("pause")));
    let store = Arc::new(Store::open(&dir.path().join("meta.redb")).unwrap());
    let m = manager(dir.path(), &store, &kernel);
    let e = Env {
        dir,
        store,
        kernel,
        m,
    };
    e.m.init().unwrap();
    e.attach("peer", "").unwrap();
    e
}

/// Everything the network subsystem holds belongs to exactly the containers `alive`: records,
/// addresses, veths on the containers' side, namespaces (in the kernel and on disk), and the
/// peers' hosts files name nobody else.
fn assert_only(e: &Env, alive: &[&str]) {
    let alive: BTreeSet<String> = alive.iter().map(|s| s.to_string()).collect();
    let recs: Vec<AttachmentRecord> = e
        .store
        .list_all::<AttachmentRecord>(NETWORKS)
        .unwrap()
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let ids: BTreeSet<String> = recs.iter().map(|a| a.container_id.clone()).collect();
    assert_eq!(ids, alive, "attachment records");
    let st = e.kernel.state();
    // addresses
    let mut held = BTreeSet::new();
    for n in e.m.list().unwrap() {
        held.extend(n.record.pool.held.values().cloned());
    }
    let want: BTreeSet<String> = recs
        .iter()
        .filter(|a| a.mode == Mode::Bridge)
        .map(|a| format!("default/{}", a.container_id))
        .collect();
    assert_eq!(held, want, "addresses held");
    // veths in the containers' namespace, each on its bridge and up
    let veths: BTreeSet<String> = st
        .links(&e.host())
        .into_iter()
        .filter(|l| l.starts_with("nk"))
        .collect();
    let want: BTreeSet<String> = recs.iter().filter_map(|a| a.veth.clone()).collect();
    assert_eq!(veths, want, "veths");
    for v in &veths {
        let l = &st.namespaces[&e.host()][v];
        assert!(l.up && l.master.is_some(), "{v} is half made: {l:?}");
    }
    // namespaces, in the kernel and their files
    let ns: BTreeSet<PathBuf> = st
        .namespaces
        .keys()
        .filter(|p| **p != e.host())
        .cloned()
        .collect();
    let want: BTreeSet<PathBuf> = recs
        .iter()
        .filter(|a| a.mode != Mode::Host)
        .map(|a| a.netns_path.clone())
        .collect();
    assert_eq!(ns, want, "namespaces");
    let files: BTreeSet<PathBuf> = std::fs::read_dir(e.dir.path().join("netns/default"))
        .map(|rd| rd.flatten().map(|f| f.path()).collect())
        .unwrap_or_default();
    assert_eq!(files, want, "namespace files");
    // the hosts files of those alive name only those alive
    for a in &recs {
        let h = std::fs::read_to_string(e.hosts_file(&a.container_id)).unwrap();
        for l in h.lines().filter(|l| l.contains("-name")) {
            let name = l.split_whitespace().last().unwrap();
            assert!(
                alive.contains(name.trim_end_matches("-name")),
                "{}'s hosts file names {name}: {h}",
                a.container_id
            );
        }
    }
}

/// The kernel calls a successful attach of a second container makes.
fn attach_calls() -> usize {
    let e = env();
    let before = e.kernel.faults.count();
    e.attach("victim", "").unwrap();
    assert_only(&e, &["peer", "victim"]);
    let h = std::fs::read_to_string(e.hosts_file("peer")).unwrap();
    assert!(h.contains("victim-name"), "{h}");
    e.kernel.faults.count() - before
}

#[test]
fn attach_failing_at_each_step_leaves_nothing() {
    let n = attach_calls();
    assert!(n >= 4, "attach made {n} kernel calls");
    for k in 1..=n {
        let e = env();
        e.kernel.faults.fail_nth(k);
        let err = e.attach("victim", "").unwrap_err().to_string();
        assert!(err.contains("injected failure"), "step {k}: {err}");
        assert_only(&e, &["peer"]);
        // and the next attempt works
        e.attach("victim", "").unwrap();
        assert_only(&e, &["peer", "victim"]);
    }
}

#[test]
fn attach_none_failing_leaves_nothing() {
    let e = env();
    e.kernel.faults.fail_nth(1);
    assert!(e.attach("victim", "none").is_err());
    assert_only(&e, &["peer"]);
    e.attach("victim", "none").unwrap();
    assert_only(&e, &["peer", "victim"]);
}

/// The kernel fails from step k on, the rollback's own calls too: what the rollback could
/// not undo, reconcile (the next start, the container never recorded) removes.
#[test]
fn attach_and_its_rollback_failing_then_reconcile_converges() {
    let n = attach_calls();
    for k in 1..=n {
        let mut e = env();
        e.kernel.faults.fail_from(k);
        assert!(e.attach("victim", "").is_err(), "step {k}");
        e.kernel.faults.heal();
        e.restart();
        let r =
            e.m.reconcile(|_, id| (id == "peer").then_some(true))
                .unwrap();
        assert_only(&e, &["peer"]);
        assert!(r.attachments <= 1, "{r:?}");
    }
}

/// A crash (the daemon killed) between any two steps of attach: reconcile at the next start
/// removes the half-made network of the container that was never recorded.
#[test]
fn crash_during_attach_then_reconcile_converges() {
    let n = attach_calls();
    for k in 1..=n {
        let mut e = env();
        e.kernel.faults.crash_at(k);
        let r = catch_unwind(AssertUnwindSafe(|| e.attach("victim", "")));
        assert!(r.is_err(), "step {k} did not crash");
        e.restart();
        e.m.reconcile(|_, id| (id == "peer").then_some(true))
            .unwrap();
        assert_only(&e, &["peer"]);
        e.attach("victim", "").unwrap();
        assert_only(&e, &["peer", "victim"]);
    }
}

/// A crash between two steps of attach of a container that is recorded (a restart of a
/// stopped container re-plumbing it): reconcile keeps it, and ensure makes it whole.
#[test]
fn crash_during_replumb_then_ensure_makes_it_whole() {
    // ensure first removes the stale namespace file, then plumbs as attach does
    let n = attach_calls() + 1;
    for k in 1..=n {
        let mut e = env();
        let before = e.attach("victim", "").unwrap();
        // a reboot: the kernel forgot everything but the containers' namespace
        e.kernel = Arc::new(FakeKernel::new(&e.host()));
        let _ = std::fs::remove_file(&before.netns_path);
        e.restart();
        e.m.init().unwrap();
        e.kernel.faults.crash_at(k);
        let r = catch_unwind(AssertUnwindSafe(|| e.m.ensure("default", "victim")));
        assert!(r.is_err(), "step {k} did not crash");
        e.restart();
        e.m.reconcile(|_, id| Some(id == "peer")).unwrap();
        e.m.ensure("default", "victim").unwrap();
        e.m.ensure("default", "peer").unwrap();
        assert_only(&e, &["peer", "victim"]);
        // same address, eth0 configured inside
        let after = e.m.view_of("default", "victim").unwrap().unwrap();
        assert_eq!(after.ip, before.ip);
        let st = e.kernel.state();
        let eth0 = &st.namespaces[&after.netns_path][CONTAINER_IF];
        assert!(eth0.up, "{eth0:?}");
        assert_eq!(eth0.addrs.len(), 2, "{eth0:?}");
        assert_eq!(st.routes[&after.netns_path].len(), 2);
    }
}

#[test]
fn detach_failing_or_crashing_then_reconcile_converges() {
    for crash in [false, true] {
        for k in 1..=3 {
            let mut e = env();
            e.attach("victim", "").unwrap();
            let veth = veth_name("default", "victim");
            if crash {
                e.kernel.faults.crash_at(k);
                let _ = catch_unwind(AssertUnwindSafe(|| e.m.detach("default", "victim")));
            } else {
                e.kernel.faults.fail_from(k);
                let _ = e.m.detach("default", "victim");
            }
            // the veth goes on a thread of its own: let it finish
            for _ in 0..100 {
                if !e.kernel.faults.calls().iter().any(|c| c.contains(&veth)) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            e.kernel.faults.heal();
            e.restart();
            e.m.reconcile(|_, id| (id == "peer").then_some(true))
                .unwrap();
            assert_only(&e, &["peer"]);
        }
    }
}

#[test]
fn detach_removes_everything() {
    let e = env();
    e.attach("victim", "").unwrap();
    e.attach("quiet", "none").unwrap();
    e.m.detach("default", "quiet").unwrap();
    e.m.detach("default", "victim").unwrap();
    let veth = veth_name("default", "victim");
    for _ in 0..200 {
        if !e.kernel.state().links(&e.host()).contains(&veth) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_only(&e, &["peer"]);
    let h = std::fs::read_to_string(e.hosts_file("peer")).unwrap();
    assert!(!h.contains("victim"), "{h}");
}

/// `nook network create` failing at each kernel step leaves no record, no bridge and no
/// isolation rule for it.
#[test]
fn network_create_failing_at_each_step_leaves_nothing() {
    let e = env();
    let before = e.kernel.faults.count();
    e.m.create("probe", None, BTreeMap::new()).unwrap();
    let n = e.kernel.faults.count() - before;
    e.m.remove("probe").unwrap();
    assert!(n >= 2, "{n}");
    for k in 1..=n {
        let e = env();
        let nft_before = e.kernel.state().nft[&e.host()].len();
        e.kernel.faults.fail_nth(k);
        assert!(
            e.m.create("backend", None, BTreeMap::new()).is_err(),
            "step {k}"
        );
        assert!(e.m.inspect("backend").is_err());
        let st = e.kernel.state();
        let bridges: Vec<String> = st.namespaces[&e.host()]
            .iter()
            .filter(|(_, l)| l.kind == Kind::Bridge)
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(bridges, ["nook0"], "step {k}");
        let scripts = &st.nft[&e.host()];
        assert!(!scripts.last().unwrap().contains("nook1"), "step {k}");
        assert_eq!(scripts.len(), nft_before, "step {k}");
        // and it can be made afterwards, isolated from the default network
        e.m.create("backend", None, BTreeMap::new()).unwrap();
        let st = e.kernel.state();
        let last = st.nft[&e.host()].last().unwrap();
        assert!(
            last.contains("\"nook1\"") && last.contains("\"nook0\""),
            "{last}"
        );
        assert!(st.namespaces[&e.host()]["nook1"].up);
    }
}

#[test]
fn network_remove_failing_keeps_it_whole() {
    let e = env();
    e.m.create("backend", None, BTreeMap::new()).unwrap();
    e.kernel.faults.fail_nth(1); // deleting the bridge
    assert!(e.m.remove("backend").is_err());
    assert!(e.m.inspect("backend").is_ok());
    assert!(e.kernel.state().links(&e.host()).contains(&"nook1".into()));
    e.m.remove("backend").unwrap();
    assert!(e.m.inspect("backend").is_err());
    let st = e.kernel.state();
    assert!(!st.links(&e.host()).contains(&"nook1".into()));
    assert!(!st.nft[&e.host()].last().unwrap().contains("nook1"));
}

/// Reconcile finds the strays a crash leaves behind without any record: a veth, a
/// namespace file, an address nobody holds; running containers are kept as they are.
#[test]
fn reconcile_removes_strays_and_keeps_the_running() {
    let e = env();
    e.attach("victim", "").unwrap();
    let stray_ns = e.dir.path().join("netns/default/stray");
    use super::kernel::NetKernel;
    e.kernel.create_netns(&stray_ns).unwrap();
    e.kernel
        .add_veth(
            &e.host(),
            "nk0123456789ab",
            "nook0",
            &stray_ns,
            "eth0",
            1500,
        )
        .unwrap();
    e.store
        .write(|tx| {
            let mut n: NetworkRecord = tx
                .get_raw(crate::metadata::SYSTEM, &net_key(DEFAULT_NETWORK))?
                .unwrap();
            n.pool.allocate("default/ghost")?;
            tx.put_raw(crate::metadata::SYSTEM, &net_key(DEFAULT_NETWORK), &n)
        })
        .unwrap();
    let r =
        e.m.reconcile(|_, id| ["peer", "victim"].contains(&id).then_some(true))
            .unwrap();
    assert_eq!(
        r,
        Reconciled {
            attachments: 0,
            veths: 1,
            netns: 1,
            addresses: 1
        }
    );
    assert_only(&e, &["peer", "victim"]);
}
