//! Rendering of self-contained kubeconfig files (certificates embedded inline).

use k8s_openapi::ByteString;
use serde::Serialize;

use crate::error::Error;

#[derive(Serialize)]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<'a, ClusterEntry<'a>>; 1],
    users: [Named<'a, UserEntry>; 1],
    contexts: [Named<'a, ContextEntry<'a>>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    entry: T,
}

#[derive(Serialize)]
struct ClusterEntry<'a> {
    cluster: ClusterData<'a>,
}

#[derive(Serialize)]
struct ClusterData<'a> {
    server: &'a str,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: ByteString,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserData,
}

#[derive(Serialize)]
struct UserData {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: ByteString,
    #[serde(rename = "client-key-data")]
    client_key_data: ByteString,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: ContextData<'a>,
}

#[derive(Serialize)]
struct ContextData<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// PEM material and address for a client-certificate kubeconfig.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CertKubeconfig<'a> {
    /// Used as the cluster, user and context name.
    pub name: &'a str,
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
}

impl CertKubeconfig<'_> {
    pub(crate) fn to_yaml(self) -> Result<String, Error> {
        let bytes = |pem: &str| ByteString(pem.as_bytes().to_vec());
        let config = Kubeconfig {
            api_version: "v1",
            kind: "Config",
            clusters: [Named {
                name: self.name,
                entry: ClusterEntry {
                    cluster: ClusterData {
                        server: self.server,
                        certificate_authority_data: bytes(self.ca_pem),
                    },
                },
            }],
            users: [Named {
                name: self.name,
                entry: UserEntry {
                    user: UserData {
                        client_certificate_data: bytes(self.client_cert_pem),
                        client_key_data: bytes(self.client_key_pem),
                    },
                },
            }],
            contexts: [Named {
                name: self.name,
                entry: ContextEntry {
                    context: ContextData {
                        cluster: self.name,
                        user: self.name,
                    },
                },
            }],
            current_context: self.name,
        };
        Ok(serde_norway::to_string(&config)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kube_rs_parses_it() {
        let yaml = CertKubeconfig {
            name: "c1",
            server: "https://127.0.0.1:6443",
            ca_pem: "ca",
            client_cert_pem: "cert",
            client_key_pem: "key",
        }
        .to_yaml()
        .unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("c1"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Y2E="));
    }
}
