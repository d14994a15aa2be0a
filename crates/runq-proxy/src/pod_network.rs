//! The network of a VM whose namespace other containers share (a Kubernetes pod's). Taking
//! the interfaces over, as runq does for a container of its own, would leave the pod's
//! other containers without them. Here the interfaces stay, and passt connects the VM to the
//! namespace through ordinary sockets, as if the application were a process in it: the
//! guest gets the interface's addresses and routes, its connections leave from the pod's
//! address. What comes in reaches the guest through the mirrored listeners (runq-mirror),
//! which also share localhost between the pod's VMs.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use runq_netlink::{format_mac, Netlink};
use runq_shared::config::GuestNetwork;

use crate::children::Tracked;
use crate::network::{engines_ipv6_off, guest_view, random_local_mac, Tap};
use runq_shared::qemu::Paths;

/// The guest's view of the namespace's main interface, QEMU's end of passt's socket, and
/// passt. A namespace with no interface but loopback gets no NIC and no passt.
pub fn share(paths: &Paths) -> Result<(GuestNetwork, Vec<Tap>, Option<Tracked>)> {
    let mut network = GuestNetwork {
        mirror_localhost: true,
        ipv6_off: engines_ipv6_off(),
        ..GuestNetwork::default()
    };
    let mut netlink = Netlink::open().context("open a netlink socket")?;
    let links = netlink.links()?;
    let addresses = netlink.addresses()?;
    let routes = netlink.routes()?;
    // A runq VM that took the namespace over left its tap (runq0, ...) and the interfaces
    // bare: there is nothing to share, and its localhost is not mirrored.
    if let Some(tap) = links.iter().find(|l| is_runq_tap(&l.name)) {
        bail!(
            "the network namespace belongs to another runq container's VM (its {} is there): \
             start that container with RUNQ_NET=shared to share its network",
            tap.name
        );
    }
    // passt's own choice: the interface of the default route, else the first with addresses.
    let default_route_link = routes
        .iter()
        .find(|r| r.destination.is_none() && r.gateway.is_some())
        .map(|r| r.index);
    let Some(link) = links
        .iter()
        .filter(|l| !l.loopback)
        .find(|l| Some(l.index) == default_route_link)
        .or_else(|| {
            links
                .iter()
                .filter(|l| !l.loopback)
                .find(|l| addresses.iter().any(|a| a.index == l.index))
        })
    else {
        return Ok((network, Vec::new(), None));
    };

    let mac = format_mac(random_local_mac()?);
    let (nic, routes) = guest_view(link, &mac, &addresses, &routes);
    network.nics.push(nic);
    network.routes = routes;

    let (qemu_end, passt_end) = UnixStream::pair().context("make a socket pair for passt")?;
    let passt = crate::children::start_passt(paths, passt_end.into(), &link.name)?;
    let fd: OwnedFd = qemu_end.into();
    Ok((
        network,
        vec![Tap {
            fd,
            mac,
            stream: true,
        }],
        Some(passt),
    ))
}

/// The names the proxy gives its taps and macvtaps (see network.rs).
fn is_runq_tap(name: &str) -> bool {
    name.strip_prefix("runq")
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxys_own_device_names_count_as_runq_taps() {
        assert!(is_runq_tap("runq0"));
        assert!(is_runq_tap("runq12"));
        assert!(!is_runq_tap("runq"));
        assert!(!is_runq_tap("runqx"));
        assert!(!is_runq_tap("eth0"));
    }
}
