//! A real broker: Mosquitto (Debian package) in its own cgroup on a private loopback port,
//! mosquitto_pub publishing to it. The captured streams must hold the MQTT CONNECT and PUBLISH
//! the client sent and the CONNACK/PUBACK the broker answered.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use observer::capture::{TargetSpec, session::SessionConfig};
use tests::{Cgroup, Observer, TempDir, free_port, require_root, spawn, wait_for_port, wait_until};

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn mosquitto_publish_is_captured() {
    require_root();
    let dir = TempDir::new("mosquitto");
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let cgroup = Cgroup::create("mosquitto");
    let broker = spawn(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        Some(&cgroup),
    );
    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "mosquitto did not listen on {port}; is it installed? (cargo xtask setup)"
    );

    let observer = Observer::start(
        TargetSpec {
            pids: vec![broker.pid()],
            ..Default::default()
        },
        SessionConfig::default(),
    );
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "brokerscope-pub",
            "-q",
            "1",
        ])
        .args(["-t", "brokerscope/orders", "-m", "hello from brokerscope"])
        .status()
        .expect("mosquitto_pub (cargo xtask setup installs it)");
    assert!(status.success());
    assert!(wait_until(Duration::from_secs(5), || {
        observer
            .captured
            .lock()
            .unwrap()
            .by_local_port(port)
            .any(|c| c.closed && !c.preexisting)
    }));
    let done = observer.finish(false);

    // wait_for_port's probe connection predates the observer; at most its close is seen.
    let conns: Vec<_> = done
        .captured
        .by_local_port(port)
        .filter(|c| !c.preexisting)
        .collect();
    assert_eq!(conns.len(), 1, "one publisher connection: {conns:?}");
    let c = conns[0];
    assert_eq!(c.pid, Some(broker.pid()));
    let ingress = c.ingress();
    // CONNECT: fixed header 0x10, protocol name "MQTT", our client id.
    assert_eq!(ingress[0], 0x10, "stream starts with CONNECT");
    assert!(find(ingress, b"\x00\x04MQTT").is_some());
    assert!(find(ingress, b"brokerscope-pub").is_some());
    // PUBLISH QoS 1 (0x32) with topic and payload.
    let publish = find(ingress, b"brokerscope/orders").expect("PUBLISH topic");
    assert!(ingress[..publish].contains(&0x32));
    assert!(find(ingress, b"hello from brokerscope").is_some());
    // DISCONNECT (0xe0 0x00) at the end.
    assert_eq!(&ingress[ingress.len() - 2..], &[0xe0, 0x00]);
    // Broker → client: CONNACK (0x20 0x02 ...) then PUBACK (0x40 0x02 ...).
    let egress = c.egress();
    assert_eq!(&egress[..2], &[0x20, 0x02]);
    assert_eq!(egress[4], 0x40);
    assert!(c.gaps.is_empty());
    assert!(c.closed);
}
