//! `LocalConfig`: the bootstrap-config contract of Cluster API v1beta2. Fake nodes boot
//! nothing, so the data Secret holds a placeholder script.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::status::{merge, object, owned_by, true_condition};
use super::{CLUSTER_NAME_LABEL, ClusterKey, Context, FIELD_MANAGER, LOCAL_CONFIG, WAIT};
use crate::error::Error;

const BOOTSTRAP_DATA: &str =
    "#!/bin/sh\n# qleetos-local: kwok simulates this node; nothing to bootstrap\n";

/// Writes Secret `<config name>` (key `value`, owned by the config) and reports it. The
/// Secret goes away with the config through garbage collection.
pub(super) async fn reconcile(
    obj: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(key) = ClusterKey::of(&obj) else {
        return Ok(Action::requeue(WAIT));
    };
    let name = obj.name_any();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some([(CLUSTER_NAME_LABEL.to_owned(), key.name.clone())].into()),
            owner_references: Some(vec![owned_by(LOCAL_CONFIG, &obj)]),
            ..ObjectMeta::default()
        },
        type_: Some("cluster.x-k8s.io/secret".to_owned()),
        data: Some(
            [
                ("value".to_owned(), ByteString(BOOTSTRAP_DATA.into())),
                ("format".to_owned(), ByteString("cloud-config".into())),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(context.client.clone(), &key.namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;

    let status = json!({
        "initialization": {"dataSecretCreated": true},
        "dataSecretName": name,
        "conditions": [true_condition(&obj, "Ready", "DataSecretAvailable")],
    });
    merge(&context, LOCAL_CONFIG, &obj, "status", object(status)).await?;
    Ok(Action::await_change())
}
