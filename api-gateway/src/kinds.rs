//! The QleetOS kinds the gateway serves and where.

use kube::Resource;
use qleetos_crds::notification::QleetKind;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, Workload, WorkloadInstance, WorkloadServiceDependency,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind served as a JSON resource mirroring its CRD.
pub trait GatewayKind:
    Resource<DynamicType = ()> + JsonSchema + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Which Qleet reconciles it (for notifications).
    const QLEET: QleetKind;
    /// The gateway collection path, with `{namespace}` for namespaced kinds.
    const COLLECTION: &'static str;
}

impl GatewayKind for Workload {
    const QLEET: QleetKind = QleetKind::Workload;
    const COLLECTION: &'static str = "/v1/namespaces/{namespace}/workloads";
}

impl GatewayKind for WorkloadInstance {
    const QLEET: QleetKind = QleetKind::WorkloadInstance;
    const COLLECTION: &'static str = "/v1/namespaces/{namespace}/workloadinstances";
}

impl GatewayKind for KubernetesRuntime {
    const QLEET: QleetKind = QleetKind::KubernetesRuntime;
    const COLLECTION: &'static str = "/v1/runtimes";
}

impl GatewayKind for SupportServiceProfile {
    const QLEET: QleetKind = QleetKind::SupportServiceProfile;
    const COLLECTION: &'static str = "/v1/supportserviceprofiles";
}

impl GatewayKind for SupportService {
    const QLEET: QleetKind = QleetKind::SupportService;
    const COLLECTION: &'static str = "/v1/supportservices";
}

impl GatewayKind for ServiceProfile {
    const QLEET: QleetKind = QleetKind::ServiceProfile;
    const COLLECTION: &'static str = "/v1/serviceprofiles";
}

impl GatewayKind for WorkloadServiceDependency {
    const QLEET: QleetKind = QleetKind::WorkloadServiceDependency;
    const COLLECTION: &'static str = "/v1/namespaces/{namespace}/workloadservicedependencies";
}

impl GatewayKind for KubernetesRuntimeProfile {
    const QLEET: QleetKind = QleetKind::KubernetesRuntimeProfile;
    const COLLECTION: &'static str = "/v1/runtimeprofiles";
}

/// `true` for kinds living in a namespace.
pub fn is_namespaced<K: GatewayKind>() -> bool {
    K::COLLECTION.contains("{namespace}")
}
