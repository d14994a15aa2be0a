//! The guest's /etc/resolv.conf when runq's DNS options are set: the engine's file with the
//! kinds of line runq was given replaced (an empty list removes them), everything else kept.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Docker's embedded DNS server on user-defined networks; it answers only inside the
/// container's network namespace on the host, so the guest relays queries for it.
pub const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Whether a resolv.conf sends queries to Docker's embedded server.
pub fn names_embedded_dns(resolv_conf: &str) -> bool {
    resolv_conf.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver")
            && words.next().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) == Some(EMBEDDED_DNS)
    })
}

/// `None` keeps the engine's lines of that kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsSettings {
    pub nameservers: Option<Vec<String>>,
    pub search: Option<Vec<String>>,
    pub options: Option<Vec<String>>,
}

impl DnsSettings {
    pub fn changes_anything(&self) -> bool {
        self.nameservers.is_some() || self.search.is_some() || self.options.is_some()
    }

    /// The file runq writes:
    ///
    /// ```text
    /// <the engine's lines, minus the kinds replaced>
    /// nameserver <each --dns entry>
    /// search <the --dns-search entries, space-separated>
    /// options <the --dns-opts entries, space-separated>
    /// ```
    pub fn resolv_conf(&self, engine: &str) -> String {
        let replaced = |line: &str| {
            let keyword = line.split_whitespace().next().unwrap_or_default();
            (keyword == "nameserver" && self.nameservers.is_some())
                || ((keyword == "search" || keyword == "domain") && self.search.is_some())
                || (keyword == "options" && self.options.is_some())
        };
        let mut out: Vec<String> = engine
            .lines()
            .filter(|line| !replaced(line))
            .map(str::to_string)
            .collect();
        for server in self.nameservers.iter().flatten() {
            out.push(format!("nameserver {server}"));
        }
        for (keyword, values) in [("search", &self.search), ("options", &self.options)] {
            if let Some(values) = values.as_ref().filter(|v| !v.is_empty()) {
                out.push(format!("{keyword} {}", values.join(" ")));
            }
        }
        let mut text = out.join("\n");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nameserver_line_for_the_embedded_server_counts() {
        assert!(names_embedded_dns(
            "search example.org\nnameserver 127.0.0.11\noptions ndots:0\n"
        ));
        assert!(!names_embedded_dns("nameserver 8.8.8.8\n"));
        assert!(!names_embedded_dns("# nameserver 127.0.0.11\n"));
        assert!(!names_embedded_dns("nameserver 127.0.0.111\n"));
        assert!(!names_embedded_dns(""));
    }

    const ENGINE: &str = "# Docker\nnameserver 10.0.0.1\nsearch corp.example\noptions ndots:0\n";

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn only_the_kinds_given_are_replaced() {
        let dns = DnsSettings {
            nameservers: list(&["1.1.1.1", "9.9.9.9"]),
            ..Default::default()
        };
        assert_eq!(
            dns.resolv_conf(ENGINE),
            "# Docker\nsearch corp.example\noptions ndots:0\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n"
        );
    }

    #[test]
    fn empty_lists_remove_lines_and_search_replaces_domain() {
        let dns = DnsSettings {
            nameservers: None,
            search: list(&["a.example", "b.example"]),
            options: list(&[]),
        };
        assert_eq!(
            dns.resolv_conf("domain old.example\nnameserver 10.0.0.1\noptions rotate\n"),
            "nameserver 10.0.0.1\nsearch a.example b.example\n"
        );
        assert!(dns.changes_anything());
        assert!(!DnsSettings::default().changes_anything());
    }
}
