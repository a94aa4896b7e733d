//! NATS end to end: a private nats-server (Debian package, JetStream on, private store dir) in its
//! own cgroup, real nats-py clients, and brokerscope decoding the server's traffic: core pub/sub,
//! queue groups, headers, request/reply, a JetStream stream with a pull consumer that acks, naks
//! and terms, and a rejected login. Exact counts against the workload's ground truth.
use observer::{
    capture::Direction,
    event::{BrokerEvent, EventKind, Outcome, System},
};
use tests::{
    Cgroup, TRACEPARENT, nats::NatsServer, of, on_port, rabbitmq::Json, require_root,
    trace_workload,
};

fn subject(e: &BrokerEvent) -> Option<&str> {
    e.destination.as_ref()?.subject.as_deref()
}

fn attr<'a>(e: &'a BrokerEvent, name: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn trace(server: &NatsServer, run: impl FnOnce() -> Vec<Json>) -> (Vec<BrokerEvent>, Vec<Json>) {
    trace_workload(server.pid(), System::Nats, run)
}

#[test]
fn nats_core_pub_sub_queue_groups_headers_request_reply() {
    require_root();
    let cgroup = Cgroup::create("nats");
    let server = NatsServer::start(&cgroup);
    let (events, truths) = trace(&server, || vec![server.workload("core", &[]).json()]);
    let t = &truths[0];
    let n = t["count"].u64().unwrap() as usize;
    let core = on_port(&events, t["client_ports"]["core"].u64().unwrap());
    let w1 = on_port(&events, t["client_ports"]["worker-1"].u64().unwrap());
    let w2 = on_port(&events, t["client_ports"]["worker-2"].u64().unwrap());

    let auths = of(&events, EventKind::Auth);
    assert_eq!(auths.len(), 3);
    assert!(auths.iter().all(|a| a.outcome == Some(Outcome::Success)));
    let names: Vec<_> = auths
        .iter()
        .filter_map(|a| a.client_id.as_deref())
        .collect();
    for name in ["bs-core", "bs-worker-1", "bs-worker-2"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    let pubs = of(&core, EventKind::Publish);
    let to = |s: &str| pubs.iter().filter(|e| subject(e) == Some(s)).count();
    assert_eq!(to("bs.orders"), n + 1);
    assert_eq!(to("bs.work"), n);
    assert_eq!(to("bs.svc"), 1, "the request");
    let request = pubs.iter().find(|e| subject(e) == Some("bs.svc")).unwrap();
    assert!(
        request
            .reply_to
            .as_deref()
            .is_some_and(|r| r.starts_with("_INBOX."))
    );
    let traced = pubs
        .iter()
        .find(|e| e.method == Some("HPUB"))
        .expect("HPUB");
    assert_eq!(
        traced.props.as_ref().and_then(|p| p.traceparent.as_deref()),
        Some(TRACEPARENT)
    );
    // The responder's reply is a publish to the requester's inbox.
    assert_eq!(
        pubs.iter()
            .filter(|e| subject(e).is_some_and(|s| s.starts_with("_INBOX.")))
            .count(),
        1
    );
    assert_eq!(pubs.len(), 2 * n + 3);

    let delivers = of(&core, EventKind::Deliver);
    let got = |s: &str| delivers.iter().filter(|e| subject(e) == Some(s)).count();
    assert_eq!(got("bs.orders"), n + 1);
    assert_eq!(got("bs.svc"), 1);
    assert_eq!(
        delivers
            .iter()
            .filter(|e| subject(e).is_some_and(|s| s.starts_with("_INBOX.")))
            .count(),
        1,
        "the reply"
    );
    let hmsg = delivers
        .iter()
        .find(|e| e.method == Some("HMSG"))
        .expect("HMSG");
    assert_eq!(
        hmsg.props.as_ref().and_then(|p| p.traceparent.as_deref()),
        Some(TRACEPARENT)
    );
    assert_eq!(hmsg.fingerprint, traced.fingerprint);
    assert!(delivers.iter().all(|e| e.direction == Direction::Egress));

    // Queue group: every bs.work message reaches exactly one member.
    let per_member = &t["queue_group"]["per_member"];
    for (events, name) in [(&w1, "worker-1"), (&w2, "worker-2")] {
        let subs = of(events, EventKind::Subscribe);
        assert_eq!(subs.len(), 1);
        assert_eq!(
            subs[0].destination.as_ref().unwrap().queue.as_deref(),
            Some("workers")
        );
        assert_eq!(
            of(events, EventKind::Deliver).len() as u64,
            per_member[name].u64().unwrap()
        );
    }
    let core_subs: Vec<_> = of(&core, EventKind::Subscribe)
        .iter()
        .filter_map(|e| subject(e))
        .map(str::to_owned)
        .collect();
    assert!(
        core_subs.contains(&"bs.orders".to_owned()) && core_subs.contains(&"bs.svc".to_owned())
    );
    assert!(of(&events, EventKind::Unsubscribe).len() >= 4);
    assert_eq!(of(&events, EventKind::Error).len(), 0);
}

#[test]
fn nats_jetstream_publish_confirm_and_pull_consumer_settlements() {
    require_root();
    let cgroup = Cgroup::create("nats-js");
    let server = NatsServer::start(&cgroup);
    let (events, truths) = trace(&server, || vec![server.workload("jetstream", &[]).json()]);
    let t = &truths[0];
    let n = t["count"].u64().unwrap() as usize;

    let pubs = of(&events, EventKind::Publish);
    assert_eq!(
        pubs.len(),
        n,
        "js.publish only: acks and API calls are not publishes"
    );
    assert!(pubs.iter().all(|e| subject(e) == Some("bs.js.orders")));
    let confirms = of(&events, EventKind::Confirm);
    assert_eq!(confirms.len(), n);
    let seqs: Vec<u64> = confirms.iter().map(|e| e.offset.unwrap() as u64).collect();
    assert_eq!(seqs, t["pub_ack_seqs"].u64s());
    assert!(confirms.iter().all(|e| subject(e) == Some("bs.js.orders")));

    let delivers = of(&events, EventKind::Deliver);
    assert_eq!(
        delivers.len(),
        t["deliveries"].u64().unwrap() as usize,
        "{delivers:?}"
    );
    let stream_seqs: Vec<i64> = delivers.iter().map(|e| e.offset.unwrap()).collect();
    assert_eq!(n, 5, "the scenario's default count");
    assert_eq!(
        stream_seqs,
        [1, 2, 3, 4, 5, 3],
        "five fetched, #3 again after its nak"
    );
    let redelivered: Vec<_> = delivers
        .iter()
        .filter(|e| e.redelivered == Some(true))
        .collect();
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].offset, Some(3));
    assert_eq!(attr(redelivered[0], "stream"), Some("BS"));

    let counts = &t["action_counts"];
    assert_eq!(
        of(&events, EventKind::Ack).len() as u64,
        counts["ack"].u64().unwrap()
    );
    let naks = of(&events, EventKind::Nack);
    assert_eq!(naks.len(), 1);
    assert_eq!(naks[0].offset, Some(3));
    let terms = of(&events, EventKind::Reject);
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].offset, Some(4));
    let progress: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Control && e.method == Some("+WPI"))
        .collect();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].offset, Some(5));

    // Stream and consumer management travel as $JS.API requests with responses.
    let declares = of(&events, EventKind::Declare);
    let resources: Vec<_> = declares
        .iter()
        .filter_map(|e| e.destination.as_ref()?.resource)
        .collect();
    assert!(
        resources.contains(&"stream") && resources.contains(&"consumer"),
        "{declares:?}"
    );
    assert!(
        of(&events, EventKind::Delete).iter().any(|e| e
            .destination
            .as_ref()
            .and_then(|d| d.resource)
            == Some("stream"))
    );
    let requests = of(&events, EventKind::Request).len();
    assert!(
        requests >= 4,
        "stream create, consumer create, pull requests, deletes: {requests}"
    );
    assert_eq!(
        of(&events, EventKind::Response).len(),
        requests - pull_requests(&events),
        "every API call answered"
    );
}

/// Pull requests are answered by messages (deliveries), not by API responses.
fn pull_requests(events: &[BrokerEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            e.kind == EventKind::Request
                && subject(e).is_some_and(|s| s.starts_with("$JS.API.CONSUMER.MSG.NEXT."))
        })
        .count()
}

#[test]
fn nats_rejected_login_is_an_auth_failure() {
    require_root();
    let cgroup = Cgroup::create("nats-auth");
    let server = NatsServer::start_with_user(&cgroup, "brokerscope", "good-Pa55word");
    let (events, truths) = trace(&server, || vec![server.workload("badlogin", &[]).json()]);
    assert!(truths[0]["auth_failed"].bool().unwrap());
    let auths = of(&events, EventKind::Auth);
    assert_eq!(auths.len(), 1, "{auths:?}");
    assert_eq!(auths[0].outcome, Some(Outcome::Failure));
    assert_eq!(auths[0].user.as_deref(), Some("brokerscope"));
    assert!(
        auths[0]
            .reply_text
            .as_deref()
            .is_some_and(|t| t.contains("Authorization Violation"))
    );
}
