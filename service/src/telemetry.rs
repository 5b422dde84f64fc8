//! Structured logs with `tracing`, and OpenTelemetry traces when a collector is configured.
//!
//! - Logs: readable text by default, JSON lines with `ORDO_LOG_FORMAT=json`; `RUST_LOG` filters
//!   (default `info`). While spans are exported, each JSON line inside a span carries the
//!   `trace_id` and `span_id` of that span.
//! - Traces: exported over OTLP (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and `OTEL_SDK_DISABLED` is not `true`. The
//!   standard `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, default the binary's name;
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//!   `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`). Otherwise nothing is set up: no exporter, no thread.
//! - Context crosses processes as W3C `traceparent` and `tracestate`: HTTP headers into the
//!   request span, event metadata and Kafka headers into the relay's, projectors' and saga's
//!   spans ([`set_remote_parent`], [`follow`]), and back into event metadata
//!   ([`current_context`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Most links a span gets from a batch of messages (the rest are dropped).
const MAX_LINKS: usize = 128;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps the span exporter running; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops the span exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported by this process.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("span exporter shutdown: {e}");
            }
        }
    }
}

/// Whether spans are exported (set once by [`init`]).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber and, when configured, the OTLP span exporter. Calling it
/// again is harmless (the first subscriber stays). Keep the guard until the process exits.
pub fn init() -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("ORDO_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = if json {
        let format = tracing_subscriber::fmt::format().json().flatten_event(true).with_target(true);
        tracing_subscriber::fmt::layer().json().event_format(WithTraceIds(format)).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(true).boxed()
    };
    let provider = otlp_configured().then(build_provider).and_then(|p| match p {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("spans are not exported: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| {
        let service = service_name();
        tracing_opentelemetry::layer().with_tracer(p.tracer(service)).with_location(false).with_threads(false)
    });
    let installed = tracing_subscriber::registry().with(fmt).with(otel).with(filter).try_init().is_ok();
    if !installed {
        return Telemetry { provider: None };
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Relaxed);
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_default();
        tracing::info!(endpoint = %endpoint, service = %service_name(), "exporting spans over otlp");
    }
    Telemetry { provider }
}

fn otlp_configured() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn build_provider() -> Result<SdkTracerProvider, String> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if !protocol.trim().is_empty() && protocol.trim() != "http/protobuf" {
        return Err(format!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported, only http/protobuf"));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service_name());
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// `OTEL_SERVICE_NAME`, else the executable's name (`command-api`, `event-relay`, ...).
fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "ordo".into())
    })
}

fn extract(traceparent: &str, tracestate: Option<&str>) -> opentelemetry::Context {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes the span described by `traceparent` (and `tracestate`) the parent of `span`, which must
/// not have been entered yet. Does nothing unless spans are exported or the context is invalid.
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if !exporting() {
        return;
    }
    if let Some(tp) = traceparent {
        let cx = extract(tp, tracestate);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}

/// For a span handling several messages: the first valid context becomes its parent, every
/// other one a link (at most 128). Does nothing unless spans are exported.
pub fn follow<'a>(span: &Span, contexts: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>) {
    if !exporting() {
        return;
    }
    let mut parented = false;
    for (traceparent, tracestate) in contexts.into_iter().take(MAX_LINKS + 1) {
        let Some(tp) = traceparent else { continue };
        let cx = extract(tp, tracestate);
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            continue;
        }
        if parented {
            span.add_link(sc);
        } else {
            let _ = span.set_parent(cx);
            parented = true;
        }
    }
}

/// One span per message of a batch, each a child of its message's context and linked to the
/// batch span, so every trace shows the batch handling its message. Named `name` in the traces.
/// Keep them until the batch is done (their end is the batch's); empty unless spans are exported.
pub fn message_spans<'a>(
    batch: &Span,
    name: &'static str,
    contexts: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Vec<Span> {
    if !exporting() {
        return Vec::new();
    }
    let batch_context = batch.context().span().span_context().clone();
    let mut spans = Vec::new();
    for (traceparent, tracestate) in contexts {
        let Some(tp) = traceparent else { continue };
        let cx = extract(tp, tracestate);
        if !cx.span().span_context().is_valid() {
            continue;
        }
        let span = tracing::info_span!(parent: None, "message", otel.name = name, otel.kind = "consumer");
        let _ = span.set_parent(cx);
        span.add_link(batch_context.clone());
        spans.push(span);
    }
    spans
}

/// The W3C `traceparent` and `tracestate` of the current span, when spans are exported.
pub fn current_context() -> Option<(String, Option<String>)> {
    if !exporting() {
        return None;
    }
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let traceparent = carrier.remove("traceparent")?;
    Some((traceparent, carrier.remove("tracestate").filter(|s| !s.is_empty())))
}

/// A JSON event format that adds `trace_id` and `span_id` of the current span when it has them.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.lookup_current().and_then(|span| {
            let extensions = span.extensions();
            let data = extensions.get::<tracing_opentelemetry::OtelData>()?;
            Some((data.trace_id()?, data.span_id()?))
        });
        let Some((trace_id, span_id)) = ids.filter(|(t, _)| *t != opentelemetry::TraceId::INVALID) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(body) => writeln!(writer, "{body},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"),
            None => writer.write_str(&line),
        }
    }
}
