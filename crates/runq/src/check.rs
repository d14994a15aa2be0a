//! `runq check`: one screen on what this host offers runq, each missing piece with what to do
//! about it. Exits 0 when containers can run here (an accelerator, the assets, runc), 1 if not.

use std::path::Path;
use std::process::Command;

use crate::options::RunqOptions;
use runq_shared::layout::{assets, PROXY};

use crate::host;

/// How a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Missing, but runq works without it (slower, or a mode is unavailable).
    Optional,
    /// Missing, and containers cannot run.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: &'static str,
    pub detail: String,
    /// What to do when it is not Ok.
    pub remedy: &'static str,
}

fn finding(
    ok: bool,
    fallback: Level,
    what: &'static str,
    detail: String,
    remedy: &'static str,
) -> Finding {
    Finding {
        level: if ok { Level::Ok } else { fallback },
        what,
        detail,
        remedy,
    }
}

pub fn findings(options: &RunqOptions) -> Vec<Finding> {
    let assets_dir = host::assets_dir(options);
    let asset = |path: &str| assets_dir.join(path);
    let kvm = host::kvm_unusable();
    // Debian 12's QEMU has TCG in a module; later ones build it in.
    let tcg_module = find_file(&asset(assets::LIBS), "accel-tcg-x86_64.so")
        || qemu_output(&assets_dir, "-accel", "help").is_some_and(|out| {
            String::from_utf8_lossy(&out)
                .lines()
                .any(|line| line.trim() == "tcg")
        });
    let qemu = qemu_version(&assets_dir);
    let release = std::fs::read_to_string(asset(assets::KERNEL_RELEASE)).unwrap_or_default();
    let runc = command_version("runc");
    let device = |path: &str| Path::new(path).exists();
    vec![
        finding(
            kvm.is_none(),
            Level::Optional,
            "KVM",
            kvm.clone().unwrap_or_else(|| "/dev/kvm usable".into()),
            "VMs run under TCG, many times slower: use bare metal or a VM with nested \
             virtualisation, and load kvm_intel or kvm_amd",
        ),
        finding(
            tcg_module,
            if kvm.is_none() {
                Level::Optional
            } else {
                Level::Missing
            },
            "TCG",
            if tcg_module {
                "QEMU's TCG accelerator is installed: the fallback without KVM".into()
            } else {
                "QEMU has no TCG accelerator (Debian 12's keeps it in a module)".into()
            },
            "run `make install` (it copies QEMU's accel-tcg module with QEMU where it has one)",
        ),
        finding(
            qemu.is_some(),
            Level::Missing,
            "QEMU",
            qemu.unwrap_or_else(|| format!("no working QEMU in {}", assets_dir.display())),
            "run `make install`",
        ),
        finding(
            asset(assets::KERNEL).is_file() && asset(assets::INITRD).is_file(),
            Level::Missing,
            "guest kernel",
            if release.trim().is_empty() {
                format!("no kernel and initrd in {}", asset("kernel").display())
            } else {
                format!("{} with its initrd", release.trim())
            },
            "run `make install` (it fetches Debian's kernel package and builds the initrd)",
        ),
        finding(
            asset(PROXY).is_file() && asset(assets::VIRTIOFSD).is_file(),
            Level::Missing,
            "proxy, virtiofsd",
            format!("in {}", assets_dir.display()),
            "run `make install`",
        ),
        finding(
            runc.is_some(),
            Level::Missing,
            "runc",
            runc.unwrap_or_else(|| "not found on the PATH".into()),
            "apt-get install runc, or pass --runc PATH",
        ),
        finding(
            device("/dev/net/tun"),
            Level::Optional,
            "tun",
            "/dev/net/tun".into(),
            "without it containers get no network: modprobe tun",
        ),
        finding(
            host::macvtap_major().is_some(),
            Level::Optional,
            "macvtap",
            "for --net macvtap".into(),
            "modprobe macvtap, or keep the default --net tap",
        ),
        docker_registration(),
    ]
}

fn docker_registration() -> Finding {
    let path = "/etc/docker/daemon.json";
    let registered = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|json| {
            json["runtimes"]["runq"]["path"]
                .as_str()
                .map(str::to_string)
        });
    finding(
        registered.is_some(),
        Level::Optional,
        "Docker",
        match &registered {
            Some(runq) => format!("runq registered in {path} as {runq}"),
            None => format!("runq is not a runtime in {path}"),
        },
        "run `make docker` (or scripts/docker-setup.sh --register-only)",
    )
}

fn find_file(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let path = entry.path();
        entry.file_name() == name || (path.is_dir() && find_file(&path, name))
    })
}

/// QEMU's first version line, run as the proxy runs it: through the bundled loader.
fn qemu_version(assets_dir: &Path) -> Option<String> {
    first_line(&qemu_output(assets_dir, "--version", "")?)
}

/// The installed QEMU's stdout for these arguments (an empty second one is left out).
fn qemu_output(assets_dir: &Path, first: &str, second: &str) -> Option<Vec<u8>> {
    let output = Command::new(assets_dir.join(assets::LOADER))
        .arg("--library-path")
        .arg(assets_dir.join(assets::LIBS))
        .arg(assets_dir.join(assets::QEMU))
        .arg(first)
        .args((!second.is_empty()).then_some(second))
        .env_clear()
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(output.stdout)
}

fn command_version(program: &str) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    first_line(&output.stdout)
}

fn first_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .map(str::to_string)
}

/// Prints the report; returns the exit code.
pub fn report(options: &RunqOptions) -> i32 {
    let findings = findings(options);
    println!("runq check: what this host offers runq");
    for item in &findings {
        let mark = match item.level {
            Level::Ok => "ok     ",
            Level::Optional => "missing",
            Level::Missing => "NEEDED ",
        };
        println!("  {mark} {:<16} {}", item.what, item.detail);
        if item.level != Level::Ok {
            println!("          {:<16} -> {}", "", item.remedy);
        }
    }
    let runnable = findings.iter().all(|f| f.level != Level::Missing);
    if runnable {
        println!("runq can run containers here.");
        0
    } else {
        println!("runq cannot run containers here until the NEEDED items are there.");
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_assets_make_the_host_unfit_and_say_what_to_do() {
        let options = RunqOptions {
            assets: Some("/nonexistent/runq-assets".into()),
            ..RunqOptions::default()
        };
        let findings = findings(&options);
        let qemu = findings.iter().find(|f| f.what == "QEMU").unwrap();
        assert_eq!(qemu.level, Level::Missing);
        assert!(qemu.remedy.contains("make install"));
        let kernel = findings.iter().find(|f| f.what == "guest kernel").unwrap();
        assert_eq!(kernel.level, Level::Missing);
        assert_eq!(report(&options), 1);
    }
}
