//! The network of a VM whose namespace other containers share (a Kubernetes pod's). Taking
//! the interfaces over, as runq does for a container of its own, would leave the pod's
//! other containers without them. Here the interfaces stay, and passt connects the VM to the
//! namespace through ordinary sockets, as if the application were a process in it: the
//! guest gets the interface's addresses and routes, its connections leave from the pod's
//! address. What comes in reaches the guest through the mirrored listeners (runq-mirror),
//! which also share localhost between the pod's VMs.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Child;

use anyhow::{Context, Result};
use runq_netlink::{format_mac, Netlink};
use runq_shared::config::GuestNetwork;

use crate::network::{guest_view, random_local_mac, Tap};
use crate::qemu::Paths;

/// The guest's view of the namespace's main interface, QEMU's end of passt's socket, and
/// passt. A namespace with no interface but loopback gets no NIC and no passt.
pub fn share(paths: &Paths) -> Result<(GuestNetwork, Vec<Tap>, Option<Child>)> {
    let mut network = GuestNetwork {
        mirror_localhost: true,
        ..GuestNetwork::default()
    };
    let mut netlink = Netlink::open().context("open a netlink socket")?;
    let links = netlink.links()?;
    let addresses = netlink.addresses()?;
    let routes = netlink.routes()?;
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
