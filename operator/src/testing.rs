//! What the reconcile tests share: a [`Context`] over a mocked API server (kube-rs's
//! controller-rs way: `tower_test::mock::pair` behind a `kube::Client`), watch caches the
//! tests fill, object builders, and [`ApiServer`], a scenario of the requests a reconcile is
//! expected to make, in order, with the answer to each. Every request is recorded, so a test
//! asserts on what the reconcile wrote (status, finalizers, creations, deletions, Events).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Namespace;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, TenantPolicy, Workload, WorkloadInstance, WorkloadServiceDependency,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::context::{CacheWriters, Context, Settings, caches};
use crate::kubeconfig::KubeconfigPolicy;

/// The prefix of every QleetOS kind's API path.
pub(crate) const QLEET_API: &str = "/apis/qleetos.io/v1alpha1";
/// QleetOS's own namespace in the tests' settings.
pub(crate) const SYSTEM_NAMESPACE: &str = "qleetos-system";
/// When objects "being deleted" were deleted.
pub(crate) const DELETED_AT: &str = "2026-01-01T00:00:00Z";

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Settings with short, recognisable timings.
pub(crate) fn settings() -> Settings {
    Settings {
        resync: Duration::from_secs(300),
        probe_interval: Duration::from_secs(30),
        failover_after: Duration::from_secs(120),
        progress_poll: Duration::from_secs(2),
        base_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(120),
        reconcile_timeout: Duration::from_secs(60),
        system_namespace: SYSTEM_NAMESPACE.into(),
        per_runtime_concurrency: 1,
        kubeconfig: KubeconfigPolicy::default(),
        local_clusters: None,
    }
}

/// A Context whose client talks to a mocked API server, with caches that have listed once
/// (empty) and are filled by the `with_*` methods.
pub(crate) struct Harness {
    pub ctx: Arc<Context>,
    writers: CacheWriters,
    handle: Option<Handle>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    pub(crate) fn new() -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let (caches, mut writers) = caches();
        // Every watch has listed (nothing) once: `Caches::ready` returns, and objects applied
        // afterwards stay (an `InitDone` swaps the listed objects in).
        writers.workloads.apply_watcher_event(&Event::InitDone);
        writers.instances.apply_watcher_event(&Event::InitDone);
        writers.runtimes.apply_watcher_event(&Event::InitDone);
        writers.policies.apply_watcher_event(&Event::InitDone);
        writers.namespaces.apply_watcher_event(&Event::InitDone);
        writers.profiles.apply_watcher_event(&Event::InitDone);
        writers
            .support_services
            .apply_watcher_event(&Event::InitDone);
        writers
            .service_profiles
            .apply_watcher_event(&Event::InitDone);
        writers
            .service_dependencies
            .apply_watcher_event(&Event::InitDone);
        writers
            .runtime_profiles
            .apply_watcher_event(&Event::InitDone);
        writers.system_secrets.apply_watcher_event(&Event::InitDone);
        writers.plans.apply_watcher_event(&Event::InitDone);
        let ctx = Context::new(client, settings(), Arc::default(), caches);
        // No runtime has drift watches: a reconcile does not wait for them.
        ctx.live.mark_supervised();
        Self {
            ctx: Arc::new(ctx),
            writers,
            handle: Some(handle),
        }
    }

    pub(crate) fn with_runtime(mut self, runtime: &KubernetesRuntime) -> Self {
        self.writers
            .runtimes
            .apply_watcher_event(&Event::Apply(runtime.clone()));
        self
    }

    pub(crate) fn with_instance(mut self, instance: &WorkloadInstance) -> Self {
        self.ctx.caches.instances_by_owner.applied(instance);
        self.writers
            .instances
            .apply_watcher_event(&Event::Apply(instance.clone()));
        self
    }

    pub(crate) fn with_workload(mut self, workload: &Workload) -> Self {
        self.writers
            .workloads
            .apply_watcher_event(&Event::Apply(workload.clone()));
        self
    }

    pub(crate) fn with_policy(mut self, policy: &TenantPolicy) -> Self {
        self.writers
            .policies
            .apply_watcher_event(&Event::Apply(policy.clone()));
        self
    }

    pub(crate) fn with_namespace(mut self, namespace: &PartialObjectMeta<Namespace>) -> Self {
        self.writers
            .namespaces
            .apply_watcher_event(&Event::Apply(namespace.clone()));
        self
    }

    pub(crate) fn with_profile(mut self, profile: &SupportServiceProfile) -> Self {
        self.writers
            .profiles
            .apply_watcher_event(&Event::Apply(profile.clone()));
        self
    }

    pub(crate) fn with_support_service(mut self, service: &SupportService) -> Self {
        self.writers
            .support_services
            .apply_watcher_event(&Event::Apply(service.clone()));
        self
    }

    pub(crate) fn with_service_profile(mut self, profile: &ServiceProfile) -> Self {
        self.writers
            .service_profiles
            .apply_watcher_event(&Event::Apply(profile.clone()));
        self
    }

    pub(crate) fn with_runtime_profile(mut self, profile: &KubernetesRuntimeProfile) -> Self {
        self.writers
            .runtime_profiles
            .apply_watcher_event(&Event::Apply(profile.clone()));
        self
    }

    /// Starts answering the client's requests from `scenario`; once only.
    pub(crate) fn serve(&mut self, scenario: ApiServer) -> Served {
        let handle = self.handle.take().expect("the API server is served once");
        scenario.run(handle)
    }

    /// Runs `reconcile` against `scenario` (bounded, so a reconcile waiting forever fails
    /// the test) and returns its outcome with the requests it made, every expected one
    /// answered and none unexpected.
    pub(crate) async fn run<T>(
        mut self,
        scenario: ApiServer,
        reconcile: impl std::future::Future<Output = T>,
    ) -> (T, Vec<Seen>) {
        let served = self.serve(scenario);
        let outcome = tokio::time::timeout(Duration::from_secs(20), reconcile)
            .await
            .expect("the reconcile finished within 20 s");
        let seen = served.finish().await;
        (outcome, seen)
    }
}

/// One request the reconcile made.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Seen {
    /// The `reason` of the Ready condition in a status write.
    pub(crate) fn ready(&self) -> (String, String, String) {
        let conditions = self.body["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready = conditions
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap_or_else(|| panic!("no Ready condition in {}", self.body));
        let text = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
        (text("status"), text("reason"), text("message"))
    }
}

/// How the mocked API server answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// This status code and JSON body.
    Json(u16, Value),
    /// The request's own body back, with this status code (an Event's POST).
    Echo(u16),
}

impl Reply {
    pub(crate) fn ok<T: Serialize>(object: &T) -> Self {
        Self::Json(200, to_json(object))
    }

    pub(crate) fn created<T: Serialize>(object: &T) -> Self {
        Self::Json(201, to_json(object))
    }

    /// An API error as the API server sends it (a `Status` object).
    pub(crate) fn status(code: u16, reason: &str) -> Self {
        Self::Json(
            code,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("{reason} (mocked)"),
                "reason": reason, "code": code,
            }),
        )
    }

    pub(crate) fn not_found() -> Self {
        Self::status(404, "NotFound")
    }

    /// A list of `items` (`kind` is the list's kind, e.g. `WorkloadInstanceList`).
    pub(crate) fn list<T: Serialize>(kind: &str, items: &[T]) -> Self {
        let items: Vec<Value> = items.iter().map(to_json).collect();
        Self::Json(
            200,
            json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
        )
    }
}

#[derive(Debug)]
struct Expected {
    method: Method,
    path: String,
    reply: Reply,
}

/// The requests a reconcile is expected to make, in order, and the answer to each.
#[derive(Debug, Default)]
pub(crate) struct ApiServer {
    expected: VecDeque<Expected>,
}

impl ApiServer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn expect(mut self, method: Method, path: impl Into<String>, reply: Reply) -> Self {
        self.expected.push_back(Expected {
            method,
            path: path.into(),
            reply,
        });
        self
    }

    pub(crate) fn get(self, path: impl Into<String>, reply: Reply) -> Self {
        self.expect(Method::GET, path, reply)
    }

    pub(crate) fn patch(self, path: impl Into<String>, reply: Reply) -> Self {
        self.expect(Method::PATCH, path, reply)
    }

    pub(crate) fn post(self, path: impl Into<String>, reply: Reply) -> Self {
        self.expect(Method::POST, path, reply)
    }

    pub(crate) fn delete(self, path: impl Into<String>, reply: Reply) -> Self {
        self.expect(Method::DELETE, path, reply)
    }

    /// An Event published in `namespace` (`default` for a cluster-scoped object).
    pub(crate) fn event(self, namespace: &str) -> Self {
        self.post(
            format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            Reply::Echo(201),
        )
    }

    fn run(self, mut handle: Handle) -> Served {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut expected = self.expected;
            let mut log = Log::default();
            loop {
                let next = tokio::select! {
                    biased;
                    next = handle.next_request() => next,
                    _ = &mut stopped => None,
                };
                let Some((request, respond)) = next else {
                    break;
                };
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let seen = Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    body,
                };
                let reply = match expected.pop_front() {
                    Some(want) if want.method == seen.method && want.path == seen.path => {
                        want.reply
                    }
                    Some(want) => {
                        log.problems.push(format!(
                            "expected {} {}, got {} {}",
                            want.method, want.path, seen.method, seen.path
                        ));
                        expected.push_front(want);
                        Reply::status(500, "UnexpectedRequest")
                    }
                    None => {
                        log.problems
                            .push(format!("unexpected {} {}", seen.method, seen.path));
                        Reply::status(500, "UnexpectedRequest")
                    }
                };
                let (code, body) = match reply {
                    Reply::Json(code, body) => (code, body),
                    Reply::Echo(code) => (code, seen.body.clone()),
                };
                log.seen.push(seen);
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).expect("a status code"))
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                    .expect("a response");
                respond.send_response(response);
            }
            log.problems.extend(
                expected
                    .iter()
                    .map(|want| format!("never asked: {} {}", want.method, want.path)),
            );
            log
        });
        Served { stop, task }
    }
}

#[derive(Debug, Default)]
struct Log {
    seen: Vec<Seen>,
    problems: Vec<String>,
}

/// The mocked API server while it answers.
#[derive(Debug)]
pub(crate) struct Served {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Log>,
}

impl Served {
    /// Stops answering; panics unless every expected request came, in order, and no other.
    pub(crate) async fn finish(self) -> Vec<Seen> {
        let _ = self.stop.send(());
        let log = self.task.await.expect("the mocked API server ran");
        let made: Vec<String> = log
            .seen
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert!(
            log.problems.is_empty(),
            "the API server saw other requests than expected:\n  {}\nrequests made:\n  {}",
            log.problems.join("\n  "),
            made.join("\n  ")
        );
        log.seen
    }
}

/// The requests of `seen` with `method` on `path`.
pub(crate) fn requests<'a>(seen: &'a [Seen], method: &Method, path: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.method == *method && s.path == path)
        .collect()
}

/// The one request with `method` on `path`.
pub(crate) fn request<'a>(seen: &'a [Seen], method: &Method, path: &str) -> &'a Seen {
    let found = requests(seen, method, path);
    assert_eq!(found.len(), 1, "one {method} {path} expected");
    found[0]
}

/// The Events published, as `(type, reason, note)`.
pub(crate) fn events(seen: &[Seen]) -> Vec<(String, String, String)> {
    seen.iter()
        .filter(|s| s.method == Method::POST && s.path.starts_with("/apis/events.k8s.io/"))
        .map(|s| {
            let text = |key: &str| s.body[key].as_str().unwrap_or_default().to_owned();
            (text("type"), text("reason"), text("note"))
        })
        .collect()
}

pub(crate) fn to_json<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serializable")
}

/// An object of kind `K` from JSON.
pub(crate) fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// `metadata` of a live object: uid, generation, resourceVersion and `finalizers`.
fn meta(name: &str, namespace: Option<&str>, finalizers: &[&str]) -> Value {
    let mut meta = json!({
        "name": name, "uid": format!("uid-{name}"), "generation": 1, "resourceVersion": "1",
        "creationTimestamp": "2025-12-01T00:00:00Z", "finalizers": finalizers,
    });
    if let Some(namespace) = namespace {
        meta["namespace"] = json!(namespace);
    }
    meta
}

/// A Ready condition as QleetOS writes it.
pub(crate) fn condition(type_: &str, ready: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": if ready { "True" } else { "False" }, "reason": reason,
        "message": message, "lastTransitionTime": "2025-12-01T00:00:00Z",
    })
}

/// A registered runtime in `region`, Ready and Reachable, connected through
/// `qleetos-system/<name>-kubeconfig`.
pub(crate) fn runtime(name: &str, region: &str) -> KubernetesRuntime {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntime",
        "metadata": meta(name, None, &[crate::controllers::runtime::FINALIZER]),
        "spec": {
            "provider": "local", "region": region,
            "connection": {"kubeconfigSecretRef": {
                "namespace": SYSTEM_NAMESPACE, "name": format!("{name}-kubeconfig"), "key": "kubeconfig"}},
        },
        "status": {"conditions": [
            condition("Ready", true, "Reachable", "API server v1.36.0 answers"),
            condition("Reachable", true, "Reachable", "API server v1.36.0 answers"),
        ]},
    }))
}

/// A runtime made from KubernetesRuntimeProfile `profile`, provisioned and Ready.
pub(crate) fn provisioned_runtime(name: &str, region: &str, profile: &str) -> KubernetesRuntime {
    let mut runtime = runtime(name, region);
    runtime.spec.provisioning = Some(object(json!({"profileRef": {"name": profile}})));
    runtime
}

/// A WorkloadInstance of Workload `workload` on `runtime`, holding the instance Qleet's
/// finalizer, with no manifests and no status.
pub(crate) fn instance(namespace: &str, workload: &str, runtime: &str) -> WorkloadInstance {
    let name = format!("{workload}-{runtime}");
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadInstance",
        "metadata": meta(&name, Some(namespace), &[crate::controllers::instance::FINALIZER]),
        "spec": {
            "workloadRef": {"name": workload, "generation": 1},
            "runtimeRef": {"name": runtime},
            "manifests": [],
        },
    }))
}

/// A Workload placed in `regions`, holding the Workload Qleet's finalizer, with one
/// Deployment and no status.
pub(crate) fn workload(namespace: &str, name: &str, regions: &[&str]) -> Workload {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": meta(name, Some(namespace), &[crate::controllers::workload::FINALIZER]),
        "spec": {
            "manifests": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"template": {"spec": {"containers": [{"name": name, "image": "nginx"}]}}},
            }],
            "placement": {"regions": regions},
        },
    }))
}

/// A SupportServiceProfile providing `provides`, installed into runtime namespace
/// `namespace`, with the given removal grace period and no manifests.
pub(crate) fn support_profile(name: &str, provides: &[&str], grace: u32) -> SupportServiceProfile {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "SupportServiceProfile",
        "metadata": meta(name, None, &[crate::controllers::profile::FINALIZER]),
        "spec": {"provides": provides, "namespace": name, "manifests": [], "gracePeriodSeconds": grace},
    }))
}

/// The SupportService installing `profile` into `runtime`, holding its finalizer, as
/// the dependency engine names it; no status.
pub(crate) fn support_service(profile: &str, runtime: &str) -> SupportService {
    let name = crate::dependencies::support_service_name(profile, runtime);
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "SupportService",
        "metadata": meta(&name, None, &[crate::controllers::support::FINALIZER]),
        "spec": {"profileRef": {"name": profile}, "runtimeRef": {"name": runtime}},
    }))
}

/// A KubernetesRuntimeProfile (Cluster API) for `regions`, removing idle clusters after
/// `idle_after` seconds.
pub(crate) fn runtime_profile(
    name: &str,
    regions: &[&str],
    idle_after: i64,
) -> KubernetesRuntimeProfile {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
        "metadata": meta(name, None, &[crate::controllers::runtimeprofile::FINALIZER]),
        "spec": {
            "provider": "ClusterAPI", "regions": regions, "kubernetesVersion": "v1.36.0",
            "idle": {"policy": "Delete", "afterSeconds": idle_after},
            "clusterAPI": {"clusterClass": "standard"},
        },
    }))
}

/// A ServiceProfile with `spec`, holding its Qleet's finalizer.
pub(crate) fn service_profile(name: &str, spec: Value) -> ServiceProfile {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "ServiceProfile",
        "metadata": meta(name, None, &[crate::controllers::serviceprofile::FINALIZER]),
        "spec": spec,
    }))
}

/// A WorkloadServiceDependency of `workloads` on ServiceProfile `profile`.
pub(crate) fn service_dependency(
    namespace: &str,
    name: &str,
    profile: &str,
    workloads: &[&str],
) -> WorkloadServiceDependency {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadServiceDependency",
        "metadata": meta(name, Some(namespace), &[]),
        "spec": {"profileRef": {"name": profile}, "workloads": workloads},
    }))
}

/// A TenantPolicy with `spec`.
pub(crate) fn tenant_policy(name: &str, spec: Value) -> TenantPolicy {
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
        "metadata": meta(name, None, &[]),
        "spec": spec,
    }))
}

/// A management namespace with `labels`, as the namespace watch sees it (metadata only).
pub(crate) fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), json!(value)))
        .collect();
    object(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1",
                     "labels": labels},
    }))
}

/// The kubeconfig Secret of a runtime: a cluster at an address nothing listens on (the
/// tests never reach a runtime), with a token.
pub(crate) fn kubeconfig_secret(name: &str) -> Value {
    let kubeconfig = r"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:9
contexts:
- name: c
  context:
    cluster: c
    user: u
current-context: c
users:
- name: u
  user:
    token: t
";
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "resourceVersion": "7"},
        "data": {"kubeconfig": to_json(&k8s_openapi::ByteString(kubeconfig.as_bytes().to_vec()))},
    })
}

/// `seconds` ago, as RFC 3339.
pub(crate) fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use kube::Api;
    use qleetos_crds::KubernetesRuntime;

    use super::*;

    /// Gets runtime `name` through the harness's client.
    async fn get(harness: &Harness, name: &str) -> kube::Result<Option<KubernetesRuntime>> {
        Api::<KubernetesRuntime>::all(harness.ctx.client.clone())
            .get_opt(name)
            .await
    }

    #[tokio::test]
    async fn expected_requests_are_answered_and_recorded() {
        let mut harness = Harness::new();
        let eu = runtime("eu", "eu-west");
        let served = harness.serve(
            ApiServer::new()
                .get(format!("{QLEET_API}/kubernetesruntimes/eu"), Reply::ok(&eu))
                .get(
                    format!("{QLEET_API}/kubernetesruntimes/us"),
                    Reply::not_found(),
                ),
        );
        let found = get(&harness, "eu").await.expect("answered");
        assert_eq!(found.and_then(|r| r.metadata.name).as_deref(), Some("eu"));
        assert!(get(&harness, "us").await.expect("answered").is_none());
        let seen = served.finish().await;
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].path, format!("{QLEET_API}/kubernetesruntimes/us"));
    }

    #[tokio::test]
    #[should_panic(expected = "unexpected GET")]
    async fn an_unexpected_request_fails_the_test() {
        let mut harness = Harness::new();
        let served = harness.serve(ApiServer::new());
        assert!(get(&harness, "eu").await.is_err(), "answered with an error");
        served.finish().await;
    }

    #[tokio::test]
    #[should_panic(expected = "never asked: DELETE")]
    async fn an_expected_request_never_made_fails_the_test() {
        let mut harness = Harness::new();
        let served = harness.serve(ApiServer::new().delete(
            format!("{QLEET_API}/kubernetesruntimes/eu"),
            Reply::not_found(),
        ));
        served.finish().await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected PATCH")]
    async fn a_request_out_of_order_fails_the_test() {
        let mut harness = Harness::new();
        let served = harness.serve(
            ApiServer::new()
                .patch(
                    format!("{QLEET_API}/kubernetesruntimes/eu"),
                    Reply::not_found(),
                )
                .get(
                    format!("{QLEET_API}/kubernetesruntimes/eu"),
                    Reply::not_found(),
                ),
        );
        let _ = get(&harness, "eu").await;
        served.finish().await;
    }
}
