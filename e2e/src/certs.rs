//! Certificates and keys of one test cluster, generated with rcgen (ECDSA P-256).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::Error;

/// Common name of the admin client certificate.
pub const ADMIN_USER: &str = "qleetos-admin";
/// Group of the admin client certificate; bound to cluster-admin by default.
pub const ADMIN_GROUP: &str = "system:masters";

/// Subject alternative names of the kube-apiserver serving certificate.
const SERVING_SANS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// PEM-encoded certificates and keys of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterCerts {
    pub ca_cert: String,
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// PKCS#8 private key that signs service-account tokens.
    pub service_account_key: String,
    /// Public half of `service_account_key` (SubjectPublicKeyInfo PEM).
    pub service_account_pub: String,
}

/// Where [`ClusterCerts::write_to`] put each file.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl ClusterCerts {
    /// Generates a fresh CA for `cluster_name` and everything signed by it.
    pub fn generate(cluster_name: &str) -> Result<Self, Error> {
        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params(cluster_name);
        let ca_cert = ca_params.self_signed(&ca_key)?.pem();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let serving = leaf(
            serving_params()?,
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (serving_cert, serving_key) = sign(serving, &issuer)?;
        let admin = leaf(
            CertificateParams::default(),
            ADMIN_USER,
            Some(ADMIN_GROUP),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (admin_cert, admin_key) = sign(admin, &issuer)?;
        let sa_key = KeyPair::generate()?;

        Ok(ClusterCerts {
            ca_cert,
            ca_key: ca_key_pem,
            serving_cert,
            serving_key,
            admin_cert,
            admin_key,
            service_account_key: sa_key.serialize_pem(),
            service_account_pub: sa_key.public_key_pem(),
        })
    }

    /// Writes every PEM file into `dir` (private keys with mode 0600).
    pub fn write_to(&self, dir: &Path) -> Result<CertPaths, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        let write = |name: &str, pem: &str, private: bool| -> Result<PathBuf, Error> {
            let path = dir.join(name);
            write_pem(&path, pem, private)?;
            Ok(path)
        };
        Ok(CertPaths {
            ca_cert: write("ca.crt", &self.ca_cert, false)?,
            ca_key: write("ca.key", &self.ca_key, true)?,
            serving_cert: write("apiserver.crt", &self.serving_cert, false)?,
            serving_key: write("apiserver.key", &self.serving_key, true)?,
            admin_cert: write("admin.crt", &self.admin_cert, false)?,
            admin_key: write("admin.key", &self.admin_key, true)?,
            service_account_key: write("sa.key", &self.service_account_key, true)?,
            service_account_pub: write("sa.pub", &self.service_account_pub, false)?,
        })
    }
}

pub(crate) fn ca_params(cluster_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("qleetos-{cluster_name}-ca"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn serving_params() -> Result<CertificateParams, Error> {
    let sans: Vec<String> = SERVING_SANS.iter().map(|s| (*s).to_owned()).collect();
    Ok(CertificateParams::new(sans)?)
}

pub(crate) fn leaf(
    mut params: CertificateParams,
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params
}

pub(crate) fn sign(
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(crate) fn write_pem(path: &Path, pem: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| Error::io("cannot write", path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_material() {
        let certs = ClusterCerts::generate("unit").unwrap();
        assert!(certs.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.admin_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(
            certs
                .service_account_pub
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );

        let dir = tempfile::tempdir().unwrap();
        let paths = certs.write_to(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(paths.ca_cert).unwrap(),
            certs.ca_cert
        );
    }
}
