//! The command line (clap derive).

use crate::config::{Backend, Overrides};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

const ENVIRONMENT: &str = "\
Files:
  <runtime>/virtuosd.sock  control socket (SOCK_SEQPACKET)
  <runtime>/virtuosd.pid   daemon pid (locked while it runs)
  <runtime>/virtuosd.log   daemon and domain log
  <runtime>/virtuosd.json  what the running daemon serves
  <data>/storage/          the storage domain's files (kept across down/up)
  /etc/virtuos/virtuos.toml (root) or ~/.config/virtuos/virtuos.toml:
                           optional; keys storage_mount, data_dir, backend,
                           network (bool), network_subnet, forward (list),
                           storage_image (vm backend)
  <data>/storage.img       the vm backend's storage disk (ext4)
  <runtime>/vm/<domain>/   a domain VM's console.log, QMP, control and bell sockets

Environment:
  VIRTUOS_RUNTIME_DIR  runtime directory
  VIRTUOS_DATA_DIR     data directory
  VIRTUOS_CONFIG       config file
  VIRTUOS_DOMAIN_BIN   domain server binary (default: virtuos-domain next to virtuos)
  VIRTUOS_PRELOAD      preload library (default: libvirtuos.so next to virtuos)
  VIRTUOS_LOG          daemon log filter (default: info)
  VIRTUOS_DOMAIN_STATIC  vm backend: prebuilt static virtuos-domain (default:
                       built from the source checkout with +crt-static)
  VIRTUOS_ACCEL        vm backend: kvm, tcg or auto (default: probe /dev/kvm)
  VIRTUOS_CACHE_DIR    vm backend: kernel and initramfs cache
  VIRTUOS_DOMAIN_LOG   vm backend: the guest domain's log filter, on its
                       console (default: info)";

/// virtuos: run unmodified programs with their file system calls served by an
/// isolated storage domain.
///
/// Programs started with `virtuos run` load libvirtuos.so; their calls on
/// paths under the storage mount (default /storage) travel through shared
/// memory queues to the storage domain, which keeps its files in
/// <data-dir>/storage. Nothing appears under the host's /storage.
#[derive(Parser, Debug)]
#[command(
    name = "virtuos",
    version,
    propagate_version = true,
    after_long_help = ENVIRONMENT
)]
pub struct Cli {
    /// Runtime directory of the daemon (socket, pid file, log)
    /// [default: $VIRTUOS_RUNTIME_DIR, /run/virtuos as root, else $XDG_RUNTIME_DIR/virtuos]
    #[arg(long, global = true, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Options that choose how the storage domain runs.
#[derive(Args, Debug, Clone, Default)]
pub struct DomainArgs {
    /// How the domains run: `process` (host processes in their own
    /// namespaces) or `vm` (each PID 1 of a QEMU VM booting Debian's cloud
    /// kernel; the storage domain's files on an ext4 disk image, the
    /// network domain on QEMU's user networking)
    /// [default: config file, else process]
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,

    /// Paths under this directory go to the storage domain
    /// [default: config file, else /storage]
    #[arg(long, value_name = "PATH")]
    pub storage_mount: Option<PathBuf>,

    /// Where the storage domain keeps its files (in <DIR>/storage; kept
    /// across down/up) [default: $VIRTUOS_DATA_DIR, config file, else
    /// /var/lib/virtuos as root or ~/.local/share/virtuos]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Do not start the network domain (sockets then stay on the host)
    /// [default: config file `network`, else start it]
    #[arg(long)]
    pub no_network: bool,

    /// Subnet of the link between the host and the network domain: the host
    /// side (interface vtos-h<hex>) gets the first address, the domain the
    /// second [default: config file, else 169.254.199.0/30]
    #[arg(long, value_name = "CIDR")]
    pub network_subnet: Option<String>,

    /// Forward host 127.0.0.1:HOSTPORT (TCP) to DOMAINPORT of the network
    /// domain, so that programs outside reach a server run under virtuos
    /// (repeatable) [default: config file `forward`]
    #[arg(long = "forward", value_name = "HOSTPORT:DOMAINPORT")]
    pub forwards: Vec<String>,

    /// vm backend: the storage domain's disk image (ext4; created, sparse,
    /// 1 GiB, if missing) [default: config file `storage_image`, else
    /// <data-dir>/storage.img]
    #[arg(long, value_name = "FILE")]
    pub storage_image: Option<PathBuf>,

    /// vm backend: region slots, i.e. client processes each domain VM
    /// serves at once (each fork takes one) [default: 16, at most 63]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=63))]
    pub vm_slots: Option<u16>,
    /// A domain whose heartbeat stops for this long counts as hung: it is
    /// killed and restarted [default: config file `hang_timeout_ms`, else 3000]
    #[arg(long, value_name = "MS")]
    pub hang_timeout_ms: Option<u64>,

    /// Do not restart failed domains automatically (`virtuos domain
    /// restart` still works) [default: config file `restart`, else restart]
    #[arg(long)]
    pub no_restart: bool,

    /// vm backend: kernel prepared by `virtuos up` (daemon only)
    #[arg(long, value_name = "FILE", hide = true)]
    pub vm_kernel: Option<PathBuf>,

    /// vm backend: initramfs prepared by `virtuos up` (daemon only)
    #[arg(long, value_name = "FILE", hide = true)]
    pub vm_initrd: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a program with its storage calls forwarded to the storage domain.
    ///
    /// Starts the daemon if it is not running, then runs CMD with
    /// LD_PRELOAD=libvirtuos.so and exits with CMD's exit status
    /// (128+N if a signal N killed it, 127 if CMD was not found).
    ///
    /// Example: virtuos run -- sh -c 'echo hi > /storage/hi.txt'
    Run {
        #[command(flatten)]
        domain: DomainArgs,

        /// The program and its arguments (put them after `--`)
        #[arg(
            value_name = "CMD",
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<OsString>,
    },

    /// Start the daemon and the storage domain in the background (idempotent).
    Up {
        #[command(flatten)]
        domain: DomainArgs,
    },

    /// Stop the daemon and its domains (idempotent).
    Down,

    /// Show the daemon, its domains and their clients.
    Status {
        /// Print machine-readable JSON
        #[arg(long)]
        json: bool,
    },

    /// Try it out: a throw-away daemon runs a few unmodified programs
    /// against /storage, then compares dd's speed with native.
    ///
    /// Uses a temporary runtime and data directory under /tmp, so it never
    /// touches your data or a running daemon.
    Demo {
        /// Keep the temporary directory (and print where it is)
        #[arg(long)]
        keep: bool,
    },

    /// Fault injection and recovery of one domain (tests, demos).
    Domain {
        #[command(subcommand)]
        action: DomainAction,
    },

    /// Run the daemon in the foreground (what `virtuos up` starts).
    #[command(hide = true)]
    Daemon {
        #[command(flatten)]
        domain: DomainArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum DomainAction {
    /// Inject a fault into domain NAME (storage or network); the daemon
    /// detects it, fails the domain's calls in flight and restarts it.
    Crash {
        /// storage or network
        name: String,
        /// kill: SIGKILL of the domain server; panic: the server aborts
        /// from inside; hang: every process of the domain stops (detected
        /// by its heartbeat); corrupt: the domain answers with garbage
        /// (detected by the clients that read it)
        #[arg(long, value_enum, default_value = "kill")]
        how: FaultArg,
        /// Wait until the domain serves again and print how long it took
        #[arg(long)]
        wait: bool,
    },
    /// Restart domain NAME now (its calls in flight fail as on a crash).
    Restart {
        name: String,
        /// Wait until the domain serves again
        #[arg(long)]
        wait: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultArg {
    Kill,
    Panic,
    Hang,
    Corrupt,
}

impl From<FaultArg> for virtuos_abi::control::Fault {
    fn from(f: FaultArg) -> Self {
        use virtuos_abi::control::Fault;
        match f {
            FaultArg::Kill => Fault::Kill,
            FaultArg::Panic => Fault::Panic,
            FaultArg::Hang => Fault::Hang,
            FaultArg::Corrupt => Fault::Corrupt,
        }
    }
}

impl Cli {
    pub fn overrides(&self, d: &DomainArgs) -> Overrides {
        Overrides {
            runtime_dir: self.runtime_dir.clone(),
            data_dir: d.data_dir.clone(),
            storage_mount: d.storage_mount.clone(),
            backend: d.backend,
            no_network: d.no_network,
            network_subnet: d.network_subnet.clone(),
            forwards: d.forwards.clone(),
            storage_image: d.storage_image.clone(),
            vm_kernel: d.vm_kernel.clone(),
            vm_initrd: d.vm_initrd.clone(),
            vm_slots: d.vm_slots.map(usize::from),
            hang_timeout_ms: d.hang_timeout_ms,
            no_restart: d.no_restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("virtuos").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_dashes_or_directly() {
        let Command::Run { command, domain } =
            parse(&["run", "--storage-mount", "/s", "--", "ls", "-l", "/s"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(command, ["ls", "-l", "/s"]);
        assert_eq!(domain.storage_mount, Some(PathBuf::from("/s")));
        let Command::Run { command, .. } = parse(&["run", "cat", "-n", "x"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(command, ["cat", "-n", "x"]);
    }

    #[test]
    fn run_without_command_is_an_error() {
        let e = parse(&["run"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = parse(&["run", "--"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn bad_backend_and_unknown_commands_are_errors() {
        let e = parse(&["up", "--backend", "xen"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["status", "--yaml"]).is_err());
        let Command::Up { domain } = parse(&["up", "--backend", "vm"]).unwrap().command else {
            panic!()
        };
        assert_eq!(domain.backend, Some(Backend::Vm));
    }

    #[test]
    fn network_flags() {
        let Command::Up { domain } = parse(&[
            "up",
            "--no-network",
            "--forward",
            "8080:80",
            "--forward",
            "2222:22",
            "--network-subnet",
            "10.0.0.0/30",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert!(domain.no_network);
        assert_eq!(domain.forwards, ["8080:80", "2222:22"]);
        assert_eq!(domain.network_subnet.as_deref(), Some("10.0.0.0/30"));
        let Command::Run { domain, command } =
            parse(&["run", "--forward", "1:2", "--", "nc", "-l", "2"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(domain.forwards, ["1:2"]);
        assert_eq!(command, ["nc", "-l", "2"]);
    }

    #[test]
    fn global_runtime_dir() {
        let cli = parse(&["status", "--json", "--runtime-dir", "/rt"]).unwrap();
        assert_eq!(cli.runtime_dir, Some(PathBuf::from("/rt")));
        assert!(matches!(cli.command, Command::Status { json: true }));
    }
}
