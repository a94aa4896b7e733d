//! Wire primitives: a bounds-checked big-endian reader that knows classic vs flexible
//! (compact, tagged-field) encodings, the per-API table (names, flexible-version thresholds,
//! newest versions) and error-code names.
//!
//! The table follows `clients/src/main/resources/common/message/*Request.json` in apache/kafka
//! (`validVersions`, `flexibleVersions`; requests and responses of one API share both), plus the
//! versions Kafka 4.x added (Produce 12–13, Fetch 17–18, Metadata 13, OffsetCommit/OffsetFetch
//! 10) and the APIs 88–92, all flexible from 0.

/// A message body or header that does not decode (too short, bad length, bad varint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Undecodable;

pub(super) type Res<T> = Result<T, Undecodable>;

/// Strings from the wire (topic, group, client id, …) are cut to this many bytes.
pub(super) const MAX_TEXT: usize = 256;

/// One API: name, first flexible version (`None`: never flexible), newest version known.
#[derive(Clone, Copy, Debug)]
pub(super) struct Api {
    pub(super) name: &'static str,
    pub(super) flexible: Option<i16>,
    pub(super) max: i16,
}

const fn api(name: &'static str, flexible: i16, max: i16) -> Api {
    Api {
        name,
        flexible: if flexible < 0 { None } else { Some(flexible) },
        max,
    }
}

/// Indexed by api key. `-1`: no flexible versions.
const APIS: [Api; 93] = [
    api("Produce", 9, 13),
    api("Fetch", 12, 18),
    api("ListOffsets", 6, 10),
    api("Metadata", 9, 13),
    api("LeaderAndIsr", 4, 7),
    api("StopReplica", 2, 4),
    api("UpdateMetadata", 6, 8),
    api("ControlledShutdown", 3, 3),
    api("OffsetCommit", 8, 10),
    api("OffsetFetch", 6, 10),
    api("FindCoordinator", 3, 6),
    api("JoinGroup", 6, 9),
    api("Heartbeat", 4, 4),
    api("LeaveGroup", 4, 5),
    api("SyncGroup", 4, 5),
    api("DescribeGroups", 5, 6),
    api("ListGroups", 3, 5),
    api("SaslHandshake", -1, 1),
    api("ApiVersions", 3, 4),
    api("CreateTopics", 5, 7),
    api("DeleteTopics", 4, 6),
    api("DeleteRecords", 2, 2),
    api("InitProducerId", 2, 6),
    api("OffsetForLeaderEpoch", 4, 4),
    api("AddPartitionsToTxn", 3, 5),
    api("AddOffsetsToTxn", 3, 4),
    api("EndTxn", 3, 5),
    api("WriteTxnMarkers", 1, 1),
    api("TxnOffsetCommit", 3, 5),
    api("DescribeAcls", 2, 3),
    api("CreateAcls", 2, 3),
    api("DeleteAcls", 2, 3),
    api("DescribeConfigs", 4, 4),
    api("AlterConfigs", 2, 2),
    api("AlterReplicaLogDirs", 2, 2),
    api("DescribeLogDirs", 2, 4),
    api("SaslAuthenticate", 2, 2),
    api("CreatePartitions", 2, 3),
    api("CreateDelegationToken", 2, 3),
    api("RenewDelegationToken", 2, 2),
    api("ExpireDelegationToken", 2, 2),
    api("DescribeDelegationToken", 2, 3),
    api("DeleteGroups", 2, 2),
    api("ElectLeaders", 2, 2),
    api("IncrementalAlterConfigs", 1, 1),
    api("AlterPartitionReassignments", 0, 1),
    api("ListPartitionReassignments", 0, 0),
    api("OffsetDelete", -1, 0),
    api("DescribeClientQuotas", 1, 1),
    api("AlterClientQuotas", 1, 1),
    api("DescribeUserScramCredentials", 0, 0),
    api("AlterUserScramCredentials", 0, 0),
    api("Vote", 0, 2),
    api("BeginQuorumEpoch", 1, 1),
    api("EndQuorumEpoch", 1, 1),
    api("DescribeQuorum", 0, 2),
    api("AlterPartition", 0, 3),
    api("UpdateFeatures", 0, 2),
    api("Envelope", 0, 0),
    api("FetchSnapshot", 0, 1),
    api("DescribeCluster", 0, 2),
    api("DescribeProducers", 0, 0),
    api("BrokerRegistration", 0, 4),
    api("BrokerHeartbeat", 0, 1),
    api("UnregisterBroker", 0, 0),
    api("DescribeTransactions", 0, 0),
    api("ListTransactions", 0, 2),
    api("AllocateProducerIds", 0, 0),
    api("ConsumerGroupHeartbeat", 0, 1),
    api("ConsumerGroupDescribe", 0, 1),
    api("ControllerRegistration", 0, 0),
    api("GetTelemetrySubscriptions", 0, 0),
    api("PushTelemetry", 0, 0),
    api("AssignReplicasToDirs", 0, 0),
    api("ListClientMetricsResources", 0, 0),
    api("DescribeTopicPartitions", 0, 0),
    api("ShareGroupHeartbeat", 0, 1),
    api("ShareGroupDescribe", 0, 1),
    api("ShareFetch", 0, 1),
    api("ShareAcknowledge", 0, 1),
    api("AddRaftVoter", 0, 0),
    api("RemoveRaftVoter", 0, 0),
    api("UpdateRaftVoter", 0, 0),
    api("InitializeShareGroupState", 0, 0),
    api("ReadShareGroupState", 0, 0),
    api("WriteShareGroupState", 0, 0),
    api("DeleteShareGroupState", 0, 0),
    api("ReadShareGroupStateSummary", 0, 0),
    api("StreamsGroupHeartbeat", 0, 0),
    api("StreamsGroupDescribe", 0, 0),
    api("DescribeShareGroupOffsets", 0, 0),
    api("AlterShareGroupOffsets", 0, 0),
    api("DeleteShareGroupOffsets", 0, 0),
];

pub(super) const PRODUCE: i16 = 0;
pub(super) const FETCH: i16 = 1;
pub(super) const LIST_OFFSETS: i16 = 2;
pub(super) const METADATA: i16 = 3;
pub(super) const OFFSET_COMMIT: i16 = 8;
pub(super) const OFFSET_FETCH: i16 = 9;
pub(super) const FIND_COORDINATOR: i16 = 10;
pub(super) const JOIN_GROUP: i16 = 11;
pub(super) const HEARTBEAT: i16 = 12;
pub(super) const LEAVE_GROUP: i16 = 13;
pub(super) const SYNC_GROUP: i16 = 14;
pub(super) const SASL_HANDSHAKE: i16 = 17;
pub(super) const API_VERSIONS: i16 = 18;
pub(super) const CREATE_TOPICS: i16 = 19;
pub(super) const DELETE_TOPICS: i16 = 20;
pub(super) const CREATE_ACLS: i16 = 30;
pub(super) const DELETE_ACLS: i16 = 31;
pub(super) const ALTER_CONFIGS: i16 = 33;
pub(super) const SASL_AUTHENTICATE: i16 = 36;
pub(super) const CREATE_PARTITIONS: i16 = 37;
pub(super) const INCREMENTAL_ALTER_CONFIGS: i16 = 44;

/// Highest api key and version a request header may carry while in sync (looser than the
/// table: brokers newer than it exist).
pub(super) const MAX_API_KEY: i16 = 100;
pub(super) const MAX_API_VERSION: i16 = 20;

pub(super) fn api_info(key: i16) -> Option<&'static Api> {
    usize::try_from(key).ok().and_then(|k| APIS.get(k))
}

/// Method name of an api key ("Unknown" for keys newer than the table).
pub(super) fn api_name(key: i16) -> &'static str {
    api_info(key).map_or("Unknown", |a| a.name)
}

/// Whether `version` of `key` uses the flexible encoding (compact strings, tagged fields).
/// Keys newer than the table are flexible: every API added since KIP-482 is.
pub(super) fn is_flexible(key: i16, version: i16) -> bool {
    match api_info(key) {
        Some(a) => a.flexible.is_some_and(|f| version >= f),
        None => true,
    }
}

/// Error code names (org.apache.kafka.common.protocol.Errors, codes -1..=128).
pub(super) fn error_name(code: i16) -> Option<&'static str> {
    Some(match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        4 => "INVALID_FETCH_SIZE",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        9 => "REPLICA_NOT_AVAILABLE",
        10 => "MESSAGE_TOO_LARGE",
        11 => "STALE_CONTROLLER_EPOCH",
        12 => "OFFSET_METADATA_TOO_LARGE",
        13 => "NETWORK_EXCEPTION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        21 => "INVALID_REQUIRED_ACKS",
        22 => "ILLEGAL_GENERATION",
        23 => "INCONSISTENT_GROUP_PROTOCOL",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        26 => "INVALID_SESSION_TIMEOUT",
        27 => "REBALANCE_IN_PROGRESS",
        28 => "INVALID_COMMIT_OFFSET_SIZE",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        32 => "INVALID_TIMESTAMP",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        39 => "INVALID_REPLICA_ASSIGNMENT",
        40 => "INVALID_CONFIG",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        44 => "POLICY_VIOLATION",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        46 => "DUPLICATE_SEQUENCE_NUMBER",
        47 => "INVALID_PRODUCER_EPOCH",
        48 => "INVALID_TXN_STATE",
        49 => "INVALID_PRODUCER_ID_MAPPING",
        50 => "INVALID_TRANSACTION_TIMEOUT",
        51 => "CONCURRENT_TRANSACTIONS",
        52 => "TRANSACTION_COORDINATOR_FENCED",
        53 => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        54 => "SECURITY_DISABLED",
        55 => "OPERATION_NOT_ATTEMPTED",
        56 => "KAFKA_STORAGE_ERROR",
        57 => "LOG_DIR_NOT_FOUND",
        58 => "SASL_AUTHENTICATION_FAILED",
        59 => "UNKNOWN_PRODUCER_ID",
        60 => "REASSIGNMENT_IN_PROGRESS",
        61 => "DELEGATION_TOKEN_AUTH_DISABLED",
        62 => "DELEGATION_TOKEN_NOT_FOUND",
        63 => "DELEGATION_TOKEN_OWNER_MISMATCH",
        64 => "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
        65 => "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
        66 => "DELEGATION_TOKEN_EXPIRED",
        67 => "INVALID_PRINCIPAL_TYPE",
        68 => "NON_EMPTY_GROUP",
        69 => "GROUP_ID_NOT_FOUND",
        70 => "FETCH_SESSION_ID_NOT_FOUND",
        71 => "INVALID_FETCH_SESSION_EPOCH",
        72 => "LISTENER_NOT_FOUND",
        73 => "TOPIC_DELETION_DISABLED",
        74 => "FENCED_LEADER_EPOCH",
        75 => "UNKNOWN_LEADER_EPOCH",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        77 => "STALE_BROKER_EPOCH",
        78 => "OFFSET_NOT_AVAILABLE",
        79 => "MEMBER_ID_REQUIRED",
        80 => "PREFERRED_LEADER_NOT_AVAILABLE",
        81 => "GROUP_MAX_SIZE_REACHED",
        82 => "FENCED_INSTANCE_ID",
        83 => "ELIGIBLE_LEADERS_NOT_AVAILABLE",
        84 => "ELECTION_NOT_NEEDED",
        85 => "NO_REASSIGNMENT_IN_PROGRESS",
        86 => "GROUP_SUBSCRIBED_TO_TOPIC",
        87 => "INVALID_RECORD",
        88 => "UNSTABLE_OFFSET_COMMIT",
        89 => "THROTTLING_QUOTA_EXCEEDED",
        90 => "PRODUCER_FENCED",
        91 => "RESOURCE_NOT_FOUND",
        92 => "DUPLICATE_RESOURCE",
        93 => "UNACCEPTABLE_CREDENTIAL",
        94 => "INCONSISTENT_VOTER_SET",
        95 => "INVALID_UPDATE_VERSION",
        96 => "FEATURE_UPDATE_FAILED",
        97 => "PRINCIPAL_DESERIALIZATION_FAILURE",
        98 => "SNAPSHOT_NOT_FOUND",
        100 => "UNKNOWN_TOPIC_ID",
        101 => "DUPLICATE_BROKER_REGISTRATION",
        102 => "BROKER_ID_NOT_REGISTERED",
        103 => "INCONSISTENT_TOPIC_ID",
        104 => "INCONSISTENT_CLUSTER_ID",
        105 => "TRANSACTIONAL_ID_NOT_FOUND",
        106 => "FETCH_SESSION_TOPIC_ID_ERROR",
        107 => "INELIGIBLE_REPLICA",
        108 => "NEW_LEADER_ELECTED",
        109 => "OFFSET_MOVED_TO_TIERED_STORAGE",
        110 => "FENCED_MEMBER_EPOCH",
        111 => "UNRELEASED_INSTANCE_ID",
        112 => "UNSUPPORTED_ASSIGNOR",
        113 => "STALE_MEMBER_EPOCH",
        114 => "MISMATCHED_ENDPOINT_TYPE",
        115 => "UNSUPPORTED_ENDPOINT_TYPE",
        116 => "UNKNOWN_CONTROLLER_ID",
        117 => "UNKNOWN_SUBSCRIPTION_ID",
        118 => "TELEMETRY_TOO_LARGE",
        119 => "INVALID_REGISTRATION",
        120 => "TRANSACTION_ABORTABLE",
        121 => "INVALID_RECORD_STATE",
        122 => "SHARE_SESSION_NOT_FOUND",
        123 => "INVALID_SHARE_SESSION_EPOCH",
        124 => "FENCED_STATE_EPOCH",
        125 => "INVALID_VOTER_KEY",
        126 => "DUPLICATE_VOTER",
        127 => "VOTER_NOT_FOUND",
        128 => "INVALID_REGULAR_EXPRESSION",
        _ => return None,
    })
}

/// Big-endian reader over one message. `flex`: compact strings/arrays and tagged fields.
#[derive(Clone, Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pub(super) flex: bool,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], flex: bool) -> Self {
        Self { buf, flex }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(super) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Undecodable);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let b = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(super) fn i8(&mut self) -> Res<i8> {
        Ok(self.array::<1>()?[0] as i8)
    }
    pub(super) fn bool(&mut self) -> Res<bool> {
        Ok(self.i8()? != 0)
    }
    pub(super) fn i16(&mut self) -> Res<i16> {
        self.array().map(i16::from_be_bytes)
    }
    pub(super) fn i32(&mut self) -> Res<i32> {
        self.array().map(i32::from_be_bytes)
    }
    pub(super) fn i64(&mut self) -> Res<i64> {
        self.array().map(i64::from_be_bytes)
    }
    pub(super) fn uuid(&mut self) -> Res<[u8; 16]> {
        self.array()
    }

    /// Unsigned LEB128, at most 5 bytes (32 bits).
    pub(super) fn uvarint(&mut self) -> Res<u32> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.array::<1>()?[0];
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Undecodable)
    }

    /// Zigzag varint (record fields), at most 5 bytes.
    pub(super) fn varint(&mut self) -> Res<i32> {
        let v = self.uvarint()?;
        Ok((v >> 1) as i32 ^ -((v & 1) as i32))
    }

    /// Zigzag varlong, at most 10 bytes.
    pub(super) fn varlong(&mut self) -> Res<i64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.array::<1>()?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err(Undecodable)
    }

    /// Length of a string/bytes/array: `None` for null. Classic: `wide` selects i32 (bytes,
    /// arrays) over i16 (strings); flexible: unsigned varint N+1.
    fn len(&mut self, wide: bool) -> Res<Option<usize>> {
        if self.flex {
            return Ok(match self.uvarint()? {
                0 => None,
                n => Some(n as usize - 1),
            });
        }
        let n = if wide {
            self.i32()?
        } else {
            i32::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(Undecodable),
            n => Ok(Some(n as usize)),
        }
    }

    pub(super) fn nullable_string(&mut self) -> Res<Option<&'a [u8]>> {
        match self.len(false)? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    /// A string (null reads as empty: brokers send null where the schema says nullable only).
    pub(super) fn string(&mut self) -> Res<&'a [u8]> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }

    pub(super) fn nullable_bytes(&mut self) -> Res<Option<&'a [u8]>> {
        match self.len(true)? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    pub(super) fn bytes(&mut self) -> Res<&'a [u8]> {
        Ok(self.nullable_bytes()?.unwrap_or_default())
    }

    /// An array's element count (null: 0). Each element takes at least one byte, so a count
    /// above the bytes left is garbage, refused before anything loops over it.
    pub(super) fn array_len(&mut self) -> Res<usize> {
        let n = self.len(true)?.unwrap_or(0);
        if n > self.buf.len() {
            return Err(Undecodable);
        }
        Ok(n)
    }

    /// An array's element count (null: 0) without the bytes-left check: for a streamed
    /// message, whose elements are not all in the reader.
    pub(super) fn count(&mut self) -> Res<usize> {
        Ok(self.len(true)?.unwrap_or(0))
    }

    /// The length of a records field (null: 0), its bytes not read.
    pub(super) fn records_len(&mut self) -> Res<usize> {
        Ok(self.len(true)?.unwrap_or(0))
    }

    /// Skips a tagged-field section (flexible versions only).
    pub(super) fn tags(&mut self) -> Res<()> {
        if !self.flex {
            return Ok(());
        }
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }

    /// Skips `n` i32s of an `[]int32` array.
    pub(super) fn skip_i32s(&mut self) -> Res<()> {
        let n = self.array_len()?;
        self.take(n.checked_mul(4).ok_or(Undecodable)?)?;
        Ok(())
    }
}

/// Lossy UTF-8, cut to at most `cap` bytes on a character boundary.
pub(super) fn text(bytes: &[u8], cap: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(cap.saturating_mul(2))]);
    if s.len() <= cap {
        return s.into_owned();
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A wire string as event text (bounded).
pub(super) fn t(bytes: &[u8]) -> String {
    text(bytes, MAX_TEXT)
}

/// A topic id as Kafka prints it (base64 URL-safe, no padding).
pub(super) fn uuid_text(id: &[u8; 16]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for k in 0..chars {
            s.push(B64[(n >> (18 - 6 * k)) as usize & 63] as char);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_compact_lengths() {
        let mut r = Reader::new(&[0x96, 0x01, 0x03, 0x01], false);
        assert_eq!(r.uvarint(), Ok(150));
        assert_eq!(r.varint(), Ok(-2));
        assert_eq!(r.varint(), Ok(-1));
        let mut r = Reader::new(&[0x00, 0x01, 0x03, b'h', b'i'], true);
        assert_eq!(r.nullable_string(), Ok(None));
        assert_eq!(r.string(), Ok(&b""[..]));
        assert_eq!(r.string(), Ok(&b"hi"[..]));
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff], false)
                .uvarint()
                .is_err()
        );
        assert_eq!(Reader::new(&[0xff; 4], false).array_len(), Ok(0));
        assert!(
            Reader::new(&[0x7f, 0xff, 0xff, 0xff], false)
                .array_len()
                .is_err()
        );
    }

    #[test]
    fn table_is_indexed_by_key() {
        assert_eq!(api_name(PRODUCE), "Produce");
        assert_eq!(api_name(API_VERSIONS), "ApiVersions");
        assert_eq!(api_name(SASL_AUTHENTICATE), "SaslAuthenticate");
        assert_eq!(
            api_name(INCREMENTAL_ALTER_CONFIGS),
            "IncrementalAlterConfigs"
        );
        assert_eq!(api_name(92), "DeleteShareGroupOffsets");
        assert!(is_flexible(FETCH, 12) && !is_flexible(FETCH, 11));
        assert!(!is_flexible(SASL_HANDSHAKE, 1));
        assert_eq!(uuid_text(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(text("héllo".as_bytes(), 2), "h");
    }
}
