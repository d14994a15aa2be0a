//! The container's network, handed to the VM. Docker wired a veth into the container's
//! namespace in a prestart hook; the proxy records each interface's MAC, addresses, routes and
//! MTU, joins it to a tap device by tc ingress redirects in both directions, and removes the
//! addresses from the host side, so that only the guest, with the same MAC, answers.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use runq_netlink::{format_mac, Netlink};
use runq_shared::config::{GuestNetwork, GuestNic, GuestRoute};

/// A NIC for QEMU: the tap's file descriptor and the MAC the guest NIC gets.
pub struct Tap {
    pub fd: OwnedFd,
    pub mac: String,
}

pub fn take_over() -> Result<(GuestNetwork, Vec<Tap>)> {
    let mut netlink = Netlink::open().context("open a netlink socket")?;
    let links = netlink.links()?;
    let addresses = netlink.addresses()?;
    let routes = netlink.routes()?;
    let mut network = GuestNetwork::default();
    let mut taps = Vec::new();
    let container_links = links.iter().filter(|l| !l.loopback);
    for (number, link) in container_links.enumerate() {
        let Some(mac) = link.mac else { continue };
        let mac = format_mac(mac);
        let tap_name = format!("runq{number}");
        let fd = open_tap(&tap_name)?;
        let tap_index = nix::net::if_::if_nametoindex(tap_name.as_str())
            .with_context(|| format!("find {tap_name}"))?;

        let own: Vec<_> = addresses
            .iter()
            .filter(|a| a.index == link.index && !is_link_local(a.ip))
            .collect();
        network.nics.push(GuestNic {
            ipv6_disabled: ipv6_disabled(&link.name),
            name: link.name.clone(),
            mac: mac.clone(),
            mtu: link.mtu,
            addresses: own
                .iter()
                .map(|a| format!("{}/{}", a.ip, a.prefix))
                .collect(),
        });
        for route in routes
            .iter()
            .filter(|r| r.index == link.index && !r.from_kernel)
        {
            if route.destination.is_some_and(|(ip, _)| is_link_local(ip)) {
                continue;
            }
            network.routes.push(GuestRoute {
                mac: mac.clone(),
                destination: route
                    .destination
                    .map(|(ip, prefix)| format!("{ip}/{prefix}")),
                gateway: route.gateway.map(|ip| ip.to_string()),
                ipv6: route.family == netlink_family_inet6(),
                scope_link: route.scope_link,
            });
        }

        // The host side must stay silent: no addresses, no IPv6 of its own.
        for name in [link.name.as_str(), tap_name.as_str()] {
            disable_ipv6(name);
        }
        for address in own.iter().filter(|a| a.ip.is_ipv4()) {
            netlink.delete_address(address)?;
        }
        netlink.set_link(tap_index, true, Some(link.mtu), None)?;
        netlink.redirect(link.index, tap_index)?;
        netlink.redirect(tap_index, link.index)?;
        taps.push(Tap { fd, mac });
    }
    Ok((network, taps))
}

fn netlink_family_inet6() -> netlink_packet_route::AddressFamily {
    netlink_packet_route::AddressFamily::Inet6
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

fn ipv6_disabled(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"))
        .map(|value| value.trim() == "1")
        .unwrap_or(true)
}

fn disable_ipv6(interface: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    // Absent when the host has no IPv6; then there is nothing to silence.
    let _ = std::fs::write(path, "1");
}

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// A tap device created through /dev/net/tun; QEMU is handed its descriptor.
fn open_tap(name: &str) -> Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("open /dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own, on the tun fd we own.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("create tap {name}"));
    }
    Ok(file.into())
}
