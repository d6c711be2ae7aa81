//! What an API server served, read from its `apiserver_request_total` counters: reads and
//! writes by resource, so benchmarks and trials count the requests a run cost.

/// Requests served, by class of verb.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestCounts {
    /// GET, LIST and WATCH.
    pub reads: f64,
    /// POST, PUT, PATCH, APPLY (server-side apply), DELETE and DELETECOLLECTION.
    pub writes: f64,
}

impl RequestCounts {
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            reads: self.reads + other.reads,
            writes: self.writes + other.writes,
        }
    }

    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self {
            reads: self.reads - other.reads,
            writes: self.writes - other.writes,
        }
    }
}

/// One `apiserver_request_total` sample of a counted resource that stored something (a dry
/// run, e.g. QleetOS probing its admission guard, stores nothing).
struct Sample<'a> {
    line: &'a str,
    resource: &'a str,
    verb: &'a str,
    value: f64,
}

fn samples<'a>(
    metrics: &'a str,
    counted: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = Sample<'a>> + 'a {
    metrics
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter_map(move |line| {
            let resource = label(line, "resource").unwrap_or_default();
            if !counted(resource) || label(line, "dry_run").is_some_and(|d| !d.is_empty()) {
                return None;
            }
            let value = line.split_whitespace().last()?.parse::<f64>().ok()?;
            let verb = label(line, "verb")?;
            Some(Sample {
                line,
                resource,
                verb,
                value,
            })
        })
}

/// Sums the `apiserver_request_total` samples of a Prometheus text exposition by verb class,
/// for the resources `counted` keeps (e.g. leaving out the clusters' own lease renewals).
pub fn request_counts(metrics: &str, counted: impl Fn(&str) -> bool) -> RequestCounts {
    let mut counts = RequestCounts::default();
    for sample in samples(metrics, counted) {
        match sample.verb {
            "GET" | "LIST" | "WATCH" => counts.reads += sample.value,
            verb if is_write(verb) => counts.writes += sample.value,
            _ => {}
        }
    }
    counts
}

/// Writes of the counted resources by request (`"PATCH workloads/status"`), to say where a
/// run's writes went.
pub fn writes_by_request(
    metrics: &str,
    counted: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, f64> {
    let mut writes = std::collections::BTreeMap::new();
    for Sample {
        line,
        resource,
        verb,
        value,
    } in samples(metrics, counted).filter(|s| is_write(s.verb))
    {
        let request = match label(line, "subresource").unwrap_or_default() {
            "" => format!("{verb} {resource}"),
            subresource => format!("{verb} {resource}/{subresource}"),
        };
        *writes.entry(request).or_insert(0.0) += value;
    }
    writes
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
    )
}

/// The value of label `name` in a sample line (`metric{a="x",name="y"} 1`).
pub fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = [format!("{{{name}=\""), format!(",{name}=\"")]
        .iter()
        .find_map(|prefix| line.find(prefix.as_str()).map(|at| at + prefix.len()))?;
    let rest = &line[start..];
    rest.find('"').map(|end| &rest[..end])
}

/// Reads `/metrics` of the API server `client` talks to, as an administrator.
pub async fn scrape(client: &kube::Client) -> Result<String, kube::Error> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="APPLY",version="v1"} 12
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="GET",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 40
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="0",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="CONNECT",version="v1"} 3
apiserver_request_total{code="403",component="apiserver",dry_run="All",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1"} 7
"#;

    #[test]
    fn reads_and_writes_are_summed_for_the_counted_resources() {
        let all = request_counts(SAMPLE, |_| true);
        assert_eq!(
            all,
            RequestCounts {
                reads: 5.0,
                writes: 54.0
            }
        );
        let without_leases = request_counts(SAMPLE, |resource| resource != "leases");
        assert_eq!(without_leases.writes, 14.0);
        let dry_runs = request_counts(SAMPLE, |resource| resource == "services");
        assert_eq!(dry_runs, RequestCounts::default());
        let config_maps = request_counts(SAMPLE, |resource| resource == "configmaps");
        assert_eq!(
            config_maps,
            RequestCounts {
                reads: 5.0,
                writes: 12.0
            }
        );
    }

    #[test]
    fn writes_are_told_apart_by_verb_and_resource() {
        let writes = writes_by_request(SAMPLE, |resource| resource != "leases");
        let expected: Vec<(String, f64)> = vec![
            ("APPLY configmaps".into(), 12.0),
            ("POST namespaces".into(), 2.0),
        ];
        assert_eq!(writes.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn labels_are_read_wherever_they_stand() {
        let line = r#"apiserver_request_total{resource="configmaps",verb="GET"} 1"#;
        assert_eq!(label(line, "resource"), Some("configmaps"));
        assert_eq!(label(line, "verb"), Some("GET"));
        assert_eq!(label(line, "group"), None);
    }
}
