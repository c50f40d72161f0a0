//! Containers at scale, as the containers issue states its figures:
//!
//! 1. **Stats cost**: with `--running` Docker containers running, the CPU of
//!    homeserver (its 1 s collector reads every running container's figures)
//!    plus dockerd, against what `docker stats` (the CLI streaming the same
//!    containers) plus dockerd cost, and against the engines left alone.
//!    containerd and the containerd shims are metered too, since Docker's
//!    stats API makes them work.
//! 2. **List latency**: `GET /api/v1/containers?per_page=100` with `--listed`
//!    Docker containers (Docker only, then with `--lxc` LXC containers too),
//!    in steady state and right after a container event.
//! 3. **Create and start**: `POST /api/v1/containers` (`start: true`), its
//!    operation waited for, until the container is running, against
//!    `docker run -d` of the same image and command; interleaved, medians,
//!    ratio.
//!
//! It starts the release `homeserver` itself (a temp folder for the
//! database, a free loopback port, an admin token from
//! `homeserver token create`), drives Docker and LXC through their CLIs,
//! and observes processes only through `/proc`. Every container it makes
//! carries the Docker label `homeserver-bench=1` (and the name prefix
//! `hs-bench-`, the only mark LXC keeps); they are removed by that label and
//! prefix at the end and before starting (leftovers of an interrupted run).
//!
//! Prints Markdown on stdout, progress on stderr. Exits 1 when a figure is
//! missed or a check fails (the report is printed anyway).

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark binary reports on stdout/stderr")]

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use homeserver_bench::{clock_ticks_per_sec, cpu_ticks, pids_named, reaped_children_ticks};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The Docker label every benchmark container carries.
const LABEL: &str = "homeserver-bench=1";
/// The name prefix of every benchmark container (Docker and LXC).
const PREFIX: &str = "hs-bench-";
/// What every benchmark container runs (busybox has `sleep`).
const COMMAND: [&str; 2] = ["sleep", "86400"];

/// Container benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// The homeserver binary (default: `homeserver` beside this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Another homeserver build to meter in the same cost rounds
    /// (interleaved), e.g. the one before a change.
    #[arg(long)]
    compare_bin: Option<PathBuf>,
    /// The Docker CLI.
    #[arg(long, default_value = "/usr/bin/docker")]
    docker: PathBuf,
    /// A local image with `sleep` (no registry is used).
    #[arg(long, env = "HOMESERVER_TEST_DOCKER_IMAGE", default_value = "homeserver-test/busybox:latest")]
    image: String,
    /// Running Docker containers.
    #[arg(long, default_value_t = 50)]
    running: usize,
    /// Docker containers in all (the rest are created, not started).
    #[arg(long, default_value_t = 100)]
    listed: usize,
    /// LXC containers for the second list figure (half of them running).
    #[arg(long, default_value_t = 4)]
    lxc: usize,
    /// Config file for `lxc-create -f` (network-less busybox containers).
    #[arg(long, env = "HOMESERVER_TEST_LXC_CONFIG")]
    lxc_config: Option<PathBuf>,
    /// Rounds of the cost figure (each: engines idle, homeserver, docker stats, order rotated).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of one cost window, seconds.
    #[arg(long, default_value_t = 30)]
    cost_secs: u64,
    /// Wait after starting homeserver or `docker stats` before a window, seconds.
    #[arg(long, default_value_t = 8)]
    settle_secs: u64,
    /// Timed list requests per list figure and round.
    #[arg(long, default_value_t = 200)]
    list_requests: usize,
    /// Rounds of the list figures.
    #[arg(long, default_value_t = 3)]
    list_rounds: usize,
    /// Requests timed right after a container event, per round.
    #[arg(long, default_value_t = 30)]
    event_requests: usize,
    /// Rounds of create-and-start (one API and one `docker run -d` each).
    #[arg(long, default_value_t = 12)]
    create_rounds: usize,
    /// Which figures: any of cost, list, create.
    #[arg(long, default_value = "cost,list,create", value_delimiter = ',')]
    sections: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[container_bench] {}", msg.as_ref());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut bench = match Bench::new(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("container_bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = bench.run().await;
    bench.cleanup().await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("container_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A running homeserver.
struct Server {
    child: Child,
    pid: u32,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn stop(mut self) -> Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("homeserver exited with {status}");
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("homeserver did not stop within 20 s of SIGTERM");
            }
        }
        Ok(())
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let r = self.client.get(format!("{}{path}", self.base)).send().await?;
        let status = r.status();
        let body: Value = r.json().await.with_context(|| format!("GET {path}: body"))?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }
}

struct Bench {
    args: Args,
    bin: PathBuf,
    dir: PathBuf,
    token: Option<String>,
    report: String,
    ok: bool,
}

/// CPU ticks of the metered processes at one instant.
#[derive(Debug, Clone, Default)]
struct Ticks {
    at: Option<Instant>,
    /// homeserver (own + reaped children), the docker CLI, dockerd,
    /// containerd, all shims.
    subject: u64,
    subject_children: u64,
    dockerd: u64,
    containerd: u64,
    shims: u64,
}

/// CPU % of one core over a window.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    subject: f64,
    subject_children: f64,
    dockerd: f64,
    containerd: f64,
    shims: f64,
}

impl Cost {
    fn subject_and_dockerd(&self) -> f64 {
        self.subject + self.dockerd
    }
    fn everything(&self) -> f64 {
        self.subject + self.dockerd + self.containerd + self.shims
    }
}

fn engine_pids() -> Result<(u32, u32)> {
    let dockerd = std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .or_else(|| pids_named("dockerd").first().copied())
        .context("no dockerd running")?;
    let containerd = pids_named("containerd")
        .into_iter()
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == "containerd"))
        .context("no containerd running")?;
    Ok((dockerd, containerd))
}

fn read_ticks(subject: Option<u32>, with_children: bool) -> Result<Ticks> {
    let (dockerd, containerd) = engine_pids()?;
    let shims: u64 = pids_named("containerd-shim").into_iter().filter_map(|p| cpu_ticks(p).ok()).sum();
    let (subject, subject_children) = match subject {
        Some(pid) => (cpu_ticks(pid)?, if with_children { reaped_children_ticks(pid)? } else { 0 }),
        None => (0, 0),
    };
    Ok(Ticks {
        at: Some(Instant::now()),
        subject: subject + subject_children,
        subject_children,
        dockerd: cpu_ticks(dockerd)?,
        containerd: cpu_ticks(containerd)?,
        shims,
    })
}

fn cost(a: &Ticks, b: &Ticks) -> Cost {
    let secs = match (a.at, b.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    let hz = clock_ticks_per_sec() as f64;
    let pct = |x: u64, y: u64| y.saturating_sub(x) as f64 / hz / secs * 100.0;
    Cost {
        subject: pct(a.subject, b.subject),
        subject_children: pct(a.subject_children, b.subject_children),
        dockerd: pct(a.dockerd, b.dockerd),
        containerd: pct(a.containerd, b.containerd),
        // Shims are per container and live the whole window; a sum taken
        // twice over the same set.
        shims: pct(a.shims, b.shims),
    }
}

impl Bench {
    fn new(args: Args) -> Result<Self> {
        let bin = match &args.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.parent().context("binary folder")?.join("homeserver"),
        };
        if !bin.exists() {
            bail!("{} not found (build it with cargo build --release -p homeserver)", bin.display());
        }
        let dir = std::env::temp_dir().join(format!("homeserver-container-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { args, bin, dir, token: None, report: String::new(), ok: true })
    }

    fn out(&mut self, line: impl AsRef<str>) {
        self.report.push_str(line.as_ref());
        self.report.push('\n');
    }

    fn env(&self, cmd: &mut Command, port: u16, lxc: bool) {
        for (k, _) in std::env::vars() {
            if k.starts_with("HOMESERVER__") || k == "HOMESERVER_CONFIG" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOMESERVER__SERVER__HOST", "127.0.0.1")
            .env("HOMESERVER__SERVER__PORT", port.to_string())
            .env("HOMESERVER__DATABASE__PATH", self.dir.join("homeserver.db"))
            .env("HOMESERVER__LOGGING__LEVEL", "warn")
            .env("HOMESERVER__RATE_LIMIT__PER_SECOND", "1000000")
            .env("HOMESERVER__RATE_LIMIT__BURST", "1000000")
            .env("HOMESERVER__LXC__ENABLED", lxc.to_string());
        if let Some(cfg) = &self.args.lxc_config {
            cmd.env("HOMESERVER__LXC__CONFIG", cfg);
        }
    }

    /// Starts homeserver (the admin token is made on the first call) and
    /// waits until it is ready with Docker's event stream connected.
    async fn start_server(&mut self, lxc: bool) -> Result<Server> {
        let bin = self.bin.clone();
        self.start_server_from(&bin, lxc).await
    }

    async fn start_server_from(&mut self, bin: &std::path::Path, lxc: bool) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if self.token.is_none() {
            let mut cmd = Command::new(&self.bin);
            cmd.args(["token", "create", "--name", "bench", "--scope", "admin"]).stdin(Stdio::null());
            self.env(&mut cmd, port, lxc);
            let out = cmd.output().await.context("homeserver token create")?;
            if !out.status.success() {
                bail!("token create failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let text = String::from_utf8(out.stdout)?;
            self.token = Some(text.lines().last().context("no token printed")?.trim().to_owned());
        }
        let token = self.token.clone().unwrap_or_default();
        let mut cmd = Command::new(bin);
        cmd.arg("serve").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
        self.env(&mut cmd, port, lxc);
        let child = cmd.spawn().context("starting homeserver")?;
        let pid = child.id().context("homeserver pid")?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        let client = reqwest::Client::builder().no_proxy().default_headers(headers).build()?;
        let server = Server { child, pid, base: format!("http://127.0.0.1:{port}"), client };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.client.get(format!("{}/health/ready", server.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["checks"]["docker"]["status"] == "ok"
                && v["checks"]["docker"]["events"] == "connected"
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("homeserver not ready with docker events connected within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn docker(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.args.docker).args(args).stdin(Stdio::null()).output().await?;
        if !out.status.success() {
            bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn lxc_tool(&self, tool: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(tool).args(args).stdin(Stdio::null()).output().await?;
        if !out.status.success() {
            bail!("{tool} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Removes every Docker container labelled `homeserver-bench=1` and
    /// every LXC container named `hs-bench-*`.
    async fn cleanup(&mut self) {
        let label = format!("label={LABEL}");
        if let Ok(ids) = self.docker(&["ps", "-aq", "--filter", &label]).await {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            for chunk in ids.chunks(50) {
                let mut args = vec!["rm", "-f"];
                args.extend_from_slice(chunk);
                if let Err(e) = self.docker(&args).await {
                    log(format!("cleanup: {e:#}"));
                }
            }
            if !ids.is_empty() {
                log(format!("removed {} docker containers labelled {LABEL}", ids.len()));
            }
        }
        self.remove_lxc().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn remove_lxc(&self) {
        let Ok(names) = self.lxc_tool("lxc-ls", &["-1"]).await else { return };
        for name in names.split_whitespace().filter(|n| n.starts_with(PREFIX)) {
            let _ = self.lxc_tool("lxc-stop", &["-n", name, "-k"]).await;
            if let Err(e) = self.lxc_tool("lxc-destroy", &["-n", name, "-f"]).await {
                log(format!("cleanup: {e:#}"));
            }
        }
    }

    async fn run(&mut self) -> Result<bool> {
        self.cleanup().await;
        std::fs::create_dir_all(&self.dir)?;
        self.docker(&["image", "inspect", &self.args.image])
            .await
            .with_context(|| format!("image {} missing (run scripts/engines-up)", self.args.image))?;
        let others = self.docker(&["ps", "-aq"]).await?.split_whitespace().count();
        self.out("## Containers benchmark (`container_bench`)");
        self.out("");
        self.out(format!(
            "{} CPUs, load at start {}; Docker {}; {} other containers present; image `{}`.",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            loadavg(),
            self.docker(&["version", "--format", "{{.Server.Version}}"]).await?.trim(),
            others,
            self.args.image
        ));
        self.out("");
        self.setup_docker().await?;
        let sections = self.args.sections.clone();
        for section in &sections {
            match section.as_str() {
                "cost" => self.cost().await?,
                "list" => self.list().await?,
                "create" => self.create().await?,
                other => bail!("unknown section `{other}` (cost, list, create)"),
            }
        }
        self.out(format!("Load at the end: {}.", loadavg()));
        println!("{}", self.report);
        Ok(self.ok)
    }

    /// `running` containers started, the rest up to `listed` created.
    async fn setup_docker(&mut self) -> Result<()> {
        let t = Instant::now();
        let total = self.args.listed.max(self.args.running);
        let mut pending = Vec::new();
        for i in 0..total {
            let name = format!("{PREFIX}{i:03}");
            let verb = if i < self.args.running { "run" } else { "create" };
            let mut args: Vec<String> = vec![verb.into()];
            if verb == "run" {
                args.push("-d".into());
            }
            args.extend(["--label".into(), LABEL.into(), "--name".into(), name, self.args.image.clone()]);
            args.extend(COMMAND.iter().map(|s| (*s).to_owned()));
            pending.push(args);
        }
        // Four at a time: dockerd serialises much of it anyway.
        let this = &*self;
        for chunk in pending.chunks(4) {
            let runs = chunk.iter().map(|a| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                async move { this.docker(&a).await }
            });
            for r in futures_util::future::join_all(runs).await {
                r?;
            }
        }
        log(format!(
            "made {total} docker containers ({} running) in {:.1} s",
            self.args.running,
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    async fn meter(&self, subject: Option<u32>, with_children: bool, secs: u64) -> Result<Cost> {
        let a = read_ticks(subject, with_children)?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let b = read_ticks(subject, with_children)?;
        Ok(cost(&a, &b))
    }

    async fn cost(&mut self) -> Result<()> {
        let secs = self.args.cost_secs;
        let mut idle = Vec::new();
        let mut ours = Vec::new();
        let mut cli = Vec::new();
        let mut loads = Vec::new();
        let mut seen_ok = true;
        let mut cli_lines_per_sec = Vec::new();
        let mut other = Vec::new();
        let compare = self.args.compare_bin.clone();
        let kinds = if compare.is_some() { 4 } else { 3 };
        for round in 0..self.args.rounds {
            for step in 0..kinds {
                match (round + step) % kinds {
                    3 => {
                        let bin = compare.clone().context("compare bin")?;
                        log(format!("round {round}: homeserver {}, settle + {secs} s", bin.display()));
                        let server = self.start_server_from(&bin, true).await?;
                        tokio::time::sleep(Duration::from_secs(self.args.settle_secs)).await;
                        let c = self.meter(Some(server.pid), true, secs).await?;
                        server.stop().await?;
                        other.push(c);
                    }
                    0 => {
                        log(format!("round {round}: engines alone, {secs} s"));
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        idle.push(self.meter(None, false, secs).await?);
                    }
                    1 => {
                        log(format!("round {round}: homeserver, settle {} s + {secs} s", self.args.settle_secs));
                        let server = self.start_server(true).await?;
                        tokio::time::sleep(Duration::from_secs(self.args.settle_secs)).await;
                        let c = self.meter(Some(server.pid), true, secs).await?;
                        // Every running container must be in the snapshot, measured.
                        let snap = server.get_json("/api/v1/system").await?;
                        let measured = snap["containers"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter(|c| {
                                        c["state"] == "running"
                                            && c["name"].as_str().is_some_and(|n| n.starts_with(PREFIX))
                                            && c["memory_bytes"].as_u64().is_some_and(|m| m > 0)
                                    })
                                    .count()
                            })
                            .unwrap_or(0);
                        if measured < self.args.running {
                            log(format!(
                                "only {measured} of {} containers measured in the snapshot",
                                self.args.running
                            ));
                            seen_ok = false;
                        }
                        server.stop().await?;
                        ours.push(c);
                    }
                    _ => {
                        log(format!("round {round}: docker stats, settle {} s + {secs} s", self.args.settle_secs));
                        let mut child = Command::new(&self.args.docker)
                            .args([
                                "stats",
                                "--format",
                                "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.NetIO}} {{.BlockIO}} {{.PIDs}}",
                            ])
                            .stdin(Stdio::null())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::null())
                            .kill_on_drop(true)
                            .spawn()?;
                        let pid = child.id().context("docker stats pid")?;
                        let lines = Arc::new(AtomicU64::new(0));
                        let counter = Arc::clone(&lines);
                        let stdout = child.stdout.take().context("docker stats stdout")?;
                        let reader = tokio::spawn(async move {
                            let mut rd = tokio::io::BufReader::new(stdout).lines();
                            while let Ok(Some(line)) = rd.next_line().await {
                                if line.contains(PREFIX) {
                                    counter.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        });
                        tokio::time::sleep(Duration::from_secs(self.args.settle_secs)).await;
                        let before = lines.load(Ordering::Relaxed);
                        let c = self.meter(Some(pid), false, secs).await?;
                        let after = lines.load(Ordering::Relaxed);
                        cli_lines_per_sec.push((after - before) as f64 / secs as f64);
                        child.kill().await?;
                        reader.abort();
                        cli.push(c);
                    }
                }
                loads.push(loadavg());
            }
        }
        let med = |v: &[Cost], f: fn(&Cost) -> f64| median(v.iter().map(f).collect());
        let row = |name: &str, v: &[Cost]| {
            format!(
                "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.2} |",
                med(v, |c| c.subject),
                med(v, |c| c.subject_children),
                med(v, |c| c.dockerd),
                med(v, |c| c.containerd),
                med(v, |c| c.shims),
                med(v, Cost::subject_and_dockerd),
                med(v, Cost::everything),
            )
        };
        let n = self.args.running;
        self.out(format!(
            "### Stats of {n} running containers every second ({} rounds of {secs} s, medians)",
            idle.len()
        ));
        self.out("");
        self.out("CPU in % of one core. \"Subject\" is homeserver (its own threads plus the `lxc-ls` it ran and reaped) or the `docker stats` CLI.");
        self.out("");
        self.out("| Who reads the stats | subject | of it: reaped children | dockerd | containerd | shims | subject + dockerd | all |");
        self.out("|---|---:|---:|---:|---:|---:|---:|---:|");
        let idle_row = row("nobody (engines alone)", &idle);
        self.out(idle_row);
        let ours_row = row("homeserver (1 s sampling, history on)", &ours);
        self.out(ours_row);
        let cli_row = row("`docker stats` (streaming)", &cli);
        self.out(cli_row);
        if let Some(bin) = &compare {
            let other_row = row(&format!("homeserver `{}`", bin.display()), &other);
            self.out(other_row);
        }
        let ours_sd = med(&ours, Cost::subject_and_dockerd);
        let cli_sd = med(&cli, Cost::subject_and_dockerd);
        let idle_d = med(&idle, |c| c.dockerd);
        self.out("");
        self.out(format!(
            "homeserver + dockerd: {ours_sd:.2} % (dockerd alone idles at {idle_d:.2} %); `docker stats` + dockerd: {cli_sd:.2} % — ratio {:.2}. Whole engine included: {:.2} % against {:.2} %.",
            ours_sd / cli_sd,
            med(&ours, Cost::everything),
            med(&cli, Cost::everything),
        ));
        self.out(format!(
            "`docker stats` printed {:.1} lines of ours per second (median); every homeserver window ended with all {n} containers measured in the snapshot: {}.",
            median(cli_lines_per_sec),
            if seen_ok { "yes" } else { "**no**" }
        ));
        self.out(format!("Load averages after each window: {}.", loads.join("; ")));
        self.out("");
        let met = ours_sd <= 2.0;
        self.out(format!(
            "Figure (≤ 2 % of one core for homeserver and dockerd): **{}**.",
            if met { "met" } else { "missed" }
        ));
        self.out("");
        self.ok &= met && seen_ok;
        Ok(())
    }

    async fn time_lists(&self, server: &Server, n: usize) -> Result<Vec<f64>> {
        let url = format!("{}/api/v1/containers?per_page=100", server.base);
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = server.client.get(&url).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                bail!("list answered {status}");
            }
            std::hint::black_box(body);
        }
        Ok(ms)
    }

    /// Latency right after a container event: pause and unpause one of our
    /// containers, then list at once (the event makes homeserver read Docker).
    async fn time_lists_after_events(&self, server: &Server, n: usize) -> Result<Vec<f64>> {
        let mut ms = Vec::with_capacity(n);
        let target = format!("{PREFIX}000");
        for _ in 0..n {
            self.docker(&["pause", &target]).await?;
            self.docker(&["unpause", &target]).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            ms.extend(self.time_lists(server, 1).await?);
            // Let the debounced reconcile run before the next one.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(ms)
    }

    async fn list_variant(&mut self, label: &str, lxc: bool) -> Result<(f64, Vec<String>)> {
        let mut p50 = Vec::new();
        let mut p90 = Vec::new();
        let mut p99 = Vec::new();
        let mut ev50 = Vec::new();
        let mut ev90 = Vec::new();
        let mut total = 0;
        for round in 0..self.args.list_rounds {
            log(format!("list ({label}), round {round}"));
            let server = self.start_server(lxc).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let first = server.get_json("/api/v1/containers?per_page=100").await?;
            total = first["total"].as_u64().unwrap_or(0);
            self.time_lists(&server, 10).await?;
            let ms = self.time_lists(&server, self.args.list_requests).await?;
            p50.push(percentile(ms.clone(), 50.0));
            p90.push(percentile(ms.clone(), 90.0));
            p99.push(percentile(ms, 99.0));
            let ev = self.time_lists_after_events(&server, self.args.event_requests).await?;
            ev50.push(percentile(ev.clone(), 50.0));
            ev90.push(percentile(ev, 90.0));
            server.stop().await?;
        }
        let rows = vec![
            format!(
                "| {label}, steady | {total} | {:.2} | {:.2} | {:.2} |",
                median(p50.clone()),
                median(p90),
                median(p99)
            ),
            format!(
                "| {label}, right after a container event | {total} | {:.2} | {:.2} | – |",
                median(ev50.clone()),
                median(ev90)
            ),
        ];
        Ok((median(p50).max(median(ev50)), rows))
    }

    async fn list(&mut self) -> Result<()> {
        let load_before = loadavg();
        let (docker_p50, mut rows) = self.list_variant("Docker only", false).await?;
        let mut lxc_p50 = f64::NAN;
        if self.args.lxc > 0 {
            self.setup_lxc().await?;
            let (p, more) = self.list_variant(&format!("Docker + {} LXC", self.args.lxc), true).await?;
            lxc_p50 = p;
            rows.extend(more);
            self.remove_lxc().await;
        }
        self.out(format!(
            "### `GET /api/v1/containers?per_page=100` ({} rounds of {} requests, medians of the per-round percentiles; ms)",
            self.args.list_rounds, self.args.list_requests
        ));
        self.out("");
        self.out("| Containers | total listed | p50 | p90 | p99 |");
        self.out("|---|---:|---:|---:|---:|");
        for r in rows {
            self.out(r);
        }
        self.out("");
        self.out(format!(
            "\"Right after a container event\": `docker pause` + `docker unpause` of one container, 5 ms, then one list ({} per round): the event makes homeserver read Docker again. Load before: {load_before}; after: {}.",
            self.args.event_requests,
            loadavg()
        ));
        let met = docker_p50 < 20.0;
        self.out(format!(
            "Figure (p50 < 20 ms with 100 Docker containers): **{}** (worst p50 of the Docker-only rows {docker_p50:.2} ms; with LXC {lxc_p50:.2} ms).",
            if met { "met" } else { "missed" }
        ));
        self.out("");
        self.ok &= met;
        Ok(())
    }

    async fn setup_lxc(&mut self) -> Result<()> {
        let t = Instant::now();
        for i in 0..self.args.lxc {
            let name = format!("{PREFIX}lxc-{i}");
            let mut args = vec!["-n", name.as_str(), "-t", "busybox"];
            let cfg = self.args.lxc_config.as_ref().map(|p| p.display().to_string());
            if let Some(cfg) = &cfg {
                args.extend(["-f", cfg.as_str()]);
            }
            self.lxc_tool("lxc-create", &args).await?;
            if i % 2 == 0 {
                self.lxc_tool("lxc-start", &["-n", &name, "-d"]).await?;
            }
        }
        log(format!("made {} LXC containers in {:.1} s", self.args.lxc, t.elapsed().as_secs_f64()));
        Ok(())
    }

    async fn api_create(&self, server: &Server, name: &str) -> Result<f64> {
        let body = json!({
            "name": name, "runtime": "docker", "image": self.args.image, "start": true, "profiles": [],
            "config": {"command": COMMAND, "labels": {"homeserver-bench": "1"}},
        });
        let t = Instant::now();
        let r = server.client.post(format!("{}/api/v1/containers", server.base)).json(&body).send().await?;
        if r.status() != 202 {
            let status = r.status();
            bail!("create answered {status}: {}", r.text().await.unwrap_or_default());
        }
        let location =
            r.headers().get("location").and_then(|v| v.to_str().ok()).context("no Location on the 202")?.to_owned();
        let op = server.get_json(&format!("{location}/wait?timeout_secs=60")).await?;
        if op["status"] != "succeeded" {
            bail!("create failed: {op}");
        }
        let id = op["result"]["container"].as_str().context("no container id in the result")?;
        loop {
            let c = server.get_json(&format!("/api/v1/containers/{id}")).await?;
            if c["state"] == "running" {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("{name} not running 60 s after creation: {c}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    async fn cli_run(&self, name: &str) -> Result<f64> {
        let mut args = vec!["run", "-d", "--label", LABEL, "--name", name, self.args.image.as_str()];
        args.extend(COMMAND);
        let t = Instant::now();
        self.docker(&args).await?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    async fn create(&mut self) -> Result<()> {
        let load_before = loadavg();
        let server = self.start_server(true).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Warm-up (page cache, the CLI binary, the image's layers): untimed.
        self.api_create(&server, &format!("{PREFIX}c-warm-api")).await?;
        self.cli_run(&format!("{PREFIX}c-warm-cli")).await?;
        let mut api = Vec::new();
        let mut cli = Vec::new();
        for round in 0..self.args.create_rounds {
            let api_name = format!("{PREFIX}c-api-{round}");
            let cli_name = format!("{PREFIX}c-cli-{round}");
            if round % 2 == 0 {
                api.push(self.api_create(&server, &api_name).await?);
                tokio::time::sleep(Duration::from_millis(300)).await;
                cli.push(self.cli_run(&cli_name).await?);
            } else {
                cli.push(self.cli_run(&cli_name).await?);
                tokio::time::sleep(Duration::from_millis(300)).await;
                api.push(self.api_create(&server, &api_name).await?);
            }
            self.docker(&["rm", "-f", &api_name, &cli_name]).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            log(format!(
                "create round {round}: api {:.1} ms, docker run -d {:.1} ms",
                api.last().copied().unwrap_or(f64::NAN),
                cli.last().copied().unwrap_or(f64::NAN)
            ));
        }
        server.stop().await?;
        let (a, c) = (median(api.clone()), median(cli.clone()));
        let ratio = a / c;
        self.out(format!("### Create and start ({} rounds, interleaved, order swapped each round; ms)", api.len()));
        self.out("");
        self.out("| Path | median | min | max |");
        self.out("|---|---:|---:|---:|");
        let fmin = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let fmax = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        self.out(format!(
            "| `POST /api/v1/containers` (start: true) → operation wait → state running | {a:.1} | {:.1} | {:.1} |",
            fmin(&api),
            fmax(&api)
        ));
        self.out(format!(
            "| `docker run -d` (CLI process, same image and command) | {c:.1} | {:.1} | {:.1} |",
            fmin(&cli),
            fmax(&cli)
        ));
        self.out("");
        self.out(format!(
            "Per round, API ÷ CLI: {}. Load before: {load_before}; after: {}.",
            api.iter().zip(&cli).map(|(a, c)| format!("{:.2}", a / c)).collect::<Vec<_>>().join(", "),
            loadavg()
        ));
        let met = ratio <= 1.2;
        self.out(format!(
            "Figure (API ≤ 1.2 × `docker run -d`): ratio of medians **{ratio:.2}**, **{}**.",
            if met { "met" } else { "missed" }
        ));
        self.out("");
        self.ok &= met;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(v.clone(), 50.0), 50.0);
        assert_eq!(percentile(v.clone(), 99.0), 99.0);
        assert_eq!(percentile(v, 100.0), 100.0);
    }

    #[test]
    fn costs_are_percent_of_one_core() {
        let t0 = Instant::now();
        let a = Ticks { at: Some(t0), ..Ticks::default() };
        let hz = clock_ticks_per_sec();
        let b = Ticks { at: Some(t0 + Duration::from_secs(10)), subject: hz, dockerd: hz / 2, ..Ticks::default() };
        let c = cost(&a, &b);
        assert!((c.subject - 10.0).abs() < 1e-9 && (c.dockerd - 5.0).abs() < 1e-9);
        assert!((c.subject_and_dockerd() - 15.0).abs() < 1e-9);
    }
}
