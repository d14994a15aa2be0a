//! Containers for the benchmarks, through Debian's Docker client (the one matching its
//! daemon), each removed again when its guard goes.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const DOCKER: &str = "/usr/bin/docker";
pub const IMAGE: &str = "busybox:latest";
/// Where the benchmark binary appears inside the containers.
pub const PROBE: &str = "/runq-bench";

/// How a container is run: the runtime and the options that select its variant.
#[derive(Debug, Clone)]
pub struct Setup {
    pub label: &'static str,
    pub options: Vec<String>,
}

impl Setup {
    pub fn runc() -> Setup {
        Setup {
            label: "runc",
            options: vec![],
        }
    }

    /// runq with these `docker run` options (`-e RUNQ_MEM=…`).
    pub fn runq(label: &'static str, docker_options: &[&str]) -> Setup {
        Setup::runtime(label, "runq", docker_options)
    }

    /// A runtime registered for the benchmark (see [`ExtraRuntime`]) with these options.
    pub fn runtime(label: &'static str, runtime: &str, docker_options: &[&str]) -> Setup {
        let mut options = vec!["--runtime".to_string(), runtime.to_string()];
        options.extend(docker_options.iter().map(|option| option.to_string()));
        Setup { label, options }
    }
}

pub fn docker(args: &[&str]) -> Result<String> {
    let output = Command::new(DOCKER)
        .args(args)
        .output()
        .with_context(|| format!("run {DOCKER} (make docker installs it)"))?;
    if !output.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `docker run` of the probe binary in busybox with `setup`'s options.
fn run_args<'a>(setup: &'a Setup, mount: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = setup.options.iter().map(String::as_str).collect();
    args.extend(["-v", mount]);
    args.extend(extra);
    args
}

/// A detached container, removed on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    pub fn start(setup: &Setup, name: String, probe: &Path, command: &[&str]) -> Result<Self> {
        let mount = format!("{}:{PROBE}:ro", probe.display());
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend(run_args(setup, &mount, &[IMAGE, PROBE]));
        args.extend(command);
        let container = Container { name: name.clone() };
        docker(&args)?;
        Ok(container)
    }

    /// Starts the container and waits until `docker exec` works in it (the VM has booted).
    pub fn start_ready(
        setup: &Setup,
        name: String,
        probe: &Path,
        command: &[&str],
    ) -> Result<Self> {
        let container = Container::start(setup, name, probe, command)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while docker(&["exec", &container.name, PROBE, "--version"]).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("{} never became ready for docker exec", container.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(container)
    }

    /// `docker exec` of the probe binary; its standard output.
    pub fn exec_probe(&self, args: &[&str]) -> Result<String> {
        let mut command = vec!["exec", &self.name, PROBE];
        command.extend(args);
        docker(&command)
    }

    /// The container's first process on the host (for runq, the proxy).
    pub fn pid(&self) -> Result<u32> {
        let text = docker(&["inspect", "-f", "{{.State.Pid}}", &self.name])?;
        text.trim()
            .parse()
            .ok()
            .filter(|&pid| pid > 0)
            .with_context(|| format!("{} has no running process", self.name))
    }

    pub fn address(&self) -> Result<String> {
        let text = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &self.name,
        ])?;
        text.split_whitespace()
            .next()
            .map(str::to_string)
            .with_context(|| format!("{} has no address", self.name))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(DOCKER).args(["rm", "-f", &self.name]).output();
    }
}

/// `docker run --rm` of the probe binary; its standard output.
pub fn run_probe(setup: &Setup, name: &str, probe: &Path, command: &[&str]) -> Result<String> {
    let mount = format!("{}:{PROBE}:ro", probe.display());
    let mut args = vec!["run", "--rm", "--name", name];
    args.extend(run_args(setup, &mount, &[IMAGE, PROBE]));
    args.extend(command);
    docker(&args)
}

const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// A runq runtime with runq flags in its `runtimeArgs` (what only the operator may choose,
/// such as `--fs 9p`), added to daemon.json for the benchmark and removed on drop. Debian 12's
/// Docker has no `docker run --annotation`.
pub struct ExtraRuntime {
    pub name: &'static str,
}

impl ExtraRuntime {
    /// Registers `name` as the `runq` runtime's binary with `args`.
    pub fn register(name: &'static str, args: &[&str]) -> Result<ExtraRuntime> {
        let config = read_daemon_json()?;
        let runq = config["runtimes"]["runq"]["path"].clone();
        if !runq.is_string() {
            bail!("{DAEMON_JSON} has no runq runtime (make docker registers it)");
        }
        set_runtime(
            name,
            Some(serde_json::json!({ "path": runq, "runtimeArgs": args })),
        )?;
        Ok(ExtraRuntime { name })
    }
}

impl Drop for ExtraRuntime {
    fn drop(&mut self) {
        if let Err(error) = set_runtime(self.name, None) {
            eprintln!(
                "runq-bench: remove runtime {} from {DAEMON_JSON}: {error:#}",
                self.name
            );
        }
    }
}

/// Adds or removes a runtime in daemon.json, has dockerd reread it (SIGHUP) and waits until
/// `docker info` agrees.
fn set_runtime(name: &str, entry: Option<serde_json::Value>) -> Result<()> {
    let mut config = read_daemon_json()?;
    let present = entry.is_some();
    match entry {
        Some(entry) => config["runtimes"][name] = entry,
        None => {
            if let Some(runtimes) = config["runtimes"].as_object_mut() {
                runtimes.remove(name);
            }
        }
    }
    let text = serde_json::to_vec_pretty(&config).context("serialize daemon.json")?;
    std::fs::write(DAEMON_JSON, text).with_context(|| format!("write {DAEMON_JSON}"))?;
    let status = Command::new("pkill")
        .args(["-HUP", "-x", "dockerd"])
        .status()
        .context("run pkill")?;
    if !status.success() {
        bail!("no dockerd to reload (make docker starts one)");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let quoted = format!("\"{name}\"");
    while docker(&["info", "--format", "{{json .Runtimes}}"])?.contains(&quoted) != present {
        if std::time::Instant::now() > deadline {
            bail!("dockerd did not reload {DAEMON_JSON} within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

fn read_daemon_json() -> Result<serde_json::Value> {
    let text = std::fs::read(DAEMON_JSON).with_context(|| format!("read {DAEMON_JSON}"))?;
    serde_json::from_slice(&text).with_context(|| format!("parse {DAEMON_JSON}"))
}
