//! The example ServiceProfiles of `examples/services` target third-party operators: each one,
//! rendered as QleetOS renders it, is accepted by that operator's real CRD (the pinned release
//! `e2e/scripts/operator-crds.sh` downloads) in a real kube-apiserver, with strict field
//! validation; the same object with one unknown field is rejected, so the check is real. The
//! profiles themselves pass QleetOS's own types and CRD, and every capability they require is
//! provided by a support service shipped beside them. `examples/tenant-policies.yaml` (what
//! `make run` applies before the sample Workloads) is accepted by the TenantPolicy CRD and
//! grants each sample exactly the hosts and runtime profiles it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective,
};
use kube::core::Status;
use kube::discovery::{self, Scope};
use kube::runtime::wait::{await_condition, conditions};
use qleetos_crds::template::{Variables, unknown_variables};
use qleetos_crds::{
    SERVICE_VARIABLE_PREFIXES, ServiceProfile, SupportServiceProfile, TenantPolicy,
};
use qleetos_e2e::environment::{Environment, ensure_namespace};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{TIMEOUT, eventually};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/services");
/// The samples `make run` deploys, and the policies it applies for them.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
const TENANT_POLICIES: &str = "tenant-policies.yaml";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/operator-crds.sh");
const FIELD_MANAGER: &str = "qleetos-e2e-examples";
/// Where the rendered services are dry-run created, as if it were the dependency's namespace.
const NAMESPACE: &str = "examples-e2e";
const CNPG_CLUSTER_CRD: &str = "clusters.postgresql.cnpg.io";
const XRD_CRD: &str = "compositeresourcedefinitions.apiextensions.crossplane.io";
/// The field added to prove that validation happens.
const UNKNOWN_FIELD: &str = "instancez";

pub async fn examples_match_their_operators_crds(env: &Environment) -> Result<()> {
    let client = env.management_client().await?;
    let crds = operator_crds().await?;
    ensure_namespace(&client, NAMESPACE).await?;
    let mut installed = Vec::new();
    let result = check_examples(&client, &crds, &mut installed).await;
    let result = match result {
        Ok(()) => tenant_policies_grant_what_the_samples_need(&client).await,
        failed => failed,
    };
    // Clean up whatever happened: the CRDs applied here and the namespace.
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in installed.iter().rev() {
        if let Err(error) = crd_api.delete(name, &DeleteParams::default()).await {
            eprintln!("examples: deleting CRD {name}: {error}");
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(error) = namespaces.delete(NAMESPACE, &DeleteParams::default()).await {
        eprintln!("examples: deleting namespace {NAMESPACE}: {error}");
    }
    result
}

async fn check_examples(
    client: &Client,
    crds: &BTreeMap<String, PathBuf>,
    installed: &mut Vec<String>,
) -> Result<()> {
    let cluster_crd = crd_file(crds, "cnpg-cluster")?;
    let xrd_crd = crd_file(crds, "crossplane-xrd")?;
    ensure!(
        name(&cluster_crd) == CNPG_CLUSTER_CRD && name(&xrd_crd) == XRD_CRD,
        "operator-crds.sh printed the wrong CRDs: {}, {}",
        name(&cluster_crd),
        name(&xrd_crd)
    );
    apply_crd(client, &cluster_crd, installed).await?;
    apply_crd(client, &xrd_crd, installed).await?;

    let files = [
        "cloudnative-pg.yaml",
        "cloudnative-pg-operator.yaml",
        "crossplane-postgres.yaml",
        "crossplane-xrd.yaml",
    ];
    let [postgres, cnpg_operator, crossplane, xrd_support] = files.map(Example::load);
    let (postgres, cnpg_operator) = (postgres?, cnpg_operator?);
    let (crossplane, xrd_support) = (crossplane?, xrd_support?);

    // QleetOS's own side: the Rust types, the CRD schema and CEL rules, and the requires chain.
    let postgres_profile: ServiceProfile = postgres.parse()?;
    let crossplane_profile: ServiceProfile = crossplane.parse()?;
    let cnpg_support: SupportServiceProfile = cnpg_operator.parse()?;
    let xrd_support_profile: SupportServiceProfile = xrd_support.parse()?;
    ensure!(
        name(&postgres.object) == "postgres" && name(&crossplane.object) == "crossplane-postgres",
        "the example ServiceProfiles are named {} and {}",
        name(&postgres.object),
        name(&crossplane.object)
    );
    for example in [&postgres, &cnpg_operator, &crossplane, &xrd_support] {
        let what = example.what(&example.object);
        accepted(client, example, &what, &example.object).await?;
        rejected_with_unknown_field(client, example, &what, &example.object).await?;
    }
    let providers = [&cnpg_support, &xrd_support_profile];
    for (example, profile) in [
        (&postgres, &postgres_profile),
        (&crossplane, &crossplane_profile),
    ] {
        for capability in &profile.spec.requires {
            ensure!(
                providers
                    .iter()
                    .any(|p| p.spec.provides.contains(capability)),
                "{}: requires {capability}, which no support service of examples/services provides",
                example.file
            );
        }
    }

    // CloudNativePG: the support service is the pinned release, and the Cluster passes its CRD.
    let release = crds.get("cnpg-release").context("no cnpg-release line")?;
    is_the_release(&cnpg_operator, &cnpg_support, release, &cluster_crd)?;
    for object in render_service(&postgres, &postgres_profile)? {
        let what = postgres.what(&object);
        accepted(client, &postgres, &what, &object).await?;
        rejected_with_unknown_field(client, &postgres, &what, &object).await?;
    }

    // Crossplane: the XRD passes Crossplane's XRD CRD; the claim passes the claim CRD that
    // Crossplane would generate from that XRD.
    let xrds = render_support(&xrd_support, &xrd_support_profile)?;
    let [xrd] = xrds.as_slice() else {
        bail!(
            "{}: expected one manifest, the XRD; found {}",
            xrd_support.file,
            xrds.len()
        );
    };
    let what = xrd_support.what(xrd);
    ensure!(
        xrd["kind"] == "CompositeResourceDefinition",
        "{}: {what} is not a CompositeResourceDefinition",
        xrd_support.file
    );
    accepted(client, &xrd_support, &what, xrd).await?;
    rejected_with_unknown_field(client, &xrd_support, &what, xrd).await?;
    let claims = claim_crd(xrd).with_context(|| format!("{}: {what}", xrd_support.file))?;
    apply_crd(client, &claims, installed).await?;
    let connection_keys: BTreeSet<&str> = xrd["spec"]["connectionSecretKeys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(export) = &crossplane_profile.spec.connection.from_secret {
        for key in &export.keys {
            ensure!(
                connection_keys.contains(key.as_str()),
                "{}: copies key {key} of the connection Secret, which {what} does not publish \
                 (its connectionSecretKeys: {connection_keys:?})",
                crossplane.file
            );
        }
    }
    for object in render_service(&crossplane, &crossplane_profile)? {
        let what = crossplane.what(&object);
        accepted(client, &crossplane, &what, &object).await?;
        rejected_with_unknown_field(client, &crossplane, &what, &object).await?;
    }
    Ok(())
}

/// What the sample Workloads of one management namespace need beyond the default.
#[derive(Debug, Default)]
struct SampleNeeds {
    /// `expose.hosts`, by file.
    hosts: BTreeSet<String>,
    /// Regions placed with `provision: IfNeeded`.
    provisioned_regions: BTreeSet<String>,
    files: BTreeSet<String>,
}

/// What the policies naming one namespace grant together.
#[derive(Debug, Default)]
struct Granted {
    hosts: BTreeSet<String>,
    runtime_profiles: BTreeSet<String>,
    /// A policy without `runtimeProfiles` (any profile) names the namespace.
    any_runtime_profile: Vec<String>,
}

/// The YAML files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|path| path.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

/// `examples/tenant-policies.yaml` passes the TenantPolicy type and CRD, and grants each
/// sample Workload of `examples/*.yaml` exactly what the safe default does not give it: the
/// hosts it exposes, the runtime profiles serving the regions it provisions in (and explicitly
/// none, `runtimeProfiles: []`, where it provisions nothing, as an absent list means any),
/// and nothing to a namespace no sample uses.
async fn tenant_policies_grant_what_the_samples_need(client: &Client) -> Result<()> {
    let file = format!("examples/{TENANT_POLICIES}");
    let samples_dir = Path::new(SAMPLES);
    let mut needs: BTreeMap<String, SampleNeeds> = BTreeMap::new();
    for path in yaml_files(samples_dir)? {
        let sample = path.file_name().unwrap_or_default().to_string_lossy();
        if sample == TENANT_POLICIES {
            continue;
        }
        for workload in documents(&path)?.iter().filter(|d| d["kind"] == "Workload") {
            let namespace = workload["metadata"]["namespace"]
                .as_str()
                .with_context(|| format!("examples/{sample}: a Workload without namespace"))?;
            let entry = needs.entry(namespace.to_owned()).or_default();
            entry.files.insert(format!("examples/{sample}"));
            let hosts = workload["spec"]["expose"]["hosts"].as_array();
            entry.hosts.extend(
                hosts
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
            let placement = &workload["spec"]["placement"];
            if placement["provision"] == "IfNeeded" {
                let regions = placement["regions"].as_array().into_iter().flatten();
                entry
                    .provisioned_regions
                    .extend(regions.filter_map(Value::as_str).map(str::to_owned));
            }
        }
    }
    let mut profile_regions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in yaml_files(&samples_dir.join("runtime-profiles"))? {
        for profile in documents(&path)? {
            let regions = profile["spec"]["regions"].as_array().into_iter().flatten();
            profile_regions.insert(
                name(&profile).to_owned(),
                regions
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }

    let mut granted: BTreeMap<String, Granted> = BTreeMap::new();
    for object in documents(&samples_dir.join(TENANT_POLICIES))? {
        let example = Example {
            file: file.clone(),
            object,
        };
        let what = example.what(&example.object);
        let policy: TenantPolicy = example.parse()?;
        accepted(client, &example, &what, &example.object).await?;
        let spec = &policy.spec;
        ensure!(
            spec.namespace_selector.is_none() && !spec.namespaces.is_empty(),
            "{file}: {what} should name the samples' namespaces, not select by label"
        );
        for namespace in &spec.namespaces {
            ensure!(
                needs.contains_key(namespace),
                "{file}: {what} grants namespace {namespace}, which no sample of examples/ uses"
            );
            let grant = granted.entry(namespace.clone()).or_default();
            grant.hosts.extend(spec.hosts.iter().flatten().cloned());
            match &spec.runtime_profiles {
                Some(profiles) => grant.runtime_profiles.extend(profiles.iter().cloned()),
                None => grant.any_runtime_profile.push(what.clone()),
            }
        }
    }

    for (namespace, need) in &needs {
        let files = need.files.iter().cloned().collect::<Vec<_>>().join(", ");
        let grant = granted.remove(namespace).unwrap_or_default();
        ensure!(
            grant.hosts == need.hosts,
            "{file}: namespace {namespace} ({files}) is granted hosts {:?}; its Workloads expose {:?}",
            grant.hosts,
            need.hosts
        );
        ensure!(
            grant.any_runtime_profile.is_empty(),
            "{file}: {} grants namespace {namespace} ({files}) every runtime profile \
             (runtimeProfiles absent); list the ones it provisions from, or [] for none",
            grant.any_runtime_profile.join(", ")
        );
        let mut served = BTreeSet::new();
        for profile in &grant.runtime_profiles {
            let regions = profile_regions.get(profile).with_context(|| {
                format!(
                    "{file}: namespace {namespace} is granted runtime profile {profile}, which \
                     examples/runtime-profiles/ does not define"
                )
            })?;
            ensure!(
                !regions.is_disjoint(&need.provisioned_regions),
                "{file}: namespace {namespace} ({files}) is granted runtime profile {profile} \
                 (regions {regions:?}), but provisions in {:?}",
                need.provisioned_regions
            );
            served.extend(regions.iter().cloned());
        }
        let unserved: Vec<&String> = need.provisioned_regions.difference(&served).collect();
        ensure!(
            unserved.is_empty(),
            "{file}: namespace {namespace} ({files}) provisions in {unserved:?}, which no \
             runtime profile granted to it serves"
        );
    }
    Ok(())
}

/// What `operator-crds.sh` prints: `<name>=<path>` a line.
pub(crate) async fn operator_crds() -> Result<BTreeMap<String, PathBuf>> {
    let output = tokio::process::Command::new("bash")
        .arg(SCRIPT)
        .output()
        .await
        .with_context(|| format!("running bash {SCRIPT}"))?;
    ensure!(
        output.status.success(),
        "{SCRIPT} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let mut paths = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (name, path) = line
            .split_once('=')
            .with_context(|| format!("{SCRIPT} printed {line:?}, not <name>=<path>"))?;
        paths.insert(name.to_owned(), PathBuf::from(path));
    }
    Ok(paths)
}

/// The one CRD of the file `operator-crds.sh` names `key`.
pub(crate) fn crd_file(crds: &BTreeMap<String, PathBuf>, key: &str) -> Result<Value> {
    let path = crds
        .get(key)
        .with_context(|| format!("operator-crds.sh printed no {key} line"))?;
    documents(path)?
        .into_iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .with_context(|| format!("no CustomResourceDefinition in {}", path.display()))
}

fn documents(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).with_context(|| path.display().to_string())?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Server-side applies a CRD (for real) and waits until it is served.
async fn apply_crd(client: &Client, crd: &Value, installed: &mut Vec<String>) -> Result<()> {
    let name = name(crd).to_owned();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(crd))
        .await
        .with_context(|| format!("applying CRD {name}"))?;
    installed.push(name.clone());
    let established = await_condition(api, &name, conditions::is_crd_established());
    tokio::time::timeout(TIMEOUT, established)
        .await
        .map_err(|_| anyhow!("CRD {name} not established after {TIMEOUT:?}"))?
        .with_context(|| format!("waiting for CRD {name}"))?;
    Ok(())
}

/// One file of examples/services: its one object.
struct Example {
    file: String,
    object: Value,
}

impl Example {
    fn load(file: &str) -> Result<Self> {
        let path = Path::new(EXAMPLES).join(file);
        let mut objects = documents(&path)?;
        ensure!(
            objects.len() == 1,
            "examples/services/{file}: expected one object, found {}",
            objects.len()
        );
        Ok(Self {
            file: format!("examples/services/{file}"),
            object: objects.remove(0),
        })
    }

    /// The object as QleetOS's Rust type: what the operator will read.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.object.clone()).with_context(|| {
            format!(
                "{}: does not deserialize into {}",
                self.file,
                std::any::type_name::<T>()
            )
        })
    }

    /// How failures name `object` of this example.
    fn what(&self, object: &Value) -> String {
        format!(
            "{} {} ({})",
            object["kind"].as_str().unwrap_or("<no kind>"),
            name(object),
            object["apiVersion"].as_str().unwrap_or("<no apiVersion>")
        )
    }
}

/// The sample runtime the examples are rendered for.
fn runtime_variables() -> Variables {
    let mut vars = Variables::default();
    vars.insert("runtime.name", "eu-west");
    vars.insert("runtime.region", "eu-west-1");
    vars.insert("runtime.provider", "aws");
    vars
}

/// The manifests of a ServiceProfile as the operator renders them for a dependency that sets
/// no parameter, with a service name in the operator's `<profile>-<hash>` form; its health
/// checks and connection use known variables only and name its objects.
fn render_service(example: &Example, profile: &ServiceProfile) -> Result<Vec<Value>> {
    let parameters = profile
        .spec
        .resolve_parameters(&BTreeMap::new())
        .map_err(|problems| anyhow!("{}: the defaults are refused: {problems}", example.file))?;
    let mut vars = runtime_variables();
    vars.insert(
        "service.name",
        format!("{}-5f0c9e2a", name(&example.object)),
    );
    vars.insert("service.namespace", NAMESPACE);
    for (parameter, value) in parameters {
        vars.insert(format!("parameters.{parameter}"), value);
    }
    let spec = serde_json::to_value(&profile.spec)?;
    let unknown = unknown_variables(&spec, &SERVICE_VARIABLE_PREFIXES, &vars);
    ensure!(
        unknown.is_empty(),
        "{}: uses variables the operator does not set: {unknown:?}",
        example.file
    );
    let rendered = render(&vars, &spec["manifests"]);
    for check in &profile.spec.health_checks {
        let target = vars.expand_text(&check.name);
        ensure!(
            rendered
                .iter()
                .any(|m| m["apiVersion"] == check.api_version.as_str()
                    && m["kind"] == check.kind.as_str()
                    && name(m) == target),
            "{}: the health check of {} {target} names none of its manifests",
            example.file,
            check.kind
        );
    }
    Ok(rendered)
}

/// The manifests of a SupportServiceProfile as rendered for the sample runtime.
fn render_support(example: &Example, profile: &SupportServiceProfile) -> Result<Vec<Value>> {
    let vars = runtime_variables();
    let manifests = serde_json::to_value(&profile.spec.manifests)?;
    let unknown = unknown_variables(&manifests, &["runtime."], &vars);
    ensure!(
        unknown.is_empty(),
        "{}: uses variables the operator does not set: {unknown:?}",
        example.file
    );
    Ok(render(&vars, &manifests))
}

fn render(vars: &Variables, manifests: &Value) -> Vec<Value> {
    let mut manifests = manifests.clone();
    vars.substitute(&mut manifests);
    match manifests {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The support service is CloudNativePG's release manifest as `scripts/gen-cnpg-profile.py`
/// writes it: the same objects in the same order, less the Namespace, the CRDs less their
/// `description` keywords only (every field of the real Cluster CRD is still declared).
fn is_the_release(
    example: &Example,
    profile: &SupportServiceProfile,
    release: &Path,
    cluster_crd: &Value,
) -> Result<()> {
    ensure!(
        profile
            .spec
            .provides
            .iter()
            .any(|c| c == "postgres-operator"),
        "{}: does not provide postgres-operator",
        example.file
    );
    let expected: Vec<Value> = documents(release)?
        .into_iter()
        .filter(|d| d["kind"] != "Namespace")
        .map(|d| {
            if d["kind"] == "CustomResourceDefinition" {
                without_descriptions(&d, false)
            } else {
                d
            }
        })
        .collect();
    let shipped = serde_json::to_value(&profile.spec.manifests)?;
    let shipped = shipped.as_array().context("manifests")?;
    ensure!(
        shipped.len() == expected.len(),
        "{}: {} manifests, the release has {} objects besides its Namespace: run \
         scripts/gen-cnpg-profile.py",
        example.file,
        shipped.len(),
        expected.len()
    );
    for (shipped, expected) in shipped.iter().zip(&expected) {
        ensure!(
            shipped == expected,
            "{}: {} differs from {} in {}: run scripts/gen-cnpg-profile.py",
            example.file,
            example.what(shipped),
            example.what(expected),
            release.display()
        );
    }
    let embedded = shipped
        .iter()
        .find(|m| name(m) == CNPG_CLUSTER_CRD)
        .with_context(|| format!("{}: no {CNPG_CLUSTER_CRD}", example.file))?;
    let (real, kept) = (field_paths(cluster_crd), field_paths(embedded));
    ensure!(
        real == kept,
        "{}: the embedded {CNPG_CLUSTER_CRD} lost fields: {:?}",
        example.file,
        real.difference(&kept).take(10).collect::<Vec<_>>()
    );
    Ok(())
}

/// `node` without its `description` keywords. The keys of a `properties` map are field names,
/// all kept (CloudNativePG's Cluster has a field `spec.description`).
fn without_descriptions(node: &Value, field_names: bool) -> Value {
    match node {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| field_names || *key != "description")
                .map(|(key, value)| {
                    let child_names = !field_names && key == "properties";
                    (key.clone(), without_descriptions(value, child_names))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| without_descriptions(item, false))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every field a CRD's schemas declare, as `<version>:<path>`.
fn field_paths(crd: &Value) -> BTreeSet<String> {
    fn walk(schema: &Value, path: String, out: &mut BTreeSet<String>) {
        if let Some(properties) = schema["properties"].as_object() {
            for (field, child) in properties {
                let child_path = format!("{path}.{field}");
                out.insert(child_path.clone());
                walk(child, child_path, out);
            }
        }
        walk_items(schema, &path, out);
    }
    fn walk_items(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
        for key in ["items", "additionalProperties"] {
            if schema[key].is_object() {
                walk(&schema[key], format!("{path}[]"), out);
            }
        }
    }
    let mut paths = BTreeSet::new();
    for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
        let prefix = version["name"].as_str().unwrap_or_default().to_owned();
        walk(
            &version["schema"]["openAPIV3Schema"],
            format!("{prefix}:"),
            &mut paths,
        );
    }
    paths
}

/// The claim CRD Crossplane generates from an XRD with `claimNames`, derived here because no
/// Crossplane runs in the test. Like Crossplane's, it is the namespaced CRD
/// `<claim plural>.<group>` of kind `claimNames.kind`, one version per XRD version (served as
/// the XRD says, stored where it is referenceable), whose schema is:
/// - the XRD version's own `openAPIV3Schema` `spec` (its properties, required fields and
///   validation rules) and `status` properties, kept as written;
/// - plus, in `spec`, the fields Crossplane adds to every claim, which win over same-named
///   ones of the XRD: which Composition to use (`compositionRef`, `compositionSelector`, their
///   revision counterparts, `compositionUpdatePolicy`), what deleting the claim does to the
///   composite (`compositeDeletePolicy`, defaulted from `defaultCompositeDeletePolicy`), the
///   bound composite (`resourceRef`) and where connection details go
///   (`writeConnectionSecretToRef`, a name in the claim's namespace, and
///   `publishConnectionDetailsTo`);
/// - plus `status.conditions` (Synced, Ready), and a name of at most 63 characters (claim
///   names are used as label values).
///
/// A field that neither the XRD nor Crossplane declares is therefore unknown to it, which is
/// what a strict dry run of the rendered claim proves against.
fn claim_crd(xrd: &Value) -> Result<Value> {
    let spec = &xrd["spec"];
    let group = spec["group"]
        .as_str()
        .context("the XRD has no spec.group")?;
    let mut names = spec["claimNames"].clone();
    let plural = names["plural"]
        .as_str()
        .context("the XRD has no spec.claimNames.plural: it offers no claim")?
        .to_owned();
    ensure!(
        names["kind"] != spec["names"]["kind"] && names["plural"] != spec["names"]["plural"],
        "the claim names equal the composite's"
    );
    let categories = names
        .as_object_mut()
        .context("claimNames")?
        .entry("categories")
        .or_insert_with(|| json!([]));
    if let Value::Array(list) = categories {
        list.push(json!("claim"));
    }
    let delete_policy_default = spec.get("defaultCompositeDeletePolicy").cloned();
    let mut versions = Vec::new();
    for version in spec["versions"]
        .as_array()
        .context("the XRD has no versions")?
    {
        let version_name = version["name"].as_str().context("a version without name")?;
        let schema = &version["schema"]["openAPIV3Schema"];
        ensure!(
            schema.is_object(),
            "version {version_name} has no schema.openAPIV3Schema"
        );
        let own_spec = &schema["properties"]["spec"];
        let mut spec_properties = own_spec["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (field, field_schema) in claim_spec_fields(delete_policy_default.as_ref()) {
            spec_properties.insert(field, field_schema);
        }
        let mut claim_spec = json!({ "type": "object", "properties": spec_properties });
        for keyword in [
            "required",
            "x-kubernetes-validations",
            "oneOf",
            "x-kubernetes-preserve-unknown-fields",
        ] {
            if let Some(value) = own_spec.get(keyword) {
                claim_spec[keyword] = value.clone();
            }
        }
        let mut status_properties = schema["properties"]["status"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        status_properties.insert("conditions".to_owned(), conditions_schema());
        let mut crd_version = json!({
            "name": version_name,
            "served": version["served"],
            "storage": version["referenceable"],
            "subresources": { "status": {} },
            "schema": { "openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": { "type": "string" },
                    "kind": { "type": "string" },
                    "metadata": { "type": "object", "properties": {
                        "name": { "type": "string", "maxLength": 63 },
                    }},
                    "spec": claim_spec,
                    "status": { "type": "object", "properties": status_properties },
                },
            }},
        });
        if let Some(columns) = version.get("additionalPrinterColumns") {
            crd_version["additionalPrinterColumns"] = columns.clone();
        }
        versions.push(crd_version);
    }
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{group}") },
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "versions": versions,
        },
    }))
}

/// The spec fields Crossplane adds to every claim.
fn claim_spec_fields(delete_policy_default: Option<&Value>) -> Vec<(String, Value)> {
    let name_ref = json!({
        "type": "object", "required": ["name"],
        "properties": { "name": { "type": "string" } },
    });
    let label_selector = json!({
        "type": "object", "required": ["matchLabels"],
        "properties": { "matchLabels": {
            "type": "object", "additionalProperties": { "type": "string" },
        }},
    });
    let string_map = json!({ "type": "object", "additionalProperties": { "type": "string" } });
    let mut delete_policy = json!({ "type": "string", "enum": ["Background", "Foreground"] });
    if let Some(default) = delete_policy_default {
        delete_policy["default"] = default.clone();
    }
    vec![
        ("compositionRef".to_owned(), name_ref.clone()),
        ("compositionSelector".to_owned(), label_selector.clone()),
        ("compositionRevisionRef".to_owned(), name_ref.clone()),
        ("compositionRevisionSelector".to_owned(), label_selector),
        (
            "compositionUpdatePolicy".to_owned(),
            json!({ "type": "string", "enum": ["Automatic", "Manual"] }),
        ),
        ("compositeDeletePolicy".to_owned(), delete_policy),
        (
            "resourceRef".to_owned(),
            json!({
                "type": "object", "required": ["apiVersion", "kind", "name"],
                "properties": {
                    "apiVersion": { "type": "string" },
                    "kind": { "type": "string" },
                    "name": { "type": "string" },
                },
            }),
        ),
        (
            "publishConnectionDetailsTo".to_owned(),
            json!({
                "type": "object", "required": ["name"],
                "properties": {
                    "name": { "type": "string" },
                    "configRef": {
                        "type": "object", "default": { "name": "default" },
                        "properties": { "name": { "type": "string" } },
                    },
                    "metadata": { "type": "object", "properties": {
                        "labels": string_map.clone(),
                        "annotations": string_map,
                        "type": { "type": "string" },
                    }},
                },
            }),
        ),
        ("writeConnectionSecretToRef".to_owned(), name_ref),
    ]
}

fn conditions_schema() -> Value {
    json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "message": { "type": "string" },
                "reason": { "type": "string" },
                "status": { "type": "string" },
                "type": { "type": "string" },
            },
        },
    })
}

/// Server-side dry-run apply of `object` (cluster-scoped, or into [`NAMESPACE`]) with strict
/// field validation: nothing is stored. `Ok(Err(status))` when the API server refuses it.
async fn dry_run(client: &Client, object: &Value) -> Result<std::result::Result<(), Box<Status>>> {
    let api_version = object["apiVersion"].as_str().context("no apiVersion")?;
    let kind = object["kind"].as_str().context("no kind")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, capabilities) = eventually(
        &format!("the API server to serve {kind} ({api_version})"),
        Duration::from_secs(30),
        || async { Ok(Some(discovery::pinned_kind(client, &gvk).await?)) },
    )
    .await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), NAMESPACE, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams {
        dry_run: true,
        force: true,
        field_manager: Some(FIELD_MANAGER.to_owned()),
        field_validation: Some(ValidationDirective::Strict),
    };
    match api
        .patch(name(object), &params, &Patch::Apply(object))
        .await
    {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) => Ok(Err(status)),
        Err(error) => Err(error.into()),
    }
}

async fn accepted(client: &Client, example: &Example, what: &str, object: &Value) -> Result<()> {
    match dry_run(client, object)
        .await
        .with_context(|| format!("{}: dry-running {what}", example.file))?
    {
        Ok(()) => Ok(()),
        Err(status) => bail!(
            "{}: the API server refuses {what} ({} {}): {}",
            example.file,
            status.code,
            status.reason,
            status.message
        ),
    }
}

/// `object` with `spec.instancez` added must be refused, for that field.
async fn rejected_with_unknown_field(
    client: &Client,
    example: &Example,
    what: &str,
    object: &Value,
) -> Result<()> {
    let mut mutated = object.clone();
    mutated["spec"]
        .as_object_mut()
        .with_context(|| format!("{}: {what} has no spec", example.file))?
        .insert(UNKNOWN_FIELD.to_owned(), json!(3));
    match dry_run(client, &mutated)
        .await
        .with_context(|| format!("{}: dry-running {what}", example.file))?
    {
        Ok(()) => bail!(
            "{}: {what} with the unknown field spec.{UNKNOWN_FIELD} was ACCEPTED: the dry run \
             does not validate it against the schema",
            example.file
        ),
        Err(status) if status.message.contains(UNKNOWN_FIELD) => Ok(()),
        Err(status) => bail!(
            "{}: {what} with spec.{UNKNOWN_FIELD} was refused, but not for that field ({} {}): {}",
            example.file,
            status.code,
            status.reason,
            status.message
        ),
    }
}
