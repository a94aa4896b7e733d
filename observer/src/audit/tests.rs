//! Hand-built events → records, sink rotation and permissions, query round trips.
use std::{
    io::Write,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::{
    query::{self, CSV_COLUMNS, ExportFormat, Filter, parse_csv, parse_rfc3339, parse_time},
    record::{AuditContext, AuditLevel, AuditRecord, Workload, from_event},
    sink::{AuditSink, rotated_path},
};
use crate::{
    capture::{ConnId, Direction},
    event::{BrokerEvent, Destination, EventKind, MessageProps, Outcome, System},
};

const T0: u64 = 1_795_000_000_000_000_000;

fn conn(id: u64) -> crate::event::ConnRef {
    crate::event::ConnRef {
        id: ConnId(id),
        pid: Some(4242),
        local: "10.0.0.1:5672".parse::<SocketAddr>().unwrap(),
        peer: "10.0.0.9:51000".parse::<SocketAddr>().unwrap(),
    }
}

fn ev(system: System, kind: EventKind, dir: Direction, method: &'static str) -> BrokerEvent {
    let mut e = BrokerEvent::new(T0, system, kind, conn(1), dir);
    e.method = Some(method);
    e
}

fn amqp(kind: EventKind, dir: Direction, method: &'static str, ch: u32) -> BrokerEvent {
    let mut e = ev(System::Amqp, kind, dir, method);
    e.channel = Some(ch);
    e
}

fn ctx() -> AuditContext {
    AuditContext::new("node-a")
        .with_executable(|pid| (pid == 4242).then(|| "/usr/lib/erlang/beam.smp".to_owned()))
}

fn run(ctx: &AuditContext, events: &[BrokerEvent]) -> Vec<AuditRecord> {
    events
        .iter()
        .flat_map(|e| from_event(e, ctx, AuditLevel::Standard))
        .collect()
}

fn actions(rs: &[AuditRecord]) -> Vec<(String, String)> {
    rs.iter()
        .map(|r| (r.event.action.clone(), r.event.outcome.clone()))
        .collect()
}

fn pair(a: &str, o: &str) -> (String, String) {
    (a.to_owned(), o.to_owned())
}

fn queue(name: &str) -> Option<Destination> {
    Some(Destination {
        vhost: Some("/prod".into()),
        queue: Some(name.into()),
        resource: Some("queue"),
        ..Default::default()
    })
}

fn exchange(name: &str) -> Option<Destination> {
    Some(Destination {
        vhost: Some("/prod".into()),
        exchange: Some(name.into()),
        resource: Some("exchange"),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Connections and logins

#[test]
fn connection_records_carry_identity_and_the_login_user() {
    let ctx = AuditContext::new("node-a")
        .with_executable(|_| Some("/usr/sbin/rabbitmq".into()))
        .with_workload(|_| {
            Some(Workload {
                container_id: Some("abc123".into()),
                container_name: Some("rabbitmq".into()),
                pod_name: Some("rabbit-0".into()),
                pod_namespace: Some("mq".into()),
                pod_uid: Some("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9".into()),
                workload_kind: Some("StatefulSet".into()),
                workload_name: Some("rabbit".into()),
            })
        });
    let mut auth = amqp(EventKind::Auth, Direction::Egress, "connection.tune", 0);
    auth.user = Some("alice".into());
    auth.mechanism = Some("PLAIN".into());
    auth.outcome = Some(Outcome::Success);
    let rs = run(
        &ctx,
        &[
            amqp(EventKind::ConnectionOpened, Direction::Ingress, "", 0),
            auth,
            amqp(EventKind::ConnectionClosed, Direction::Ingress, "", 0),
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("connection.created", "success"),
            pair("user.authentication.success", "success"),
            pair("connection.closed", "success"),
        ]
    );
    let v = serde_json::to_value(&rs[2]).unwrap();
    assert_eq!(v["time"], "2026-11-18T11:06:40.000000000Z");
    assert_eq!(v["node"], "node-a");
    assert_eq!(v["messaging"]["system"], "rabbitmq");
    assert_eq!(v["process"]["pid"], 4242);
    assert_eq!(v["process"]["executable"], "/usr/sbin/rabbitmq");
    assert_eq!(v["container"]["id"], "abc123");
    assert_eq!(v["pod"]["name"], "rabbit-0");
    assert_eq!(v["pod"]["namespace"], "mq");
    assert_eq!(v["container"]["name"], "rabbitmq");
    assert_eq!(v["pod"]["uid"], "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9");
    assert_eq!(v["workload"]["kind"], "StatefulSet");
    assert_eq!(v["workload"]["name"], "rabbit");
    assert_eq!(v["client"]["ip"], "10.0.0.9");
    assert_eq!(v["client"]["port"], 51000);
    assert_eq!(v["server"]["port"], 5672);
    assert_eq!(v["user"]["name"], "alice", "closed carries the login user");
    assert_eq!(v["connection"], "c1");
    assert!(v.get("reason").is_none() && v.get("resource").is_none());
    // Nested objects, never flat dotted keys.
    assert!(v.as_object().unwrap().keys().all(|k| !k.contains('.')));
}

#[test]
fn logins_success_failure_and_denial_per_protocol() {
    let ctx = ctx();
    let mut amqp_fail = amqp(EventKind::Auth, Direction::Egress, "connection.close", 0);
    amqp_fail.user = Some("mallory".into());
    amqp_fail.outcome = Some(Outcome::Failure);
    amqp_fail.reply_code = Some(403);
    amqp_fail.reply_text = Some("ACCESS_REFUSED - Login was refused".into());
    let connack = |code: u16| {
        let mut e = ev(System::Mqtt, EventKind::Auth, Direction::Egress, "CONNACK");
        e.user = Some("dev".into());
        e.reply_code = Some(code);
        e.outcome = Some(if code == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        });
        e
    };
    let mut nats_fail = ev(System::Nats, EventKind::Auth, Direction::Egress, "-ERR");
    nats_fail.outcome = Some(Outcome::Failure);
    nats_fail.reply_text = Some("Authorization Violation".into());
    let mut kafka_fail = ev(
        System::Kafka,
        EventKind::Auth,
        Direction::Egress,
        "SaslAuthenticate",
    );
    kafka_fail.outcome = Some(Outcome::Failure);
    kafka_fail.user = Some("svc".into());
    kafka_fail.reply_code = Some(58);
    kafka_fail.reply_text = Some("SASL_AUTHENTICATION_FAILED".into());
    let rs = run(
        &ctx,
        &[
            amqp_fail,
            connack(0),
            connack(4),
            connack(0x86),
            connack(5),
            connack(0x87),
            nats_fail,
            kafka_fail,
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("user.authentication.failure", "failure"),
            pair("user.authentication.success", "success"),
            pair("user.authentication.failure", "failure"),
            pair("user.authentication.failure", "failure"),
            pair("user.authentication.failure", "failure"),
            pair("user.authentication.failure", "failure"),
            pair("user.authentication.failure", "failure"),
            pair("user.authentication.failure", "failure"),
        ]
    );
    assert_eq!(rs[0].reason.as_ref().unwrap().code, Some(403));
    assert_eq!(rs[0].user.as_ref().unwrap().name, "mallory");
    assert!(rs[1].reason.is_none());
    assert_eq!(rs[5].reason.as_ref().unwrap().code, Some(0x87));
    assert_eq!(rs[7].reason.as_ref().unwrap().code, Some(58));
    assert_eq!(rs[7].messaging.system, "kafka");
}

// ---------------------------------------------------------------------------------------------
// AMQP

#[test]
fn amqp_declares_are_recorded_on_their_ok_once() {
    let ctx = ctx();
    let mut declare = amqp(EventKind::Declare, Direction::Ingress, "queue.declare", 1);
    declare.destination = queue("orders");
    let mut declare_ok = amqp(EventKind::Control, Direction::Egress, "queue.declare-ok", 1);
    declare_ok.destination = queue("orders");
    let mut xdeclare = amqp(
        EventKind::Declare,
        Direction::Ingress,
        "exchange.declare",
        1,
    );
    xdeclare.destination = exchange("events");
    let xok = amqp(
        EventKind::Control,
        Direction::Egress,
        "exchange.declare-ok",
        1,
    );
    let mut bind = amqp(EventKind::Bind, Direction::Ingress, "queue.bind", 1);
    bind.destination = Some(Destination {
        queue: Some("orders".into()),
        exchange: Some("events".into()),
        routing_key: Some("order.*".into()),
        resource: Some("queue"),
        vhost: Some("/prod".into()),
        ..Default::default()
    });
    let bind_ok = amqp(EventKind::Control, Direction::Egress, "queue.bind-ok", 1);
    let mut unbind = bind.clone();
    unbind.kind = EventKind::Unbind;
    unbind.method = Some("queue.unbind");
    let unbind_ok = amqp(EventKind::Control, Direction::Egress, "queue.unbind-ok", 1);
    let mut xbind = amqp(EventKind::Bind, Direction::Ingress, "exchange.bind", 1);
    xbind.destination = Some(Destination {
        exchange: Some("audit".into()),
        routing_key: Some("#".into()),
        resource: Some("exchange"),
        ..Default::default()
    });
    let xbind_ok = amqp(EventKind::Control, Direction::Egress, "exchange.bind-ok", 1);
    let mut purge = amqp(EventKind::Purge, Direction::Ingress, "queue.purge", 1);
    purge.destination = queue("orders");
    let purge_ok = amqp(EventKind::Control, Direction::Egress, "queue.purge-ok", 1);
    let mut delete = amqp(EventKind::Delete, Direction::Ingress, "queue.delete", 1);
    delete.destination = queue("orders");
    let delete_ok = amqp(EventKind::Control, Direction::Egress, "queue.delete-ok", 1);
    let mut xdelete = amqp(EventKind::Delete, Direction::Ingress, "exchange.delete", 1);
    xdelete.destination = exchange("events");
    let xdelete_ok = amqp(
        EventKind::Control,
        Direction::Egress,
        "exchange.delete-ok",
        1,
    );

    let events = [
        declare.clone(),
        declare_ok,
        xdeclare,
        xok,
        bind,
        bind_ok,
        unbind,
        unbind_ok,
        xbind,
        xbind_ok,
        purge,
        purge_ok,
        delete,
        delete_ok,
        xdelete,
        xdelete_ok,
    ];
    // Requests alone give nothing yet.
    assert!(from_event(&declare, &ctx, AuditLevel::Standard).is_empty());
    assert_eq!(ctx.pending(), 1);
    let flushed = ctx.flush_pending(u64::MAX);
    assert_eq!(actions(&flushed), [pair("queue.created", "unknown")]);

    let rs = run(&ctx, &events);
    assert_eq!(
        actions(&rs),
        [
            pair("queue.created", "success"),
            pair("exchange.created", "success"),
            pair("binding.created", "success"),
            pair("binding.deleted", "success"),
            pair("binding.created", "success"),
            pair("queue.purged", "success"),
            pair("queue.deleted", "success"),
            pair("exchange.deleted", "success"),
        ]
    );
    assert_eq!(ctx.pending(), 0);
    let q = &rs[0];
    assert_eq!(q.vhost.as_deref(), Some("/prod"));
    assert_eq!(q.protocol_method.as_deref(), Some("queue.declare"));
    let res = q.resource.as_ref().unwrap();
    assert_eq!(
        (res.kind.as_str(), res.name.as_deref()),
        ("queue", Some("orders"))
    );
    let b = rs[2].resource.as_ref().unwrap();
    assert_eq!(b.kind, "queue");
    assert_eq!(b.source.as_deref(), Some("events"));
    assert_eq!(b.routing_key.as_deref(), Some("order.*"));
    assert_eq!(rs[4].resource.as_ref().unwrap().kind, "exchange");
}

#[test]
fn amqp_refusals_fail_the_operation_and_403_530_are_denials() {
    let ctx = ctx();
    let mut declare = amqp(EventKind::Declare, Direction::Ingress, "queue.declare", 3);
    declare.destination = queue("orders");
    let close = |code: u16, text: &str, ch: u32, method: &'static str| {
        let mut e = amqp(EventKind::Error, Direction::Egress, method, ch);
        e.reply_code = Some(code);
        e.reply_text = Some(text.into());
        e
    };
    let closed = amqp(
        EventKind::ChannelClosed,
        Direction::Egress,
        "channel.close",
        3,
    );
    let mut open = amqp(EventKind::Control, Direction::Ingress, "connection.open", 0);
    open.destination = Some(Destination {
        vhost: Some("/secret".into()),
        ..Default::default()
    });
    let rs = run(
        &ctx,
        &[
            // 406: the declare failed.
            declare.clone(),
            close(
                406,
                "PRECONDITION_FAILED - inequivalent arg 'durable'",
                3,
                "channel.close",
            ),
            closed.clone(),
            // 403: the declare was denied.
            declare.clone(),
            close(
                403,
                "ACCESS_REFUSED - configure access to queue 'orders' refused",
                3,
                "channel.close",
            ),
            closed.clone(),
            // 403 with nothing held (a publish): a denial on its own.
            close(
                403,
                "ACCESS_REFUSED - write access to exchange 'x' refused",
                5,
                "channel.close",
            ),
            // 404 with nothing held: not an audit record.
            close(404, "NOT_FOUND - no exchange 'y'", 6, "channel.close"),
            // Vhost refused: one record.
            open.clone(),
            close(
                530,
                "NOT_ALLOWED - access to vhost '/secret' refused for user 'bob'",
                0,
                "connection.close",
            ),
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("queue.created", "failure"),
            pair("access.denied", "failure"),
            pair("access.denied", "failure"),
            pair("access.denied", "failure"),
        ]
    );
    assert_eq!(rs[0].reason.as_ref().unwrap().code, Some(406));
    assert_eq!(
        rs[1].resource.as_ref().unwrap().name.as_deref(),
        Some("orders")
    );
    assert_eq!(rs[1].protocol_method.as_deref(), Some("queue.declare"));
    assert!(rs[2].resource.is_none());
    assert_eq!(rs[3].resource.as_ref().unwrap().kind, "vhost");
    assert_eq!(rs[3].vhost.as_deref(), Some("/secret"));
    assert_eq!(rs[3].reason.as_ref().unwrap().code, Some(530));
    assert_eq!(ctx.pending(), 0);

    // An opened vhost.
    let ok = amqp(
        EventKind::Control,
        Direction::Egress,
        "connection.open-ok",
        0,
    );
    let rs = run(&ctx, &[open, ok]);
    assert_eq!(actions(&rs), [pair("vhost.opened", "success")]);
    assert_eq!(
        rs[0].resource.as_ref().unwrap().name.as_deref(),
        Some("/secret")
    );
}

#[test]
fn amqp_consumers_nowait_and_closes() {
    let ctx = ctx();
    let mut consume = amqp(EventKind::Subscribe, Direction::Ingress, "basic.consume", 1);
    consume.consumer_tag = Some(String::new());
    consume.destination = queue("orders");
    let mut consume_ok = amqp(EventKind::Control, Direction::Egress, "basic.consume-ok", 1);
    consume_ok.consumer_tag = Some("amq.ctag-1".into());
    let mut cancel = amqp(
        EventKind::Unsubscribe,
        Direction::Ingress,
        "basic.cancel",
        1,
    );
    cancel.consumer_tag = Some("amq.ctag-1".into());
    cancel.destination = queue("orders");
    let cancel_ok = amqp(EventKind::Control, Direction::Egress, "basic.cancel-ok", 1);
    let mut broker_cancel = amqp(EventKind::Unsubscribe, Direction::Egress, "basic.cancel", 2);
    broker_cancel.consumer_tag = Some("t2".into());
    // No-wait declare, then a bind answered: the declare ends `unknown`.
    let mut nowait = amqp(EventKind::Declare, Direction::Ingress, "queue.declare", 4);
    nowait.destination = queue("a");
    let mut waited = amqp(EventKind::Bind, Direction::Ingress, "queue.bind", 4);
    waited.destination = Some(Destination {
        queue: Some("a".into()),
        exchange: Some("x".into()),
        resource: Some("queue"),
        ..Default::default()
    });
    let ok = amqp(EventKind::Control, Direction::Egress, "queue.bind-ok", 4);
    // Held on a channel the client closes, and on a connection that goes away.
    let mut left = amqp(EventKind::Delete, Direction::Ingress, "queue.delete", 7);
    left.destination = queue("c");
    let client_close = amqp(
        EventKind::ChannelClosed,
        Direction::Ingress,
        "channel.close",
        7,
    );
    let mut left2 = amqp(EventKind::Purge, Direction::Ingress, "queue.purge", 8);
    left2.destination = queue("d");
    let gone = amqp(EventKind::ConnectionClosed, Direction::Ingress, "", 0);
    let rs = run(
        &ctx,
        &[
            consume,
            consume_ok,
            cancel,
            cancel_ok,
            broker_cancel,
            nowait,
            waited,
            ok,
            left,
            client_close,
            left2,
            gone,
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("consumer.created", "success"),
            pair("consumer.deleted", "success"),
            pair("consumer.deleted", "success"),
            pair("queue.created", "unknown"),
            pair("binding.created", "success"),
            pair("queue.deleted", "unknown"),
            pair("queue.purged", "unknown"),
            pair("connection.closed", "success"),
        ]
    );
    let c = rs[0].resource.as_ref().unwrap();
    assert_eq!(c.name.as_deref(), Some("amq.ctag-1"), "tag from consume-ok");
    assert_eq!(c.parent.as_deref(), Some("orders"));
    assert_eq!(rs[3].resource.as_ref().unwrap().name.as_deref(), Some("a"));
    assert_eq!(
        rs[4].resource.as_ref().unwrap().source.as_deref(),
        Some("x")
    );
    assert_eq!(ctx.pending(), 0);
}

#[test]
fn full_level_records_publishes_without_bodies() {
    let ctx = ctx();
    let mut p = amqp(EventKind::Publish, Direction::Ingress, "basic.publish", 1);
    p.destination = Some(Destination {
        exchange: Some(String::new()),
        routing_key: Some("orders".into()),
        ..Default::default()
    });
    p.body_size = Some(512);
    p.fingerprint = Some(99);
    p.props = Some(MessageProps {
        message_id: Some("m-1".into()),
        headers: vec![("x-secret".into(), "hunter2".into())],
        ..Default::default()
    });
    assert!(from_event(&p, &ctx, AuditLevel::Standard).is_empty());
    let rs = from_event(&p, &ctx, AuditLevel::Full);
    assert_eq!(actions(&rs), [pair("message.published", "success")]);
    let m = rs[0].message.as_ref().unwrap();
    assert_eq!((m.id.as_deref(), m.size), (Some("m-1"), Some(512)));
    let res = rs[0].resource.as_ref().unwrap();
    assert_eq!(res.name.as_deref(), Some("amq.default"));
    assert_eq!(res.routing_key.as_deref(), Some("orders"));
    assert!(!rs[0].to_json_line().contains("hunter2"));
    // Deliveries are not publishes.
    let mut d = p.clone();
    d.kind = EventKind::Deliver;
    d.direction = Direction::Egress;
    assert!(from_event(&d, &ctx, AuditLevel::Full).is_empty());
}

// ---------------------------------------------------------------------------------------------
// MQTT

fn mqtt_sub(unsub: bool, packet_id: u32, filter: &str) -> BrokerEvent {
    let (kind, method) = if unsub {
        (EventKind::Unsubscribe, "UNSUBSCRIBE")
    } else {
        (EventKind::Subscribe, "SUBSCRIBE")
    };
    let mut e = ev(System::Mqtt, kind, Direction::Ingress, method);
    e.packet_id = Some(packet_id);
    e.destination = Some(Destination {
        topic: Some(filter.into()),
        ..Default::default()
    });
    e
}

#[test]
fn mqtt_subscriptions_resolve_per_filter() {
    let ctx = ctx();
    let mut suback = ev(
        System::Mqtt,
        EventKind::Control,
        Direction::Egress,
        "SUBACK",
    );
    suback.packet_id = Some(7);
    suback.attrs.push(("granted", "1,135,128".into()));
    let refused = |code: u16, topic: &str| {
        let mut e = ev(System::Mqtt, EventKind::Error, Direction::Egress, "SUBACK");
        e.packet_id = Some(7);
        e.reply_code = Some(code);
        e.destination = Some(Destination {
            topic: Some(topic.into()),
            ..Default::default()
        });
        e
    };
    let mut unsuback = ev(
        System::Mqtt,
        EventKind::Control,
        Direction::Egress,
        "UNSUBACK",
    );
    unsuback.packet_id = Some(8);
    let mut puback = ev(System::Mqtt, EventKind::Nack, Direction::Egress, "PUBACK");
    puback.reply_code = Some(0x87);
    puback.destination = Some(Destination {
        topic: Some("secret/t".into()),
        ..Default::default()
    });
    let mut disconnect = ev(
        System::Mqtt,
        EventKind::Error,
        Direction::Egress,
        "DISCONNECT",
    );
    disconnect.reply_code = Some(0x87);
    let mut disconnect_other = disconnect.clone();
    disconnect_other.reply_code = Some(0x97);
    let rs = run(
        &ctx,
        &[
            mqtt_sub(false, 7, "a/#"),
            mqtt_sub(false, 7, "secret/#"),
            mqtt_sub(false, 7, "b/+"),
            suback,
            refused(135, "secret/#"),
            refused(128, "b/+"),
            mqtt_sub(true, 8, "a/#"),
            unsuback,
            puback,
            disconnect,
            disconnect_other,
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("subscription.created", "success"),
            pair("access.denied", "failure"),
            pair("subscription.created", "failure"),
            pair("subscription.deleted", "success"),
            pair("access.denied", "failure"),
            pair("access.denied", "failure"),
        ]
    );
    assert_eq!(
        rs[0].resource.as_ref().unwrap().name.as_deref(),
        Some("a/#")
    );
    assert_eq!(
        rs[1].resource.as_ref().unwrap().name.as_deref(),
        Some("secret/#")
    );
    assert_eq!(rs[2].reason.as_ref().unwrap().code, Some(128));
    assert_eq!(
        rs[4].resource.as_ref().unwrap().name.as_deref(),
        Some("secret/t")
    );
    assert_eq!(ctx.pending(), 0);
}

// ---------------------------------------------------------------------------------------------
// NATS

fn js(kind: EventKind, api: &'static str, resource: &'static str, name: &str) -> BrokerEvent {
    let mut e = ev(System::Nats, kind, Direction::Ingress, api);
    e.destination = Some(Destination {
        subject: Some(name.into()),
        resource: Some(resource),
        ..Default::default()
    });
    e
}

fn js_response(api: &'static str, subject: &str, outcome: Outcome) -> BrokerEvent {
    let mut e = ev(System::Nats, EventKind::Response, Direction::Egress, api);
    e.destination = Some(Destination {
        subject: Some(subject.into()),
        ..Default::default()
    });
    e.outcome = Some(outcome);
    if outcome == Outcome::Failure {
        e.reply_code = Some(400);
        e.reply_text = Some("stream name already in use".into());
    }
    e
}

#[test]
fn nats_subscriptions_jetstream_and_violations() {
    let ctx = ctx();
    let mut sub = ev(
        System::Nats,
        EventKind::Subscribe,
        Direction::Ingress,
        "SUB",
    );
    sub.destination = Some(Destination {
        subject: Some("orders.>".into()),
        ..Default::default()
    });
    let mut unsub = sub.clone();
    unsub.kind = EventKind::Unsubscribe;
    unsub.method = Some("UNSUB");
    let mut consumer = js(EventKind::Declare, "CONSUMER.CREATE", "consumer", "c1");
    consumer.attrs.push(("stream", "ORDERS".into()));
    let mut consumer_del = js(EventKind::Delete, "CONSUMER.DELETE", "consumer", "c1");
    consumer_del.attrs.push(("stream", "ORDERS".into()));
    let violation = |subject: &str| {
        let mut e = ev(System::Nats, EventKind::Error, Direction::Egress, "-ERR");
        e.reply_text = Some(format!(
            "Permissions Violation for Publish to \"{subject}\""
        ));
        e
    };
    let mut other_err = ev(System::Nats, EventKind::Error, Direction::Egress, "-ERR");
    other_err.reply_text = Some("Maximum Payload Violation".into());
    let rs = run(
        &ctx,
        &[
            sub,
            unsub,
            js(EventKind::Declare, "STREAM.CREATE", "stream", "ORDERS"),
            js_response(
                "STREAM.CREATE",
                "$JS.API.STREAM.CREATE.ORDERS",
                Outcome::Success,
            ),
            js(EventKind::Declare, "STREAM.CREATE", "stream", "ORDERS"),
            js_response(
                "STREAM.CREATE",
                "$JS.API.STREAM.CREATE.ORDERS",
                Outcome::Failure,
            ),
            js(EventKind::Purge, "STREAM.PURGE", "stream", "ORDERS"),
            js_response(
                "STREAM.PURGE",
                "$JS.API.STREAM.PURGE.ORDERS",
                Outcome::Success,
            ),
            consumer,
            js_response(
                "CONSUMER.CREATE",
                "$JS.API.CONSUMER.CREATE.ORDERS.c1",
                Outcome::Success,
            ),
            consumer_del,
            js_response(
                "CONSUMER.DELETE",
                "$JS.API.CONSUMER.DELETE.ORDERS.c1",
                Outcome::Success,
            ),
            js(EventKind::Delete, "STREAM.DELETE", "stream", "LOCKED"),
            violation("$JS.API.STREAM.DELETE.LOCKED"),
            js(EventKind::Delete, "STREAM.DELETE", "stream", "ORDERS"),
            js_response(
                "STREAM.DELETE",
                "$JS.API.STREAM.DELETE.ORDERS",
                Outcome::Success,
            ),
            violation("payments.eu"),
            other_err,
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("subscription.created", "success"),
            pair("subscription.deleted", "success"),
            pair("stream.created", "success"),
            pair("stream.created", "failure"),
            pair("stream.purged", "success"),
            pair("consumer.created", "success"),
            pair("consumer.deleted", "success"),
            pair("access.denied", "failure"),
            pair("stream.deleted", "success"),
            pair("access.denied", "failure"),
        ]
    );
    assert_eq!(
        rs[0].resource.as_ref().unwrap().name.as_deref(),
        Some("orders.>")
    );
    assert_eq!(rs[3].reason.as_ref().unwrap().code, Some(400));
    let c = rs[5].resource.as_ref().unwrap();
    assert_eq!(
        (c.name.as_deref(), c.parent.as_deref()),
        (Some("c1"), Some("ORDERS"))
    );
    let d = rs[7].resource.as_ref().unwrap();
    assert_eq!(
        (d.kind.as_str(), d.name.as_deref()),
        ("stream", Some("LOCKED"))
    );
    assert_eq!(rs[7].protocol_method.as_deref(), Some("STREAM.DELETE"));
    let s = rs[9].resource.as_ref().unwrap();
    assert_eq!(
        (s.kind.as_str(), s.name.as_deref()),
        ("subject", Some("payments.eu"))
    );
    assert_eq!(ctx.pending(), 0);
}

// ---------------------------------------------------------------------------------------------
// Kafka

fn kreq(api: &'static str, corr: i32) -> BrokerEvent {
    let mut e = ev(System::Kafka, EventKind::Request, Direction::Ingress, api);
    e.attrs.push(("correlation_id", corr.to_string()));
    e
}

fn kresp(api: &'static str, corr: i32, code: i16) -> BrokerEvent {
    let mut e = ev(System::Kafka, EventKind::Response, Direction::Egress, api);
    e.attrs.push(("correlation_id", corr.to_string()));
    e.reply_code = Some(code as u16);
    e
}

fn ktopic(kind: EventKind, api: &'static str, resource: &'static str, topic: &str) -> BrokerEvent {
    let mut e = ev(System::Kafka, kind, Direction::Ingress, api);
    e.destination = Some(Destination {
        topic: Some(topic.into()),
        resource: Some(resource),
        ..Default::default()
    });
    e
}

fn kgroup(kind: EventKind, api: &'static str, group: &str) -> BrokerEvent {
    let mut e = ev(System::Kafka, kind, Direction::Ingress, api);
    e.destination = Some(Destination {
        group: Some(group.into()),
        ..Default::default()
    });
    e
}

#[test]
fn kafka_admin_calls_groups_and_authorization_failures() {
    let ctx = ctx();
    let mut acl = ev(
        System::Kafka,
        EventKind::Declare,
        Direction::Ingress,
        "CreateAcls",
    );
    acl.destination = Some(Destination {
        resource: Some("acl"),
        ..Default::default()
    });
    for (n, v) in [
        ("resource_type", "2"),
        ("resource_name", "orders"),
        ("pattern_type", "3"),
        ("principal", "User:alice"),
        ("host", "*"),
        ("operation", "3"),
        ("permission", "3"),
    ] {
        acl.attrs.push((n, v.into()));
    }
    let mut acl_del = acl.clone();
    acl_del.kind = EventKind::Delete;
    acl_del.method = Some("DeleteAcls");
    let mut config = ev(
        System::Kafka,
        EventKind::Control,
        Direction::Ingress,
        "IncrementalAlterConfigs",
    );
    config.destination = Some(Destination {
        topic: Some("orders".into()),
        resource: Some("config"),
        ..Default::default()
    });
    config.attrs.push(("resource_type", "2".into()));
    config.attrs.push(("resource_name", "orders".into()));
    config.attrs.push(("config", "retention.ms:SET".into()));
    config
        .attrs
        .push(("config", "cleanup.policy:DELETE".into()));
    let mut fetch_denied = kresp("Fetch", 40, 29);
    fetch_denied.reply_text = Some("TOPIC_AUTHORIZATION_FAILED".into());
    let mut commit_denied = kresp("OffsetCommit", 41, 30);
    commit_denied.destination = Some(Destination {
        group: Some("g1".into()),
        ..Default::default()
    });
    let rs = run(
        &ctx,
        &[
            // One topic created, one refused (TOPIC_ALREADY_EXISTS 36).
            kreq("CreateTopics", 1),
            ktopic(EventKind::Declare, "CreateTopics", "topic", "orders"),
            kresp("CreateTopics", 1, 0),
            kreq("CreateTopics", 2),
            ktopic(EventKind::Declare, "CreateTopics", "topic", "orders"),
            kresp("CreateTopics", 2, 36),
            // Two topics, an error: which one is unknown.
            kreq("DeleteTopics", 3),
            ktopic(EventKind::Delete, "DeleteTopics", "topic", "a"),
            ktopic(EventKind::Delete, "DeleteTopics", "topic", "b"),
            kresp("DeleteTopics", 3, 3),
            kreq("CreatePartitions", 4),
            ktopic(
                EventKind::Declare,
                "CreatePartitions",
                "partitions",
                "orders",
            ),
            kresp("CreatePartitions", 4, 0),
            kreq("CreateAcls", 5),
            acl,
            kresp("CreateAcls", 5, 0),
            kreq("DeleteAcls", 6),
            acl_del,
            kresp("DeleteAcls", 6, 31),
            kreq("IncrementalAlterConfigs", 7),
            config,
            kresp("IncrementalAlterConfigs", 7, 0),
            // Join: MEMBER_ID_REQUIRED first (no record), then joined; then leave.
            kreq("JoinGroup", 8),
            kgroup(EventKind::Subscribe, "JoinGroup", "g1"),
            kresp("JoinGroup", 8, 79),
            kreq("JoinGroup", 9),
            kgroup(EventKind::Subscribe, "JoinGroup", "g1"),
            kresp("JoinGroup", 9, 0),
            kreq("LeaveGroup", 10),
            kgroup(EventKind::Unsubscribe, "LeaveGroup", "g1"),
            kresp("LeaveGroup", 10, 0),
            // Denials on responses that end no held request.
            kreq("Fetch", 40),
            fetch_denied,
            kreq("OffsetCommit", 41),
            commit_denied,
            kresp("Metadata", 42, 0),
        ],
    );
    assert_eq!(
        actions(&rs),
        [
            pair("topic.created", "success"),
            pair("topic.created", "failure"),
            pair("topic.deleted", "unknown"),
            pair("topic.deleted", "unknown"),
            pair("partitions.created", "success"),
            pair("acl.created", "success"),
            pair("access.denied", "failure"),
            pair("config.changed", "success"),
            pair("consumer.created", "success"),
            pair("consumer.deleted", "success"),
            pair("access.denied", "failure"),
            pair("access.denied", "failure"),
        ]
    );
    assert_eq!(rs[1].reason.as_ref().unwrap().code, Some(36));
    assert_eq!(rs[2].reason.as_ref().unwrap().code, Some(3));
    let a = rs[5].resource.as_ref().unwrap();
    assert_eq!(
        (a.kind.as_str(), a.name.as_deref()),
        ("acl:topic", Some("orders"))
    );
    assert_eq!(
        rs[5].acl.as_ref().unwrap().principal.as_deref(),
        Some("User:alice")
    );
    assert_eq!(rs[6].protocol_method.as_deref(), Some("DeleteAcls"));
    assert_eq!(rs[6].reason.as_ref().unwrap().code, Some(31));
    let c = rs[7].config.as_ref().unwrap();
    assert_eq!(c.names, ["retention.ms", "cleanup.policy"]);
    assert_eq!(rs[7].resource.as_ref().unwrap().kind, "topic");
    assert_eq!(rs[8].resource.as_ref().unwrap().name.as_deref(), Some("g1"));
    assert_eq!(rs[10].reason.as_ref().unwrap().code, Some(29));
    assert_eq!(
        rs[11].resource.as_ref().unwrap().name.as_deref(),
        Some("g1")
    );
    assert_eq!(ctx.pending(), 0);
}

#[test]
fn pending_is_bounded_and_flushes_by_age() {
    let ctx = ctx();
    let mut emitted = 0;
    for i in 0..(super::record::MAX_PENDING + 10) {
        let mut d = amqp(EventKind::Declare, Direction::Ingress, "queue.declare", 1);
        d.ts_ns = T0 + i as u64;
        d.destination = queue(&format!("q{i}"));
        emitted += from_event(&d, &ctx, AuditLevel::Standard).len();
    }
    assert_eq!(emitted, 10);
    assert_eq!(ctx.pending(), super::record::MAX_PENDING);
    assert_eq!(ctx.flush_pending(T0 + 20).len(), 10);
    assert_eq!(
        ctx.flush_pending(u64::MAX).len(),
        super::record::MAX_PENDING - 10
    );
}

// ---------------------------------------------------------------------------------------------
// No credentials

const CANARY: &str = "CANARY-s3cr3t-7f2a";

#[test]
fn no_record_ever_contains_secret_attrs() {
    let ctx = ctx();
    let mut events = Vec::new();
    for kind in EventKind::ALL {
        for system in [System::Amqp, System::Mqtt, System::Nats, System::Kafka] {
            for dir in [Direction::Ingress, Direction::Egress] {
                for method in [
                    "queue.declare",
                    "CreateTopics",
                    "STREAM.CREATE",
                    "SUBACK",
                    "-ERR",
                ] {
                    let mut e = BrokerEvent::new(T0, system, kind, conn(3), dir);
                    e.method = Some(method);
                    e.channel = Some(1);
                    e.packet_id = Some(1);
                    e.outcome = Some(Outcome::Failure);
                    e.reply_code = Some(403);
                    e.destination = Some(Destination {
                        queue: Some("q".into()),
                        topic: Some("t".into()),
                        subject: Some("s".into()),
                        resource: Some("queue"),
                        ..Default::default()
                    });
                    e.props = Some(MessageProps {
                        headers: vec![("authorization".into(), CANARY.into())],
                        ..Default::default()
                    });
                    for name in [
                        "password",
                        "token",
                        "secret",
                        "sasl",
                        "auth_data",
                        "jwt",
                        "nkey",
                        "sig",
                        "value",
                    ] {
                        e.attrs.push((name, CANARY.into()));
                    }
                    e.attrs.push(("correlation_id", "1".into()));
                    events.push(e);
                }
            }
        }
    }
    let mut n = 0;
    for e in &events {
        for r in from_event(e, &ctx, AuditLevel::Full) {
            n += 1;
            assert!(!r.to_json_line().contains(CANARY), "{}", r.to_json_line());
        }
    }
    for r in ctx.flush_pending(u64::MAX) {
        n += 1;
        assert!(!r.to_json_line().contains(CANARY));
    }
    assert!(n > 50, "the canary went through many records ({n})");
}

// ---------------------------------------------------------------------------------------------
// Sink

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("bs-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(i: usize, action: &str, user: &str, ts: u64) -> AuditRecord {
    let ctx = AuditContext::new("node-a");
    let mut e = ev(
        System::Amqp,
        EventKind::ConnectionOpened,
        Direction::Ingress,
        "",
    );
    e.ts_ns = ts;
    e.conn.id = ConnId(i as u64);
    e.user = Some(user.into());
    let mut r = from_event(&e, &ctx, AuditLevel::Standard).remove(0);
    r.event.action = action.into();
    r
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn sink_rotates_under_load_without_losing_or_splitting_records() {
    let dir = TempDir::new("rotate");
    let path = dir.0.join("audit.jsonl");
    let (max_bytes, keep) = (16_384u64, 3usize);
    let sink = AuditSink::file(&path, max_bytes, keep).unwrap();
    let total = 5000;
    for i in 0..total {
        sink.write(&record(i, "connection.created", "alice", T0 + i as u64));
    }
    sink.flush().unwrap();
    assert_eq!(sink.errors(), 0);
    assert_eq!(sink.records(), total as u64);
    drop(sink);
    let files = query::audit_files(&path);
    assert_eq!(files.len(), keep + 1, "{files:?}");
    assert!(!rotated_path(&path, keep + 1).exists());
    let mut ids = Vec::new();
    for f in &files {
        assert_eq!(mode(f), 0o600, "{f:?}");
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.len() as u64 <= max_bytes, "{f:?}: {}", text.len());
        assert!(text.ends_with('\n'), "no line split across files");
        for line in text.lines() {
            let r: AuditRecord = serde_json::from_str(line).unwrap();
            ids.push(r.connection.unwrap()[1..].parse::<usize>().unwrap());
        }
    }
    // The newest records, all of them, in order, none twice.
    let first = ids[0];
    assert_eq!(ids, (first..total).collect::<Vec<_>>());
    assert!(first > 0, "old files were dropped");
}

#[test]
fn sink_files_are_private_also_when_they_existed() {
    let dir = TempDir::new("mode");
    let path = dir.0.join("audit.jsonl");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sink = AuditSink::file(&path, 200, 1).unwrap();
    assert_eq!(mode(&path), 0o600);
    for i in 0..5 {
        sink.write(&record(i, "queue.created", "bob", T0));
    }
    drop(sink);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&rotated_path(&path, 1)), 0o600);
}

#[test]
fn sink_flushes_within_a_second_without_more_writes() {
    let dir = TempDir::new("flush");
    let path = dir.0.join("audit.jsonl");
    let sink = AuditSink::file(&path, 1 << 20, 2).unwrap();
    sink.write(&record(1, "queue.created", "bob", T0));
    let mut waited = 0;
    while std::fs::metadata(&path).unwrap().len() == 0 && waited < 30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    assert!(waited <= 12, "flushed after {waited}00 ms");
    drop(sink);
}

#[test]
fn sink_reports_bad_paths() {
    let err = AuditSink::file("/nonexistent-dir-xyz/audit.jsonl", 100, 1).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent-dir-xyz/audit.jsonl"), "{msg}");
    assert!(msg.contains("directory exists"), "{msg}");
    assert!(AuditSink::file("/tmp/x", 0, 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// Query

fn write_log(dir: &TempDir) -> PathBuf {
    let path = dir.0.join("audit.jsonl");
    let sink = AuditSink::file(&path, 1200, 5).unwrap();
    let s = 1_000_000_000u64;
    let recs = [
        record(1, "queue.created", "alice", T0),
        record(2, "queue.deleted", "bob", T0 + 60 * s),
        record(3, "user.authentication.failure", "mallory", T0 + 120 * s),
        record(4, "exchange.created", "alice", T0 + 180 * s),
        record(5, "queue.purged", "alice", T0 + 240 * s),
    ];
    for (i, mut r) in recs.into_iter().enumerate() {
        if i == 2 {
            r.event.outcome = "failure".into();
            r.reason = Some(super::record::Reason {
                code: Some(403),
                text: Some("ACCESS_REFUSED - \"quoted\", with comma".into()),
            });
        }
        sink.write(&r);
    }
    drop(sink);
    // A torn line is skipped, not fatal.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"time\":\"2026\n").unwrap();
    path
}

fn users(path: &Path, filter: &Filter) -> Vec<String> {
    let mut out = Vec::new();
    query::read_records(path, filter, |r, _| {
        out.push(r.user.as_ref().unwrap().name.clone());
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn query_reads_rotated_files_oldest_first_with_filters() {
    let dir = TempDir::new("query");
    let path = write_log(&dir);
    assert!(query::audit_files(&path).len() > 1, "the log rotated");
    let all = Filter::default();
    assert_eq!(
        users(&path, &all),
        ["alice", "bob", "mallory", "alice", "alice"]
    );
    let f = Filter {
        actions: vec!["queue.*".into()],
        ..Default::default()
    };
    assert_eq!(users(&path, &f), ["alice", "bob", "alice"]);
    let f = Filter {
        actions: vec!["queue.created".into(), "exchange.*".into()],
        user: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(users(&path, &f), ["alice", "alice"]);
    let f = Filter {
        outcome: Some("failure".into()),
        system: Some(Filter::system_from("amqp").unwrap()),
        ..Default::default()
    };
    assert_eq!(users(&path, &f), ["mallory"]);
    let s = 1_000_000_000i128;
    let f = Filter {
        since_ns: Some(i128::from(T0) + 60 * s),
        until_ns: Some(i128::from(T0) + 180 * s),
        ..Default::default()
    };
    assert_eq!(users(&path, &f), ["bob", "mallory", "alice"]);
    let mut out = Vec::new();
    let stats = query::query(&path, &all, &mut out).unwrap();
    assert_eq!((stats.matched, stats.bad_lines), (5, 1));
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 5);
    let missing = query::read_records(&dir.0.join("nope.jsonl"), &all, |_, _| Ok(()));
    assert!(missing.unwrap_err().is_usage());
}

#[test]
fn export_round_trips_as_json_and_csv() {
    let dir = TempDir::new("export");
    let path = write_log(&dir);
    let mut originals = Vec::new();
    query::read_records(&path, &Filter::default(), |r, _| {
        originals.push(r.clone());
        Ok(())
    })
    .unwrap();

    let mut json = Vec::new();
    query::export(&path, &Filter::default(), ExportFormat::Json, &mut json).unwrap();
    let back: Vec<AuditRecord> = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, originals);

    let mut csv = Vec::new();
    query::export(&path, &Filter::default(), ExportFormat::Csv, &mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 1 + originals.len());
    assert_eq!(rows[0], CSV_COLUMNS);
    for (row, r) in rows[1..].iter().zip(&originals) {
        assert_eq!(row.len(), CSV_COLUMNS.len());
        assert_eq!(*row, query::csv_values(r));
    }
    assert!(
        text.contains("\"ACCESS_REFUSED - \"\"quoted\"\", with comma\""),
        "{text}"
    );

    let mut empty = Vec::new();
    let none = Filter {
        user: Some("nobody".into()),
        ..Default::default()
    };
    query::export(&path, &none, ExportFormat::Json, &mut empty).unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<AuditRecord>>(&empty).unwrap(),
        []
    );
    assert!("xml".parse::<ExportFormat>().is_err());
}

#[test]
fn times_parse_absolute_and_relative() {
    assert_eq!(
        parse_rfc3339("2026-11-18T11:06:40.000000000Z"),
        Some(i128::from(T0))
    );
    assert_eq!(
        parse_rfc3339("2026-11-18T12:06:40.5+01:00"),
        Some(i128::from(T0) + 500_000_000)
    );
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339("2000-02-29T00:00:00Z"),
        Some(951_782_400_000_000_000)
    );
    assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    assert_eq!(parse_rfc3339("yesterday"), None);
    let now = 10_000 * 1_000_000_000i128;
    assert_eq!(parse_time("15m", now).unwrap(), now - 900 * 1_000_000_000);
    assert_eq!(parse_time("2h", now).unwrap(), now - 7200 * 1_000_000_000);
    assert_eq!(parse_time("30s", now).unwrap(), now - 30 * 1_000_000_000);
    assert_eq!(
        parse_time("1970-01-01T00:00:01Z", now).unwrap(),
        1_000_000_000
    );
    let err = parse_time("15 minutes", now).unwrap_err();
    assert!(err.to_string().contains("RFC 3339"), "{err}");
    assert!(parse_time("h", now).is_err());
    // Every rendered time parses back.
    for ns in [0u64, T0, T0 + 123_456_789] {
        assert_eq!(
            parse_rfc3339(&crate::render::rfc3339(ns)),
            Some(i128::from(ns))
        );
    }
}
