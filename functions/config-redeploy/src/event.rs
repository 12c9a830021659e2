//! The events this function understands, parsed into plain data.
//!
//! - S3 event notifications (`{"Records":[…]}`, keys URL-encoded: `+` and `%XX`);
//! - EventBridge events from S3 (`Object Created`, `Object Deleted`; keys encoded the same way);
//! - EventBridge `ECS Deployment State Change` events;
//! - S3's `s3:TestEvent`, sent once when a notification is configured.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::Value;
use shared::Error;

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Configuration objects changed.
    Objects(Vec<ObjectEvent>),
    /// An ECS deployment changed state.
    Deployment(DeploymentEvent),
    /// S3's test notification: nothing to do.
    S3Test,
}

/// What happened to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or overwritten (`ObjectCreated:*`, `Object Created`).
    Created,
    /// Deleted or hidden by a delete marker (`ObjectRemoved:*`, `LifecycleExpiration:*`, `Object Deleted`).
    Removed,
    /// Anything else (tagging, restore from Glacier, …): not a content change.
    Other(String),
}

/// One object change, with its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    pub key: String,
    pub change: Change,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
    pub time: Option<EventTime>,
}

/// An event time and the resolution it was written with.
///
/// S3 notifications carry milliseconds (`…T12:00:00.123Z`), EventBridge whole seconds
/// (`…T12:00:00Z`): the change happened somewhere in `[at, at + resolution)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    pub at: DateTime<Utc>,
    pub resolution: Duration,
}

impl EventTime {
    /// Parses an RFC 3339 time, keeping the resolution its fraction was written with.
    pub fn parse(s: &str) -> Option<EventTime> {
        let at = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
        let digits = s
            .split_once('.')
            .map(|(_, frac)| frac.bytes().take_while(u8::is_ascii_digit).count())
            .unwrap_or(0)
            .min(9) as u32;
        let resolution = Duration::nanoseconds(10i64.pow(9 - digits));
        Some(EventTime { at, resolution })
    }

    /// The last instant the change may have happened at: the conservative "changed at".
    ///
    /// A deployment created strictly after this instant started after the change.
    pub fn latest(&self) -> DateTime<Utc> {
        self.at + self.resolution - Duration::nanoseconds(1)
    }
}

/// An ECS deployment state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentEvent {
    /// `SERVICE_DEPLOYMENT_FAILED`, `SERVICE_DEPLOYMENT_COMPLETED`, …
    pub event_name: String,
    /// From the service ARN; `None` for old-format ARNs without the cluster.
    pub cluster: Option<String>,
    pub service: String,
    pub deployment_id: String,
    pub reason: Option<String>,
}

/// The ECS event that asks for a rollback.
pub const DEPLOYMENT_FAILED: &str = "SERVICE_DEPLOYMENT_FAILED";

/// Decodes a key from an S3 event: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn decode_key(raw: &str) -> Result<String, Error> {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| Error::InvalidEvent(format!("object key {raw:?} is not UTF-8 once decoded")))
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<Record>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_source: Option<String>,
    event_name: String,
    event_time: Option<String>,
    s3: RecordS3,
}

#[derive(Deserialize)]
struct RecordS3 {
    bucket: Named,
    object: RecordObject,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordObject {
    key: String,
    version_id: Option<String>,
    sequencer: Option<String>,
}

#[derive(Deserialize)]
struct Bridge {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    time: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    detail: Value,
}

#[derive(Deserialize)]
struct S3Detail {
    bucket: Named,
    object: S3DetailObject,
}

#[derive(Deserialize)]
struct S3DetailObject {
    key: String,
    #[serde(rename = "version-id")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EcsDetail {
    event_name: String,
    deployment_id: String,
    reason: Option<String>,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidEvent(format!("{what}: {e}"))
}

fn time(s: Option<&str>, what: &str) -> Result<Option<EventTime>, Error> {
    match s {
        None => Ok(None),
        Some(t) => EventTime::parse(t)
            .map(Some)
            .ok_or_else(|| invalid(what, format!("{t:?} is not an RFC 3339 time"))),
    }
}

fn s3_change(name: &str) -> Change {
    let name = name.strip_prefix("s3:").unwrap_or(name);
    if name.starts_with("ObjectCreated:") {
        Change::Created
    } else if name.starts_with("ObjectRemoved:") || name.starts_with("LifecycleExpiration:") {
        Change::Removed
    } else {
        Change::Other(name.to_string())
    }
}

/// Parses an invocation payload. Anything unrecognised or malformed is [`Error::InvalidEvent`].
pub fn parse(v: &Value) -> Result<Trigger, Error> {
    if v.get("Records").is_some() {
        let n: Notification = serde_json::from_value(v.clone())
            .map_err(|e| invalid("malformed S3 event notification", e))?;
        let mut out = Vec::with_capacity(n.records.len());
        for (i, r) in n.records.into_iter().enumerate() {
            if r.event_source.as_deref().is_some_and(|s| s != "aws:s3") {
                return Err(invalid(
                    &format!("record {i}"),
                    format!("source {:?} is not aws:s3", r.event_source),
                ));
            }
            out.push(ObjectEvent {
                bucket: r.s3.bucket.name,
                key: decode_key(&r.s3.object.key)?,
                change: s3_change(&r.event_name),
                version_id: r.s3.object.version_id.filter(|s| !s.is_empty()),
                sequencer: r.s3.object.sequencer,
                time: time(r.event_time.as_deref(), &format!("record {i} eventTime"))?,
            });
        }
        return Ok(Trigger::Objects(out));
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Trigger::S3Test);
    }
    if v.get("detail-type").is_some() {
        let b: Bridge = serde_json::from_value(v.clone())
            .map_err(|e| invalid("malformed EventBridge event", e))?;
        return match (b.source.as_str(), b.detail_type.as_str()) {
            ("aws.s3", dt) => {
                let d: S3Detail = serde_json::from_value(b.detail)
                    .map_err(|e| invalid(&format!("malformed {dt} detail"), e))?;
                let change = match dt {
                    "Object Created" => Change::Created,
                    "Object Deleted" => Change::Removed,
                    other => Change::Other(other.to_string()),
                };
                Ok(Trigger::Objects(vec![ObjectEvent {
                    bucket: d.bucket.name,
                    key: decode_key(&d.object.key)?,
                    change,
                    version_id: d.object.version_id.filter(|s| !s.is_empty()),
                    sequencer: d.object.sequencer,
                    time: time(b.time.as_deref(), "time")?,
                }]))
            }
            ("aws.ecs", "ECS Deployment State Change") => {
                let d: EcsDetail = serde_json::from_value(b.detail)
                    .map_err(|e| invalid("malformed ECS Deployment State Change detail", e))?;
                let arn = b
                    .resources
                    .iter()
                    .find(|r| r.contains(":service/"))
                    .ok_or_else(|| {
                        invalid("ECS Deployment State Change", "no service ARN in resources")
                    })?;
                let (cluster, service) = service_from_arn(arn).ok_or_else(|| {
                    invalid(
                        "ECS Deployment State Change",
                        format!("{arn:?} is not a service ARN"),
                    )
                })?;
                Ok(Trigger::Deployment(DeploymentEvent {
                    event_name: d.event_name,
                    cluster,
                    service,
                    deployment_id: d.deployment_id,
                    reason: d.reason,
                }))
            }
            (source, dt) => Err(Error::InvalidEvent(format!(
                "unsupported EventBridge event {dt:?} from {source:?}"
            ))),
        };
    }
    Err(Error::InvalidEvent(
        "not an S3 notification, an EventBridge S3 event or an ECS Deployment State Change".into(),
    ))
}

/// `arn:…:service/<cluster>/<service>` → (Some(cluster), service); old `service/<service>` → (None, service).
pub fn service_from_arn(arn: &str) -> Option<(Option<String>, String)> {
    let (_, path) = arn.split_once(":service/")?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [service] if !service.is_empty() => Some((None, service.to_string())),
        [cluster, service] if !cluster.is_empty() && !service.is_empty() => {
            Some((Some(cluster.to_string()), service.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/");
        let text = std::fs::read_to_string(format!("{path}{name}.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn objects(t: Trigger) -> Vec<ObjectEvent> {
        match t {
            Trigger::Objects(o) => o,
            other => panic!("expected objects, got {other:?}"),
        }
    }

    #[test]
    fn s3_put_fixture() {
        let o = objects(parse(&fixture("config-redeploy-s3-put")).unwrap());
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].bucket, "wiki-config-123456789012");
        assert_eq!(o[0].key, "LocalSettings.php");
        assert_eq!(o[0].change, Change::Created);
        assert!(o[0].version_id.is_some());
        let t = o[0].time.unwrap();
        assert_eq!(t.resolution, Duration::milliseconds(1));
    }

    #[test]
    fn s3_delete_fixture() {
        let o = objects(parse(&fixture("config-redeploy-s3-delete")).unwrap());
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].change, Change::Removed);
        assert_eq!(o[0].key, "extensions/My Extension+1.php");
    }

    #[test]
    fn s3_batch_fixture() {
        let o = objects(parse(&fixture("config-redeploy-s3-batch")).unwrap());
        assert!(o.len() >= 3, "{o:?}");
        assert!(o.iter().all(|e| e.change == Change::Created));
    }

    #[test]
    fn eventbridge_created_and_deleted_fixtures() {
        let o = objects(parse(&fixture("config-redeploy-eventbridge-object-created")).unwrap());
        assert_eq!(o[0].change, Change::Created);
        assert_eq!(o[0].key, "LocalSettings.php");
        assert_eq!(o[0].time.unwrap().resolution, Duration::seconds(1));
        let o = objects(parse(&fixture("config-redeploy-eventbridge-object-deleted")).unwrap());
        assert_eq!(o[0].change, Change::Removed);
        assert!(o[0].version_id.is_some());
    }

    #[test]
    fn ecs_failure_fixture() {
        match parse(&fixture("config-redeploy-ecs-deployment-failed")).unwrap() {
            Trigger::Deployment(d) => {
                assert_eq!(d.event_name, DEPLOYMENT_FAILED);
                assert_eq!(d.cluster.as_deref(), Some("wiki"));
                assert_eq!(d.service, "web");
                assert!(d.deployment_id.starts_with("ecs-svc/"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_fixture_of_this_function_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name
                .strip_prefix("config-redeploy-")
                .and_then(|s| s.strip_suffix(".json"))
            {
                parse(&fixture(&format!("config-redeploy-{stem}"))).unwrap();
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} fixtures");
    }

    #[test]
    fn decodes_keys_like_s3_encodes_them() {
        assert_eq!(decode_key("a+b%2Bc.php").unwrap(), "a b+c.php");
        assert_eq!(decode_key("dir/%C3%A9t%C3%A9.php").unwrap(), "dir/été.php");
        assert_eq!(decode_key("plain/key.php").unwrap(), "plain/key.php");
        assert_eq!(decode_key("50%25").unwrap(), "50%");
        assert_eq!(
            decode_key("bad%FF").unwrap_err().error_type(),
            "InvalidEvent"
        );
    }

    #[test]
    fn test_event_and_rubbish() {
        assert_eq!(
            parse(&json!({"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"b"})).unwrap(),
            Trigger::S3Test
        );
        for bad in [
            json!({}),
            json!("hello"),
            json!({"Records": "nope"}),
            json!({"Records": [{"eventName": "ObjectCreated:Put"}]}),
            json!({"Records": [{"eventSource":"aws:sqs","eventName":"x","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}),
            json!({"Records": [{"eventName":"ObjectCreated:Put","eventTime":"yesterday","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}),
            json!({"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","detail":{}}),
            json!({"source":"aws.s3","detail-type":"Object Created","detail":{}}),
            json!({"source":"aws.ecs","detail-type":"ECS Deployment State Change","resources":[],"detail":{"eventName":"x","deploymentId":"d"}}),
        ] {
            let err = parse(&bad).unwrap_err();
            assert_eq!(err.error_type(), "InvalidEvent", "{bad}: {err}");
        }
    }

    #[test]
    fn other_s3_event_names_are_not_content_changes() {
        let e = json!({"Records":[{"eventSource":"aws:s3","eventName":"ObjectTagging:Put","eventTime":"2026-01-01T00:00:00.000Z",
            "s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]});
        assert_eq!(
            objects(parse(&e).unwrap())[0].change,
            Change::Other("ObjectTagging:Put".into())
        );
        let e = json!({"Records":[{"eventSource":"aws:s3","eventName":"s3:ObjectRemoved:DeleteMarkerCreated",
            "s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]});
        let o = objects(parse(&e).unwrap());
        assert_eq!(o[0].change, Change::Removed);
        assert_eq!(o[0].time, None);
        let e = json!({"Records":[{"eventSource":"aws:s3","eventName":"LifecycleExpiration:Delete",
            "s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]});
        assert_eq!(objects(parse(&e).unwrap())[0].change, Change::Removed);
    }

    #[test]
    fn service_arns() {
        assert_eq!(
            service_from_arn("arn:aws:ecs:us-east-1:1:service/wiki/web"),
            Some((Some("wiki".into()), "web".into()))
        );
        assert_eq!(
            service_from_arn("arn:aws:ecs:us-east-1:1:service/web"),
            Some((None, "web".into()))
        );
        assert_eq!(
            service_from_arn("arn:aws:ecs:us-east-1:1:cluster/wiki"),
            None
        );
        assert_eq!(
            service_from_arn("arn:aws:ecs:us-east-1:1:service/a/b/c"),
            None
        );
    }

    #[test]
    fn time_resolution_follows_the_written_fraction() {
        let t = EventTime::parse("2026-11-29T07:00:00Z").unwrap();
        assert_eq!(t.resolution, Duration::seconds(1));
        assert_eq!(
            t.latest().to_rfc3339(),
            "2026-11-29T07:00:00.999999999+00:00"
        );
        let t = EventTime::parse("2026-11-29T07:00:00.120Z").unwrap();
        assert_eq!(t.resolution, Duration::milliseconds(1));
        assert_eq!(
            t.latest().to_rfc3339(),
            "2026-11-29T07:00:00.120999999+00:00"
        );
        let t = EventTime::parse("2026-11-29T07:00:00.123456+00:00").unwrap();
        assert_eq!(t.resolution, Duration::microseconds(1));
        assert!(EventTime::parse("29/11/2026").is_none());
    }

    proptest! {
        #[test]
        fn decoding_inverts_form_encoding(key in "[ -~é/]{0,40}") {
            // What S3 does: form-encode (space → '+', reserved → %XX).
            let mut enc = String::new();
            for b in key.bytes() {
                match b {
                    b' ' => enc.push('+'),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => enc.push(b as char),
                    _ => enc.push_str(&format!("%{b:02X}")),
                }
            }
            prop_assert_eq!(decode_key(&enc).unwrap(), key);
        }

        #[test]
        fn latest_is_within_the_resolution(secs in 0i64..4_000_000_000, digits in 0usize..=9) {
            let frac = if digits == 0 { String::new() } else { format!(".{}", "7".repeat(digits)) };
            let s = format!("{}{frac}Z", DateTime::from_timestamp(secs, 0).unwrap().format("%Y-%m-%dT%H:%M:%S"));
            let t = EventTime::parse(&s).unwrap();
            prop_assert!(t.latest() >= t.at);
            prop_assert!(t.latest() < t.at + t.resolution);
        }
    }
}
