//! Network domain settings: the host link's subnet and port forwards.
//!
//! Process backend: the network domain runs in its own network namespace
//! with a veth pair to the host. For subnet `N/P` (default
//! `169.254.199.0/30`) the host side is `vtos-h<8 hex digits of N>` with
//! address N+1 (`169.254.199.1`), the domain side `eth0` in the domain with
//! N+2 (`169.254.199.2`) and a default route via N+1. Each daemon needs a
//! subnet of its own.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub const DEFAULT_SUBNET: &str = "169.254.199.0/30";

/// The default subnet of a daemon whose runtime directory is `runtime`:
/// the system daemon (`/run/virtuos`) gets `DEFAULT_SUBNET`; any other
/// daemon (tests, the demo, benchmarks, a user's second daemon) a /30 of
/// 169.254.0.0/16 derived from its runtime directory, so that daemons
/// running side by side do not take each other's host link.
pub fn default_subnet_for(runtime: &std::path::Path) -> Subnet {
    let system = Subnet::parse(DEFAULT_SUBNET).expect("valid default subnet");
    if runtime == std::path::Path::new("/run/virtuos") {
        return system;
    }
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in runtime.as_os_str().as_encoded_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    nth_link_subnet(h)
}

/// The `n`-th /30 of 169.254.1.0 .. 169.254.254.255 (avoiding the first and
/// last /24 of the link-local range), skipping the system default.
pub fn nth_link_subnet(n: u64) -> Subnet {
    const FIRST: u32 = u32::from_be_bytes([169, 254, 1, 0]);
    const COUNT: u64 = 254 * 64; // /30s in 169.254.1.0 - 169.254.254.255
    let system = Subnet::parse(DEFAULT_SUBNET).expect("valid default subnet");
    let mut i = n % COUNT;
    loop {
        let network = Ipv4Addr::from(FIRST + 4 * i as u32);
        if network != system.network {
            return Subnet {
                network,
                prefix: 30,
            };
        }
        i = (i + 1) % COUNT;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `A.B.C.D/30`: the link has two addresses (host N+1, domain N+2),
    /// so only a /30 is used. It must lie in the link-local range
    /// (169.254.0.0/16) or a private one (10.0.0.0/8, 172.16.0.0/12,
    /// 192.168.0.0/16): the host gets a route to it, which must not shadow
    /// loopback or public addresses.
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet {s:?}: expected A.B.C.D/30"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("subnet {s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().ok().filter(|&p| p == 30).ok_or_else(|| {
            format!("subnet {s:?}: the prefix must be /30 (the link has two addresses)")
        })?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            return Err(format!("subnet {s:?}: host bits must be zero"));
        }
        if !(network.is_link_local() || network.is_private()) {
            return Err(format!(
                "subnet {s:?}: must lie in 169.254.0.0/16, 10.0.0.0/8, 172.16.0.0/12 or \
                 192.168.0.0/16 (not loopback, not public addresses)"
            ));
        }
        Ok(Subnet { network, prefix })
    }

    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn domain_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }

    /// The next /30 after this one (for probing a free link).
    pub fn next_link(&self) -> Subnet {
        let first = u32::from_be_bytes([169, 254, 1, 0]);
        nth_link_subnet(((u32::from(self.network).wrapping_sub(first)) / 4) as u64 + 1)
    }

    /// Name of the host side of the veth pair (unique per subnet).
    pub fn host_if(&self) -> String {
        format!("vtos-h{:08x}", u32::from(self.network))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `HOSTPORT:DOMAINPORT`: a TCP proxy from host 127.0.0.1:HOSTPORT to the
/// network domain's address, port DOMAINPORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub host_port: u16,
    pub domain_port: u16,
}

impl Forward {
    pub fn parse(s: &str) -> Result<Forward, String> {
        let (h, d) = s
            .split_once(':')
            .ok_or_else(|| format!("forward {s:?}: expected HOSTPORT:DOMAINPORT"))?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("forward {s:?}: {p:?} is not a port (1-65535)"))
        };
        Ok(Forward {
            host_port: port(h)?,
            domain_port: port(d)?,
        })
    }
}

/// Port forwards must not share a host port (the second could never
/// listen).
pub fn check_forwards(forwards: &[Forward]) -> Result<(), String> {
    for (i, f) in forwards.iter().enumerate() {
        if let Some(g) = forwards[..i].iter().find(|g| g.host_port == f.host_port) {
            return Err(format!(
                "forwards {g} and {f} both use host port {}",
                f.host_port
            ));
        }
    }
    Ok(())
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host_port, self.domain_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_forwards_parse() {
        let sys = default_subnet_for(std::path::Path::new("/run/virtuos"));
        assert_eq!(sys.to_string(), DEFAULT_SUBNET);
        let a = default_subnet_for(std::path::Path::new("/tmp/a/run"));
        let b = default_subnet_for(std::path::Path::new("/tmp/b/run"));
        assert_ne!(a, b, "different daemons get different links");
        assert_eq!(
            a,
            default_subnet_for(std::path::Path::new("/tmp/a/run")),
            "stable"
        );
        for s in [a, b, a.next_link()] {
            assert_eq!(s.prefix, 30);
            assert_eq!(s.network.octets()[..2], [169, 254]);
            assert!(Subnet::parse(&s.to_string()).is_ok());
        }
        assert_ne!(a.next_link(), a);
        let s = Subnet::parse(DEFAULT_SUBNET).unwrap();
        assert_eq!(s.host_addr(), Ipv4Addr::new(169, 254, 199, 1));
        assert_eq!(s.domain_addr(), Ipv4Addr::new(169, 254, 199, 2));
        assert_eq!(s.host_if(), "vtos-ha9fec700");
        assert!(s.host_if().len() <= 15);
        assert_eq!(s.to_string(), DEFAULT_SUBNET);
        for bad in [
            "169.254.199.1/30",
            "10.0.0.0",
            "10.0.0.0/31",
            "x/30",
            "10.0.0.0/7",
            "10.0.0.0/8",
            "169.254.0.0/24",
            "127.0.0.0/30",
            "8.8.8.0/30",
            "0.0.0.0/30",
            "224.0.0.0/30",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        for ok in [
            "10.9.0.0/30",
            "172.16.5.4/30",
            "192.168.1.8/30",
            "169.254.3.4/30",
        ] {
            assert!(Subnet::parse(ok).is_ok(), "{ok}");
        }
        let f = |h, d| Forward {
            host_port: h,
            domain_port: d,
        };
        assert!(check_forwards(&[f(8080, 80), f(8081, 80)]).is_ok());
        let e = check_forwards(&[f(8080, 80), f(9, 9), f(8080, 81)]).unwrap_err();
        assert!(e.contains("host port 8080"), "{e}");
        assert_eq!(
            Forward::parse("8080:80").unwrap(),
            Forward {
                host_port: 8080,
                domain_port: 80
            }
        );
        for bad in ["8080", "0:80", "80:0", "a:1", "1:70000", ":"] {
            assert!(Forward::parse(bad).is_err(), "{bad}");
        }
    }
}
