//! A small synchronous rtnetlink client for the two places that configure networks: the proxy
//! in the container's network namespace (read the interfaces, hand them to taps with tc
//! redirects) and runq-init in the guest (give the NICs their addresses and routes).
//! Synchronous because runq-init must stay single-threaded and neither needs more.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVtapMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("netlink: {what}: {source}")]
    Kernel {
        what: String,
        source: std::io::Error,
    },
    #[error("netlink: cannot decode the kernel's answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The kernel refused because the object exists already.
    pub fn already_exists(&self) -> bool {
        matches!(self, NetlinkError::Kernel { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists)
    }
}

pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

/// An interface as the proxy finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub loopback: bool,
}

/// An address with its prefix length, on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix: u8,
    /// An IPv4 address's broadcast address, where it has one.
    pub broadcast: Option<Ipv4Addr>,
    message: AddressMessage,
}

/// A route of the main table, through an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub index: u32,
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub family: AddressFamily,
    pub scope_link: bool,
    /// Made by the kernel itself for an address's subnet; it will make it again.
    pub from_kernel: bool,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends one request and collects the answers until the dump ends or the kernel acks.
    fn request(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < bytes.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                offset += length;
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(answers),
                            Some(_) => Err(NetlinkError::Kernel {
                                what: what.to_string(),
                                source: error.to_io(),
                            }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let answers = self.request(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(&link)),
                _ => None,
            })
            .collect())
    }

    pub fn addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        let answers = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewAddress(message) => {
                    let ip = message.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })?;
                    let broadcast = message.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Broadcast(broadcast) => Some(*broadcast),
                        _ => None,
                    });
                    Some(Address {
                        index: message.header.index,
                        ip,
                        prefix: message.header.prefix_len,
                        broadcast,
                        message,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Routes of the main table, IPv4 and IPv6.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let answers = self.request(
                "list routes",
                RouteNetlinkMessage::GetRoute(query),
                NLM_F_DUMP,
            )?;
            for answer in answers {
                let RouteNetlinkMessage::NewRoute(message) = answer else {
                    continue;
                };
                if message.header.table != RouteHeader::RT_TABLE_MAIN
                    || message.header.kind != RouteType::Unicast
                {
                    continue;
                }
                let mut route = Route {
                    index: 0,
                    destination: None,
                    gateway: None,
                    family,
                    scope_link: message.header.scope == RouteScope::Link,
                    from_kernel: message.header.protocol == RouteProtocol::Kernel,
                };
                for attribute in &message.attributes {
                    match attribute {
                        RouteAttribute::Oif(index) => route.index = *index,
                        RouteAttribute::Destination(address) => {
                            route.destination = ip_of(address)
                                .map(|ip| (ip, message.header.destination_prefix_length))
                        }
                        RouteAttribute::Gateway(address) => route.gateway = ip_of(address),
                        _ => {}
                    }
                }
                routes.push(route);
            }
        }
        Ok(routes)
    }

    /// Brings a link up (or down) and sets its MTU and MAC where given.
    pub fn set_link(
        &mut self,
        index: u32,
        up: bool,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.change_mask = LinkFlags::Up;
        if up {
            message.header.flags = LinkFlags::Up;
        }
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        self.request(
            &format!("set link {index}"),
            RouteNetlinkMessage::SetLink(message),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Renames a link; it must be down.
    pub fn rename_link(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        self.request(
            &format!("rename link {index} to {name}"),
            RouteNetlinkMessage::SetLink(message),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Creates a macvtap on `parent` in bridge mode with the given MAC. Bridge mode, unlike
    /// passthru, also works where the parent is itself a macvlan (Docker's macvlan driver):
    /// the kernel then stacks the macvtap beside it on the real device.
    pub fn add_macvtap(
        &mut self,
        parent: u32,
        name: &str,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Link(parent),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::MacVtap),
                LinkInfo::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(
                    MacVtapMode::Bridge,
                )])),
            ]),
        ];
        self.request(
            &format!("add macvtap {name} on link {parent}"),
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds `ip/prefix` to link `index`; an IPv4 address with its `broadcast`, if given.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<(), NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.prefix_len = prefix;
        message.header.family = family_of(ip);
        message.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv4() {
            message.attributes.push(AddressAttribute::Local(ip));
            if let Some(broadcast) = broadcast {
                message
                    .attributes
                    .push(AddressAttribute::Broadcast(broadcast));
            }
        } else {
            // The address is the container's, already checked for duplicates on its network.
            message.header.flags = netlink_packet_route::address::AddressHeaderFlags::Nodad;
        }
        self.request(
            &format!("add address {ip}/{prefix} to link {index}"),
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    pub fn delete_address(&mut self, address: &Address) -> Result<(), NetlinkError> {
        self.request(
            &format!("delete address {}/{}", address.ip, address.prefix),
            RouteNetlinkMessage::DelAddress(address.message.clone()),
            NLM_F_ACK,
        )
        .map(drop)
    }

    pub fn add_route(&mut self, route: &Route) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = route.family;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.kind = RouteType::Unicast;
        message.header.scope = if route.scope_link {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        message.attributes.push(RouteAttribute::Oif(route.index));
        if let Some((ip, prefix)) = route.destination {
            message.header.destination_prefix_length = prefix;
            message
                .attributes
                .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        }
        if let Some(gateway) = route.gateway {
            message
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        }
        self.request(
            &format!("add route {route:?}"),
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sends everything arriving on `from` out of `to` unchanged: an ingress qdisc with a
    /// match-all u32 filter and a mirred egress redirect, as `tc` would set it up.
    pub fn redirect(&mut self, from: u32, to: u32) -> Result<(), NetlinkError> {
        let mut qdisc = TcMessage::with_index(from as i32);
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc.header.handle = TcHandle::from(0xffff_0000);
        qdisc.attributes.push(TcAttribute::Kind("ingress".into()));
        self.request(
            &format!("add an ingress qdisc to link {from}"),
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;

        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        let mut mirror = TcMirror::default();
        mirror.generic = TcActionGeneric::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        let mut filter = TcMessage::with_index(from as i32);
        filter.header.parent = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        // Priority 1, protocol ETH_P_ALL in network byte order.
        filter.header.info = (1u32 << 16) | u32::from(0x0003u16.to_be());
        filter
            .attributes
            .push(TcAttribute::Kind(TcFilterU32::KIND.to_string()));
        filter.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(selector)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        self.request(
            &format!("redirect link {from} to link {to}"),
            RouteNetlinkMessage::NewTrafficFilter(filter),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mac: None,
        mtu: 1500,
        loopback: message.header.flags.contains(LinkFlags::Loopback),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => link.mac = bytes.as_slice().try_into().ok(),
            _ => {}
        }
    }
    link
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `aa:bb:cc:dd:ee:ff`
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        assert_eq!(format_mac(mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(mac));
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:02"), None);
    }
}
