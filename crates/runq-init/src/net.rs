//! The guest's network: loopback, and each NIC of the container found by its MAC and given
//! the addresses, MTU and routes the proxy recorded on the host.

use std::os::fd::AsRawFd;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use runq_shared::config::Ipv6Off;

use crate::error::{Context, InitError};

/// What a template's guest sets up before it is saved, so that the restored guest, which
/// continues that process, skips it (each step is kernel code translated afresh under TCG):
/// IPv6 off everywhere and loopback up, as Docker leaves a container (~19 ms), and its links
/// listed over an open netlink socket (~13 ms).
pub struct Prepared {
    netlink: runq_netlink::Netlink,
    links: Vec<runq_netlink::Link>,
}

/// Where a template's guest leaves IPv6: off for `all`, `default` and `lo`.
const TEMPLATE_IPV6_OFF: Ipv6Off = Ipv6Off {
    all: true,
    default: true,
    lo: true,
};

/// Where a booted kernel starts: IPv6 on.
const KERNEL_IPV6_OFF: Ipv6Off = Ipv6Off {
    all: false,
    default: false,
    lo: false,
};

impl Prepared {
    pub fn in_template() -> Result<Prepared, InitError> {
        switch_ipv6(KERNEL_IPV6_OFF, TEMPLATE_IPV6_OFF)?;
        loopback_up()?;
        let mut netlink = runq_netlink::Netlink::open()?;
        let links = netlink.links()?;
        Ok(Prepared { netlink, links })
    }
}

/// IPv6 off where the engine had it off, then loopback up, then each NIC.
/// With `restored`, the NICs carry their template's MACs until they are given the
/// container's, and `prepared` is what the template's guest did.
pub fn configure(
    network: &runq_shared::config::GuestNetwork,
    restored: bool,
    prepared: Option<Prepared>,
) -> Result<(), InitError> {
    let prepared = prepared.filter(|_| restored);
    match &prepared {
        // Loopback is up: it gains or loses `::1` as its IPv6 goes on or off.
        Some(_) => switch_ipv6(TEMPLATE_IPV6_OFF, network.ipv6_off)?,
        None => {
            // Before loopback comes up, so that it gets `::1` only where IPv6 is on.
            switch_ipv6(KERNEL_IPV6_OFF, network.ipv6_off)?;
            loopback_up()?;
        }
    }
    configure_nics(network, restored, prepared)
}

/// Takes IPv6 from `now` to where the engine had it (`wanted`).
fn switch_ipv6(now: Ipv6Off, wanted: Ipv6Off) -> Result<(), InitError> {
    for (scope, off) in ipv6_writes(now, wanted) {
        set_ipv6_off(scope, off)?;
    }
    Ok(())
}

/// The `disable_ipv6` writes that take `now` to `wanted`. Writing `all` sets `default` and
/// every interface's too, so it goes first, and the other two follow where they differ.
fn ipv6_writes(mut now: Ipv6Off, wanted: Ipv6Off) -> Vec<(&'static str, bool)> {
    let mut writes = Vec::new();
    if now.all != wanted.all {
        writes.push(("all", wanted.all));
        now = Ipv6Off {
            all: wanted.all,
            default: wanted.all,
            lo: wanted.all,
        };
    }
    if now.default != wanted.default {
        writes.push(("default", wanted.default));
    }
    if now.lo != wanted.lo {
        writes.push(("lo", wanted.lo));
    }
    writes
}

fn set_ipv6_off(scope: &str, off: bool) -> Result<(), InitError> {
    let path = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
    match std::fs::write(&path, if off { "1" } else { "0" }) {
        // A kernel without IPv6 has it off already.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.context(|| format!("write {path}")),
    }
}

fn loopback_up() -> Result<(), InitError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| "socket for interface setup".to_string())?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own; the union member
    // ifru_flags is the one these requests use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(last_error("get flags of lo"));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(last_error("bring lo up"));
        }
    }
    Ok(())
}

/// The failure of the system call just made, with what it was for.
pub(crate) fn last_error(what: &str) -> InitError {
    InitError::Sys {
        what: what.to_string(),
        source: nix::errno::Errno::last(),
    }
}

fn configure_nics(
    network: &runq_shared::config::GuestNetwork,
    restored: bool,
    prepared: Option<Prepared>,
) -> Result<(), InitError> {
    use runq_netlink::{format_mac, parse_mac, Netlink, Route};
    if network.nics.is_empty() {
        return Ok(());
    }
    let (mut netlink, links) = match prepared {
        Some(prepared) => (prepared.netlink, prepared.links),
        None => {
            let mut netlink = Netlink::open()?;
            let links = netlink.links()?;
            (netlink, links)
        }
    };
    let link_of = |mac: &str| {
        links
            .iter()
            .find(|link| link.mac.map(format_mac).as_deref() == Some(mac))
            .ok_or_else(|| InitError::NoNic {
                mac: mac.to_string(),
            })
    };
    // The proxy's NICs are in the template's order: its n-th has the template's n-th MAC.
    let found_by = |number: usize, nic: &runq_shared::config::GuestNic| match restored {
        true => link_of(&runq_shared::template::nic_mac(number)),
        false => link_of(&nic.mac),
    };
    let nic_links = network
        .nics
        .iter()
        .enumerate()
        .map(|(number, nic)| found_by(number, nic).map(|link| (nic, link)))
        .collect::<Result<Vec<_>, _>>()?;
    // The guest numbers its NICs in probe order; they take the container's names, through
    // temporary ones so that no two want the same name at once. Usually the guest already
    // chose the same names (eth0 for eth0), and a rename costs ~15 ms under TCG.
    let rename = nic_links.iter().any(|(nic, link)| link.name != nic.name);
    if rename {
        for (number, (_, link)) in nic_links.iter().enumerate() {
            netlink.rename_link(link.index, &format!("runq{number}"))?;
        }
    }
    for (nic, link) in &nic_links {
        let index = link.index;
        if rename {
            netlink.rename_link(index, &nic.name)?;
        }
        // Also where it is on: `all` may have switched it off for every interface above.
        set_ipv6_off(&nic.name, nic.ipv6_disabled)?;
        let mac = match restored {
            true => Some(
                parse_mac(&nic.mac).ok_or_else(|| InitError::BadNetworkValue {
                    what: "MAC",
                    value: nic.mac.clone(),
                })?,
            ),
            false => None,
        };
        netlink.set_link(index, true, Some(nic.mtu), mac)?;
        for cidr in &nic.addresses {
            let (ip, prefix) = parse_cidr(cidr)?;
            let broadcast = nic
                .broadcasts
                .get(cidr)
                .map(|text| {
                    text.parse().map_err(|_| InitError::BadNetworkValue {
                        what: "broadcast address",
                        value: text.clone(),
                    })
                })
                .transpose()?;
            netlink.add_address(index, ip, prefix, broadcast)?;
        }
    }
    // Routes on the wire first: a gateway must be reachable before a route can use it.
    let mut routes: Vec<_> = network.routes.iter().collect();
    routes.sort_by_key(|route| !route.scope_link);
    for route in routes {
        let destination = route.destination.as_deref().map(parse_cidr).transpose()?;
        let gateway = route
            .gateway
            .as_deref()
            .map(|g| {
                g.parse().map_err(|_| InitError::BadNetworkValue {
                    what: "gateway",
                    value: g.to_string(),
                })
            })
            .transpose()?;
        // By the container's MAC, which a restored guest's links got only just now.
        let index = nic_links
            .iter()
            .find(|(nic, _)| nic.mac == route.mac)
            .map(|(_, link)| link.index)
            .ok_or_else(|| InitError::NoNic {
                mac: route.mac.clone(),
            })?;
        let wanted = Route {
            index,
            destination,
            gateway,
            family: if route.ipv6 {
                netlink_packet_route::AddressFamily::Inet6
            } else {
                netlink_packet_route::AddressFamily::Inet
            },
            scope_link: route.scope_link,
            from_kernel: false,
        };
        match netlink.add_route(&wanted) {
            // The kernel made the subnet routes itself with the addresses.
            Err(e) if e.already_exists() => {}
            other => other?,
        }
    }
    Ok(())
}

fn parse_cidr(text: &str) -> Result<(std::net::IpAddr, u8), InitError> {
    let bad = || InitError::BadNetworkValue {
        what: "address",
        value: text.to_string(),
    };
    let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
    Ok((
        ip.parse().map_err(|_| bad())?,
        prefix.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's rule: writing `all` sets `default` and every interface's (lo's) too.
    fn written(mut state: Ipv6Off, writes: &[(&str, bool)]) -> Ipv6Off {
        for &(scope, off) in writes {
            match scope {
                "all" => {
                    state = Ipv6Off {
                        all: off,
                        default: off,
                        lo: off,
                    }
                }
                "default" => state.default = off,
                "lo" => state.lo = off,
                other => panic!("unknown scope {other}"),
            }
        }
        state
    }

    fn every_state() -> Vec<Ipv6Off> {
        (0..8)
            .map(|bits| Ipv6Off {
                all: bits & 1 != 0,
                default: bits & 2 != 0,
                lo: bits & 4 != 0,
            })
            .collect()
    }

    #[test]
    fn booted_and_restored_guests_reach_the_engine_s_state_from_theirs() {
        for wanted in every_state() {
            for start in [KERNEL_IPV6_OFF, TEMPLATE_IPV6_OFF] {
                let writes = ipv6_writes(start, wanted);
                assert_eq!(
                    written(start, &writes),
                    wanted,
                    "from {start:?}: {writes:?}"
                );
            }
        }
    }

    #[test]
    fn docker_s_default_needs_no_write_after_a_template() {
        assert!(ipv6_writes(TEMPLATE_IPV6_OFF, TEMPLATE_IPV6_OFF).is_empty());
        assert_eq!(
            ipv6_writes(KERNEL_IPV6_OFF, TEMPLATE_IPV6_OFF),
            [("all", true)]
        );
    }
}
