//! `GET /v1/log/events` over real HTTP: server-sent events from the start, a cursor or now,
//! filters, resumption with `Last-Event-ID`, late commits, heartbeats, limits and shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ordo_event_store::{EventStore, ExpectedVersion, LogCursor, NewEvent, RecordedEvent, StreamRef};
use ordo_schemas::{Actor, EventMetadata, Role, StreamCategory};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use uuid::Uuid;

use crate::{admin, App};

pub fn event(n: i64) -> NewEvent {
    NewEvent {
        event_type: "CustomerRegistered".into(),
        schema_version: 1,
        data: json!({ "n": n }),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    }
}

pub fn stream(category: StreamCategory) -> StreamRef {
    StreamRef::new(category, Uuid::new_v4())
}

/// One server-sent message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Option<String>,
    pub data: Option<Value>,
}

/// A text/event-stream read message by message.
pub struct Sse {
    resp: reqwest::Response,
    buffer: String,
    pub comments: usize,
}

impl Sse {
    pub async fn open(app: &App, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = app.get(&format!("/v1/log/events{query}"), admin()).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-store", "personal data in clear is never cached");
        Sse { resp, buffer: String::new(), comments: 0 }
    }

    /// The next message, or `None` when the stream ends or nothing arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut msg = Message { id: None, data: None };
                let mut comment = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        msg.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        msg.data = Some(serde_json::from_str(v.trim_start()).unwrap());
                    } else if line.starts_with(':') {
                        comment = true;
                    }
                }
                if comment && msg.id.is_none() && msg.data.is_none() {
                    self.comments += 1;
                    continue;
                }
                return Some(msg);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next `n` events (messages with data), skipping id-only ones; panics after `wait`.
    pub async fn events(&mut self, n: usize, wait: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.next(left).await else {
                panic!("{} of {n} events arrived: {out:?}", out.len());
            };
            if let Some(data) = msg.data {
                out.push((msg.id.unwrap(), data));
            }
        }
        out
    }
}

fn event_ids(events: &[(String, Value)]) -> Vec<String> {
    events.iter().map(|(_, e)| e["metadata"]["event_id"].as_str().unwrap().to_owned()).collect()
}

async fn whole_log(store: &EventStore, want: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (events, _) = store.read_all(LogCursor::START, 10_000).await.unwrap();
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_from_the_start_delivers_the_log_in_order_and_filters_narrow_it() {
    let app = App::spawn().await;
    let store = app.db.store();
    let (c, p, o) = (stream(StreamCategory::Customer), stream(StreamCategory::Product), stream(StreamCategory::Order));
    store.append(c, ExpectedVersion::NoStream, vec![event(1), event(2)]).await.unwrap();
    store.append(p, ExpectedVersion::NoStream, vec![event(3)]).await.unwrap();
    store.append(o, ExpectedVersion::NoStream, vec![event(4), event(5)]).await.unwrap();
    let log = whole_log(&store, 5).await;

    let mut all = Sse::open(&app, "?from=start", None).await;
    let first = all.next(WAIT).await.unwrap();
    assert_eq!(first, Message { id: Some(LogCursor::START.to_string()), data: None }, "it names where it starts");
    let got = all.events(5, WAIT).await;
    let expected: Vec<String> = log.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(event_ids(&got), expected, "the whole log, in log order");
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    let cursors: Vec<String> = log.iter().map(|e| LogCursor::after(e).to_string()).collect();
    assert_eq!(ids, cursors, "each id is the event's cursor");
    assert_eq!(got[0].1["hash"].as_str().unwrap().len(), 64, "envelopes carry their hashes");

    let mut orders = Sse::open(&app, "?from=start&category=order,product", None).await;
    let got = orders.events(3, WAIT).await;
    let cats: Vec<&str> = got.iter().map(|(_, e)| e["category"].as_str().unwrap()).collect();
    assert_eq!(cats, ["product", "order", "order"]);
    let mut one = Sse::open(&app, &format!("?from=start&stream_id={}", c.id), None).await;
    let got = one.events(2, WAIT).await;
    assert!(got.iter().all(|(_, e)| e["stream_id"] == json!(c.id)));
    assert_eq!(got.iter().map(|(_, e)| e["version"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2]);

    // From a cursor: only what follows it.
    let after_third = LogCursor::after(&log[2]).to_string();
    let mut rest = Sse::open(&app, &format!("?from={after_third}"), None).await;
    assert_eq!(event_ids(&rest.events(2, WAIT).await), expected[3..].to_vec());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reconnects_with_last_event_id_misses_nothing_and_sees_nothing_twice() {
    let app = App::spawn().await;
    let store = app.db.store();
    let s = stream(StreamCategory::Customer);
    let mut live = Sse::open(&app, "", None).await;
    let hello = live.next(WAIT).await.unwrap();
    assert!(hello.data.is_none() && hello.id.is_some(), "{hello:?}");
    store.append(s, ExpectedVersion::NoStream, (1..=5).map(event).collect()).await.unwrap();
    let first = live.events(3, WAIT).await;
    drop(live); // the connection breaks after three events

    store.append(s, ExpectedVersion::Exact(5), (6..=9).map(event).collect()).await.unwrap();
    let resume = first.last().unwrap().0.clone();
    let mut again = Sse::open(&app, "?from=now", Some(&resume)).await;
    let rest = again.events(6, WAIT).await;
    let versions: Vec<i64> = first.iter().chain(&rest).map(|(_, e)| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (1..=9).collect::<Vec<_>>(), "Last-Event-ID wins over from=now: no gap, no duplicate");
    assert!(again.next(Duration::from_millis(300)).await.is_none_or(|m| m.data.is_none()));

    // A filtered subscription is told how far it got, so its resume point passes what it skipped.
    let mut filtered = Sse::open(&app, "?category=order", None).await;
    filtered.next(WAIT).await.unwrap();
    store.append(stream(StreamCategory::Product), ExpectedVersion::NoStream, vec![event(10)]).await.unwrap();
    let progress = filtered.next(WAIT).await.unwrap();
    assert!(progress.data.is_none(), "{progress:?}");
    let head = store.head_cursor().await.unwrap().to_string();
    assert_eq!(progress.id.as_deref(), Some(head.as_str()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_concurrent_writers_reach_every_live_subscriber_exactly_once_in_stream_order() {
    let app = App::spawn().await;
    let store = app.db.store();
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut s = Sse::open(&app, "?from=now", None).await;
        s.next(WAIT).await.unwrap();
        subscribers.push(s);
    }
    let (writers, per_writer) = (8, 20);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = stream(StreamCategory::Order);
                for v in 0..per_writer {
                    let expected = if v == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(v) };
                    store.append(s, expected, vec![event(v)]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let total = (writers * per_writer) as usize;
    let committed: HashSet<String> = whole_log(&store, total).await.iter().map(|e| e.event_id.to_string()).collect();
    for sub in &mut subscribers {
        let got = sub.events(total, Duration::from_secs(60)).await;
        let ids = event_ids(&got);
        assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), committed, "every committed event");
        assert_eq!(ids.len(), total, "none twice");
        let mut last: HashMap<String, i64> = HashMap::new();
        for (_, e) in &got {
            let v = e["version"].as_i64().unwrap();
            let prev = last.insert(e["stream_id"].as_str().unwrap().to_owned(), v).unwrap_or(0);
            assert_eq!(v, prev + 1, "each stream in version order");
        }
        assert!(sub.next(Duration::from_millis(300)).await.is_none_or(|m| m.data.is_none()), "nothing more");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_heartbeat_comments() {
    let app = App::spawn_with(|c| c.log_heartbeat_secs = 1).await;
    let mut s = Sse::open(&app, "", None).await;
    s.next(WAIT).await.unwrap();
    assert!(s.next(Duration::from_millis(3500)).await.is_none(), "no event on an idle log");
    assert!(s.comments >= 2, "{} heartbeats in 3.5 s", s.comments);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_problems_and_subscribers_beyond_the_limit_get_503() {
    let app = App::spawn_with(|c| c.log_max_subscribers = 1).await;
    let problem = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (status, resp.json::<Value>().await.unwrap(), retry_after)
    };
    for (query, last_id, field) in [
        ("?from=yesterday", None, "from"),
        ("?category=invoices", None, "category"),
        ("?stream_id=42", None, "stream_id"),
        ("", Some("12-3"), "Last-Event-ID"),
    ] {
        let mut req = app.get(&format!("/v1/log/events{query}"), admin());
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let (status, body, _) = problem(req.send().await.unwrap()).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(body["errors"][0]["field"], field);
    }
    let json_only = app.get("/v1/log/events", admin()).header("accept", "application/json").send().await.unwrap();
    assert_eq!(problem(json_only).await.0, 406);
    let customer = app.get("/v1/log/events", Some((Role::Customer, Uuid::new_v4()))).send().await.unwrap();
    assert_eq!(problem(customer).await.0, 403);

    let first = Sse::open(&app, "", None).await;
    let (status, body, retry_after) = problem(app.get("/v1/log/events", admin()).send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str(), retry_after.as_deref()), (503, Some("unavailable"), Some("5")));
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = app.get("/v1/log/events", admin()).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot of a closed subscription comes back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_open_log_streams_instead_of_waiting_for_them() {
    let app = App::spawn().await;
    let mut s = Sse::open(&app, "", None).await;
    s.next(WAIT).await.unwrap();
    timeout(Duration::from_secs(10), app.stop()).await.expect("the server stops with a stream open");
    assert!(s.next(Duration::from_secs(5)).await.is_none(), "the stream ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires_and_the_token_is_then_refused() {
    let app = App::spawn().await;
    let token = app.keys_for_test().mint(Uuid::new_v4(), Role::Auditor, chrono::Duration::seconds(2)).unwrap();
    let resp = app
        .http
        .get(format!("{}/v1/log/events", app.base))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut s = Sse { resp, buffer: String::new(), comments: 0 };
    s.next(WAIT).await.unwrap();
    let opened = Instant::now();
    assert!(s.next(Duration::from_secs(10)).await.is_none(), "the stream ended");
    let lasted = opened.elapsed();
    assert!(lasted < Duration::from_secs(5), "it ended at the token's expiry, not later: {lasted:?}");
    // Past the verifier's leeway the same token is refused outright.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let again = app.http.get(format!("{}/v1/log/events", app.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.status(), 401);
    app.stop().await;
}
