//! The network domain's network namespace (process backend).
//!
//! The domain process keeps a descriptor of the host's network namespace,
//! unshares its own, and then runs iproute2's `ip`:
//!
//! ```text
//! host:   ip link add <host_if> type veth peer name eth0 netns <domain pid>
//!         ip addr add <subnet+1>/<prefix> dev <host_if>; ip link set <host_if> up
//! domain: ip link set lo up
//!         ip addr add <subnet+2>/<prefix> dev eth0; ip link set eth0 up
//!         ip route add default via <subnet+1>
//! ```
//!
//! (host commands run in children that join the host namespace with
//! `setns` before exec). Defaults: `169.254.199.0/30`, host side
//! `vtos-h<hex of the subnet>`. The pair disappears with the namespace
//! when the domain exits; the daemon also deletes a stale host side.

use crate::sys;
use anyhow::{bail, Context, Result};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The domain side's name inside its namespace.
pub const DOMAIN_IF: &str = "eth0";

/// Addresses of the link between the host and the network domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// Name of the host side of the veth pair.
    pub host_if: String,
}

impl NetConfig {
    /// `A.B.C.D/P` (P <= 30, host bits zero) and a host interface name.
    pub fn parse(subnet: &str, host_if: &str) -> Result<NetConfig> {
        let (addr, prefix) = subnet
            .split_once('/')
            .with_context(|| format!("--net-subnet {subnet:?}: expected A.B.C.D/PREFIX"))?;
        let network: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("--net-subnet {subnet:?}: bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .with_context(|| format!("--net-subnet {subnet:?}: prefix must be 8..=30"))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            bail!("--net-subnet {subnet:?}: host bits must be zero");
        }
        let ok_name = !host_if.is_empty()
            && host_if.len() <= 15
            && host_if
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            bail!("--net-host-if {host_if:?}: 1..15 characters of [A-Za-z0-9_-]");
        }
        Ok(NetConfig {
            network,
            prefix,
            host_if: host_if.to_string(),
        })
    }

    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn domain_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }
}

fn ip(ns: Option<&OwnedFd>, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ns) = ns {
        sys::run_in_net_namespace(&mut cmd, ns.as_raw_fd());
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("cannot run `ip`: not found (install iproute2)")
        } else {
            anyhow::anyhow!("cannot run `ip`: {e}")
        }
    })?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed{}: {}",
            args.join(" "),
            if ns.is_some() { " (host side)" } else { "" },
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Unshare the network namespace and connect it to the host. Must run
/// while the process is single threaded, before the mount namespace is
/// changed (`ip` must be reachable).
pub fn setup(net: &NetConfig) -> Result<()> {
    let host_ns = rustix::fs::open(
        "/proc/self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("cannot open /proc/self/ns/net")?;
    sys::unshare_net_namespace().context(
        "unshare(CLONE_NEWNET) failed: the network domain needs root \
         (CAP_SYS_ADMIN and CAP_NET_ADMIN)",
    )?;
    let pid = std::process::id().to_string();
    let host = Some(&host_ns);
    let prefix = net.prefix.to_string();
    let host_cidr = format!("{}/{prefix}", net.host_addr());
    let domain_cidr = format!("{}/{prefix}", net.domain_addr());
    let gateway = net.host_addr().to_string();
    let h = net.host_if.as_str();
    // A stale host side (a killed daemon's) would make `link add` fail.
    let _ = ip(host, &["link", "del", h]);
    ip(
        host,
        &[
            "link", "add", h, "type", "veth", "peer", "name", DOMAIN_IF, "netns", &pid,
        ],
    )
    .context("cannot create the veth pair (needs CAP_NET_ADMIN)")?;
    ip(host, &["addr", "add", &host_cidr, "dev", h])?;
    ip(host, &["link", "set", h, "up"])?;
    ip(None, &["link", "set", "lo", "up"])?;
    ip(None, &["addr", "add", &domain_cidr, "dev", DOMAIN_IF])?;
    ip(None, &["link", "set", DOMAIN_IF, "up"])?;
    ip(None, &["route", "add", "default", "via", &gateway])?;
    tracing::info!(host_if = h, host = %host_cidr, domain = %domain_cidr, "network namespace ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked() {
        let n = NetConfig::parse("169.254.199.0/30", "vtos-h1").unwrap();
        assert_eq!(n.host_addr(), Ipv4Addr::new(169, 254, 199, 1));
        assert_eq!(n.domain_addr(), Ipv4Addr::new(169, 254, 199, 2));
        for bad in [
            "169.254.199.1/30",
            "169.254.199.0",
            "x/30",
            "10.0.0.0/31",
            "10.0.0.0/4",
        ] {
            assert!(NetConfig::parse(bad, "v").is_err(), "{bad}");
        }
        assert!(NetConfig::parse("10.0.0.0/30", "way-too-long-name").is_err());
        assert!(NetConfig::parse("10.0.0.0/30", "a b").is_err());
    }
}
