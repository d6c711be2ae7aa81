//! Fetching chart archives: from a classic chart repository (its `index.yaml`, then the
//! archive, checked against the index's digest) over HTTP(S), or from an OCI registry
//! through `helm pull`. Archives are kept on disk by repository, name and version: an exact
//! version is fetched once per process; a range is resolved again after [`RANGE_FRESH_FOR`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qleetos_crds::Chart;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::helm::Helm;
use super::{Credentials, unavailable};
use crate::error::{Error, Result};

/// How long the version a range resolved to is reused.
const RANGE_FRESH_FOR: Duration = Duration::from_secs(300);
/// Longest a repository may take to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A chart archive on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub path: PathBuf,
    pub version: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
}

/// Where charts come from, with the archives already fetched.
#[derive(Debug)]
pub struct Repositories {
    http: reqwest::Client,
    cache: PathBuf,
    /// Repository prefix → the prefix it is fetched from instead (air-gapped mirrors).
    mirrors: Vec<(String, String)>,
    fetched: Mutex<HashMap<String, (Instant, Archive)>>,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<Entry>>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

impl Repositories {
    pub fn new(cache: PathBuf, mirrors: Vec<(String, String)>) -> Result<Self> {
        let tls = rustls_config();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::ChartUnavailable {
                chart: "(any)".into(),
                problem: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            cache,
            mirrors,
            fetched: Mutex::default(),
        })
    }

    /// The repository `chart` is fetched from: its own, or its mirror.
    pub fn location(&self, repository: &str) -> String {
        for (from, to) in &self.mirrors {
            if let Some(rest) = repository.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        repository.to_owned()
    }

    /// The archive of `chart`, fetched unless already on disk.
    pub async fn fetch(
        &self,
        chart: &Chart,
        credentials: Option<&Credentials>,
        helm: &Helm,
    ) -> Result<Archive> {
        let key = format!("{}\n{}\n{}", chart.repository, chart.name, chart.version);
        if let Some((fetched, archive)) = self
            .fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && (!chart.version_range || fetched.elapsed() < RANGE_FRESH_FOR)
            && archive.path.exists()
        {
            return Ok(archive.clone());
        }
        let location = self.location(&chart.repository);
        let archive = if location.starts_with("oci://") {
            self.pull_oci(chart, &location, credentials, helm).await?
        } else {
            self.download(chart, &location, credentials).await?
        };
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), archive.clone()));
        Ok(archive)
    }

    async fn download(
        &self,
        chart: &Chart,
        location: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Archive> {
        let base = location.trim_end_matches('/');
        let index = self
            .get(chart, &format!("{base}/index.yaml"), credentials)
            .await?;
        // Not the parser's message: it may quote what the URL answered, and a tenant chooses
        // the URL.
        let index: Index = serde_norway::from_slice(&index).map_err(|_| {
            unavailable(
                chart,
                format!("{base}/index.yaml is not a chart repository index"),
            )
        })?;
        let entry = pick(chart, &index)?;
        let Some(url) = entry.urls.first() else {
            return Err(unavailable(
                chart,
                format!("the index lists no URL for version {}", entry.version),
            ));
        };
        let url = absolute(base, url);
        let bytes = self.get(chart, &url, credentials).await?;
        let digest = hex_sha256(&bytes);
        if let Some(expected) = entry.digest.as_deref().filter(|d| !d.is_empty())
            && expected.trim_start_matches("sha256:") != digest
        {
            return Err(unavailable(
                chart,
                format!("{url} does not match the digest the index gives (sha256:{expected})"),
            ));
        }
        self.store(chart, &bytes, &digest, entry.version.clone())
            .await
    }

    /// Keeps an archive on disk by its digest.
    async fn store(
        &self,
        chart: &Chart,
        bytes: &[u8],
        digest: &str,
        version: String,
    ) -> Result<Archive> {
        let path = self.cache.join(format!("{digest}.tgz"));
        write_atomically(&path, bytes)
            .await
            .map_err(|e| unavailable(chart, format!("cannot store the archive: {e}")))?;
        Ok(Archive {
            path,
            version,
            digest: format!("sha256:{digest}"),
        })
    }

    /// One GET, with basic credentials only when `credentials` were granted for this
    /// repository (they are never sent to another host).
    async fn get(
        &self,
        chart: &Chart,
        url: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Vec<u8>> {
        let mut request = self.http.get(url);
        if let Some(credentials) = credentials.filter(|c| same_origin(&c.repository, url, self)) {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        let response = request.send().await.map_err(|e| {
            unavailable(
                chart,
                format!("cannot reach {}: {}", strip_query(url), e.without_url()),
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(
                chart,
                format!("{} answered {status}", strip_query(url)),
            ));
        }
        let bytes = response.bytes().await.map_err(|e| {
            unavailable(
                chart,
                format!("reading {}: {}", strip_query(url), e.without_url()),
            )
        })?;
        Ok(bytes.to_vec())
    }

    async fn pull_oci(
        &self,
        chart: &Chart,
        location: &str,
        credentials: Option<&Credentials>,
        helm: &Helm,
    ) -> Result<Archive> {
        let reference = format!("{}/{}", location.trim_end_matches('/'), chart.name);
        let pulled = helm.pull(chart, &reference, credentials).await?;
        let digest = hex_sha256(&pulled.bytes);
        self.store(chart, &pulled.bytes, &digest, pulled.version)
            .await
    }
}

/// The index entry `chart` asks for: its exact version, or the newest in its range (release
/// versions only unless the range names a pre-release).
fn pick<'a>(chart: &Chart, index: &'a Index) -> Result<&'a Entry> {
    let Some(entries) = index.entries.get(&chart.name) else {
        return Err(unavailable(
            chart,
            format!("the repository has no chart named {}", chart.name),
        ));
    };
    let found = if chart.version_range {
        let range = semver::VersionReq::parse(&chart.version).map_err(|e| {
            unavailable(
                chart,
                format!("version {:?} is not a semver range: {e}", chart.version),
            )
        })?;
        entries
            .iter()
            .filter_map(|e| {
                Some((
                    semver::Version::parse(e.version.trim_start_matches('v')).ok()?,
                    e,
                ))
            })
            .filter(|(version, _)| range.matches(version))
            .max_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, entry)| entry)
    } else {
        entries.iter().find(|e| e.version == chart.version)
    };
    found.ok_or_else(|| {
        let mut known: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
        known.truncate(10);
        unavailable(
            chart,
            format!(
                "no version matches {:?} (the repository has {})",
                chart.version,
                known.join(", ")
            ),
        )
    })
}

/// `url` as an absolute URL: index entries may give archive paths relative to the repository.
fn absolute(base: &str, url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("{base}/{}", url.trim_start_matches('/'))
    }
}

/// Whether `url` is on the same scheme, host and port as the credentials' repository (or its
/// mirror).
fn same_origin(repository: &str, url: &str, repositories: &Repositories) -> bool {
    let origin = |u: &str| -> Option<String> {
        let parsed = reqwest::Url::parse(u).ok()?;
        Some(format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str()?,
            parsed.port_or_known_default()?
        ))
    };
    let granted = origin(&repositories.location(repository));
    granted.is_some() && granted == origin(url)
}

fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let staging = path.with_extension(format!("part-{}", std::process::id()));
    tokio::fs::write(&staging, bytes).await?;
    tokio::fs::rename(&staging, path).await
}

/// rustls with ring and the platform's roots, as the Kubernetes client uses.
fn rustls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder())
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chart(version: &str, range: bool) -> Chart {
        serde_json::from_value(json!({
            "repository": "https://charts.example.com/stable", "name": "web",
            "version": version, "versionRange": range
        }))
        .expect("chart")
    }

    fn index() -> Index {
        serde_norway::from_str(
            "apiVersion: v1\nentries:\n  web:\n  - version: 1.2.0\n    urls: [web-1.2.0.tgz]\n  - version: 1.10.1\n    urls: [https://cdn.example.com/web-1.10.1.tgz]\n  - version: 2.0.0-rc.1\n    urls: [web-2.0.0-rc.1.tgz]\n",
        )
        .expect("index")
    }

    #[test]
    fn an_exact_version_is_only_itself() {
        assert_eq!(
            pick(&chart("1.2.0", false), &index())
                .expect("found")
                .version,
            "1.2.0"
        );
        let error = pick(&chart("1.2", false), &index()).expect_err("not exact");
        assert!(
            error.to_string().contains("no version matches \"1.2\""),
            "{error}"
        );
        assert!(error.to_string().contains("1.10.1"), "{error}");
    }

    #[test]
    fn a_range_takes_the_newest_release_in_it() {
        assert_eq!(
            pick(&chart("^1.2", true), &index()).expect("found").version,
            "1.10.1"
        );
        assert_eq!(
            pick(&chart("~1.2.0", true), &index())
                .expect("found")
                .version,
            "1.2.0"
        );
        let error = pick(&chart(">=3", true), &index()).expect_err("none");
        assert_eq!(error.reason().as_str(), "ChartUnavailable");
    }

    #[test]
    fn a_missing_chart_is_named() {
        let mut other = chart("1.2.0", false);
        other.name = "api".into();
        let error = pick(&other, &index()).expect_err("missing");
        assert!(error.to_string().contains("no chart named api"), "{error}");
    }

    #[test]
    fn relative_archive_urls_are_under_the_repository() {
        assert_eq!(
            absolute("http://r/charts", "web-1.tgz"),
            "http://r/charts/web-1.tgz"
        );
        assert_eq!(
            absolute("http://r/charts", "https://cdn/x.tgz"),
            "https://cdn/x.tgz"
        );
    }

    #[test]
    fn mirrors_replace_the_repository_prefix_and_credentials_stay_on_their_origin() {
        let repositories = Repositories::new(
            std::env::temp_dir(),
            vec![(
                "https://charts.example.com/".into(),
                "http://127.0.0.1:8080/mirror/".into(),
            )],
        )
        .expect("client");
        assert_eq!(
            repositories.location("https://charts.example.com/stable"),
            "http://127.0.0.1:8080/mirror/stable"
        );
        let repository = "https://charts.example.com/stable";
        assert!(same_origin(
            repository,
            "http://127.0.0.1:8080/mirror/stable/web.tgz",
            &repositories
        ));
        assert!(!same_origin(
            repository,
            "https://cdn.example.com/web.tgz",
            &repositories
        ));
        assert!(!same_origin(
            "https://private.example.com",
            "https://private.example.com.evil.io/x",
            &repositories
        ));
    }
}
