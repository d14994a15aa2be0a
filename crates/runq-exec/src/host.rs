//! `runq-exec` from a host shell: finds the container and hands the session to the tool that
//! owns it — `docker exec` for Docker's containers, `runq exec` for plain runq ones — so that
//! the host's own access rules apply and there are no keys to manage.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub struct Command {
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Set an environment variable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// User (name or number) and optionally group to run as.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// runc's state directory, for containers started with `runq run` or `runq create`.
    #[arg(long, value_name = "DIR", default_value = "/run/runc")]
    root: PathBuf,
    /// A Docker container id or name, or a runq container id.
    container: Option<String>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(command: &Command) -> Result<i32> {
    let Some(container) = command.container.as_deref() else {
        bail!("no container given (usage: runq-exec [OPTIONS] CONTAINER COMMAND...)");
    };
    if command.command.is_empty() {
        bail!("no command given (usage: runq-exec [OPTIONS] CONTAINER COMMAND...)");
    }
    let runq = runq_shared::layout::install_root().join("runq");
    if let Some(rootfs) = runq_rootfs(&runq, &command.root, container) {
        return runq_exec(&runq, &rootfs, container, command);
    }
    let docker = docker_client();
    let runtime = std::process::Command::new(&docker)
        .args(["inspect", "-f", "{{.HostConfig.Runtime}}", container])
        .stderr(Stdio::null())
        .output();
    match runtime {
        Ok(output) if output.status.success() => {
            let runtime = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !runs_runq(&docker, &runtime, &runq) {
                bail!(
                    "{container} is a Docker container run by {runtime}, not runq: use docker exec"
                );
            }
            Err(docker_exec(&docker, container, command).exec())
                .with_context(|| format!("run {}", docker.display()))
        }
        _ => bail!(
            "no runq container {container}: runq's state ({}) and Docker know none by that name",
            command.root.display()
        ),
    }
}

/// Whether Docker's runtime of this name is runq: `runq` itself, or another name registered
/// with runq's path (`runq-booted`, runq with other flags).
fn runs_runq(docker: &Path, runtime: &str, runq: &Path) -> bool {
    if runtime == "runq" {
        return true;
    }
    let Ok(output) = std::process::Command::new(docker)
        .args(["info", "--format", "{{json .Runtimes}}"])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|runtimes| runtimes[runtime]["path"].as_str().map(PathBuf::from))
        .is_some_and(|path| path == runq)
}

/// Debian's client where it is there, matching its daemon; else whatever is on the PATH.
fn docker_client() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("docker")
    }
}

fn docker_exec(docker: &Path, container: &str, command: &Command) -> std::process::Command {
    let mut exec = std::process::Command::new(docker);
    exec.arg("exec");
    if command.tty {
        exec.arg("-t");
    }
    if command.interactive {
        exec.arg("-i");
    }
    for variable in &command.env {
        exec.args(["-e", variable]);
    }
    if let Some(user) = &command.user {
        exec.args(["-u", user]);
    }
    if let Some(dir) = &command.workdir {
        exec.args(["-w", dir]);
    }
    exec.arg(container).args(&command.command);
    exec
}

/// The root file system of a container runq (through runc) knows in `root`, as runc
/// recorded it.
fn runq_rootfs(runq: &Path, root: &Path, container: &str) -> Option<PathBuf> {
    let output = std::process::Command::new(runq)
        .arg("--root")
        .arg(root)
        .args(["state", container])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let state: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    state["rootfs"].as_str().map(PathBuf::from)
}

fn runq_exec(runq: &Path, rootfs: &Path, container: &str, command: &Command) -> Result<i32> {
    let mut exec = std::process::Command::new(runq);
    exec.arg("--root").arg(&command.root).arg("exec");
    if command.tty {
        exec.arg("--tty");
    }
    for variable in &command.env {
        exec.args(["--env", variable]);
    }
    if let Some(user) = &command.user {
        let (uid, gid) = resolve_user(rootfs, user)?;
        exec.args(["--user", &format!("{uid}:{gid}")]);
    }
    if let Some(dir) = &command.workdir {
        exec.args(["--cwd", dir]);
    }
    exec.arg(container).args(&command.command);
    if !command.interactive {
        exec.stdin(Stdio::null());
    }
    // Become runq, so that signals sent to runq-exec reach the session.
    Err(exec.exec()).with_context(|| format!("run {}", runq.display()))
}

/// `USER[:GROUP]`, names looked up in the container's /etc/passwd and /etc/group, as the
/// container resolves those paths (they are the image's, or the guest's: links in them
/// point inside the container, and only regular files of a bounded size are read).
fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32)> {
    let (user, group) = match user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (user, None),
    };
    let passwd = container_file(root, "/etc/passwd")?;
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, lookup(&passwd, 2, &uid.to_string(), 3).unwrap_or(0)),
        Err(_) => (
            lookup(&passwd, 0, user, 2)
                .with_context(|| format!("no user {user:?} in the container's /etc/passwd"))?,
            lookup(&passwd, 0, user, 3).unwrap_or(0),
        ),
    };
    let gid = match group {
        None => primary_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = container_file(root, "/etc/group")?;
                lookup(&groups, 0, group, 2)
                    .with_context(|| format!("no group {group:?} in the container's /etc/group"))?
            }
        },
    };
    Ok((uid, gid))
}

/// A file of the container's, empty where it has none.
fn container_file(root: &Path, path: &str) -> Result<String> {
    match runq_shared::in_root::read_file(root, path, USER_DB_LIMIT) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(error) if error.is_not_found() => Ok(String::new()),
        Err(error) => Err(error).context("look up the user"),
    }
}

/// More than any real /etc/passwd or /etc/group.
const USER_DB_LIMIT: u64 = 4 << 20;

/// In a colon-separated file, the number in column `want` of the line whose column `key`
/// is `value`.
fn lookup(file: &str, key: usize, value: &str, want: usize) -> Option<u32> {
    file.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(key) == Some(&value))
        .and_then(|fields| fields.get(want)?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65533:nobody:/:/bin/false\n";

    #[test]
    fn names_and_numbers_resolve_through_the_containers_files() {
        let dir = std::env::temp_dir().join(format!("runq-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(&dir, "nobody").unwrap(), (65534, 65533));
        assert_eq!(resolve_user(&dir, "nobody:staff").unwrap(), (65534, 50));
        assert_eq!(resolve_user(&dir, "65534").unwrap(), (65534, 65533));
        assert_eq!(resolve_user(&dir, "1000:7").unwrap(), (1000, 7));
        assert!(resolve_user(&dir, "ghost").is_err());
        assert!(resolve_user(&dir, "root:ghosts").is_err());
        // A FIFO in its place is refused, not waited on.
        std::fs::remove_file(dir.join("etc/group")).unwrap();
        nix::unistd::mkfifo(&dir.join("etc/group"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let error = format!("{:#}", resolve_user(&dir, "root:staff").unwrap_err());
        assert!(error.contains("a FIFO"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
