//! Host memory of processes: proportional set size (PSS), which divides each shared page
//! among the processes mapping it, so that figures of several containers add up.

use anyhow::{Context, Result};

/// PSS of one process in KiB, from /proc/PID/smaps_rollup.
pub fn pss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    field_kib(&text, "Pss:").with_context(|| format!("no Pss in {path}"))
}

/// PSS in KiB split into anonymous memory (for QEMU: its heap and translated code), file
/// pages (binaries, and the kernel image QEMU keeps mapped) and shared memory (the guest's
/// RAM, a memfd).
pub fn pss_split_kib(pid: u32) -> Result<[u64; 3]> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let field = |name: &str| field_kib(&text, name).unwrap_or(0);
    Ok([field("Pss_Anon:"), field("Pss_File:"), field("Pss_Shmem:")])
}

fn field_kib(smaps_rollup: &str, field: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// `pid` and all its descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            Some((child, parent_of(&stat)?))
        })
        .collect();
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(child, _)| *child),
        );
        next += 1;
    }
    tree
}

/// The parent PID from /proc/PID/stat; the command name may hold spaces and parentheses.
fn parent_of(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The process's command name (/proc/PID/comm).
pub fn name_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        let text = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  1024 kB\nPss:   612 kB\n";
        assert_eq!(field_kib(text, "Pss:"), Some(612));
        assert_eq!(field_kib(text, "Swap:"), None);
        assert_eq!(field_kib("Pss_Anon:  9 kB\n", "Pss_Anon:"), Some(9));
    }

    #[test]
    fn the_parent_follows_a_name_with_spaces() {
        assert_eq!(parent_of("42 (qemu (x) y) S 7 42 42 0"), Some(7));
    }

    #[test]
    fn this_process_is_the_root_of_its_tree() {
        let me = std::process::id();
        assert_eq!(process_tree(me)[0], me);
        assert!(pss_kib(me).unwrap() > 0);
    }
}
