//! OpenTelemetry span export, configured by the standard environment
//! variables, with errors never sampled away.
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`:
//!   where spans go. Unset: nothing is exported (trace and span ids are
//!   still made, propagated and logged).
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) or `grpc`
//!   (tonic; call [`init_tracing`] inside a tokio runtime).
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource; the
//!   service's own name when neither names it.
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`: `always_on`,
//!   `always_off`, `traceidratio`, `parentbased_always_on` (default),
//!   `parentbased_always_off`, `parentbased_traceidratio`.
//! - `OTEL_SDK_DISABLED=true`: no export.
//!
//! **Errors are kept.** The configured sampler decides as usual, but a span
//! it would drop is still recorded (`RecordOnly`); at its end, the export
//! processor sends it anyway if its status is ERROR. So with a 1 % ratio
//! every failed handling, retry and dead-letter span still arrives, and so
//! do the spans of the same service that ended in error around it. What
//! this cannot recover: unsampled spans that succeeded in other processes
//! of the same trace (that needs tail sampling in a collector).
//!
//! Spans are built through [`crate::spans`] with the ids Kausal already
//! generated, so logs, Kafka headers and exported spans agree.

use std::time::Duration;

use opentelemetry::trace::{Link, SamplingDecision, SamplingResult, SpanKind, TraceFlags, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample, Span, SpanData, SpanProcessor,
};

use crate::export_retry::Retrying;

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    pub protocol: Protocol,
    pub sampler: SamplerSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// `OTEL_TRACES_SAMPLER` and its argument, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerSpec {
    /// Parses the two variables (`None` = unset). Unknown names and bad
    /// ratios are errors, not silent defaults.
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1")
                    }),
            }
        };
        match name.map(|n| n.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("parentbased_always_on") => Ok(Self::ParentBasedAlwaysOn),
            Some("always_on") => Ok(Self::AlwaysOn),
            Some("always_off") => Ok(Self::AlwaysOff),
            Some("traceidratio") => Ok(Self::Ratio(ratio()?)),
            Some("parentbased_always_off") => Ok(Self::ParentBasedAlwaysOff),
            Some("parentbased_traceidratio") => Ok(Self::ParentBasedRatio(ratio()?)),
            Some(other) => Err(format!(
                "OTEL_TRACES_SAMPLER={other:?} is not supported: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            )),
        }
    }

    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

impl OtelSettings {
    /// Reads the environment through `var`. `Ok(None)`: export is off.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|k| var(k).is_some_and(|v| !v.trim().is_empty()));
        if !endpoint {
            return Ok(None);
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use http/protobuf or grpc"
                ));
            }
        };
        let sampler = SamplerSpec::parse(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        Ok(Some(Self { protocol, sampler }))
    }
}

/// Keeps the exporter alive; [`shutdown`](Self::shutdown) flushes every
/// pending span (also done on drop).
#[derive(Debug, Default)]
pub struct OtelGuard {
    provider: Option<SdkTracerProvider>,
}

impl OtelGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(&mut self) {
        crate::otlp_logs::shutdown();
        if let Some(provider) = self.provider.take() {
            crate::spans::set_enabled(false);
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "span exporter did not shut down cleanly");
            }
        }
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global tracer provider from the environment for `service`.
/// With no endpoint configured it installs nothing and returns an idle
/// guard.
pub fn init_tracing(service: &str) -> Result<OtelGuard, String> {
    init_tracing_at(service, None)
}

/// [`init_tracing`], but with `endpoint` (a base URL such as
/// `http://127.0.0.1:8080`) spans go there over OTLP/HTTP whatever the
/// environment names, unless it disables the SDK: the console exports its
/// own replay spans to itself this way (and forwards them on).
pub fn init_tracing_at(service: &str, endpoint: Option<&str>) -> Result<OtelGuard, String> {
    let var = |k: &str| std::env::var(k).ok();
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let (settings, endpoint) = match endpoint {
        Some(base) if !disabled => {
            let settings = OtelSettings {
                protocol: Protocol::HttpProtobuf,
                sampler: SamplerSpec::parse(
                    var("OTEL_TRACES_SAMPLER").as_deref(),
                    var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
                )?,
            };
            let url = format!("{}/v1/traces", base.trim_end_matches('/'));
            (settings, Some(url))
        }
        _ => match OtelSettings::from_env(var)? {
            Some(settings) => (settings, None),
            None => return Ok(OtelGuard::default()),
        },
    };
    let exporter = match settings.protocol {
        Protocol::HttpProtobuf => {
            use opentelemetry_otlp::WithExportConfig;
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            match endpoint {
                Some(url) => builder.with_endpoint(url),
                None => builder,
            }
            .build()
            .map_err(|e| format!("cannot build the OTLP/HTTP span exporter: {e}"))?
        }
        Protocol::Grpc => {
            // tonic's lazy channel spawns its worker on the current tokio
            // runtime: a service calls this from inside its runtime.
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(
                    "OTLP over gRPC needs a tokio runtime; call init_tracing from async code"
                        .to_owned(),
                );
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| format!("cannot build the OTLP/gRPC span exporter: {e}"))?
        }
    };
    let mut resource = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    let exporter = Retrying::spans(exporter, crate::export_retry::default_policy());
    let processor = KeepErrors {
        inner: BatchSpanProcessor::builder(exporter)
            .with_batch_config(crate::export_queue::spans())
            .build(),
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_sampler(RecordUnsampled(settings.sampler.sampler()))
        .with_span_processor(processor)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    crate::spans::set_enabled(true);
    Ok(OtelGuard {
        provider: Some(provider),
    })
}

/// The configured sampler, except that "drop" becomes "record only", so the
/// span exists until [`KeepErrors`] sees how it ended.
#[derive(Debug, Clone)]
struct RecordUnsampled(Sampler);

impl ShouldSample for RecordUnsampled {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut result =
            self.0
                .should_sample(parent_context, trace_id, name, span_kind, attributes, links);
        if result.decision == SamplingDecision::Drop {
            result.decision = SamplingDecision::RecordOnly;
        }
        result
    }
}

/// Passes sampled spans and failed ones (status ERROR) to the exporter;
/// drops the rest.
#[derive(Debug)]
struct KeepErrors<P> {
    inner: P,
}

/// Whether a finished span goes to the exporter.
fn exported(span: &SpanData) -> bool {
    span.span_context.is_sampled()
        || matches!(span.status, opentelemetry::trace::Status::Error { .. })
}

impl<P: SpanProcessor> SpanProcessor for KeepErrors<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if !exported(&span) {
            return;
        }
        if !span.span_context.is_sampled() {
            // The batch processor drops unsampled spans; this one is kept on
            // purpose, so it is exported as sampled.
            let c = &span.span_context;
            span.span_context = opentelemetry::trace::SpanContext::new(
                c.trace_id(),
                c.span_id(),
                c.trace_flags().with_sampled(true) | TraceFlags::SAMPLED,
                c.is_remote(),
                c.trace_state().clone(),
            );
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_sampler_settings() {
        use SamplerSpec::*;
        /// `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, what they mean.
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<SamplerSpec, ()>);
        let cases: &[Case<'_>] = &[
            (None, None, Ok(ParentBasedAlwaysOn)),
            (Some("always_on"), None, Ok(AlwaysOn)),
            (Some("ALWAYS_OFF"), None, Ok(AlwaysOff)),
            (Some("traceidratio"), Some("0.01"), Ok(Ratio(0.01))),
            (Some("traceidratio"), None, Ok(Ratio(1.0))),
            (
                Some("parentbased_traceidratio"),
                Some(" 0.5 "),
                Ok(ParentBasedRatio(0.5)),
            ),
            (
                Some("parentbased_always_off"),
                None,
                Ok(ParentBasedAlwaysOff),
            ),
            (Some("traceidratio"), Some("1.5"), Err(())),
            (Some("traceidratio"), Some("half"), Err(())),
            (Some("jaeger_remote"), None, Err(())),
        ];
        for (name, arg, want) in cases {
            let got = SamplerSpec::parse(*name, *arg).map_err(|_| ());
            assert_eq!(&got, want, "{name:?} {arg:?}");
        }
    }

    #[test]
    fn settings_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            OtelSettings::from_env(env(&[])),
            Ok(None),
            "no endpoint, no export"
        );
        assert_eq!(
            OtelSettings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Ok(Some(OtelSettings {
                protocol: Protocol::HttpProtobuf,
                sampler: SamplerSpec::ParentBasedAlwaysOn
            }))
        );
        assert_eq!(
            OtelSettings::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ]))
            .map(|s| s.map(|s| (s.protocol, s.sampler))),
            Ok(Some((Protocol::Grpc, SamplerSpec::ParentBasedRatio(0.01))))
        );
        assert!(
            OtelSettings::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ]))
            .is_err()
        );
        assert_eq!(
            OtelSettings::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ])),
            Ok(None)
        );
    }
}
