//! A NAT lab: Linux network namespaces joined by veth pairs, with real NAT and firewall rules
//! (iptables), in which the real relay, TURN servers and `confer` participants run.
//!
//! ```text
//!            wan (the internet): 203.0.113.10 relay, 203.0.113.11 coturn (on its loopback)
//!           /                 \
//!   198.51.100.4k+1/30      198.51.100.4k+1/30
//!   router k (NAT, firewall)  open host k: a public address, no NAT
//!   br 10.k.0.1/24
//!   hosts 10.k.0.10, .11, …
//! ```
//!
//! Every namespace is named `confer-nat-<lab>-<role>-<pid>`, so two labs (or two runs) never
//! collide, and namespaces left by a killed run are deleted by the next one. Interfaces are
//! created inside the namespaces, never in the machine's own. Dropping the lab deletes
//! everything (stop the processes in it first: drop them before the lab).

use std::process::Command;

use crate::Netns;

/// The relay's public address.
pub const RELAY_IP: &str = "203.0.113.10";
/// A second public address on the same machine, for coturn.
pub const COTURN_IP: &str = "203.0.113.11";

/// How a site's router translates addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// MASQUERADE: the source port is kept where it can be, so one inside address and port maps
    /// to one outside port whatever the destination (endpoint-independent mapping; filtering by
    /// the connections it saw, as a home router does).
    Masquerade,
    /// MASQUERADE `--random-fully`: a new random outside port per destination (symmetric NAT).
    Symmetric,
}

/// What a site's router lets out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firewall {
    /// Everything.
    Open,
    /// No UDP at all; TCP to anywhere.
    NoUdp,
    /// Only TCP to port 443 (HTTPS), as on many corporate and hotel networks.
    Only443,
}

/// A lab; see the module's documentation.
#[derive(Debug)]
pub struct Lab {
    name: String,
    /// The internet, where the relay and TURN servers run.
    pub wan: Netns,
    routers: Vec<Netns>,
    hosts: Vec<Netns>,
    /// Per open host (by index), its link's interface on the internet's side.
    open_links: std::collections::HashMap<usize, String>,
    links: u8,
}

impl Lab {
    /// An empty internet with the relay's and coturn's addresses. `name` tells labs apart.
    pub fn new(name: &str) -> Self {
        let wan = Netns::new(&format!("nat-{name}-wan"));
        wan.ip(&["addr", "add", &format!("{RELAY_IP}/32"), "dev", "lo"]);
        wan.ip(&["addr", "add", &format!("{COTURN_IP}/32"), "dev", "lo"]);
        sysctl(&wan, "net.ipv4.ip_forward=1");
        // A default route, as a server on the internet has: without one, sending to a peer's
        // private address fails at once ("network unreachable") instead of being lost on the way,
        // and coturn, meeting that error, relays almost nothing. It leads into a link where
        // nothing answers.
        wan.ip(&["link", "add", "sink0", "type", "veth", "peer", "name", "sink1"]);
        wan.ip(&["link", "set", "sink0", "up"]);
        wan.ip(&["link", "set", "sink1", "up"]);
        wan.ip(&["route", "add", "default", "dev", "sink0"]);
        Self {
            name: name.to_owned(),
            wan,
            routers: Vec::new(),
            hosts: Vec::new(),
            open_links: std::collections::HashMap::new(),
            links: 0,
        }
    }

    /// A site behind a router with `nat` and `firewall`, holding `hosts` machines on one LAN;
    /// returns the hosts' indices (for [`Lab::host`]).
    pub fn site(&mut self, nat: Nat, firewall: Firewall, hosts: usize) -> Vec<usize> {
        let (k, router) = self.router(nat);
        router.ip(&["link", "add", "lan0", "type", "bridge"]);
        router.ip(&["addr", "add", &format!("10.{k}.0.1/24"), "dev", "lan0"]);
        router.ip(&["link", "set", "lan0", "up"]);
        match firewall {
            Firewall::Open => {}
            Firewall::NoUdp => iptables(&router, &["-A", "FORWARD", "-i", "lan0", "-p", "udp", "-j", "DROP"]),
            Firewall::Only443 => {
                iptables(
                    &router,
                    &["-A", "FORWARD", "-i", "lan0", "-p", "tcp", "--dport", "443", "-j", "ACCEPT"],
                );
                iptables(&router, &["-A", "FORWARD", "-i", "lan0", "-j", "DROP"]);
            }
        }
        let mut indices = Vec::new();
        for j in 0..hosts {
            let host = Netns::new(&format!("nat-{}-r{k}h{j}", self.name));
            let port = format!("h{j}");
            router.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name]);
            router.ip(&["link", "set", &port, "master", "lan0"]);
            router.ip(&["link", "set", &port, "up"]);
            host.ip(&["addr", "add", &format!("10.{k}.0.{}/24", 10 + j), "dev", "eth0"]);
            host.ip(&["link", "set", "eth0", "up"]);
            host.ip(&["route", "add", "default", "via", &format!("10.{k}.0.1")]);
            indices.push(self.hosts.len());
            self.hosts.push(host);
        }
        self.routers.push(router);
        indices
    }

    /// A machine with a public address of its own, on no NAT; returns its index.
    pub fn open_host(&mut self) -> usize {
        let k = self.next_link();
        let host = Netns::new(&format!("nat-{}-o{k}", self.name));
        let (outside, inside) = uplink(k);
        self.wan.ip(&[
            "link",
            "add",
            &format!("o{k}"),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.name,
        ]);
        self.wan.ip(&["addr", "add", &format!("{outside}/30"), "dev", &format!("o{k}")]);
        self.wan.ip(&["link", "set", &format!("o{k}"), "up"]);
        host.ip(&["addr", "add", &format!("{inside}/30"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host.ip(&["route", "add", "default", "via", &outside]);
        self.hosts.push(host);
        self.open_links.insert(self.hosts.len() - 1, format!("o{k}"));
        self.hosts.len() - 1
    }

    /// Makes open host `index`'s link a poor one, as a hotel's: `kbit` kbit/s each way (a token
    /// bucket with 300 ms of queue on each end of the link) and `loss` (0..1) of its UDP packets
    /// lost at random each way on the internet's side, where the host cannot see it (a rule in
    /// the host's own OUTPUT chain would fail its sends with EPERM instead); `None` gives the
    /// link back its full speed and no loss. (This kernel has no `netem`; `tbf` and iptables'
    /// `statistic` match do the same.)
    pub fn limit_link(&self, index: usize, limit: Option<(u32, f64)>) {
        let host = &self.hosts[index];
        let outside = &self.open_links[&index];
        match limit {
            Some((kbit, loss)) => {
                let rate = format!("{kbit}kbit");
                let shape = ["root", "tbf", "rate", &rate, "burst", "32kbit", "latency", "300ms"];
                run_in(host, "tc", &[&["qdisc", "replace", "dev", "eth0"][..], &shape].concat());
                run_in(
                    &self.wan,
                    "tc",
                    &[&["qdisc", "replace", "dev", outside.as_str()][..], &shape].concat(),
                );
                // A chain of its own, which lifting empties (the jumps to it then do nothing).
                let chain = format!("poor-{outside}");
                let probability = format!("{loss}");
                if run_in_ok(&self.wan, "iptables", &["-N", &chain]) {
                    iptables(&self.wan, &["-I", "FORWARD", "-i", outside, "-j", &chain]);
                    iptables(&self.wan, &["-I", "FORWARD", "-o", outside, "-j", &chain]);
                }
                let drop = ["-A", &chain, "-p", "udp", "-m", "statistic", "--mode", "random"];
                iptables(&self.wan, &[&drop[..], &["--probability", &probability, "-j", "DROP"]].concat());
            }
            None => {
                run_in(host, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
                run_in(&self.wan, "tc", &["qdisc", "del", "dev", outside, "root"]);
                iptables(&self.wan, &["-F", &format!("poor-{outside}")]);
            }
        }
    }

    /// The namespace of host `index`.
    pub fn host(&self, index: usize) -> &Netns {
        &self.hosts[index]
    }

    /// Runs `iptables ARGS` in the internet (the relay's side), which must succeed.
    pub fn wan_iptables(&self, args: &[&str]) {
        iptables(&self.wan, args);
    }

    /// Moves host `index` to a new site behind a fresh router (`nat`, open firewall): its old
    /// link goes, a new one with a new address comes, as when a laptop changes networks.
    pub fn move_host(&mut self, index: usize, nat: Nat) {
        let (k, router) = self.router(nat);
        let host = &self.hosts[index];
        router.ip(&["link", "add", "lan", "type", "veth", "peer", "name", "eth1", "netns", &host.name]);
        router.ip(&["addr", "add", &format!("10.{k}.0.1/24"), "dev", "lan"]);
        router.ip(&["link", "set", "lan", "up"]);
        host.ip(&["link", "set", "eth0", "down"]);
        host.ip(&["link", "delete", "eth0"]);
        host.ip(&["addr", "add", &format!("10.{k}.0.10/24"), "dev", "eth1"]);
        host.ip(&["link", "set", "eth1", "up"]);
        host.ip(&["route", "add", "default", "via", &format!("10.{k}.0.1")]);
        self.routers.push(router);
    }

    /// A router on a new link to the internet (`wan0`, a /30 of 198.51.100.0/24), forwarding,
    /// translating what leaves by `wan0` as `nat` says; returns the link's number and the router.
    fn router(&mut self, nat: Nat) -> (u8, Netns) {
        let k = self.next_link();
        let router = Netns::new(&format!("nat-{}-r{k}", self.name));
        let (outside, inside) = uplink(k);
        let uplink_name = format!("r{k}");
        self.wan.ip(&[
            "link",
            "add",
            &uplink_name,
            "type",
            "veth",
            "peer",
            "name",
            "wan0",
            "netns",
            &router.name,
        ]);
        self.wan.ip(&["addr", "add", &format!("{outside}/30"), "dev", &uplink_name]);
        self.wan.ip(&["link", "set", &uplink_name, "up"]);
        router.ip(&["addr", "add", &format!("{inside}/30"), "dev", "wan0"]);
        router.ip(&["link", "set", "wan0", "up"]);
        router.ip(&["route", "add", "default", "via", &outside]);
        sysctl(&router, "net.ipv4.ip_forward=1");
        let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"];
        if nat == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        iptables(&router, &masquerade);
        // What a home router does, and what hole punching needs: nothing comes in from the
        // internet unless it answers something that went out. Without it a peer's first check
        // reaches the router itself, is tracked as a connection to it, and the inside host's
        // next packet to that peer leaves from another port.
        for chain in ["INPUT", "FORWARD"] {
            let established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"];
            iptables(&router, &[&["-A", chain, "-i", "wan0"][..], &established[..]].concat());
            iptables(&router, &["-A", chain, "-i", "wan0", "-j", "DROP"]);
        }
        (k, router)
    }

    fn next_link(&mut self) -> u8 {
        self.links += 1;
        assert!(self.links < 60, "a lab of at most 59 links");
        self.links
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Hosts, then routers, then the internet: each `Netns` deletes itself; the veth pairs
        // go with the namespace that holds either end.
        self.hosts.clear();
        self.routers.clear();
    }
}

/// The /30 of link `k`: (the internet's side, the far side).
fn uplink(k: u8) -> (String, String) {
    (format!("198.51.100.{}", 4 * u32::from(k) + 1), format!("198.51.100.{}", 4 * u32::from(k) + 2))
}

fn sysctl(netns: &Netns, setting: &str) {
    run_in(netns, "sysctl", &["-q", "-w", setting]);
}

fn iptables(netns: &Netns, args: &[&str]) {
    run_in(netns, "iptables", args);
}

/// Runs `program ARGS` in `netns`; whether it succeeded.
fn run_in_ok(netns: &Netns, program: &str, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &netns.name, program])
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

fn run_in(netns: &Netns, program: &str, args: &[&str]) {
    let output = Command::new("ip")
        .args(["netns", "exec", &netns.name, program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs iproute2 and iptables)"));
    assert!(
        output.status.success(),
        "{program} {} in {}: {}",
        args.join(" "),
        netns.name,
        String::from_utf8_lossy(&output.stderr)
    );
}
