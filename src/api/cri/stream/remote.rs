//! Remote commands (Exec and Attach) once the client's connection is up, the same over SPDY
//! and WebSocket: start the process through the shim exactly as `nook exec` and `nook attach`
//! do, pump its output to the client's stdout/stderr streams and the client's stdin, stdin
//! close and terminal sizes (`{"Width":..,"Height":..}`) to the shim, and end with the
//! outcome on the error stream: a JSON metav1.Status in v4 and later (Success, or Failure with
//! reason NonZeroExitCode and an ExitCode cause), plain text before.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::ws::Channels;
use super::{spdy_conn, ws_conn, Job, Ticket};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::shim::{Event, Input};

/// What the client sent, whatever the transport.
#[derive(Debug)]
pub enum FromClient {
    Stdin(Bytes),
    StdinClosed,
    /// One or more JSON terminal sizes.
    Resize(Bytes),
}

/// The SPDY streams the client opened, by type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Streams {
    pub error: Option<u32>,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

impl Streams {
    /// Records stream `id` of `kind` (the `streamType` header); false for an unknown kind.
    pub fn add(&mut self, kind: &str, id: u32) -> bool {
        let slot = match kind {
            "error" => &mut self.error,
            "stdin" => &mut self.stdin,
            "stdout" => &mut self.stdout,
            "stderr" => &mut self.stderr,
            "resize" => &mut self.resize,
            _ => return false,
        };
        *slot = Some(id);
        true
    }

    /// Whether every stream the request asks for is there (resize only when the protocol
    /// has it: v3 and later).
    pub fn complete(&self, job: &Job, resize: bool) -> bool {
        let (stdin, stdout, stderr, tty) = job.wants();
        self.error.is_some()
            && (!stdin || self.stdin.is_some())
            && (!stdout || self.stdout.is_some())
            && (!stderr || self.stderr.is_some())
            && (!(tty && resize) || self.resize.is_some())
    }
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    ExitCode(i32),
    Failure(String),
}

impl Outcome {
    /// The metav1.Status that remotecommand v4 and later read from the error stream.
    pub fn status_json(&self, cmd: &[String]) -> Vec<u8> {
        let v = match self {
            Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failure(msg) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": msg,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        v.to_string().into_bytes()
    }

    /// The plain-text form older protocols read (nothing on success).
    pub fn text(&self) -> Vec<u8> {
        match self {
            Outcome::Success => Vec::new(),
            Outcome::ExitCode(code) => {
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes()
            }
            Outcome::Failure(msg) => msg.clone().into_bytes(),
        }
    }
}

/// Where the output and the outcome go.
pub enum Transport {
    Spdy {
        w: spdy_conn::Writer,
        streams: Streams,
        status_json: bool,
    },
    Ws {
        w: ws_conn::Writer,
        channels: Channels,
    },
}

impl Transport {
    /// Sends output; false once the client is gone.
    async fn out(&self, stderr: bool, data: &[u8]) -> bool {
        match self {
            Transport::Spdy { w, streams, .. } => {
                match if stderr {
                    streams.stderr
                } else {
                    streams.stdout
                } {
                    Some(id) => w.data(id, data).await,
                    None => true,
                }
            }
            Transport::Ws { w, .. } => w.data(if stderr { 2 } else { 1 }, data).await,
        }
    }

    /// Ends every stream with the outcome on the error stream, then the connection.
    pub async fn finish(&self, o: &Outcome, cmd: &[String]) {
        match self {
            Transport::Spdy {
                w,
                streams,
                status_json,
            } => {
                for id in [streams.stdout, streams.stderr].into_iter().flatten() {
                    w.fin(id).await;
                }
                if let Some(id) = streams.error {
                    let msg = if *status_json {
                        o.status_json(cmd)
                    } else {
                        o.text()
                    };
                    if !msg.is_empty() {
                        w.data(id, &msg).await;
                    }
                    w.fin(id).await;
                }
                // the client waits for the server's half of stdin to close too
                for id in [streams.stdin, streams.resize].into_iter().flatten() {
                    w.fin(id).await;
                }
                let last = [
                    streams.error,
                    streams.stdin,
                    streams.stdout,
                    streams.stderr,
                    streams.resize,
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
                w.go_away(last).await;
            }
            Transport::Ws { w, channels } => {
                let msg = if channels.status_json() {
                    o.status_json(cmd)
                } else {
                    o.text()
                };
                if !msg.is_empty() {
                    w.data(3, &msg).await;
                }
                w.close(1000).await;
            }
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Size {
    width: u16,
    height: u16,
}

/// Runs the ticket's command with the client's input from `rx` and output to `tx`; returns
/// when the process ended (or the client went away and its output stopped) and the outcome
/// was sent.
pub async fn run(d: Arc<Daemon>, t: Ticket, tx: Transport, mut rx: mpsc::Receiver<FromClient>) {
    let (stdin, want_out, want_err, _tty) = t.job.wants();
    let cmd = match &t.job {
        Job::Exec { cmd, .. } => cmd.clone(),
        _ => Vec::new(),
    };
    let stream = match start(&d, &t).await {
        Ok(s) => s,
        Err(e) => {
            tx.finish(&Outcome::Failure(e.to_string()), &cmd).await;
            return;
        }
    };
    let (mut events, mut input) = stream.split();
    let feeder = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let sent = match m {
                FromClient::Stdin(b) if stdin => input.send(&Input::Stdin(b)).await,
                FromClient::StdinClosed if stdin => input.send(&Input::CloseStdin).await,
                FromClient::Resize(b) => {
                    let mut ok = Ok(());
                    for s in serde_json::Deserializer::from_slice(&b)
                        .into_iter::<Size>()
                        .map_while(Result::ok)
                    {
                        ok = input
                            .send(&Input::Resize {
                                width: s.width,
                                height: s.height,
                            })
                            .await;
                    }
                    ok
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        // the client is gone (or stopped writing): the shim closes the process's stdin, and
        // its output still comes; keep the input open until the session ends
        input.client_gone().await;
        std::future::pending::<()>().await;
    });
    let outcome = loop {
        match events.next().await {
            Ok(Some(Event::Out { stderr, data })) => {
                if (stderr && !want_err) || (!stderr && !want_out) {
                    continue;
                }
                if !tx.out(stderr, &data).await {
                    break Outcome::Failure("the client went away".into());
                }
            }
            Ok(Some(Event::Exit(x))) => {
                break match (&t.job, x.exit_code) {
                    (Job::Attach { .. }, _) | (_, 0) => Outcome::Success,
                    (_, code) if (1..=255).contains(&code) => Outcome::ExitCode(code),
                    (_, code) => Outcome::ExitCode(code & 0xff),
                }
            }
            Ok(None) => break Outcome::Success,
            Err(e) => break Outcome::Failure(e.to_string()),
        }
    };
    tx.finish(&outcome, &cmd).await;
    feeder.abort();
}

/// Starts the exec, or attaches, through the shim.
async fn start(d: &Arc<Daemon>, t: &Ticket) -> Result<crate::shim::client::ShimStream, Error> {
    let m = d.containers()?;
    let rec = m.find(&t.ns, &t.container)?;
    let client = m.tasks.client(&t.ns, &rec.id);
    match &t.job {
        Job::Exec {
            cmd, tty, stdin, ..
        } => {
            let process = m.exec_process(&t.ns, &rec, cmd, &[], "", "", *tty)?;
            let exec_id = crate::runtime::containers::new_id()[..16].to_string();
            let (_pid, stream) =
                client
                    .exec(&exec_id, process, *tty, *stdin)
                    .await
                    .map_err(|e| match e {
                        Error::Unavailable(_) => {
                            Error::Precondition(format!("container {} is not running", rec.id))
                        }
                        other => other,
                    })?;
            Ok(stream)
        }
        Job::Attach { stdin, .. } => client.attach(*stdin, false).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_client_go_reads_them() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::ExitCode(3).status_json(&cmd)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::Success.status_json(&cmd)).unwrap();
        assert_eq!(v["status"], "Success");
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::Failure("no such container".into()).status_json(&cmd))
                .unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["message"], "no such container");
        assert!(Outcome::Success.text().is_empty());
    }

    #[test]
    fn streams_complete_per_request() {
        let job = Job::Exec {
            cmd: vec!["sh".into()],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let mut s = Streams::default();
        for (k, id) in [("error", 1), ("stdin", 3), ("stdout", 5)] {
            assert!(s.add(k, id));
        }
        assert!(!s.complete(&job, true));
        assert!(s.complete(&job, false));
        assert!(s.add("resize", 7));
        assert!(s.complete(&job, true));
        assert!(!s.add("data", 9));
    }

    #[test]
    fn resize_messages_parse_as_a_stream() {
        let b = br#"{"Width":80,"Height":24}
{"Width":100,"Height":30}
"#;
        let sizes: Vec<(u16, u16)> = serde_json::Deserializer::from_slice(b)
            .into_iter::<Size>()
            .map_while(Result::ok)
            .map(|s| (s.width, s.height))
            .collect();
        assert_eq!(sizes, [(80, 24), (100, 30)]);
    }
}
