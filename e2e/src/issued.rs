//! What a certificate a component issued says: read back from the PEM of a `tls.crt`.

use x509_parser::extensions::GeneralName;

use crate::error::Error;

/// The facts of one issued certificate a test or a summary checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub dns_names: Vec<String>,
    /// The issuer's distinguished name, e.g. `CN=QleetOS local CA (eu-west)`.
    pub issuer: String,
    /// End of validity, RFC 2822.
    pub not_after: String,
    pub valid_now: bool,
}

impl IssuedCertificate {
    /// The first certificate of `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let unreadable = |what: &str| Error::UnreadableCertificate(what.to_owned());
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| unreadable("not PEM"))?;
        let certificate = pem
            .parse_x509()
            .map_err(|_| unreadable("not an X.509 certificate"))?;
        let dns_names = certificate
            .subject_alternative_name()
            .map_err(|_| unreadable("malformed subject alternative names"))?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let validity = certificate.validity();
        Ok(Self {
            dns_names,
            issuer: certificate.issuer().to_string(),
            not_after: validity
                .not_after
                .to_rfc2822()
                .unwrap_or_else(|_| validity.not_after.to_string()),
            valid_now: validity.is_valid(),
        })
    }
}
