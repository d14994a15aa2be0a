//! What can go wrong in the guest init, by kind, and the context a failing call is given.

use runq_shared::protocol;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("control channel: {0}")]
    Channel(std::io::Error),
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("control channel closed by the host")]
    ChannelClosed,
    #[error("invalid config from the host: {0}")]
    BadConfig(serde_json::Error),
    #[error("network: {0}")]
    Netlink(#[from] runq_netlink::NetlinkError),
    #[error("network: no NIC with MAC {mac} in the guest")]
    NoNic { mac: String },
    #[error("network: bad {what} {value:?} from the host")]
    BadNetworkValue { what: &'static str, value: String },
    #[error("runq disk {id}: no virtio-blk device with serial {serial}")]
    NoDisk { id: String, serial: String },
    #[error("runq disk {id}: mount {device} ({fstype}) on {target}: {source}")]
    DiskMount {
        id: String,
        device: String,
        fstype: String,
        target: String,
        source: nix::errno::Errno,
    },
    #[error("RUNQ_ROOTDISK={0}: no such disk")]
    NoRootDisk(String),
    #[error("no virtio-serial port named {0} (is virtio_console loaded?)")]
    NoPort(String),
}

/// Adds what was being done to a failing system call.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, InitError>;
}

impl<T> Context<T> for nix::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|source| InitError::Sys {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|source| InitError::Io {
            what: what(),
            source,
        })
    }
}
