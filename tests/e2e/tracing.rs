//! OpenTelemetry across the processes: every process exports its spans over OTLP
//! (HTTP/protobuf) to a receiver this test runs, which decodes the real OTLP messages. One
//! order placed with a `traceparent` must show up as one trace spanning the command API, the
//! relay, the projectors and the saga, including the saga's own appends.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use ordo_tests::{Service, Stack};
use prost::Message;

use crate::client::{Client, Shop};

/// One received span: the exporting service, ids in hex, its name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
}

/// An OTLP/HTTP trace receiver on a free loopback port.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = spans.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    sink.lock().unwrap().extend(flatten(&request));
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, spans, server }
    }

    fn in_trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn flatten(request: &ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            out.push(Received {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name.clone(),
            });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_the_command_api_relay_projectors_and_saga() {
    let receiver = Receiver::start().await;
    let stack = Stack::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("ORDO_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,tower_http=debug"),
    ])
    .await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[(1_000, 5)]).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let headers = [("traceparent", traceparent.clone()), ("tracestate", "vendor=opaque".to_owned())];
    let order = shop.order_with(&api, &[(shop.products[0].id, 2)], &headers).await.id();
    api.order_in(order, &shop.customer, "confirmed").await;

    let wanted: BTreeSet<&str> = ["command-api", "event-relay", "projectors", "order-saga"].into();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans = receiver.in_trace(trace_id);
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let saga_appended = spans.iter().any(|s| s.service == "order-saga" && s.name == "append");
        let applied = spans.iter().filter(|s| s.service == "projectors" && s.name == "projector_apply").count();
        // Each process exports its spans in its own batches: the projectors' spans of an event
        // can arrive before the relay's span that published it.
        let published = spans.iter().filter(|s| s.service == "event-relay" && s.name == "relay_publish").count();
        // The order's own event and the saga's: placed, reserved, confirmed.
        if wanted.is_subset(&services) && saga_appended && applied >= 3 && published >= 2 {
            break spans;
        }
        if std::time::Instant::now() > deadline {
            let all: Vec<(String, String, String)> = receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .map(|s| (s.service.clone(), s.name.clone(), s.trace_id.clone()))
                .collect();
            panic!("the trace has {spans:?}; received {all:?}; logs in {:?}", stack.log_dir());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every span of the trace hangs off another span of it, except the request span, whose
    // parent is the caller's span from the traceparent.
    let ids: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for s in &spans {
        assert!(
            ids.contains_key(s.parent.as_str()) || s.parent == "00f067aa0ba902b7",
            "{s:?} has a parent outside the trace"
        );
    }
    let request =
        spans.iter().find(|s| s.service == "command-api" && s.name == "POST /v1/orders").expect("request span");
    assert_eq!(request.parent, "00f067aa0ba902b7");
    let published = spans.iter().filter(|s| s.service == "event-relay" && s.name == "relay_publish").count();
    assert!(published >= 2, "the order's event and the saga's events were published in the trace: {published}");

    // The events carry the context on, tracestate included.
    let meta: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE stream_id = $1 ORDER BY version LIMIT 1")
            .bind(order)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    let stored = meta["traceparent"].as_str().unwrap();
    assert!(stored.starts_with(&format!("00-{trace_id}-")), "{stored}");
    assert_eq!(meta["tracestate"], "vendor=opaque");

    // And the JSON logs name the trace.
    let logs = std::fs::read_dir(stack.log_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("command-api"));
    let text: String = logs.map(|e| std::fs::read_to_string(e.path()).unwrap()).collect();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"trace_id\":\"{trace_id}\"")))
        .unwrap_or_else(|| panic!("no log line of the trace in {:?}", stack.log_dir()));
    let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(parsed["span_id"].as_str().map(str::len), Some(16), "{line}");
    for s in Service::ALL {
        assert_eq!(exporter_threads(stack.pid(s).expect("running")), 1, "{} exports spans", s.binary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_no_exporter_runs_and_the_traceparent_is_stored_as_it_came() {
    let stack = Stack::start().await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[(1_000, 5)]).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned();
    let headers = [("traceparent", traceparent.clone()), ("tracestate", "vendor=opaque".to_owned())];
    let order = shop.order_with(&api, &[(shop.products[0].id, 1)], &headers).await.id();
    api.order_in(order, &shop.customer, "confirmed").await;
    let meta: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE stream_id = $1 ORDER BY version LIMIT 1")
            .bind(order)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
    assert_eq!(meta["traceparent"], traceparent.as_str(), "stored as it came");
    assert_eq!(meta["tracestate"], "vendor=opaque");
    for s in Service::ALL {
        let pid = stack.pid(s).expect("running");
        assert_eq!(exporter_threads(pid), 0, "{} runs a span exporter", s.binary());
    }
}

/// Threads of process `pid` named like the OpenTelemetry batch exporter's.
fn exporter_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("OpenTelemetry")))
        .count()
}
