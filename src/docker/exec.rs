//! `/containers/{id}/exec` and `/exec/*`: execs made, started over a hijacked connection (or
//! detached), inspected for their exit code, resized.

use std::collections::HashMap;

use hyper::StatusCode;

use super::attach::{hijack, pump};
use super::containers::{find, manager};
use super::{empty, ok_json, ApiError, Req, Res, NS};
use crate::error::Error;
use crate::shim::Event;

/// An exec made by `POST /containers/{id}/exec`, started by `POST /exec/{id}/start`.
#[derive(Clone)]
pub struct ExecRecord {
    container: String,
    args: Vec<String>,
    env: Vec<String>,
    user: String,
    workdir: String,
    tty: bool,
    stdin: bool,
    out: bool,
    err: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
}

/// The Docker API's execs (they live as long as nookd).
#[derive(Default)]
pub struct Execs(std::sync::Mutex<HashMap<String, ExecRecord>>);

impl Execs {
    fn get(&self, id: &str) -> Option<ExecRecord> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
    fn update(&self, id: &str, f: impl FnOnce(&mut ExecRecord)) {
        if let Some(e) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            f(e);
        }
    }
}

pub async fn exec_create(r: &mut Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    let body: serde_json::Value = r.json().await?;
    for k in ["Privileged", "DetachKeys"] {
        if body[k].as_bool() == Some(true) {
            return Err(ApiError::unsupported(&format!("exec {k}")));
        }
    }
    let m = manager(&r.d)?;
    if !m.status(NS, rec.clone()).await.running() {
        return Err(ApiError::conflict(format!(
            "container {} is not running",
            rec.id
        )));
    }
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let args = strs(&body["Cmd"]);
    if args.is_empty() {
        return Err(ApiError::bad("No exec command specified"));
    }
    let e = ExecRecord {
        container: rec.id.clone(),
        args,
        env: strs(&body["Env"]),
        user: body["User"].as_str().unwrap_or_default().into(),
        workdir: body["WorkingDir"].as_str().unwrap_or_default().into(),
        tty: body["Tty"].as_bool().unwrap_or(false),
        stdin: body["AttachStdin"].as_bool().unwrap_or(false),
        out: body["AttachStdout"].as_bool().unwrap_or(true),
        err: body["AttachStderr"].as_bool().unwrap_or(true),
        running: false,
        exit_code: None,
        pid: 0,
    };
    let exec_id = crate::runtime::containers::new_id();
    r.st.execs
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(exec_id.clone(), e);
    Ok(super::json(
        StatusCode::CREATED,
        &serde_json::json!({ "Id": exec_id }),
    ))
}

pub async fn exec_start(r: &mut Req) -> Res {
    let exec_id = r.seg(1).to_string();
    let st = r.st.clone();
    let e = st
        .execs
        .get(&exec_id)
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {exec_id}")))?;
    if e.running || e.exit_code.is_some() {
        return Err(ApiError::conflict(format!(
            "Exec {exec_id} has already run"
        )));
    }
    let body: serde_json::Value = r.json().await?;
    let detach = body["Detach"].as_bool().unwrap_or(false);
    let d = r.d.clone();
    let rec = find(&d, &e.container)?;
    let m = manager(&d)?;
    let process = m.exec_process(NS, &rec, &e.args, &e.env, &e.user, &e.workdir, e.tty)?;
    let client = m.tasks.client(NS, &rec.id);
    let cid = rec.id.clone();
    let start = move |stdin: bool| async move {
        client
            .exec(&exec_id[..16], process, e.tty, stdin)
            .await
            .map_err(|err| match err {
                Error::Unavailable(_) => {
                    ApiError::conflict(format!("container {cid} is not running"))
                }
                other => other.into(),
            })
            .map(|(pid, stream)| {
                st.execs.update(&exec_id, |x| {
                    x.running = true;
                    x.pid = pid;
                });
                let finish = move |code: Option<i32>| {
                    st.execs.update(&exec_id, |x| {
                        x.running = false;
                        x.exit_code = Some(code.unwrap_or(-1));
                    });
                };
                (stream.split(), finish)
            })
    };
    if detach {
        let ((mut events, input), finish) = start(false).await?;
        tokio::spawn(async move {
            let code = loop {
                match events.next().await {
                    Ok(Some(Event::Exit(x))) => break Some(x.exit_code),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break None,
                }
            };
            drop(input);
            finish(code);
        });
        return empty(StatusCode::OK);
    }
    // the process starts once the client holds the upgraded connection, as with dockerd:
    // output that came before would share a read with the 101 response, and clients that
    // take the raw socket from under their HTTP parser (docker-py) would lose it
    let (stdin, tty, want) = (e.stdin, e.tty, (e.out, e.err));
    hijack(r, tty, move |mut io| async move {
        match start(stdin).await {
            Ok(((events, input), finish)) => {
                let code = pump(io, events, stdin.then_some(input), tty, want).await;
                finish(code);
            }
            Err(err) => {
                use tokio::io::AsyncWriteExt;
                let msg = format!("{}\n", err.message);
                let b = if tty {
                    msg.into_bytes()
                } else {
                    super::attach::frame(2, msg.as_bytes())
                };
                let _ = io.write_all(&b).await;
            }
        }
    })
}

pub fn exec_inspect(r: &Req) -> Res {
    let exec_id = r.seg(1);
    let e =
        r.st.execs
            .get(exec_id)
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {exec_id}")))?;
    ok_json(&serde_json::json!({
        "ID": exec_id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": e.tty,
            "entrypoint": e.args.first(),
            "arguments": e.args.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": e.user,
        },
        "OpenStdin": e.stdin,
        "OpenStderr": e.err,
        "OpenStdout": e.out,
        "CanRemove": false,
        "ContainerID": e.container,
        "DetachKeys": "",
        "Pid": e.pid,
    }))
}

pub async fn exec_resize(r: &Req) -> Res {
    let exec_id = r.seg(1).to_string();
    let e =
        r.st.execs
            .get(&exec_id)
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {exec_id}")))?;
    let (h, w) = (r.int("h")?.unwrap_or(0), r.int("w")?.unwrap_or(0));
    if h > 0 && w > 0 {
        manager(&r.d)?
            .tasks
            .client(NS, &e.container)
            .resize(
                Some(exec_id[..16].to_string()),
                w.min(65535) as u16,
                h.min(65535) as u16,
            )
            .await?;
    }
    empty(StatusCode::CREATED)
}
