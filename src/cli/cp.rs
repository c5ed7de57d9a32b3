//! `nook cp`: files between a container and the host, as `docker cp` copies them.
//!
//! `nook cp CONTAINER:SRC DEST` and `nook cp SRC CONTAINER:DEST`; `-` as DEST writes a tar
//! stream to stdout, `-` as SRC reads one from stdin. nookd resolves container paths inside
//! the container's root (a symlink there never leads out of it); this side decides, as docker
//! does, whether SRC lands *in* DEST (an existing directory) or *as* DEST, and names the tar's
//! top entry accordingly.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tokio_stream::StreamExt;

use super::client::{status_message, Client, StatusExt};
use super::Ctx;
use crate::proto::containers as pb;

/// `nook cp`
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Keep the uid/gid of the host's files (default: the container's root owns what is
    /// copied in).
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Follow SRC when it is a symlink on the host.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// CONTAINER:PATH, a host path, or - (a tar stream on stdin).
    pub src: String,
    /// CONTAINER:PATH, a host path, or - (a tar stream to stdout).
    pub dest: String,
}

/// `CONTAINER:PATH` (a host path with a ':' starts with `/` or `.`, or has a `/` before it).
fn container_path(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let (c, p) = s.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

fn client(c: &Client) -> pb::containers_client::ContainersClient<tonic::transport::Channel> {
    pb::containers_client::ContainersClient::new(c.channel.clone())
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
        .max_encoding_message_size(crate::api::MAX_MESSAGE)
}

/// The last name of a path (`a/b/` → `b`); `/.` (the contents form) is `.`.
fn base_name(p: &str) -> String {
    if p.ends_with("/.") || p == "." {
        return ".".into();
    }
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "root".into())
}

pub async fn cp(ctx: &Ctx, a: CpArgs) -> anyhow::Result<ExitCode> {
    match (container_path(&a.src), container_path(&a.dest)) {
        (Some(_), Some(_)) => {
            bail!("copying between two containers is not supported: copy to the host first")
        }
        (None, None) => {
            bail!("one of SRC and DEST must be CONTAINER:PATH (nook cp web:/etc/hostname .)")
        }
        (Some((c, p)), None) => copy_out(ctx, c, p, &a.dest).await,
        (None, Some((c, p))) => copy_in(ctx, &a, c, p).await,
    }
}

async fn stat(c: &Client, id: &str, path: &str) -> anyhow::Result<pb::PathStat> {
    client(c)
        .stat_path(c.req(pb::PathRequest {
            id: id.into(),
            path: path.into(),
            name: String::new(),
        }))
        .await
        .or_fail()
}

/// Container → host.
async fn copy_out(ctx: &Ctx, id: &str, src: &str, dest: &str) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let s = stat(&c, id, src).await?;
    if !s.exists {
        bail!("no such file or directory in {id}: {src}");
    }
    let contents = base_name(src) == ".";
    // where to unpack, and the tar's top name
    let (dir, name) = if dest == "-" {
        if std::io::stdout().is_terminal() {
            bail!("refusing to write a tar stream to a terminal: redirect stdout (nook cp {id}:{src} - > x.tar)");
        }
        (None, base_name(src))
    } else {
        let d = Path::new(dest);
        match fs::metadata(d) {
            Ok(m) if m.is_dir() => (Some(d.to_path_buf()), base_name(src)),
            Ok(_) if s.dir => bail!("cannot copy the directory {src} onto the file {dest}"),
            Ok(_) => (Some(parent(d)), base_name(dest)),
            Err(_) if dest.ends_with('/') && !s.dir => {
                bail!("the destination directory {dest} does not exist")
            }
            Err(_) if contents => {
                fs::create_dir(d).with_context(|| format!("creating {dest}"))?;
                (Some(d.to_path_buf()), ".".into())
            }
            Err(_) => {
                let p = parent(d);
                if !p.is_dir() {
                    bail!("the destination directory {} does not exist", p.display());
                }
                (Some(p), base_name(dest))
            }
        }
    };
    let mut stream = client(&c)
        .copy_from(c.req(pb::PathRequest {
            id: id.into(),
            path: src.into(),
            name,
        }))
        .await
        .or_fail()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let input = crate::chunks::ChannelReader::new(rx);
        match dir {
            None => {
                let mut out = std::io::stdout().lock();
                std::io::copy(&mut { input }, &mut out)?;
                out.flush()?;
            }
            Some(dir) => {
                let mut ar = tar::Archive::new(input);
                ar.set_preserve_permissions(true);
                ar.set_overwrite(true);
                ar.unpack(&dir)
                    .with_context(|| format!("unpacking into {}", dir.display()))?;
            }
        }
        Ok(())
    });
    let mut failed = None;
    while let Some(m) = stream.next().await {
        match m {
            Ok(m) => {
                let tx = tx.clone();
                let gone = tokio::task::spawn_blocking(move || tx.send(m.data).is_err())
                    .await
                    .unwrap_or(true);
                if gone {
                    break;
                }
            }
            Err(s) => {
                failed = Some(status_message(&s));
                break;
            }
        }
    }
    drop(tx);
    let res = writer.await.map_err(|e| anyhow!("copy: {e}"))?;
    if let Some(e) = failed {
        bail!(e);
    }
    res?;
    Ok(ExitCode::SUCCESS)
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Host → container.
async fn copy_in(ctx: &Ctx, a: &CpArgs, id: &str, dest: &str) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let d = stat(&c, id, dest).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::CopyToInput>(8);
    let reader: tokio::task::JoinHandle<anyhow::Result<()>>;
    let target: String;
    if a.src == "-" {
        if std::io::stdin().is_terminal() {
            bail!("refusing to read a tar stream from a terminal: pipe one in (tar -c . | nook cp - {id}:{dest})");
        }
        if !d.exists || !d.dir {
            bail!("the destination {dest} must be a directory in {id} to unpack a tar stream into");
        }
        target = dest.to_string();
        reader = tokio::task::spawn_blocking(move || {
            let mut input = std::io::stdin().lock();
            send_all(&mut input, &tx)
        });
    } else {
        let src = PathBuf::from(&a.src);
        let meta = if a.follow_link {
            fs::metadata(&src)
        } else {
            fs::symlink_metadata(&src)
        }
        .with_context(|| format!("no such file or directory: {}", a.src))?;
        let contents = base_name(&a.src) == ".";
        let (dir, name) = if d.exists && d.dir {
            (dest.to_string(), base_name(&a.src))
        } else if d.exists && meta.is_dir() {
            bail!(
                "cannot copy the directory {} onto the file {dest} in {id}",
                a.src
            );
        } else if !d.exists && dest.ends_with('/') && !meta.is_dir() {
            bail!("the destination directory {dest} does not exist in {id}");
        } else {
            let p = Path::new(dest);
            let pd = p
                .parent()
                .map(|x| x.display().to_string())
                .filter(|x| !x.is_empty())
                .unwrap_or_else(|| "/".into());
            (pd, base_name(dest))
        };
        // the contents form into a new directory: that directory is the top entry
        let name = if contents && name == "." && !d.exists {
            base_name(dest)
        } else {
            name
        };
        target = dir;
        let (archive, follow) = (a.archive, a.follow_link);
        reader = tokio::task::spawn_blocking(move || {
            let w = Sender {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            let mut b = tar::Builder::new(w);
            add_host(&mut b, &src, Path::new(&name), archive, follow)?;
            let mut w = b.into_inner()?;
            w.flush()?;
            Ok(())
        });
    }
    let first = pb::CopyToInput {
        id: id.into(),
        path: target,
        data: Vec::new(),
    };
    let stream = tokio_stream::once(first).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
    let res = client(&c).copy_to(c.req(stream)).await;
    let read = reader.await.map_err(|e| anyhow!("copy: {e}"))?;
    res.or_fail()?;
    read?;
    Ok(ExitCode::SUCCESS)
}

/// Sends a reader's bytes as CopyTo messages.
fn send_all(
    r: &mut impl Read,
    tx: &tokio::sync::mpsc::Sender<pb::CopyToInput>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).context("reading stdin")?;
        if n == 0 {
            return Ok(());
        }
        let m = pb::CopyToInput {
            data: buf[..n].to_vec(),
            ..Default::default()
        };
        if tx.blocking_send(m).is_err() {
            return Ok(()); // nookd stopped reading: its answer says why
        }
    }
}

/// A tar writer that sends 1 MiB messages.
struct Sender {
    tx: tokio::sync::mpsc::Sender<pb::CopyToInput>,
    buf: Vec<u8>,
}

impl Write for Sender {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(pb::CopyToInput {
                data,
                ..Default::default()
            })
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "nookd stopped reading")
            })
    }
}

/// Archives the host path `p` as `name`, a directory with its tree (symlinks as symlinks).
fn add_host<W: Write>(
    b: &mut tar::Builder<W>,
    p: &Path,
    name: &Path,
    archive: bool,
    follow: bool,
) -> anyhow::Result<()> {
    let m = if follow {
        fs::metadata(p)
    } else {
        fs::symlink_metadata(p)
    }
    .with_context(|| format!("inspecting {}", p.display()))?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
    if !archive {
        h.set_uid(0);
        h.set_gid(0);
    }
    let ft = m.file_type();
    if ft.is_symlink() {
        let t = fs::read_link(p)?;
        h.set_size(0);
        b.append_link(&mut h, name, t)?;
    } else if ft.is_dir() {
        h.set_size(0);
        if name != Path::new(".") {
            b.append_data(&mut h, name, std::io::empty())?;
        }
        let mut kids: Vec<_> = fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        kids.sort();
        for k in kids {
            let child = if name == Path::new(".") {
                PathBuf::from(&k)
            } else {
                name.join(&k)
            };
            add_host(b, &p.join(&k), &child, archive, false)?;
        }
    } else if ft.is_file() {
        let f = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let size = m.len();
        h.set_size(size);
        b.append_data(
            &mut h,
            name,
            f.take(size).chain(std::io::repeat(0)).take(size),
        )?;
    } else {
        eprintln!(
            "nook: skipping {} (not a file, directory or symlink)",
            p.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(container_path("web:/etc"), Some(("web", "/etc")));
        assert_eq!(container_path("./a:b"), None);
        assert_eq!(container_path("/x:y"), None);
        assert_eq!(container_path("dir/a:b"), None);
        assert_eq!(container_path("plain"), None);
        assert_eq!(base_name("/etc/"), "etc");
        assert_eq!(base_name("/etc/."), ".");
        assert_eq!(base_name("/"), "root");
    }
}
