//! The QleetOS kinds the gateway serves and where: one table (`gateway_kinds!`). Adding a
//! row serves the kind's routes and documents them.

use kube::Resource;
use qleetos_crds::notification::Queued;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, Workload, WorkloadInstance, WorkloadServiceDependency,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind served as a JSON resource mirroring its CRD.
/// Which Qleet reconciles it (for notifications) comes from the kind table of the CRDs
/// ([`Queued`]).
pub trait GatewayKind:
    Resource<DynamicType = ()>
    + Queued
    + JsonSchema
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The gateway collection path, with `{namespace}` for namespaced kinds.
    const COLLECTION: &'static str;
}

/// Something done once per kind, e.g. declaring its routes (`resources::all_kinds`).
pub trait KindVisitor {
    fn visit<K: GatewayKind>(&mut self);
}

/// The kind table: each row implements [`GatewayKind`] and
/// joins [`visit_all`], from which the routes and their documentation are derived.
macro_rules! gateway_kinds {
    ($($kind:ident => $collection:literal,)+) => {
        $(
            impl GatewayKind for $kind {
                const COLLECTION: &'static str = $collection;
            }
        )+

        /// Calls `visitor` with every kind the gateway serves, in the table's order.
        pub fn visit_all(visitor: &mut impl KindVisitor) {
            $(visitor.visit::<$kind>();)+
        }
    };
}

gateway_kinds! {
    Workload => "/v1/namespaces/{namespace}/workloads",
    WorkloadInstance => "/v1/namespaces/{namespace}/workloadinstances",
    KubernetesRuntime => "/v1/runtimes",
    SupportServiceProfile => "/v1/supportserviceprofiles",
    SupportService => "/v1/supportservices",
    ServiceProfile => "/v1/serviceprofiles",
    WorkloadServiceDependency => "/v1/namespaces/{namespace}/workloadservicedependencies",
    KubernetesRuntimeProfile => "/v1/runtimeprofiles",
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collections(Vec<&'static str>);

    impl KindVisitor for Collections {
        fn visit<K: GatewayKind>(&mut self) {
            self.0.push(K::COLLECTION);
        }
    }

    #[test]
    fn the_table_names_each_collection_once() {
        let mut seen = Collections(Vec::new());
        visit_all(&mut seen);
        assert_eq!(seen.0.len(), 8);
        let mut unique = seen.0.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.0.len(), "{:?}", seen.0);
    }
}
