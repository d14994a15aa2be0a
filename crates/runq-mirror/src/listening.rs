//! The TCP ports listening on loopback or the wildcard address, read from /proc/net/tcp and
//! /proc/net/tcp6. The kernel has no notification for listen(), so the mirror reads them
//! again every few hundred milliseconds.

use std::collections::BTreeMap;

use runq_shared::protocol::ListenPort;

/// The kernel's number for TCP_LISTEN in the `st` column.
const TCP_LISTEN: &str = "0A";

/// Listening ports of this network namespace, one entry per port (wildcard wins).
pub fn scan() -> Vec<ListenPort> {
    let mut ports = BTreeMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            merge(&mut ports, &parse(&text));
        }
    }
    ports
        .into_iter()
        .map(|(port, any)| ListenPort { port, any })
        .collect()
}

fn merge(ports: &mut BTreeMap<u16, bool>, found: &[ListenPort]) {
    for listen in found {
        let any = ports.entry(listen.port).or_insert(false);
        *any |= listen.any;
    }
}

/// The listening sockets in one /proc/net/tcp{,6} table that a process on the other side could
/// mean by "localhost": bound to 127.0.0.1, ::1 (or v4-mapped 127.0.0.1) or the wildcard.
/// Other loopback addresses (Docker's DNS on 127.0.0.11) stay private.
pub fn parse(table: &str) -> Vec<ListenPort> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            let local = columns.nth(1)?;
            let state = columns.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let (address, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let any = match address {
                "00000000" | "00000000000000000000000000000000" => true,
                // 127.0.0.1, ::1 and ::ffff:127.0.0.1 as the kernel prints them (32-bit
                // words in host byte order).
                "0100007F"
                | "00000000000000000000000001000000"
                | "0000000000000000FFFF00000100007F" => false,
                _ => return None,
            };
            Some(ListenPort { port, any })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0B00007F:8AE1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D3A4 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   4: 0500580A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0
";

    #[test]
    fn loopback_and_wildcard_listeners_count_others_do_not() {
        assert_eq!(
            parse(TCP),
            [
                ListenPort {
                    port: 8080,
                    any: false
                },
                ListenPort {
                    port: 80,
                    any: true
                },
            ]
        );
    }

    #[test]
    fn ipv6_listeners_merge_with_ipv4_and_the_wildcard_wins() {
        let mut ports = BTreeMap::new();
        merge(&mut ports, &parse(TCP));
        merge(&mut ports, &parse(TCP6));
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            [(80, true), (8080, false), (8081, false)]
        );
    }

    #[test]
    fn a_garbled_table_yields_nothing() {
        assert!(parse("header\nnonsense\n 0: zz:zz 0A\n").is_empty());
    }
}
