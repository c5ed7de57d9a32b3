//! `nook images …` and the docker-style verbs `nook pull|push|tag|rmi|save|load|login|logout`.
//!
//! Pull and push progress goes to stderr: per-blob bars on a terminal, one plain line per state
//! change otherwise. Results go to stdout.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_stream::StreamExt;

use super::client::{status_message, Client, StatusExt};
use super::output;
use super::Ctx;
use crate::proto::images as pb;

/// `nook images [COMMAND]`: with no command, lists images (as `docker images`).
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub cmd: Option<ImagesCmd>,
    #[command(flatten)]
    pub ls: LsArgs,
}

#[derive(Subcommand, Debug)]
pub enum ImagesCmd {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove images (their blobs stay until garbage collection).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm(RmArgs),
    /// Show an image's manifest(s) and config as JSON.
    Inspect(InspectArgs),
    /// Import a docker-archive or OCI-layout tar (FILE, or - for stdin).
    Import(ImportArgs),
    /// Export images as an OCI-layout tar (FILE, or - for stdout).
    Export(ExportArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Remove images no container uses (untagged ones; -a: all), then collect garbage.
    Prune(super::prune::ImagePruneArgs),
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference (`busybox`, `host:5000/x/y:tag`, `repo@sha256:…`).
    pub reference: String,
    /// Platform os/arch[/variant] (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image.
    #[arg(long)]
    pub all_platforms: bool,
    /// Print only the image name.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Default)]
pub struct LsArgs {
    #[command(flatten)]
    pub list: output::ListFlags,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub name: String,
    /// Only this platform's manifest.
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The archive, or - for stdin.
    pub file: String,
    /// Name for images the archive does not name.
    #[arg(long)]
    pub base_name: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The archive to write, or - for stdout.
    pub file: String,
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Platform to export from a partially pulled multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Local image.
    pub name: String,
    /// Destination reference (default: the image's own name).
    pub destination: Option<String>,
    /// Platform to push from a partially pulled multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
}

/// `nook save`: docker-style export.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to FILE instead of stdout.
    #[arg(short, long)]
    pub output: Option<String>,
    /// The images; none: every image of the namespace, with all their names (a backup that
    /// `nook load` restores).
    pub names: Vec<String>,
    #[arg(long)]
    pub platform: Option<String>,
}

/// `nook load`: docker-style import.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read FILE instead of stdin.
    #[arg(short, long)]
    pub input: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
}

/// `nook login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host (`localhost:5000`, `docker.io`).
    pub host: String,
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `nook logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    pub host: String,
}

fn client(c: &Client) -> pb::images_client::ImagesClient<tonic::transport::Channel> {
    pb::images_client::ImagesClient::new(c.channel.clone())
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
        .max_encoding_message_size(crate::api::MAX_MESSAGE)
}

pub async fn run(ctx: &Ctx, a: ImagesArgs) -> anyhow::Result<ExitCode> {
    let Some(cmd) = a.cmd else {
        return ls(ctx, a.ls).await;
    };
    match cmd {
        ImagesCmd::Pull(a) => pull(ctx, a).await,
        ImagesCmd::Ls(a) => ls(ctx, a).await,
        ImagesCmd::Rm(a) => rm(ctx, a).await,
        ImagesCmd::Inspect(a) => inspect(ctx, a).await,
        ImagesCmd::Import(a) => import(ctx, &a.file, a.base_name, a.quiet).await,
        ImagesCmd::Export(a) => export(ctx, &a.file, a.names, a.platform).await,
        ImagesCmd::Tag(a) => tag(ctx, a).await,
        ImagesCmd::Push(a) => push(ctx, a).await,
        ImagesCmd::Prune(a) => super::prune::images(ctx, a).await,
    }
}

/// Shows progress events: bars on a terminal, lines otherwise.
struct ProgressView {
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    states: HashMap<String, String>,
    verb: &'static str,
}

fn short(d: &str) -> &str {
    let h = d.split_once(':').map(|(_, h)| h).unwrap_or(d);
    &h[..h.len().min(12)]
}

impl ProgressView {
    fn new(quiet: bool, verb: &'static str) -> ProgressView {
        let tty = std::io::stderr().is_terminal();
        ProgressView {
            quiet,
            multi: (tty && !quiet).then(MultiProgress::new),
            bars: HashMap::new(),
            states: HashMap::new(),
            verb,
        }
    }

    fn event(&mut self, e: &pb::ProgressEvent) {
        if self.quiet {
            return;
        }
        match e.kind.as_str() {
            "resolved" => {
                let line = format!("{}: resolved to {}", e.name, e.digest);
                match &self.multi {
                    Some(m) => {
                        let _ = m.println(line);
                    }
                    None => eprintln!("{line}"),
                }
            }
            "blob" => {
                if let Some(m) = &self.multi {
                    if e.blob_kind == "manifest" || e.blob_kind == "index" {
                        return;
                    }
                    let bar = self.bars.entry(e.digest.clone()).or_insert_with(|| {
                        let b = m.add(ProgressBar::new(e.total));
                        b.set_style(
                            ProgressStyle::with_template(
                                "{prefix:.bold} {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        b.set_prefix(format!("{} {}", e.blob_kind, short(&e.digest)));
                        b
                    });
                    bar.set_position(e.current);
                    match e.state.as_str() {
                        "exists" => bar.finish_with_message("exists"),
                        "done" => bar.finish_with_message("done"),
                        s => bar.set_message(s.to_string()),
                    }
                } else {
                    let prev = self.states.insert(e.digest.clone(), e.state.clone());
                    if prev.as_deref() == Some(e.state.as_str()) || e.state == "waiting" {
                        return;
                    }
                    let what = match e.state.as_str() {
                        "downloading" if e.current > 0 => {
                            format!("{} (resuming at {})", self.verb, output::size(e.current))
                        }
                        "downloading" => self.verb.to_string(),
                        "exists" => "already exists".into(),
                        "done" => "done".into(),
                        s => s.into(),
                    };
                    eprintln!(
                        "{} {}: {what} ({})",
                        e.blob_kind,
                        short(&e.digest),
                        output::size(e.total)
                    );
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}

async fn drain(
    mut s: tonic::Streaming<pb::ProgressEvent>,
    view: &mut ProgressView,
) -> anyhow::Result<pb::ProgressEvent> {
    let mut done = None;
    loop {
        match s.message().await {
            Ok(Some(e)) => {
                view.event(&e);
                if e.kind == "done" {
                    done = Some(e);
                }
            }
            Ok(None) => break,
            Err(st) => {
                view.finish();
                bail!(status_message(&st));
            }
        }
    }
    view.finish();
    done.ok_or_else(|| anyhow!("nookd ended the stream without a result (see its log)"))
}

pub async fn pull(ctx: &Ctx, a: PullArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = client(&c);
    let s = cl
        .pull(c.req(pb::PullRequest {
            reference: a.reference.clone(),
            platform: a.platform.unwrap_or_default(),
            all_platforms: a.all_platforms,
        }))
        .await
        .or_fail()?;
    let t0 = std::time::Instant::now();
    let mut view = ProgressView::new(a.quiet, "downloading");
    let done = drain(s, &mut view).await?;
    if a.quiet {
        println!("{}", done.name);
    } else {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{}: {} ({} downloaded in {secs:.1}s)",
            done.name,
            done.digest,
            output::size(done.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn push(ctx: &Ctx, a: PushArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = client(&c);
    let s = cl
        .push(c.req(pb::PushRequest {
            name: a.name.clone(),
            destination: a.destination.unwrap_or_default(),
            platform: a.platform.unwrap_or_default(),
        }))
        .await
        .or_fail()?;
    let mut view = ProgressView::new(a.quiet, "uploading");
    let done = drain(s, &mut view).await?;
    if a.quiet {
        println!("{}", done.name);
    } else {
        println!(
            "{}: {} ({} uploaded, {} mounted, {} already there)",
            done.name,
            done.digest,
            output::size(done.bytes),
            done.mounted,
            done.skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How a name is shown: the familiar form (`busybox:latest`).
fn familiar(name: &str) -> String {
    crate::image::Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

pub async fn ls(ctx: &Ctx, a: LsArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let v = client(&c)
        .list(c.req(pb::ListImagesRequest {}))
        .await
        .or_fail()?
        .images;
    {
        #[derive(Serialize)]
        struct I<'a> {
            name: &'a str,
            digest: &'a str,
            media_type: &'a str,
            size: u64,
            platforms: &'a [String],
            created_at: i64,
            labels: std::collections::BTreeMap<&'a String, &'a String>,
        }
        let rows: Vec<output::Row> = v
            .iter()
            .map(|i| {
                let t = i.target.as_ref();
                let d = t.map(|t| t.digest.as_str()).unwrap_or("");
                let json = serde_json::to_value(I {
                    name: &i.name,
                    digest: t.map(|t| t.digest.as_str()).unwrap_or(""),
                    media_type: t.map(|t| t.media_type.as_str()).unwrap_or(""),
                    size: i.size,
                    platforms: &i.platforms,
                    created_at: i.created_at,
                    labels: i.labels.iter().collect(),
                })
                .unwrap_or_default();
                let digest = if a.list.no_trunc {
                    d.to_string()
                } else {
                    format!("sha256:{}", short(d))
                };
                let name = familiar(&i.name);
                let (repo, tag) = match name.rsplit_once(':') {
                    Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                    _ => (name.clone(), "<none>".to_string()),
                };
                output::Row {
                    key: i.name.clone(),
                    cells: vec![
                        name,
                        digest.clone(),
                        i.platforms.join(","),
                        output::size(i.size),
                        output::age(i.created_at),
                    ],
                    json,
                    fields: vec![
                        ("Repository", repo),
                        ("Tag", tag),
                        ("ID", digest),
                        ("CreatedSince", output::age(i.created_at)),
                    ],
                }
            })
            .collect();
        a.list.print_titled(
            &["REF", "DIGEST", "PLATFORM", "SIZE", "CREATED"],
            &[("ID", "IMAGE ID"), ("CreatedSince", "CREATED")],
            &rows,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(ctx: &Ctx, a: RmArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = client(&c);
    let mut code = ExitCode::SUCCESS;
    for n in a.names {
        match cl
            .remove(c.req(pb::RemoveImageRequest { name: n.clone() }))
            .await
        {
            Ok(r) => println!("{}", r.into_inner().image.map(|i| i.name).unwrap_or(n)),
            Err(s) => {
                eprintln!("nook: {}", status_message(&s));
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

pub async fn inspect(ctx: &Ctx, a: InspectArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let r = client(&c)
        .inspect(c.req(pb::GetImageRequest {
            name: a.name,
            platform: a.platform.unwrap_or_default(),
        }))
        .await
        .or_fail()?;
    println!("{}", r.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn tag(ctx: &Ctx, a: TagArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let r = client(&c)
        .tag(c.req(pb::TagImageRequest {
            source: a.source,
            target: a.target,
        }))
        .await
        .or_fail()?;
    println!("{}", r.name);
    Ok(ExitCode::SUCCESS)
}

/// Streams FILE (or stdin for `-`) to nookd's importer.
pub async fn import(
    ctx: &Ctx,
    file: &str,
    base_name: Option<String>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut input: Box<dyn Read + Send> = if file == "-" {
        if std::io::stdin().is_terminal() {
            bail!("refusing to read an archive from a terminal: pass a FILE or pipe one in");
        }
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {file}"))?)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportRequest>(8);
    let base = base_name.unwrap_or_default();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = input.read(&mut buf).context("reading the archive")?;
            if n == 0 && !first {
                break;
            }
            buf.truncate(n);
            let msg = pb::ImportRequest {
                data: buf,
                base_name: if first { base.clone() } else { String::new() },
            };
            first = false;
            if tx.blocking_send(msg).is_err() {
                break; // nookd stopped reading: its error is the answer
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let res = client(&c).import(c.req(stream)).await;
    let read_res = reader
        .await
        .map_err(|e| anyhow!("reading the archive: {e}"))?;
    let r = res.or_fail()?;
    read_res?;
    for i in r.images {
        if quiet {
            println!("{}", i.name);
        } else {
            let d = i.target.map(|t| t.digest).unwrap_or_default();
            println!("{}: {d}", i.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Receives an export into FILE (atomically) or stdout for `-`.
pub async fn export(
    ctx: &Ctx,
    file: &str,
    names: Vec<String>,
    platform: Option<String>,
) -> anyhow::Result<ExitCode> {
    export_images(ctx, file, names, false, platform).await
}

/// Writes the images `names` (or, with `all`, every image of the namespace) to `file`.
async fn export_images(
    ctx: &Ctx,
    file: &str,
    names: Vec<String>,
    all: bool,
    platform: Option<String>,
) -> anyhow::Result<ExitCode> {
    if file == "-" && std::io::stdout().is_terminal() {
        bail!("refusing to write an archive to a terminal: pass -o FILE or redirect stdout");
    }
    let c = ctx.connect().await?;
    let mut s = client(&c)
        .export(c.req(pb::ExportRequest {
            names,
            platform: platform.unwrap_or_default(),
            all,
        }))
        .await
        .or_fail()?;
    let (mut out, tmp): (Box<dyn Write>, Option<PathBuf>) = if file == "-" {
        (Box::new(std::io::stdout().lock()), None)
    } else {
        let p = Path::new(file);
        let tmp = p.with_file_name(format!(
            ".{}.nook-tmp",
            p.file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        (Box::new(std::io::BufWriter::new(f)), Some(tmp))
    };
    let res: anyhow::Result<()> = async {
        while let Some(m) = s.next().await {
            let m = m.map_err(|st| anyhow!(status_message(&st)))?;
            out.write_all(&m.data).context("writing the archive")?;
        }
        out.flush().context("writing the archive")?;
        Ok(())
    }
    .await;
    drop(out);
    match (res, tmp) {
        (Ok(()), Some(tmp)) => {
            std::fs::rename(&tmp, file).with_context(|| format!("writing {file}"))?;
        }
        (Err(e), Some(tmp)) => {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        (r, None) => r?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn save(ctx: &Ctx, a: SaveArgs) -> anyhow::Result<ExitCode> {
    let out = a.output.unwrap_or_else(|| "-".into());
    let all = a.names.is_empty();
    export_images(ctx, &out, a.names, all, a.platform).await
}

pub async fn load(ctx: &Ctx, a: LoadArgs) -> anyhow::Result<ExitCode> {
    let input = a.input.unwrap_or_else(|| "-".into());
    import(ctx, &input, None, a.quiet).await
}

fn prompt(what: &str, echo: bool) -> anyhow::Result<String> {
    use nix::sys::termios;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for credentials: pass --username and --password-stdin")?;
    let mut w = &tty;
    write!(w, "{what}: ")?;
    w.flush()?;
    let saved = termios::tcgetattr(&tty).ok();
    if !echo {
        if let Some(s) = &saved {
            let mut t = s.clone();
            t.local_flags.remove(termios::LocalFlags::ECHO);
            let _ = termios::tcsetattr(&tty, termios::SetArg::TCSANOW, &t);
        }
    }
    let mut line = String::new();
    let res = std::io::BufRead::read_line(&mut std::io::BufReader::new(&tty), &mut line);
    if !echo {
        if let Some(s) = &saved {
            let _ = termios::tcsetattr(&tty, termios::SetArg::TCSANOW, s);
        }
        let _ = writeln!(w);
    }
    res.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn login(ctx: &Ctx, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let username = match a.username {
        Some(u) => u,
        None => prompt("Username", true)?,
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        match a.password {
            Some(p) => p,
            None => prompt("Password", false)?,
        }
    };
    let c = ctx.connect().await?;
    let r = client(&c)
        .login(c.req(pb::LoginRequest {
            host: a.host.clone(),
            username,
            password,
        }))
        .await
        .or_fail()?;
    println!("Login succeeded (credentials stored in {})", r.file);
    Ok(ExitCode::SUCCESS)
}

pub async fn logout(ctx: &Ctx, a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let r = client(&c)
        .logout(c.req(pb::LogoutRequest {
            host: a.host.clone(),
        }))
        .await
        .or_fail()?;
    if r.removed {
        println!("Removed the credentials for {}", a.host);
    } else {
        println!("No credentials stored for {}", a.host);
    }
    Ok(ExitCode::SUCCESS)
}
