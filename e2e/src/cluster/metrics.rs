//! Resource metrics for a workload cluster that asks for them (`ClusterSpec::metrics`): kwok
//! simulates the pods' CPU and memory use (from annotations, see `assets/kwok-usage.yaml`) and
//! serves it as each node's kubelet resource-metrics endpoint; the real metrics-server
//! scrapes it and serves `metrics.k8s.io` through the API server's aggregation layer, so the
//! real HorizontalPodAutoscaler controller of kube-controller-manager scales on it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};

use super::args::{flag, path_flag};
use crate::certs::{ca_params, leaf, sign, write_pem};
use crate::error::Error;

const KWOK_METRICS: &str = include_str!("../../assets/kwok-metrics.yaml");
const KWOK_USAGE: &str = include_str!("../../assets/kwok-usage.yaml");
/// The name the aggregator checks metrics-server's certificate against.
const METRICS_SERVICE_HOST: &str = "metrics-server.kube-system.svc";
/// The front proxy's client identity towards metrics-server.
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// Ports and files of a cluster's metrics pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub kwok_port: u16,
    pub server_port: u16,
    dir: PathBuf,
    serving_ca_pem: String,
}

impl Metrics {
    /// Writes the certificates (a front-proxy CA and its client; a CA of kwok's and
    /// metrics-server's serving certificates) and kwok's configuration into `dir`.
    pub(crate) fn prepare(dir: &Path, kwok_port: u16, server_port: u16) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        let write = |name: &str, pem: &str, private: bool| write_pem(&dir.join(name), pem, private);
        let proxy_key = KeyPair::generate()?;
        let proxy_params = ca_params("front-proxy");
        write(
            "front-proxy-ca.crt",
            &proxy_params.self_signed(&proxy_key)?.pem(),
            false,
        )?;
        let proxy_ca = Issuer::new(proxy_params, proxy_key);
        let client = leaf(
            CertificateParams::default(),
            FRONT_PROXY_CLIENT,
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (cert, key) = sign(client, &proxy_ca)?;
        write("front-proxy-client.crt", &cert, false)?;
        write("front-proxy-client.key", &key, true)?;
        let serving_key = KeyPair::generate()?;
        let serving_params = ca_params("metrics");
        let serving_ca_pem = serving_params.self_signed(&serving_key)?.pem();
        write("metrics-ca.crt", &serving_ca_pem, false)?;
        let serving_ca = Issuer::new(serving_params, serving_key);
        for (name, sans) in [
            ("kwok", vec!["127.0.0.1", "localhost"]),
            (
                "metrics-server",
                vec![METRICS_SERVICE_HOST, "localhost", "127.0.0.1"],
            ),
        ] {
            let sans: Vec<String> = sans.into_iter().map(str::to_owned).collect();
            let params = leaf(
                CertificateParams::new(sans)?,
                name,
                None,
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            let (cert, key) = sign(params, &serving_ca)?;
            write(&format!("{name}.crt"), &cert, false)?;
            write(&format!("{name}.key"), &key, true)?;
        }
        std::fs::write(dir.join("kwok-metrics.yaml"), KWOK_METRICS)
            .map_err(|e| Error::io("cannot write", dir, e))?;
        std::fs::write(dir.join("kwok-usage.yaml"), KWOK_USAGE)
            .map_err(|e| Error::io("cannot write", dir, e))?;
        Ok(Metrics {
            kwok_port,
            server_port,
            dir: dir.to_path_buf(),
            serving_ca_pem,
        })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// kube-apiserver: authenticate the aggregator's proxied requests to metrics-server.
    pub(crate) fn apiserver_args(&self) -> Vec<OsString> {
        vec![
            path_flag(
                "requestheader-client-ca-file",
                &self.file("front-proxy-ca.crt"),
            ),
            flag("requestheader-allowed-names", FRONT_PROXY_CLIENT),
            flag("requestheader-username-headers", "X-Remote-User"),
            flag("requestheader-group-headers", "X-Remote-Group"),
            flag("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
            path_flag(
                "proxy-client-cert-file",
                &self.file("front-proxy-client.crt"),
            ),
            path_flag(
                "proxy-client-key-file",
                &self.file("front-proxy-client.key"),
            ),
        ]
    }

    /// kube-controller-manager: the HorizontalPodAutoscaler controller looks every 5 s.
    pub(crate) fn controller_manager_args(&self) -> Vec<OsString> {
        vec![flag("horizontal-pod-autoscaler-sync-period", "5s")]
    }

    /// kwok: simulated usage, and each node's kubelet endpoint served over TLS on loopback.
    pub(crate) fn kwok_args(&self) -> Vec<OsString> {
        let port = self.kwok_port.to_string();
        vec![
            path_flag("config", &self.file("kwok-metrics.yaml")),
            path_flag("config", &self.file("kwok-usage.yaml")),
            flag("node-ip", "127.0.0.1"),
            flag("node-port", &port),
            flag("server-address", format!("127.0.0.1:{port}")),
            path_flag("tls-cert-file", &self.file("kwok.crt")),
            path_flag("tls-private-key-file", &self.file("kwok.key")),
        ]
    }

    /// metrics-server, as the cluster admin, scraping kwok every 10 s.
    pub(crate) fn server_args(&self, kubeconfig: &Path) -> Vec<OsString> {
        let ca_cert = self.file("metrics-ca.crt");
        vec![
            flag("bind-address", "127.0.0.1"),
            flag("secure-port", self.server_port.to_string()),
            path_flag("tls-cert-file", &self.file("metrics-server.crt")),
            path_flag("tls-private-key-file", &self.file("metrics-server.key")),
            path_flag("kubeconfig", kubeconfig),
            path_flag("authentication-kubeconfig", kubeconfig),
            path_flag("authorization-kubeconfig", kubeconfig),
            flag("kubelet-preferred-address-types", "InternalIP"),
            OsString::from("--kubelet-use-node-status-port"),
            path_flag("kubelet-certificate-authority", &ca_cert),
            // The resolution must exceed the request timeout, and be 10 s at least.
            flag("metric-resolution", "10s"),
            flag("kubelet-request-timeout", "5s"),
        ]
    }

    /// The Service (an ExternalName to loopback) and APIService that route `metrics.k8s.io`
    /// to metrics-server, its certificate checked against the metrics CA.
    pub(crate) fn api_service(&self) -> [serde_json::Value; 2] {
        let bundle = k8s_openapi::ByteString(self.serving_ca_pem.clone().into_bytes());
        [
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "spec": {"type": "ExternalName", "externalName": "localhost"}}),
            serde_json::json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                    "groupPriorityMinimum": 100, "versionPriority": 100, "caBundle": bundle,
                    "service": {"name": "metrics-server", "namespace": "kube-system",
                                "port": self.server_port}}}),
        ]
    }
}
