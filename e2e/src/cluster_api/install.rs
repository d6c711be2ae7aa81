//! Installing Cluster API's CRDs, the provider's CRDs and the ClusterClass.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use super::provider::FIELD_MANAGER;
use crate::environment::ensure_namespace;
use crate::error::Error;

const PROVIDER_CRDS: &str = include_str!("../../assets/cluster-api/provider-crds.yaml");
const CLUSTER_CLASS: &str = include_str!("../../assets/cluster-api/cluster-class.yaml");
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
const CLUSTER_CLASS_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies Cluster API's CRD files and the provider's CRDs, then waits until all are
/// Established.
pub(super) async fn install_crds(client: &Client, capi_crds: &[PathBuf]) -> Result<(), Error> {
    let mut documents = Vec::new();
    for path in capi_crds {
        let yaml = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        documents.extend(parse(&yaml, &path.display().to_string())?);
    }
    documents.extend(parse(PROVIDER_CRDS, "provider-crds.yaml")?);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for document in documents {
        let crd: CustomResourceDefinition = serde_json::from_value(document)
            .map_err(|e| Error::Setup(format!("not a CustomResourceDefinition: {e}")))?;
        let name = crd.name_any();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    for name in names {
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        let timed_out = |last_error| Error::Timeout {
            what: format!("CRD {name} to be established"),
            timeout: ESTABLISH_TIMEOUT,
            last_error,
        };
        tokio::time::timeout(ESTABLISH_TIMEOUT, established)
            .await
            .map_err(|_| timed_out(None))?
            .map_err(|e| timed_out(Some(e.to_string())))?;
    }
    Ok(())
}

/// Creates `namespace` and applies the ClusterClass `qleetos-local` with its templates
/// into it.
pub(super) async fn install_cluster_class(client: &Client, namespace: &str) -> Result<(), Error> {
    ensure_namespace(client, namespace).await?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for document in parse(CLUSTER_CLASS, "cluster-class.yaml")? {
        let object: DynamicObject = serde_json::from_value(document)
            .map_err(|e| Error::Setup(format!("cluster-class.yaml: {e}")))?;
        let types = object.types.clone().unwrap_or_default();
        let gvk = GroupVersionKind::try_from(&types)
            .map_err(|e| Error::Setup(format!("cluster-class.yaml: {e}")))?;
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await?;
    }
    Ok(())
}

/// Waits until Cluster API has reconciled ClusterClass `name` (condition `VariablesReady`
/// True for its current generation); until then it refuses to build Clusters from it.
pub(super) async fn wait_cluster_class(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "ClusterClass");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "clusterclasses");
    let classes: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let deadline = tokio::time::Instant::now() + CLUSTER_CLASS_TIMEOUT;
    loop {
        let class = classes.get(name).await?;
        let generation = class.metadata.generation.unwrap_or_default();
        let reconciled = class.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "VariablesReady"
                    && c["status"] == "True"
                    && c["observedGeneration"] == generation
            });
        if reconciled {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("ClusterClass {namespace}/{name} to be reconciled"),
                timeout: CLUSTER_CLASS_TIMEOUT,
                last_error: Some(format!(
                    "conditions: {}",
                    class.data["status"]["conditions"]
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The non-empty documents of a multi-document YAML file, as JSON.
fn parse(yaml: &str, origin: &str) -> Result<Vec<serde_json::Value>, Error> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value = Option::<serde_json::Value>::deserialize(document)
            .map_err(|e| Error::Setup(format!("{origin} is not valid YAML: {e}")))?;
        documents.extend(value.filter(|v| !v.is_null()));
    }
    Ok(documents)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn assets_parse() {
        let crds = parse(PROVIDER_CRDS, "crds").unwrap();
        assert_eq!(crds.len(), 8);
        for crd in crds {
            let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
            let labels = crd.metadata.labels.unwrap_or_default();
            assert_eq!(labels["cluster.x-k8s.io/v1beta2"], "v1alpha1");
            let plural = &crd.spec.names.plural;
            assert_eq!(
                crd.metadata.name.unwrap(),
                format!("{plural}.{}", crd.spec.group)
            );
        }
        let objects = parse(CLUSTER_CLASS, "class").unwrap();
        let kinds: Vec<_> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.last(), Some(&"ClusterClass"));
        assert_eq!(objects.last().unwrap()["metadata"]["name"], "qleetos-local");
    }
}
