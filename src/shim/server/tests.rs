//! The shim's answers when the OCI runtime fails, driven through the in-memory runtime
//! ([`FakeRuntime`]) without root: a failed create is reported and the half-made container
//! deleted; a failed start, kill, pause, resume or delete is reported to the client and leaves
//! the task's status as it was.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::oci::fake::{FakeRuntime, FAKE_PID};
use super::{handle, Shim};
use crate::shim::{Request, Response, ShimConfig, TaskStatus};

const ID: &str = "c1";

fn shim(start: bool) -> (tempfile::TempDir, Arc<FakeRuntime>, Arc<Shim>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ShimConfig {
        id: ID.into(),
        runtime: "fake-runc".into(),
        runtime_args: Vec::new(),
        runtime_root: dir.path().join("runc").to_string_lossy().into(),
        tty: false,
        stdin: false,
        start,
        hold_output: false,
        ports: Vec::new(),
        port_fds: Vec::new(),
        relay: None,
        cri_log: None,
        cri_log_max_line: 0,
    };
    let rt = Arc::new(FakeRuntime::default());
    let s = Shim::new(cfg, dir.path().to_path_buf(), None, None, rt.clone());
    (dir, rt, s)
}

/// One request over a connection, as nookd sends it; the answer line.
async fn ask(shim: &Arc<Shim>, req: Request) -> Response {
    let (a, b) = UnixStream::pair().unwrap();
    let served = tokio::spawn(handle(shim.clone(), b));
    let (r, mut w) = a.into_split();
    let mut line = serde_json::to_string(&req).unwrap();
    line.push('\n');
    w.write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    BufReader::new(r).read_line(&mut answer).await.unwrap();
    served.await.unwrap();
    serde_json::from_str(&answer).unwrap()
}

async fn status(shim: &Arc<Shim>) -> TaskStatus {
    match ask(shim, Request::State).await {
        Response::State(s) => s.status,
        other => panic!("state: {other:?}"),
    }
}

fn assert_injected(r: Response, what: &str) {
    match r {
        Response::Error { message } => {
            assert!(message.contains("injected failure"), "{what}: {message}")
        }
        other => panic!("{what}: the runtime failed but the shim answered {other:?}"),
    }
}

#[tokio::test]
async fn create_failure_is_reported_and_the_half_made_container_deleted() {
    for start in [false, true] {
        let (_d, rt, shim) = shim(start);
        rt.faults.fail_nth(1);
        let e = shim.create_or_delete().await.unwrap_err();
        assert!(e.contains("injected failure"), "{e}");
        assert_eq!(rt.state(ID), None, "the half-made container was left");
        let calls = rt.faults.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].starts_with(if start {
            "run run --detach"
        } else {
            "create create"
        }));
        assert_eq!(calls[1], format!("delete delete --force {ID}"));
    }
}

#[tokio::test]
async fn create_and_cleanup_failing_reports_the_create_error() {
    let (_d, rt, shim) = shim(false);
    rt.faults.fail_from(1);
    let e = shim.create_or_delete().await.unwrap_err();
    assert!(e.starts_with("create: "), "{e}");
    assert_eq!(rt.faults.count(), 2);
}

#[tokio::test]
async fn created_then_run_at_once() {
    let (_d, rt, shim) = shim(true);
    assert_eq!(shim.create_or_delete().await.unwrap(), FAKE_PID);
    assert_eq!(status(&shim).await, TaskStatus::Running);
    assert_eq!(rt.state(ID), Some("running"));
    // start of a running task fails without asking the runtime
    let n = rt.faults.count();
    assert!(matches!(
        ask(&shim, Request::Start).await,
        Response::Error { .. }
    ));
    assert_eq!(rt.faults.count(), n);
}

#[tokio::test]
async fn start_failure_is_reported_and_the_task_stays_created() {
    let (_d, rt, shim) = shim(false);
    assert_eq!(shim.create_or_delete().await.unwrap(), FAKE_PID);
    assert_eq!(status(&shim).await, TaskStatus::Created);
    rt.faults.fail_nth(1);
    assert_injected(ask(&shim, Request::Start).await, "start");
    assert_eq!(status(&shim).await, TaskStatus::Created);
    assert_eq!(rt.state(ID), Some("created"));
    assert_eq!(ask(&shim, Request::Start).await, Response::Ok);
    assert_eq!(status(&shim).await, TaskStatus::Running);
    assert_eq!(rt.state(ID), Some("running"));
}

#[tokio::test]
async fn kill_failure_is_reported() {
    let (_d, rt, shim) = shim(true);
    shim.create_or_delete().await.unwrap();
    let kill = Request::Kill {
        signal: 9,
        all: true,
        exec_id: None,
    };
    rt.faults.fail_nth(1);
    assert_injected(ask(&shim, kill.clone()).await, "kill");
    assert_eq!(ask(&shim, kill).await, Response::Ok);
    assert_eq!(
        rt.faults.calls().last().unwrap(),
        &format!("kill kill --all {ID} 9")
    );
    // the init's own signal (no --all) goes to its pid, which does not exist here: said
    let r = ask(
        &shim,
        Request::Kill {
            signal: 15,
            all: false,
            exec_id: None,
        },
    )
    .await;
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
}

#[tokio::test]
async fn pause_and_resume_failures_keep_the_status() {
    let (_d, rt, shim) = shim(true);
    shim.create_or_delete().await.unwrap();
    rt.faults.fail_nth(1);
    assert_injected(ask(&shim, Request::Pause).await, "pause");
    assert_eq!(status(&shim).await, TaskStatus::Running);
    assert_eq!(ask(&shim, Request::Pause).await, Response::Ok);
    assert_eq!(status(&shim).await, TaskStatus::Paused);
    rt.faults.fail_nth(1);
    assert_injected(ask(&shim, Request::Resume).await, "resume");
    assert_eq!(status(&shim).await, TaskStatus::Paused);
    assert_eq!(rt.state(ID), Some("paused"));
    assert_eq!(ask(&shim, Request::Resume).await, Response::Ok);
    assert_eq!(status(&shim).await, TaskStatus::Running);
}

#[tokio::test]
async fn delete_failure_keeps_the_shim_serving() {
    let (_d, rt, shim) = shim(false);
    shim.create_or_delete().await.unwrap();
    rt.faults.fail_nth(1);
    assert_injected(ask(&shim, Request::Delete { force: true }).await, "delete");
    assert!(!shim.deleted.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(rt.state(ID), Some("created"));
    assert_eq!(status(&shim).await, TaskStatus::Created);
    assert_eq!(
        ask(&shim, Request::Delete { force: false }).await,
        Response::Ok
    );
    assert!(shim.deleted.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(rt.state(ID), None);
}

#[tokio::test]
async fn pids_come_from_the_runtime() {
    let (_d, rt, shim) = shim(true);
    shim.create_or_delete().await.unwrap();
    assert_eq!(
        ask(&shim, Request::Pids).await,
        Response::Pids {
            pids: vec![FAKE_PID]
        }
    );
    rt.faults.fail_nth(1);
    // no cgroup listing and no such pid namespace to look into: the runtime's error
    assert_injected(ask(&shim, Request::Pids).await, "ps");
}

/// nookd drops an exec request whose client died while the process started: the shim's answer
/// then finds nobody, and the process's stdin is closed all the same (else an exec'd `cat`
/// waits for input forever).
#[tokio::test]
async fn an_exec_whose_requester_left_before_the_answer_has_its_stdin_closed() {
    let (_d, _rt, shim) = shim(true);
    shim.create_or_delete().await.unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let req = Request::Exec {
        exec_id: "e1".into(),
        process: serde_json::json!({"args": ["cat"]}),
        tty: false,
        stdin: true,
        frames: true,
    };
    let mut line = serde_json::to_string(&req).unwrap();
    line.push('\n');
    let (_, mut w) = a.into_split();
    w.write_all(line.as_bytes()).await.unwrap();
    // the requester is gone before the shim (a current-thread runtime) even reads the request
    drop(w);
    handle(shim.clone(), b).await;
    let proc = shim.proc(&Some("e1".into())).expect("the exec was started");
    assert!(
        crate::shim::io::lock(&proc.stdin).is_none(),
        "the exec's stdin was left open with nobody to write to it"
    );
}
