//! Compose against nookd's docker.sock, as the test user: docker-compose 1.29 (Debian's
//! package) and compose v2 (`docker compose`, the CLI plugin built by .ci/run). A three-service
//! project from the tests' busybox image: a web server with a published port and an alias, an
//! app that reaches it by service name and by alias, a database-like service with a named volume;
//! depends_on, environment and restart policies. up -d, ps, logs, exec, restart, stop,
//! down -v, and afterwards nothing is left: no container, no network, no volume.

mod common;
#[path = "common/docker.rs"]
mod docker;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{as_user, Nookd, Run};
use docker::{docker_cli, load_busybox, Docker};
use nook::image::fixture;

/// The project. `${WEB_PORT}` comes from the environment; `$$` is a literal `$` for the shell.
/// Each service stops on SIGTERM (a shell as pid 1 ignores it unless it traps it).
const PROJECT: &str = r#"version: "3.8"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "busybox mkdir -p /www && echo hello-compose > /www/index.html && trap 'exit 0' TERM; busybox httpd -f -p 80 -h /www & wait"]
    ports:
      - "127.0.0.1:${WEB_PORT}:80"
    networks:
      default:
        aliases: [frontend]
    restart: unless-stopped
  db:
    image: busybox:latest
    environment:
      DB_NAME: appdb
    command: ["sh", "-c", "echo $$DB_NAME > /data/name; echo db ready; trap 'exit 0' TERM; busybox sleep 3600 & wait"]
    volumes:
      - dbdata:/data
    restart: always
  app:
    image: busybox:latest
    depends_on: [web, db]
    environment:
      GREETING: app-ok
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do busybox wget -q -O - http://web/index.html && busybox wget -q -O - http://frontend/index.html && echo $$GREETING; busybox sleep 1 & wait; done"]
    restart: on-failure
volumes:
  dbdata:
"#;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flavor {
    /// docker-compose 1.29 (Python, Debian's package).
    V1,
    /// compose v2 as the docker CLI plugin.
    V2,
}

/// compose v2 as built by .ci/run, or None with the reason printed.
fn compose_v2() -> Option<PathBuf> {
    let p = PathBuf::from("/var/tmp/go/bin/docker-compose");
    if p.exists() {
        return Some(p);
    }
    eprintln!("SKIP: compose v2 is not built (.ci/run builds it into /var/tmp/go/bin)");
    None
}

fn compose_v1() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/docker-compose");
    if p.exists() {
        return Some(p);
    }
    eprintln!("SKIP: docker-compose 1.29 is not installed (apt-get install docker-compose)");
    None
}

struct Compose<'a> {
    dk: &'a Docker<'a>,
    flavor: Flavor,
    dir: PathBuf,
    port: u16,
}

impl Compose<'_> {
    fn run(&self, args: &[&str]) -> Run {
        let mut env = self.dk.d.env();
        env.push(("DOCKER_HOST", self.dk.host()));
        env.push(("DOCKER_CONFIG", self.dk.cfg.display().to_string()));
        env.push(("WEB_PORT", self.port.to_string()));
        env.push(("COMPOSE_PROJECT_NAME", "demo".into()));
        // no ANSI progress output: plain lines to read
        env.push(("COMPOSE_PROGRESS", "plain".into()));
        env.push(("COMPOSE_ANSI", "never".into()));
        let mut c: Command = match self.flavor {
            Flavor::V1 => {
                let mut c = as_user(&self.dk.d.user, &env, "docker-compose");
                c.arg("--no-ansi");
                c
            }
            Flavor::V2 => {
                let mut c = as_user(&self.dk.d.user, &env, "docker");
                c.arg("compose");
                c
            }
        };
        c.arg("--project-directory")
            .arg(&self.dir)
            .arg("-f")
            .arg(self.dir.join("compose.yaml"))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        Run {
            out: c.output().expect("running compose"),
            what: format!("compose ({:?}) {}", self.flavor, args.join(" ")),
        }
    }

    /// The container name compose gives replica 1 of `service`.
    fn container(&self, service: &str) -> String {
        match self.flavor {
            Flavor::V1 => format!("demo_{service}_1"),
            Flavor::V2 => format!("demo-{service}-1"),
        }
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    b.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

fn owned_dir(d: &Nookd, p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    let (uid, gid) = common::ids(&d.user);
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// The whole life of the project under one compose flavor.
fn project_life(flavor: Flavor) {
    let d = Nookd::start_with("[debug]\nlevel = \"debug\"\n");
    let dk = Docker::new(&d);
    load_busybox(&dk);
    if flavor == Flavor::V2 {
        let Some(bin) = compose_v2() else { return };
        let plugins = dk.cfg.join("cli-plugins");
        owned_dir(&d, &plugins);
        std::os::unix::fs::symlink(bin, plugins.join("docker-compose")).unwrap();
    }
    let dir = d.base.join("project");
    owned_dir(&d, &dir);
    std::fs::write(dir.join("compose.yaml"), PROJECT).unwrap();
    let c = Compose {
        dk: &dk,
        flavor,
        dir: dir.clone(),
        port: fixture::free_port().unwrap(),
    };

    let up = c.run(&["up", "-d"]);
    if up.code() != 0 {
        let log = d.log_text();
        for l in log.lines().filter(|l| l.contains("docker API")) {
            eprintln!("{l}");
        }
    }
    up.ok();
    let (web, app, db) = (c.container("web"), c.container("app"), c.container("db"));
    wait_until("the app reaches web by name and by alias", 30, || {
        c.run(&["logs", "app"]).ok().contains("app-ok")
    });
    let logs = c.run(&["logs", "app"]).ok();
    assert!(logs.contains("hello-compose"), "{logs}");
    let ps = c.run(&["ps"]).ok();
    for n in [&web, &app, &db] {
        let line = ps.lines().find(|l| l.contains(n.as_str()));
        assert!(line.is_some_and(|l| l.contains("Up")), "{n} not up: {ps}");
    }
    wait_until("web answers on its published port", 20, || {
        http_get(c.port).is_some_and(|b| b == "hello-compose\n")
    });
    // the service's aliases and the compose labels, as compose set them
    let aliases = dk
        .run(&[
            "inspect",
            "-f",
            "{{json .NetworkSettings.Networks.demo_default.Aliases}}",
            &web,
        ])
        .ok();
    assert!(
        aliases.contains("frontend") && aliases.contains("web"),
        "{aliases}"
    );
    // exec, environment, the named volume
    assert_eq!(
        c.run(&["exec", "-T", "db", "cat", "/data/name"]).ok(),
        "appdb\n"
    );
    let vols = dk.run(&["volume", "ls", "--format", "{{.Name}}"]).ok();
    assert_eq!(vols, "demo_dbdata\n");
    let mounts = dk
        .run(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}",
            &db,
        ])
        .ok();
    assert_eq!(mounts.trim(), "volume demo_dbdata /data");
    assert!(c.run(&["logs", "db"]).ok().contains("db ready"));
    let policy = dk
        .run(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", &db])
        .ok();
    assert_eq!(policy.trim(), "always");

    // restart: the app comes back and reaches web again
    let started = |n: &str| dk.run(&["inspect", "-f", "{{.State.StartedAt}}", n]).ok();
    let before = started(&app);
    c.run(&["restart", "app"]).ok();
    assert_ne!(started(&app), before, "restart did not restart the app");
    wait_until("the restarted app runs", 20, || {
        dk.run(&["inspect", "-f", "{{.State.Running}}", &app])
            .ok()
            .trim()
            == "true"
    });

    // stop: everything stopped, nothing removed
    c.run(&["stop"]).ok();
    let states = dk
        .run(&[
            "ps",
            "-a",
            "--filter",
            "label=com.docker.compose.project=demo",
            "--format",
            "{{.Names}} {{.State}}",
        ])
        .ok();
    assert_eq!(states.lines().count(), 3, "{states}");
    assert!(states.lines().all(|l| l.ends_with("exited")), "{states}");

    // down -v: nothing left behind
    c.run(&["down", "-v"]).ok();
    assert_eq!(dk.run(&["ps", "-aq"]).ok(), "");
    let nets = dk.run(&["network", "ls", "--format", "{{.Name}}"]).ok();
    assert_eq!(nets, "bridge\nhost\nnone\n");
    assert_eq!(dk.run(&["volume", "ls", "-q"]).ok(), "");
    let left = d.nook(&["ps", "-a", "-q"]).ok();
    assert_eq!(left, "", "nook still lists containers");
    assert!(
        http_get(c.port).is_none(),
        "the published port is still open"
    );
}

#[test]
fn compose_v1_three_services() {
    let Some(_) = docker_cli() else { return };
    let Some(_) = compose_v1() else { return };
    project_life(Flavor::V1);
}

#[test]
fn compose_v2_three_services() {
    let Some(_) = docker_cli() else { return };
    project_life(Flavor::V2);
}
