//! Connection details of service dependencies: the Secret each writes into the workload's
//! runtime namespace (values rendered from the service, keys copied from the Secret the
//! service or its operator writes), and its injection into the workload's pod templates.
//! Each injected pod template carries a hash of its connections, so new details roll it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use qleetos_crds::template::{TENANT_VARIABLE_PREFIX, Variables};
use qleetos_crds::{AppliedObject, Injection, InjectionMode, KubernetesRuntime, Manifest};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::services::{Bound, variables};
use crate::error::Result;
use crate::runtime_client::RuntimeClient;

/// Pod-template annotation: a hash of the connection details injected into it.
pub const CONNECTIONS_ANNOTATION: &str = "qleetos.io/connections";

/// One dependency's connection Secret and how it reaches the pods.
#[derive(Clone, PartialEq)]
pub struct Connection {
    pub dependency: String,
    pub secret_name: String,
    pub data: BTreeMap<String, ByteString>,
    pub inject: Injection,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("dependency", &self.dependency)
            .field("secret_name", &self.secret_name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a plan shows as the value of a connection key copied from a service not running yet.
pub const NOT_YET_KNOWN: &str = "(known once the service runs)";

/// The connection details of a Ready service, or what they still wait for (the service's
/// own Secret, or a key of it).
pub async fn read(
    client: &RuntimeClient,
    bound: &Bound,
    runtime: &KubernetesRuntime,
) -> Result<Result<Connection, String>> {
    let Some(unit) = bound.unit() else {
        return Ok(Err("not a service".to_owned()));
    };
    let vars = variables(unit, runtime);
    let mut data = rendered_values(bound, &vars);
    if let Some(export) = &bound.profile.spec.connection.from_secret {
        // The operator reads this Secret with its own identity: no tenant parameter names it.
        let name = vars
            .without_prefix(TENANT_VARIABLE_PREFIX)
            .expand_text(&export.name);
        let Some(copied) = secret_data(client, &unit.namespace, &name).await? else {
            return Ok(Err(format!("its Secret {name} is not written yet")));
        };
        for (key, value) in copied {
            if export.keys.is_empty() || export.keys.contains(&key) {
                data.insert(key, value);
            }
        }
        if let Some(missing) = export.keys.iter().find(|k| !data.contains_key(*k)) {
            return Ok(Err(format!("its Secret {name} has no key {missing} yet")));
        }
    }
    Ok(Ok(connection(bound, data)))
}

/// The connection details a plan assumes for a service not running yet: its rendered values,
/// and [`NOT_YET_KNOWN`] for each key it copies from the Secret the service will write.
pub fn not_yet_known(bound: &Bound, runtime: &KubernetesRuntime) -> Connection {
    let mut data = match bound.unit() {
        Some(unit) => rendered_values(bound, &variables(unit, runtime)),
        None => BTreeMap::new(),
    };
    if let Some(export) = &bound.profile.spec.connection.from_secret {
        for key in &export.keys {
            data.insert(key.clone(), ByteString(NOT_YET_KNOWN.as_bytes().to_vec()));
        }
    }
    connection(bound, data)
}

fn rendered_values(bound: &Bound, vars: &Variables) -> BTreeMap<String, ByteString> {
    bound
        .profile
        .spec
        .connection
        .values
        .iter()
        .map(|(key, template)| {
            (
                key.clone(),
                ByteString(vars.expand_text(template).into_bytes()),
            )
        })
        .collect()
}

fn connection(bound: &Bound, data: BTreeMap<String, ByteString>) -> Connection {
    let dependency = bound.dependency.metadata.name.clone().unwrap_or_default();
    Connection {
        secret_name: bound
            .dependency
            .spec
            .secret_name
            .clone()
            .unwrap_or_else(|| {
                crate::names::cut_with_hash(&format!("{dependency}-{}", bound.workload), 253)
            }),
        dependency,
        data,
        inject: bound.dependency.spec.inject.clone(),
    }
}

/// The data of Secret `namespace/name` (the operator's view), `None` when it does not exist.
pub async fn secret_data(
    client: &RuntimeClient,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, ByteString>>> {
    let object = AppliedObject {
        api_version: "v1".to_owned(),
        kind: "Secret".to_owned(),
        namespace: Some(namespace.to_owned()),
        name: name.to_owned(),
        uid: None,
        applied: None,
    };
    Ok(client.get(&object).await?.map(|secret| {
        secret
            .data
            .get("data")
            .cloned()
            .and_then(|data| serde_json::from_value(data).ok())
            .unwrap_or_default()
    }))
}

/// The connection Secret of `connection` in `namespace`.
pub fn secret_manifest(connection: &Connection, namespace: &str) -> Manifest {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": connection.secret_name, "namespace": namespace },
        "type": "Opaque",
        "data": connection.data,
    });
    match value {
        Value::Object(map) => Manifest(map),
        _ => Manifest::default(),
    }
}

/// Adds each connection to the matching containers of every pod template in `manifests`,
/// and the hash of what was added to the template's annotations.
pub fn inject(manifests: &mut [Manifest], connections: &[Connection]) {
    if connections.is_empty() {
        return;
    }
    for manifest in manifests {
        for_each_pod_template(&mut manifest.0, &mut |template| {
            inject_template(template, connections)
        });
    }
}

fn inject_template(template: &mut Map<String, Value>, connections: &[Connection]) {
    let mut hasher = Sha256::new();
    let mut injected = false;
    for connection in connections {
        let Some(Value::Object(pod)) = template.get_mut("spec") else {
            return;
        };
        if inject_pod(pod, connection) {
            injected = true;
            hasher.update(connection.secret_name.as_bytes());
            for (key, value) in &connection.data {
                hasher.update(key.as_bytes());
                hasher.update([0]);
                hasher.update(&value.0);
                hasher.update([0]);
            }
        }
    }
    if !injected {
        return;
    }
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let metadata = object_entry(template, "metadata");
    object_entry(metadata, "annotations")
        .insert(CONNECTIONS_ANNOTATION.to_owned(), Value::String(hash));
}

/// Adds the connection to the pod's matching containers; whether any matched.
fn inject_pod(pod: &mut Map<String, Value>, connection: &Connection) -> bool {
    let volume = format!(
        "qleetos-{}",
        crate::names::cut_with_hash(&connection.dependency, 55)
    );
    let mount_path = connection
        .inject
        .mount_path
        .clone()
        .unwrap_or_else(|| format!("/var/run/qleetos/{}", connection.dependency));
    let mut matched = false;
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = pod.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let wanted = &connection.inject.containers;
            if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
                continue;
            }
            matched = true;
            match connection.inject.mode {
                InjectionMode::Env => push_unique(
                    container,
                    "envFrom",
                    json!({ "secretRef": { "name": connection.secret_name } }),
                ),
                InjectionMode::Volume => push_unique(
                    container,
                    "volumeMounts",
                    json!({ "name": volume, "mountPath": mount_path, "readOnly": true }),
                ),
            }
        }
    }
    if matched && connection.inject.mode == InjectionMode::Volume {
        push_unique(
            pod,
            "volumes",
            json!({ "name": volume, "secret": { "secretName": connection.secret_name } }),
        );
    }
    matched
}

fn push_unique(object: &mut Map<String, Value>, key: &str, item: Value) {
    let entry = object
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = entry
        && !items.contains(&item)
    {
        items.push(item);
    }
}

fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(inner) => inner,
        _ => unreachable!("replaced by an object above"),
    }
}

/// Calls `visit` with every pod template in `object` (a map whose `spec` holds
/// `containers`): Deployments, StatefulSets, Jobs, CronJobs, custom kinds embedding pods.
fn for_each_pod_template(
    object: &mut Map<String, Value>,
    visit: &mut impl FnMut(&mut Map<String, Value>),
) {
    let is_template = object
        .get("spec")
        .and_then(|s| s.get("containers"))
        .is_some_and(Value::is_array);
    if is_template {
        visit(object);
        return;
    }
    for value in object.values_mut() {
        match value {
            Value::Object(child) => for_each_pod_template(child, visit),
            Value::Array(items) => items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(|child| for_each_pod_template(child, visit)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Manifest {
        let Value::Object(map) = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
            "spec": { "template": { "metadata": { "labels": { "app": "web" } }, "spec": {
                "containers": [{ "name": "web", "image": "web:1" }, { "name": "proxy", "image": "p:1" }]
            } } }
        }) else {
            unreachable!()
        };
        Manifest(map)
    }

    fn connection(url: &str, inject: Injection) -> Connection {
        Connection {
            dependency: "rpc".to_owned(),
            secret_name: "rpc-connection".to_owned(),
            data: BTreeMap::from([("RPC_URL".to_owned(), ByteString(url.as_bytes().to_vec()))]),
            inject,
        }
    }

    fn injected(connection: &Connection) -> Value {
        let mut manifests = vec![deployment()];
        inject(&mut manifests, std::slice::from_ref(connection));
        Value::Object(manifests.remove(0).0)
    }

    #[test]
    fn env_goes_to_the_named_containers_and_the_hash_follows_the_details() {
        let only_web = Injection {
            containers: vec!["web".to_owned()],
            ..Default::default()
        };
        let first = injected(&connection("http://a:8545", only_web.clone()));
        let pod = &first["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["envFrom"][0]["secretRef"]["name"],
            "rpc-connection"
        );
        assert!(pod["containers"][1].get("envFrom").is_none());
        let hash = &first["spec"]["template"]["metadata"]["annotations"][CONNECTIONS_ANNOTATION];
        assert!(hash.is_string());
        let again = injected(&connection("http://a:8545", only_web.clone()));
        assert_eq!(
            &again["spec"]["template"]["metadata"]["annotations"][CONNECTIONS_ANNOTATION],
            hash
        );
        let rotated = injected(&connection("http://b:8545", only_web));
        assert_ne!(
            &rotated["spec"]["template"]["metadata"]["annotations"][CONNECTIONS_ANNOTATION],
            hash
        );
    }

    #[test]
    fn volume_mode_mounts_the_secret_once() {
        let volume = Injection {
            mode: InjectionMode::Volume,
            mount_path: Some("/etc/rpc".to_owned()),
            ..Default::default()
        };
        let value = injected(&connection("http://a:8545", volume));
        let pod = &value["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], "rpc-connection");
        assert_eq!(
            pod["containers"][1]["volumeMounts"][0]["mountPath"],
            "/etc/rpc"
        );
    }
}
