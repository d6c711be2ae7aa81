//! Image updates through the gateway against direct merge patches with a bare kube client on
//! the same API server: calls per second and p50/p99 latency, sequential and concurrent, and
//! the ratio. Run with `cargo bench -p qleetos-e2e --bench gateway` (`BENCH_CALLS` sets the
//! number of calls per mode, default 300).

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt as _;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use qleetos_crds::Workload;
use qleetos_e2e::environment::{Environment, RuntimeSpec, ensure_namespace};
use qleetos_e2e::gateway::{GatewayProcess, admin_service_account_token};
use serde_json::json;

const NS: &str = "bench";
const CONCURRENCY: usize = 8;

#[derive(Debug)]
struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut latencies: Vec<Duration>, total: Duration) -> Stats {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        per_second: latencies.len() as f64 / total.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

async fn setup(client: &Client) -> Result<String> {
    ensure_namespace(client, NS).await?;
    let apply = PatchParams::apply("bench").force();
    let workload = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"placement": {"regions": ["nowhere"]}, "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]}});
    Api::<Workload>::namespaced(client.clone(), NS)
        .patch("web", &apply, &Patch::Apply(&workload))
        .await?;
    Ok(admin_service_account_token(client, NS, "ci").await?)
}

async fn run<F, Fut>(calls: usize, concurrency: usize, call: F) -> Result<Stats>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let start = Instant::now();
    let latencies: Vec<Result<Duration>> = futures::stream::iter(0..calls)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                fut.await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let latencies = latencies.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(stats(latencies, start.elapsed()))
}

async fn bench(env: &Environment, calls: usize) -> Result<()> {
    let client = env.management_client().await?;
    let token = setup(&client).await?;
    let gateway = GatewayProcess::start_for(env).await?;
    let http = qleetos_e2e::http::client_builder().build()?;
    let url = format!(
        "{}/v1/namespaces/{NS}/workloads/web/images",
        gateway.base_url()
    );
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let via_gateway = |i: usize| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"images": {"web": format!("nginx:g{i}")}}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "gateway answered {}",
                response.status()
            );
            Ok(())
        }
    };
    let direct = |i: usize| {
        let api = api.clone();
        async move {
            let patch = json!({"spec": {"images": {"web": format!("nginx:d{i}")}}});
            api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
    };
    // Warm both paths (connections, caches) before measuring.
    run(20, 1, via_gateway).await?;
    run(20, 1, direct).await?;
    println!("image updates, {calls} calls per mode");
    println!(
        "{:<26} {:>10} {:>10} {:>10}",
        "mode", "calls/s", "p50 ms", "p99 ms"
    );
    for concurrency in [1, CONCURRENCY] {
        let g = run(calls, concurrency, via_gateway).await?;
        let d = run(calls, concurrency, direct).await?;
        for (name, s) in [
            (format!("gateway (x{concurrency})"), &g),
            (format!("direct patch (x{concurrency})"), &d),
        ] {
            println!(
                "{name:<26} {:>10.1} {:>10.2} {:>10.2}",
                s.per_second,
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3
            );
        }
        println!(
            "ratio gateway/direct (x{concurrency}): throughput {:.2}, p50 {:.2}, p99 {:.2}",
            g.per_second / d.per_second,
            g.p50.as_secs_f64() / d.p50.as_secs_f64(),
            g.p99.as_secs_f64() / d.p99.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let calls = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("qleetos-bench-")
            .tempdir()?;
        let spec = vec![RuntimeSpec::new("eu-west", "eu-west-1", &[])];
        let env = Environment::start(dir.path(), spec).await?;
        let result = bench(&env, calls).await;
        env.stop().await;
        result
    })
}
