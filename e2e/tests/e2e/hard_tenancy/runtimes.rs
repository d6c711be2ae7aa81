//! What reaches the runtimes: Pod Security and the tenant guard, namespaces never a tenant's,
//! the default without a policy, and limits. On the shared environment.

use super::*;

/// A privileged Pod sharing the node's PID and network namespaces with the node's `/` mounted.
fn root_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
        "spec": {"hostPID": true, "hostNetwork": true,
                 "containers": [{"name": "root", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                 "securityContext": {"privileged": true},
                                 "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
                 "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}})
}

/// The runtime namespace's labels on eu-west.
async fn runtime_namespace_labels(
    env: &Environment,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    Ok(Api::<Namespace>::all(eu_west)
        .get(ns)
        .await?
        .labels()
        .clone())
}

/// A tenant with no policy cannot run a privileged, host-sharing Pod (Pod Security admission
/// at `baseline` on the runtime namespace QleetOS made for it), nor hijack traffic with a
/// Service's externalIPs (CVE-2020-8554, the runtime's admission policy), nor set reserved
/// labels itself; a TenantPolicy with `podSecurity: privileged` lets the same Pod in.
pub async fn pod_security_and_node_escapes_are_refused(env: &Environment) -> Result<()> {
    const NS: &str = "ht-psa";
    const PRIVILEGED: &str = "ht-psa-privileged";
    let client = env.management_client().await?;
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    ensure_namespace(&client, NS).await?;
    let tenant = tenant_client(env, NS).await?;
    apply_as(
        &tenant,
        NS,
        &in_region("root", vec![root_pod()], "eu-west-1"),
    )
    .await?;
    let refused_pod = failed_with(&client, NS, "root", "violates PodSecurity").await?;
    println!(
        "privileged Pod: {}: {}",
        refused_pod.reason, refused_pod.message
    );
    let hijack = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hijack"},
        "spec": {"selector": {"app": "hijack"}, "ports": [{"port": 80}],
                 "externalIPs": ["203.0.113.10"]}});
    apply_as(&tenant, NS, &in_region("hijack", vec![hijack], "eu-west-1")).await?;
    let refused_service =
        match failed_with(&client, NS, "hijack", "externalIPs is not allowed").await {
            Ok(condition) => condition,
            Err(error) => bail!("{error:#}\n{}", guard_report(env, NS, "hijack").await?),
        };
    println!(
        "externalIPs: {}: {}",
        refused_service.reason, refused_service.message
    );
    let mut relabel = config_map("relabel", None);
    relabel["metadata"]["labels"] = json!({"pod-security.kubernetes.io/enforce": "privileged"});
    apply_as(
        &tenant,
        NS,
        &in_region("relabel", vec![relabel], "eu-west-1"),
    )
    .await?;
    refused(
        &client,
        NS,
        "relabel",
        "TenancyViolation",
        &["(ReservedLabel)"],
    )
    .await?;
    ensure!(
        Api::<Pod>::namespaced(eu_west.clone(), NS)
            .get_opt("root")
            .await?
            .is_none(),
        "the privileged Pod reached the runtime"
    );
    ensure!(
        Api::<Service>::namespaced(eu_west.clone(), NS)
            .get_opt("hijack")
            .await?
            .is_none(),
        "the Service with externalIPs reached the runtime"
    );
    ensure!(
        Api::<ConfigMap>::namespaced(eu_west.clone(), NS)
            .get_opt("relabel")
            .await?
            .is_none(),
        "the relabelling ConfigMap reached the runtime"
    );
    let labels = runtime_namespace_labels(env, NS).await?;
    for (key, value) in [
        ("pod-security.kubernetes.io/enforce", "baseline"),
        ("qleetos.io/tenant", NS),
        ("app.kubernetes.io/managed-by", "qleetos"),
    ] {
        ensure!(
            labels.get(key).map(String::as_str) == Some(value),
            "runtime namespace {NS} lacks {key}={value}: {labels:?}"
        );
    }

    ensure_namespace(&client, PRIVILEGED).await?;
    apply_policy_for(
        &client,
        PRIVILEGED,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": PRIVILEGED},
            "spec": {"namespaces": [PRIVILEGED], "podSecurity": "privileged"}}),
    )
    .await?;
    let trusted = tenant_client(env, PRIVILEGED).await?;
    apply_as(
        &trusted,
        PRIVILEGED,
        &in_region("root", vec![root_pod()], "eu-west-1"),
    )
    .await?;
    wait_ready_within(&client, PRIVILEGED, "root", TIMEOUT).await?;
    ensure!(
        Api::<Pod>::namespaced(eu_west, PRIVILEGED)
            .get_opt("root")
            .await?
            .is_some(),
        "the privileged tenant's Pod is not in the runtime"
    );
    let labels = runtime_namespace_labels(env, PRIVILEGED).await?;
    ensure!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str)
            == Some("privileged"),
        "runtime namespace {PRIVILEGED}: {labels:?}"
    );

    delete_workloads(&client, NS, &["root", "hijack", "relabel"]).await?;
    delete_workloads(&client, PRIVILEGED, &["root"]).await?;
    delete_policy(&client, PRIVILEGED).await?;
    delete_namespaces(&client, &[NS, PRIVILEGED]).await
}

/// When the runtime's tenant guard was made, and when the Service it should have refused:
/// what tells a guard that is missing from one that came too late.
async fn guard_report(env: &Environment, ns: &str, service: &str) -> Result<String> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    let created = |meta: &kube::api::ObjectMeta| {
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    };
    let policy = Api::<ValidatingAdmissionPolicy>::all(eu_west.clone())
        .get_opt("qleetos-tenant-guard")
        .await?
        .map(|p| format!("created {}, status {:?}", created(&p.metadata), p.status));
    let binding = Api::<ValidatingAdmissionPolicyBinding>::all(eu_west.clone())
        .get_opt("qleetos-tenant-guard")
        .await?
        .map(|b| format!("created {}", created(&b.metadata)));
    let applied = Api::<Service>::namespaced(eu_west, ns)
        .get_opt(service)
        .await?
        .map(|s| format!("created {}", created(&s.metadata)));
    Ok(format!(
        "on eu-west: ValidatingAdmissionPolicy qleetos-tenant-guard: {policy:?}; binding: \
         {binding:?}; Service {ns}/{service}: {applied:?}"
    ))
}

/// No RoleBinding `qleetos-tenant` was made in runtime namespace `ns` on any runtime.
async fn no_tenant_binding(env: &Environment, ns: &str) -> Result<()> {
    for (spec, cluster) in &env.runtimes {
        let bindings: Api<RoleBinding> = Api::namespaced(cluster.client().await?, ns);
        ensure!(
            bindings.get_opt("qleetos-tenant").await?.is_none(),
            "a qleetos-tenant RoleBinding was made in {ns} on {}",
            spec.name
        );
    }
    Ok(())
}

/// No ConfigMap `name` in runtime namespace `ns` on any runtime.
async fn no_config_map(env: &Environment, ns: &str, name: &str) -> Result<()> {
    for (spec, cluster) in &env.runtimes {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await?, ns);
        ensure!(
            maps.get_opt(name).await?.is_none(),
            "ConfigMap {ns}/{name} reached {}",
            spec.name
        );
    }
    Ok(())
}

/// A support-service profile's namespace, and a namespace QleetOS did not make for the
/// tenant, are never a tenant's: not as the namespace named like its management namespace,
/// not through a pattern of its policy, not through an exact entry (TargetNamespace,
/// NamespaceOwner), and no tenant RoleBinding is made there.
pub async fn support_and_foreign_namespaces_are_never_tenant_targets(
    env: &Environment,
) -> Result<()> {
    const DNS_SUPPORT: &str = "external-dns";
    const TLS_SUPPORT: &str = "cert-manager";
    const PATTERN: &str = "ht-c";
    const EXACT: &str = "ht-fo";
    const FOREIGN: &str = "ht-foreign";
    const SQUAT: &str = "ht-squat";
    let client = env.management_client().await?;
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    // The shared environment has no support services: profiles of its own make these two
    // namespaces ones QleetOS installs into (nothing needs their capabilities, so nothing is).
    let profiles: Api<SupportServiceProfile> = Api::all(client.clone());
    for (name, namespace) in [
        ("ht-reserved-dns", DNS_SUPPORT),
        ("ht-reserved-tls", TLS_SUPPORT),
    ] {
        let mut reserved = profile(
            name,
            name,
            false,
            json!([config_map(&format!("{name}-marker"), None)]),
        );
        reserved["spec"]["namespace"] = json!(namespace);
        apply_profile(&client, &reserved).await?;
        eventually(&format!("profile {name} seen"), TIMEOUT, || async {
            let found = profiles.get(name).await?;
            let seen = found.status.as_ref().and_then(|s| s.observed_generation);
            Ok((seen.is_some() && seen == found.metadata.generation).then_some(()))
        })
        .await?;
    }
    let runtime_namespaces: Api<Namespace> = Api::all(eu_west.clone());
    for (name, labels) in [
        (FOREIGN, json!({})),
        (SQUAT, json!({"qleetos.io/tenant": "ht-squat-elsewhere"})),
    ] {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}});
        runtime_namespaces
            .patch(
                name,
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&namespace),
            )
            .await?;
    }

    settings_refused(env, DNS_SUPPORT, None, None, &["(TargetNamespace)"]).await?;

    settings_refused(
        env,
        PATTERN,
        Some(json!(["$(namespace)", "c*"])),
        Some(TLS_SUPPORT),
        &["(TargetNamespace)", TLS_SUPPORT],
    )
    .await?;

    settings_refused(
        env,
        EXACT,
        Some(json!([FOREIGN])),
        Some(FOREIGN),
        &["(NamespaceOwner)", FOREIGN],
    )
    .await?;

    settings_refused(env, SQUAT, None, None, &["(NamespaceOwner)", SQUAT]).await?;

    for ns in [DNS_SUPPORT, TLS_SUPPORT, FOREIGN, SQUAT] {
        no_tenant_binding(env, ns).await?;
        no_config_map(env, ns, "settings").await?;
    }
    let squatted = runtime_namespaces.get(SQUAT).await?;
    ensure!(
        squatted
            .labels()
            .get("qleetos.io/tenant")
            .map(String::as_str)
            == Some("ht-squat-elsewhere"),
        "the foreign namespace was relabelled: {:?}",
        squatted.labels()
    );

    delete_workloads(&client, DNS_SUPPORT, &["settings"]).await?;
    delete_workloads(&client, PATTERN, &["settings"]).await?;
    delete_workloads(&client, EXACT, &["settings"]).await?;
    delete_workloads(&client, SQUAT, &["settings"]).await?;
    delete_policy(&client, PATTERN).await?;
    delete_policy(&client, EXACT).await?;
    for name in ["ht-reserved-dns", "ht-reserved-tls"] {
        delete_profile(&client, name).await?;
    }
    for name in [FOREIGN, SQUAT] {
        runtime_namespaces
            .delete(name, &DeleteParams::default())
            .await?;
    }
    delete_namespaces(&client, &[DNS_SUPPORT, PATTERN, EXACT, SQUAT]).await
}

/// Management namespace `ns` (with a TenantPolicy of its own listing `target_namespaces`,
/// when given) has its tenant apply a Workload with ConfigMap `settings` into runtime
/// namespace `target` (its own when `None`), which must be refused `TenancyViolation` with
/// every one of `expected` in the message.
async fn settings_refused(
    env: &Environment,
    ns: &str,
    target_namespaces: Option<Value>,
    target: Option<&str>,
    expected: &[&str],
) -> Result<()> {
    let client = env.management_client().await?;
    ensure_namespace(&client, ns).await?;
    if let Some(targets) = target_namespaces {
        let policy = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": ns},
            "spec": {"namespaces": [ns], "targetNamespaces": targets}});
        apply_policy_for(&client, ns, policy).await?;
    }
    let tenant = tenant_client(env, ns).await?;
    let settings = vec![config_map("settings", target)];
    apply_as(&tenant, ns, &in_region("settings", settings, "eu-west-1")).await?;
    refused(&client, ns, "settings", "TenancyViolation", expected).await?;
    Ok(())
}

/// With no TenantPolicy a namespace gets the safe default: no cluster on demand, no host,
/// no inline Secret, and nothing of a refused Workload reaches a runtime; a policy allowing
/// inline Secrets lets the same Secret through.
pub async fn no_policy_means_no_provisioning_and_no_hosts(env: &Environment) -> Result<()> {
    const NS: &str = "ht-nopol";
    const INLINE_POLICY: &str = "ht-nopol-inline-secrets";
    const PROFILE: &str = "ht-noprov";
    const REGION: &str = "ht-local-9";
    let client = env.management_client().await?;
    crate::provisioning::apply_runtime_profile(
        &client,
        &crate::provisioning::local_profile(PROFILE, REGION, 1),
    )
    .await?;
    ensure_namespace(&client, NS).await?;
    let tenant = tenant_client(env, NS).await?;

    let mut grow = workload(
        "grow",
        vec![config_map("grow", None)],
        json!({"regions": [REGION], "provision": "IfNeeded"}),
    );
    grow["spec"]["placement"]["runtimeProfile"] = json!(PROFILE);
    apply_as(&tenant, NS, &grow).await?;
    let mut site = in_region("site", web_manifests(1, "nginx:1.27"), "eu-west-1");
    site["spec"]["expose"] =
        json!({"hosts": ["ht-nopol.qleetos.test"], "service": {"name": "web", "port": 80}});
    apply_as(&tenant, NS, &site).await?;
    let secret = |password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials"},
            "type": "Opaque", "stringData": {"password": password}})
    };
    apply_as(
        &tenant,
        NS,
        &in_region("secret", vec![secret("hunter2")], "eu-west-1"),
    )
    .await?;

    refused(
        &client,
        NS,
        "grow",
        "TenancyViolation",
        &["may not provision clusters"],
    )
    .await?;
    refused(
        &client,
        NS,
        "site",
        "TenancyViolation",
        &["may not use host ht-nopol.qleetos.test", "(Host)"],
    )
    .await?;
    refused(
        &client,
        NS,
        "secret",
        "TenancyViolation",
        &["(InlineSecret)"],
    )
    .await?;
    let runtimes = Api::<KubernetesRuntime>::all(client.clone())
        .list(&Default::default())
        .await?
        .items;
    let provisioned: Vec<String> = runtimes
        .iter()
        .filter(|r| r.spec.region == REGION)
        .map(|r| r.name_any())
        .collect();
    ensure!(
        provisioned.is_empty(),
        "runtimes were made for a tenant that may not provision: {provisioned:?}"
    );
    nothing_in_runtimes(env, NS).await?;

    apply_policy_for(
        &client,
        NS,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": INLINE_POLICY},
            "spec": {"namespaces": [NS], "allowInlineSecrets": true}}),
    )
    .await?;
    apply_as(
        &tenant,
        NS,
        &in_region("secret", vec![secret("correct horse")], "eu-west-1"),
    )
    .await?;
    wait_ready_within(&client, NS, "secret", TIMEOUT).await?;
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    let applied = Api::<Secret>::namespaced(eu_west, NS)
        .get("credentials")
        .await?;
    let password = applied
        .data
        .unwrap_or_default()
        .get("password")
        .map(|p| p.0.clone());
    ensure!(
        password.as_deref() == Some(b"correct horse".as_slice()),
        "the allowed Secret holds {password:?}"
    );

    delete_workloads(&client, NS, &["grow", "site", "secret"]).await?;
    delete_policy(&client, INLINE_POLICY).await?;
    crate::provisioning::delete_runtime_profile(&client, PROFILE).await?;
    delete_namespaces(&client, &[NS]).await
}

/// A policy's limits cap what a tenant asks for: too many manifests are refused whole; of
/// more placements than allowed, one is served and the other refused.
pub async fn limits_cap_a_tenant(env: &Environment) -> Result<()> {
    const NS: &str = "ht-limits";
    let client = env.management_client().await?;
    ensure_namespace(&client, NS).await?;
    apply_policy_for(
        &client,
        NS,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": NS},
            "spec": {"namespaces": [NS], "limits": {"maxManifests": 2, "maxPlacements": 1}}}),
    )
    .await?;
    let tenant = tenant_client(env, NS).await?;
    let three = (1..=3)
        .map(|i| config_map(&format!("many-{i}"), None))
        .collect();
    apply_as(&tenant, NS, &in_region("many", three, "eu-west-1")).await?;
    refused(&client, NS, "many", "LimitExceeded", &["maxManifests"]).await?;
    nothing_in_runtimes(env, NS).await?;
    delete_workloads(&client, NS, &["many"]).await?;

    let two = vec![config_map("spread-1", None), config_map("spread-2", None)];
    apply_as(
        &tenant,
        NS,
        &workload(
            "spread",
            two,
            json!({"regions": ["eu-west-1", "us-east-1"]}),
        ),
    )
    .await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let (served, capped) = eventually(
        "one placement served and one LimitExceeded",
        TIMEOUT,
        || async {
            let found = workloads.get("spread").await?;
            let status = found.status.clone().unwrap_or_default();
            ensure!(
                status.observed_generation == found.metadata.generation,
                "status of an older generation"
            );
            let ready: Vec<_> = status.placements.iter().filter(|p| p.ready).collect();
            let capped: Vec<_> = status
                .placements
                .iter()
                .filter(|p| !p.ready && p.reason == "LimitExceeded")
                .collect();
            match (ready.as_slice(), capped.as_slice()) {
                ([ready], [capped]) if status.placements.len() == 2 => {
                    Ok(Some(((*ready).clone(), (*capped).clone())))
                }
                _ => bail!("placements: {:?}", status.placements),
            }
        },
    )
    .await?;
    ensure!(
        capped.message.contains("maxPlacements"),
        "LimitExceeded message: {}",
        capped.message
    );
    let served_on = env.runtime(&served.runtime).context("served runtime")?;
    let capped_on = env.runtime(&capped.runtime).context("capped runtime")?;
    for name in ["spread-1", "spread-2"] {
        ensure!(
            Api::<ConfigMap>::namespaced(served_on.client().await?, NS)
                .get_opt(name)
                .await?
                .is_some(),
            "{name} missing on {}",
            served.runtime
        );
        ensure!(
            Api::<ConfigMap>::namespaced(capped_on.client().await?, NS)
                .get_opt(name)
                .await?
                .is_none(),
            "{name} reached {}, over the limit",
            capped.runtime
        );
    }

    delete_workloads(&client, NS, &["spread"]).await?;
    delete_policy(&client, NS).await?;
    delete_namespaces(&client, &[NS]).await
}
