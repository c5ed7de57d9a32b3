//! Container networking. The containers' network namespace is the pause process's; it is
//! linked to the host by slirp4netns or pasta (started by bootstrap's `slirp` module, which
//! sits above this one).

/// The link's interface in the containers' network namespace (slirp4netns/pasta's tap).
pub const TAP: &str = "tap0";

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> std::io::Result<()> {
    set_up("lo")
}

/// Sets IFF_UP on an interface of the current network namespace (ioctl, no netlink needed).
pub fn set_up(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // a plain datagram socket used only for interface ioctls; closed when dropped
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let fd = sock.as_raw_fd();
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: fd is a valid socket and ifr a valid, named ifreq for both ioctls.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }
}

/// Whether the network namespace of process `pid` has an interface named `name`
/// (read from /proc/PID/net/dev, which shows that process's namespace).
pub fn link_exists_in(pid: i32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| {
            t.lines()
                .any(|l| l.trim_start().split(':').next() == Some(name))
        })
        .unwrap_or(false)
}

mod attach;
pub mod dns;
mod endpoints;
mod firewall;
pub mod forward;
mod hosts;
pub mod ipam;
pub mod kernel;
pub mod manager;
pub mod netlink;
pub mod netns;
mod networks;
pub mod ports;
mod publish;
mod reconcile;
#[cfg(test)]
mod seam_tests;

pub use endpoints::validate_aliases;
pub use manager::{AttachRequest, Attachment, Endpoint, Manager};
