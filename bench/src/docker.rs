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

    pub fn runq(label: &'static str, env: &[&str]) -> Setup {
        let mut options = vec!["--runtime".to_string(), "runq".to_string()];
        for variable in env {
            options.extend(["-e".to_string(), variable.to_string()]);
        }
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
