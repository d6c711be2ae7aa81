//! Credentials of a private chart repository: a Secret in QleetOS's system namespace with
//! `repository`, `username` and `password`. They go only to the repository the Secret names
//! (a chart naming the Secret with another repository gets nothing), and a tenant's Workload
//! may use them only where the Secret's annotation lists its namespace. Their content never
//! reaches a status, an Event, a log line or an error message.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use qleetos_crds::Chart;

use super::unavailable;
use crate::error::{Error, Result};

/// Annotation on a credentials Secret: the namespaces (comma-separated) whose Workloads may
/// use it. Profiles, written by operations, may always use it.
pub const CHART_NAMESPACES_ANNOTATION: &str = "qleetos.io/chart-namespaces";

/// Basic credentials of one repository.
#[derive(Clone)]
pub struct Credentials {
    pub repository: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// The credentials `chart` names, for a profile (`tenant` None) or a Workload of namespace
/// `tenant`; `None` when it names none.
pub async fn credentials_for(
    client: &Client,
    system_namespace: &str,
    chart: &Chart,
    tenant: Option<&str>,
) -> Result<Option<Credentials>> {
    let Some(name) = &chart.credentials_secret else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), system_namespace);
    let secret = api.get_opt(name).await.map_err(Error::Management)?;
    let Some(secret) = secret else {
        return Err(unavailable(
            chart,
            format!("credentials Secret {system_namespace}/{name} does not exist"),
        ));
    };
    granted(&secret, chart, tenant)
        .map_err(|problem| {
            unavailable(
                chart,
                format!("credentials Secret {system_namespace}/{name}: {problem}"),
            )
        })
        .map(Some)
}

/// The Secret's credentials when `chart` (of `tenant`, if a Workload's) may use them.
fn granted(secret: &Secret, chart: &Chart, tenant: Option<&str>) -> Result<Credentials, String> {
    if let Some(tenant) = tenant {
        let allowed = secret
            .annotations()
            .get(CHART_NAMESPACES_ANNOTATION)
            .is_some_and(|list| list.split(',').any(|n| n.trim() == tenant));
        if !allowed {
            return Err(format!(
                "namespace {tenant} may not use it (annotation {CHART_NAMESPACES_ANNOTATION})"
            ));
        }
    }
    let field = |key: &str| -> Result<String, String> {
        let data = secret.data.as_ref().and_then(|d| d.get(key));
        let text = data.and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
        text.filter(|t| !t.is_empty())
            .ok_or_else(|| format!("key {key} is missing or empty"))
    };
    let repository = field("repository")?;
    if repository.trim_end_matches('/') != chart.repository.trim_end_matches('/') {
        return Err("it is for another repository; credentials are only sent to the repository the Secret names".into());
    }
    Ok(Credentials {
        repository,
        username: field("username")?,
        password: field("password")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    fn secret(repository: &str, namespaces: Option<&str>) -> Secret {
        let mut secret = Secret::default();
        if let Some(namespaces) = namespaces {
            secret.metadata.annotations = Some(BTreeMap::from([(
                CHART_NAMESPACES_ANNOTATION.to_owned(),
                namespaces.to_owned(),
            )]));
        }
        secret.data = Some(BTreeMap::from([
            (
                "repository".to_owned(),
                ByteString(repository.as_bytes().to_vec()),
            ),
            ("username".to_owned(), ByteString(b"ci".to_vec())),
            ("password".to_owned(), ByteString(b"s3cret".to_vec())),
        ]));
        secret
    }

    fn chart(repository: &str) -> Chart {
        serde_json::from_value(json!({"repository": repository, "name": "web", "version": "1.0.0", "credentialsSecret": "repo"}))
            .expect("chart")
    }

    #[test]
    fn credentials_go_only_to_their_own_repository() {
        let secret = secret("https://charts.example.com/private", None);
        assert!(granted(&secret, &chart("https://charts.example.com/private/"), None).is_ok());
        let error = granted(&secret, &chart("https://attacker.example.net"), None)
            .expect_err("other repository");
        assert!(error.contains("another repository"), "{error}");
        assert!(!error.contains("s3cret"));
    }

    #[test]
    fn a_workload_needs_its_namespace_listed() {
        let listed = secret("https://r", Some("team-a, team-b"));
        assert!(granted(&listed, &chart("https://r"), Some("team-b")).is_ok());
        let error = granted(&listed, &chart("https://r"), Some("team-c")).expect_err("not listed");
        assert!(error.contains("namespace team-c may not use it"), "{error}");
        let unlisted = secret("https://r", None);
        assert!(granted(&unlisted, &chart("https://r"), Some("team-a")).is_err());
        assert!(
            format!("{:?}", granted(&listed, &chart("https://r"), None)).contains("repository")
        );
        assert!(!format!("{:?}", granted(&listed, &chart("https://r"), None)).contains("s3cret"));
    }
}
