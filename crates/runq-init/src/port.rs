//! Finds the control channel's virtio-serial port by name: without udev there is no
//! /dev/virtio-ports/, and the device's number depends on the order QEMU created ports.

use std::fs::{File, OpenOptions};

use crate::{Context, InitError};

const PORTS: &str = "/sys/class/virtio-ports";

pub fn open(name: &str) -> Result<File, InitError> {
    let entries = std::fs::read_dir(PORTS).context(|| format!("list {PORTS}"))?;
    for entry in entries.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            let device = format!("/dev/{}", entry.file_name().to_string_lossy());
            return OpenOptions::new()
                .read(true)
                .write(true)
                .open(&device)
                .context(|| format!("open {device}"));
        }
    }
    Err(InitError::NoPort(name.to_string()))
}
