//! The container's network, handed to the VM. Docker wired a veth (or a macvlan) into the
//! container's namespace in a prestart hook; the proxy records each interface's MAC,
//! addresses, routes and MTU, connects it to a VM NIC, and removes the addresses from the host
//! side, so that only the guest, with the same MAC, answers.
//!
//! Two ways to connect: a tap device joined to the interface by tc ingress redirects in both
//! directions (the default), or a macvtap stacked on the interface. Both live in the
//! container's namespace and go with it.

use std::io::Read;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use runq_netlink::{format_mac, Address, Link, Netlink, Route};
use runq_shared::config::NetMode;
use runq_shared::config::{GuestNetwork, GuestNic, GuestRoute, Ipv6Off};

/// A NIC for QEMU: the tap's file descriptor (or with `stream`, a socket passt serves) and
/// the MAC the guest NIC gets.
pub struct Tap {
    pub fd: OwnedFd,
    pub mac: String,
    pub stream: bool,
}

pub fn take_over(mode: NetMode) -> Result<(GuestNetwork, Vec<Tap>)> {
    if mode == NetMode::Shared {
        anyhow::bail!("a shared network namespace is not taken over (see pod_network)");
    }
    let mut netlink = Netlink::open().context("open a netlink socket")?;
    let links = netlink.links()?;
    let addresses = netlink.addresses()?;
    let routes = netlink.routes()?;
    let mut network = GuestNetwork {
        ipv6_off: engines_ipv6_off(),
        ..GuestNetwork::default()
    };
    let mut taps = Vec::new();
    let container_links = links.iter().filter(|l| !l.loopback);
    for (number, link) in container_links.enumerate() {
        let Some(raw_mac) = link.mac else { continue };
        let mac = format_mac(raw_mac);
        let nic_name = format!("runq{number}");

        let (nic, nic_routes) = guest_view(link, &mac, &addresses, &routes);
        network.nics.push(nic);
        network.routes.extend(nic_routes);

        // The host side must stay silent: no addresses, no IPv6 of its own.
        disable_ipv6(&link.name)?;
        let own_ipv4 = addresses
            .iter()
            .filter(|a| a.index == link.index && a.ip.is_ipv4());
        for address in own_ipv4 {
            netlink.delete_address(address)?;
        }
        let fd = match mode {
            NetMode::Tap => connect_tap(&mut netlink, link, &nic_name)?,
            NetMode::Macvtap => connect_macvtap(&mut netlink, link, raw_mac, &nic_name)?,
            NetMode::Shared => unreachable!("returned above"),
        };
        taps.push(Tap {
            fd,
            mac,
            stream: false,
        });
    }
    Ok((network, taps))
}

/// How the guest sees the interface `link` on its NIC with `mac`: name, MTU, addresses and
/// routes, less the link-local ones and the subnet routes the guest kernel makes itself.
pub fn guest_view(
    link: &Link,
    mac: &str,
    addresses: &[Address],
    routes: &[Route],
) -> (GuestNic, Vec<GuestRoute>) {
    let own: Vec<_> = addresses
        .iter()
        .filter(|a| a.index == link.index && !is_link_local(a.ip))
        .map(|a| (format!("{}/{}", a.ip, a.prefix), a.broadcast))
        .collect();
    let nic = GuestNic {
        ipv6_disabled: ipv6_disabled(&link.name),
        name: link.name.clone(),
        mac: mac.to_string(),
        mtu: link.mtu,
        addresses: own.iter().map(|(cidr, _)| cidr.clone()).collect(),
        broadcasts: own
            .iter()
            .filter_map(|(cidr, broadcast)| Some((cidr.clone(), (*broadcast)?.to_string())))
            .collect(),
    };
    let routes = routes
        .iter()
        .filter(|r| r.index == link.index && !r.from_kernel)
        .filter(|r| !r.destination.is_some_and(|(ip, _)| is_link_local(ip)))
        .map(|route| GuestRoute {
            mac: mac.to_string(),
            destination: route
                .destination
                .map(|(ip, prefix)| format!("{ip}/{prefix}")),
            gateway: route.gateway.map(|ip| ip.to_string()),
            ipv6: route.family == netlink_packet_route::AddressFamily::Inet6,
            scope_link: route.scope_link,
        })
        .collect();
    (nic, routes)
}

/// A tap device, with everything the interface receives redirected to it and back.
fn connect_tap(netlink: &mut Netlink, link: &Link, name: &str) -> Result<OwnedFd> {
    let fd = open_tap(name)?;
    let index = nix::net::if_::if_nametoindex(name).with_context(|| format!("find {name}"))?;
    disable_ipv6(name)?;
    netlink.set_link(index, true, Some(link.mtu), None)?;
    netlink.redirect(link.index, index)?;
    netlink.redirect(index, link.index)?;
    Ok(fd)
}

/// A macvtap on the interface that takes over its MAC, so frames for the container reach the
/// guest without a detour through tc. The interface itself gets a random MAC: the kernel
/// refuses two macvlans with one address on a device.
fn connect_macvtap(
    netlink: &mut Netlink,
    link: &Link,
    mac: [u8; 6],
    name: &str,
) -> Result<OwnedFd> {
    netlink.set_link(link.index, true, None, Some(random_local_mac()?))?;
    netlink.add_macvtap(link.index, name, mac, link.mtu)?;
    let index = nix::net::if_::if_nametoindex(name).with_context(|| format!("find {name}"))?;
    disable_ipv6(name)?;
    netlink.set_link(index, true, None, None)?;
    open_macvtap(name, index)
}

/// Opens a macvtap's character device. The container's /dev has no node for it, so the
/// proxy makes one from the numbers sysfs gives, opens it and removes it again.
fn open_macvtap(name: &str, index: u32) -> Result<OwnedFd> {
    let sysfs = format!("/sys/class/net/{name}/macvtap/tap{index}/dev");
    let numbers = std::fs::read_to_string(&sysfs).with_context(|| format!("read {sysfs}"))?;
    let (major, minor) = numbers
        .trim()
        .split_once(':')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
        .with_context(|| format!("{sysfs}: not MAJOR:MINOR but {numbers:?}"))?;
    let node = format!("/dev/{name}");
    nix::sys::stat::mknod(
        node.as_str(),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, minor),
    )
    .with_context(|| format!("make the device node {node}"))?;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .with_context(|| format!("open {node}"));
    let _ = std::fs::remove_file(&node);
    Ok(opened?.into())
}

/// A unicast, locally administered MAC nobody else will pick.
pub fn random_local_mac() -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut mac))
        .context("read /dev/urandom")?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// IPv6 as the engine left it for the namespace as a whole and its loopback; read before the
/// proxy switches it off on the interfaces it takes over.
pub fn engines_ipv6_off() -> Ipv6Off {
    Ipv6Off {
        all: ipv6_disabled("all"),
        default: ipv6_disabled("default"),
        lo: ipv6_disabled("lo"),
    }
}

/// Whether IPv6 is off on `interface`; a host without IPv6 has it off everywhere.
fn ipv6_disabled(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"))
        .map(|value| value.trim() == "1")
        .unwrap_or(true)
}

/// Switches IPv6 off on `interface`. Done before the proxy makes the spec's read-only paths
/// (`/proc/sys`) read-only; a failure stops the start rather than leaving the host side with
/// addresses of its own.
fn disable_ipv6(interface: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    match std::fs::write(&path, "1") {
        // Absent when the host has no IPv6; then there is nothing to silence.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result.with_context(|| format!("switch IPv6 off on {interface} ({path})")),
    }
}

/// A tap device created through /dev/net/tun; QEMU is handed its descriptor.
fn open_tap(name: &str) -> Result<OwnedFd> {
    runq_shared::tap::open(name).with_context(|| format!("create tap {name}"))
}
