//! The NATS JetStream wire format shared by every publisher (operator watchers, the gateway)
//! and the Qleets consuming it. A notification is only a pointer: the consumer reads the
//! current object from the Kubernetes API.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::{Deserialize, Serialize};

/// Prefix of every work subject: `qleetos.work.<kind>.<namespace or _>.<name>`.
pub const SUBJECT_PREFIX: &str = "qleetos.work";
/// JetStream key-value bucket holding the per-object reconcile locks.
pub const LOCK_BUCKET: &str = "qleetos-locks";

/// Declares the kinds a Qleet reconciles, once: the [`QleetKind`] enum, its tokens, the
/// [`Queued`] link from each custom resource type to its kind, and their CRDs.
macro_rules! qleet_kinds {
    ($($kind:ident => $token:literal,)+) => {
        /// The QleetOS kinds a Qleet reconciles, each with its own durable work queue;
        /// streams, consumers and subjects derive from it.
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum QleetKind {
            $($kind,)+
        }

        impl QleetKind {
            pub const ALL: &[QleetKind] = &[$(Self::$kind,)+];

            /// Lower-case token used in subjects, consumer names and lock keys.
            pub fn token(self) -> &'static str {
                match self {
                    $(Self::$kind => $token,)+
                }
            }
        }

        $(impl Queued for crate::$kind {
            const QLEET: QleetKind = QleetKind::$kind;
        })+

        /// The CRDs of every kind a Qleet reconciles.
        pub fn qleet_crds() -> Vec<CustomResourceDefinition> {
            vec![$(<crate::$kind as kube::CustomResourceExt>::crd(),)+]
        }
    };
}

/// A custom resource a Qleet reconciles: which work queue its notifications go to.
pub trait Queued {
    const QLEET: QleetKind;
}

// Adding a kind a Qleet reconciles is one line here (and its Qleet's registration).
qleet_kinds! {
    KubernetesRuntime => "kubernetesruntime",
    Workload => "workload",
    WorkloadInstance => "workloadinstance",
    SupportServiceProfile => "supportserviceprofile",
    SupportService => "supportservice",
    ServiceProfile => "serviceprofile",
    WorkloadServiceDependency => "workloadservicedependency",
    KubernetesRuntimeProfile => "kubernetesruntimeprofile",
    TenantPolicy => "tenantpolicy",
    WorkloadPlan => "workloadplan",
}

impl QleetKind {
    /// The work-queue stream of this kind, e.g. `QLEETOS_WORKLOAD`.
    pub fn stream(self) -> String {
        format!("QLEETOS_{}", self.token().to_ascii_uppercase())
    }

    /// The durable consumer every replica of the Qleet pulls from.
    pub fn consumer(self) -> String {
        format!("qleet-{}", self.token())
    }

    /// Subjects of the kind's stream.
    pub fn subjects(self) -> String {
        format!("{SUBJECT_PREFIX}.{}.>", self.token())
    }
}

/// Why a notification was sent; part of the message id so different causes never dedupe
/// each other away.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Cause {
    /// The object changed (any writer: kubectl, Helm, the gateway, another Qleet).
    Change,
    /// Periodic resync, numbered by resync period so every replica's resync dedupes.
    Resync { period: u64 },
    /// Periodic runtime probe, numbered by probe period.
    Probe { period: u64 },
    /// An object the instance applied in a runtime changed; `object` is its uid and
    /// resourceVersion there.
    Drift { runtime: String, object: String },
    /// Another object this one reacts to changed (an owned instance, a runtime, a Secret);
    /// `object` names it with its uid and resourceVersion.
    Related { object: String },
}

impl Cause {
    /// What kind of trigger it is, for logs and spans: `change`, `resync`, `probe`, `drift`
    /// or `related`.
    pub fn label(&self) -> &'static str {
        match self {
            Cause::Change => "change",
            Cause::Resync { .. } => "resync",
            Cause::Probe { .. } => "probe",
            Cause::Drift { .. } => "drift",
            Cause::Related { .. } => "related",
        }
    }
}

/// "Reconcile this object": kind, namespace, name, uid and the resourceVersion seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub kind: QleetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub cause: Cause,
}

impl Notification {
    /// `qleetos.work.<kind>.<namespace or _>.<name>`, with dots in names written as `_`
    /// (never part of a Kubernetes name), so each name stays one subject token.
    pub fn subject(&self) -> String {
        let namespace = self.namespace.as_deref().unwrap_or("_");
        format!(
            "{SUBJECT_PREFIX}.{}.{namespace}.{}",
            self.kind.token(),
            self.name.replace('.', "_")
        )
    }

    /// JetStream `Nats-Msg-Id`: one change is one message, whoever publishes it.
    pub fn message_id(&self) -> String {
        match &self.cause {
            Cause::Change => format!("{}:{}", self.uid, self.resource_version),
            Cause::Resync { period } => format!("{}:resync:{period}", self.uid),
            Cause::Probe { period } => format!("{}:probe:{period}", self.uid),
            Cause::Drift { runtime, object } => format!("{}:drift:{runtime}:{object}", self.uid),
            Cause::Related { object } => format!("{}:related:{object}", self.uid),
        }
    }

    /// Lock key of the object: kind and uid.
    pub fn lock_key(&self) -> String {
        format!("{}.{}", self.kind.token(), self.uid)
    }
}

/// `url` (one NATS URL or a comma-separated list) with the user information of each server
/// (`user:password@`, `token@`) replaced by `***@`: the form logs and Debug output show.
/// The servers of a NATS URL list (`nats://a:4222,nats://b:4222`): clients connect to any
/// and fail over to the others.
pub fn server_urls(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    let authority = &url[start..start + authority_len];
    match authority.rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// A password or token: usable as a flag value, shown as `<redacted>` by Debug.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Sensitive {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// How the operator and the gateway authenticate to NATS (all optional, combinable with TLS).
/// With the `cli` feature it is also the binaries' `--nats-*` flags (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct NatsAuth {
    /// NATS user name (with --nats-password).
    #[cfg_attr(
        feature = "cli",
        arg(long = "nats-user", env = "QLEETOS_NATS_USER", requires = "password")
    )]
    pub user: Option<String>,
    /// NATS password of --nats-user.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "nats-password",
            env = "QLEETOS_NATS_PASSWORD",
            requires = "user",
            hide_env_values = true
        )
    )]
    pub password: Option<Sensitive>,
    /// NATS authentication token.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "nats-token",
            env = "QLEETOS_NATS_TOKEN",
            conflicts_with = "user",
            hide_env_values = true
        )
    )]
    pub token: Option<Sensitive>,
    /// NATS credentials file (.creds: user JWT and NKey seed), when the server requires one.
    #[cfg_attr(feature = "cli", arg(long = "nats-creds", env = "QLEETOS_NATS_CREDS"))]
    pub credentials_file: Option<std::path::PathBuf>,
    /// CA certificate to verify a TLS NATS server (enables TLS).
    #[cfg_attr(
        feature = "cli",
        arg(long = "nats-tls-ca", env = "QLEETOS_NATS_TLS_CA")
    )]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl NatsAuth {
    /// Moves the `user:password@` or `token@` of the server URL(s) into these credentials
    /// and returns the URL(s) without them: async-nats ignores credentials in URLs, and
    /// keeping them there would put them into its debug logs. Credentials set explicitly
    /// win over the URL's.
    pub fn take_url_credentials(mut self, url: &str) -> (String, NatsAuth) {
        let mut found = None;
        let servers: Vec<String> = url
            .split(',')
            .map(|server| {
                let (clean, userinfo) = split_userinfo(server);
                found = found.take().or(userinfo);
                clean
            })
            .collect();
        let explicit = self.user.is_some() || self.token.is_some();
        match found {
            Some(userinfo) if !explicit => match userinfo.split_once(':') {
                Some((user, password)) => {
                    self.user = Some(percent_decoded(user));
                    self.password = Some(Sensitive::new(percent_decoded(password)));
                }
                None => self.token = Some(Sensitive::new(percent_decoded(userinfo))),
            },
            _ => {}
        }
        (servers.join(","), self)
    }
}

/// One server URL without its user information, and that user information.
fn split_userinfo(url: &str) -> (String, Option<&str>) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    match url[start..start + authority_len].rfind('@') {
        Some(at) => (
            format!("{}{}", &url[..start], &url[start + at + 1..]),
            Some(&url[start..start + at]),
        ),
        None => (url.to_owned(), None),
    }
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_list_splits_on_commas() {
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4222,,"),
            ["nats://a:4222", "nats://b:4222"]
        );
        assert_eq!(server_urls("nats://a:4222"), ["nats://a:4222"]);
    }

    #[test]
    fn redact_url_hides_user_information_only() {
        assert_eq!(
            redact_url("nats://qleet:hunter2@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(
            redact_url("tls://s3cr3t@nats:4222/x"),
            "tls://***@nats:4222/x"
        );
        assert_eq!(redact_url("nats://nats:4222"), "nats://nats:4222");
        assert_eq!(redact_url("user:pw@localhost:4222"), "***@localhost:4222");
        assert_eq!(
            redact_url("nats://a:b@n1:4222,nats://n2:4222,nats://t@n3"),
            "nats://***@n1:4222,nats://n2:4222,nats://***@n3"
        );
        assert_eq!(redact_url("nats://n:4222/p@th"), "nats://n:4222/p@th");
    }

    #[test]
    fn url_credentials_move_into_the_auth() {
        let (url, auth) =
            NatsAuth::default().take_url_credentials("nats://qleet:p%40ss@n1:4222,nats://n2");
        assert_eq!(url, "nats://n1:4222,nats://n2");
        assert_eq!(auth.user.as_deref(), Some("qleet"));
        assert_eq!(auth.password.as_ref().map(Sensitive::expose), Some("p@ss"));
        let (url, auth) = NatsAuth::default().take_url_credentials("tls://s3cr3t@nats:4222");
        assert_eq!(url, "tls://nats:4222");
        assert_eq!(auth.token.as_ref().map(Sensitive::expose), Some("s3cr3t"));
        let explicit = NatsAuth {
            token: Some(Sensitive::new("flag")),
            ..NatsAuth::default()
        };
        let (url, auth) = explicit.take_url_credentials("nats://u:p@nats");
        assert_eq!(url, "nats://nats");
        assert_eq!(auth.token.as_ref().map(Sensitive::expose), Some("flag"));
        assert_eq!(auth.user, None);
        let (url, auth) = NatsAuth::default().take_url_credentials("nats://nats:4222");
        assert_eq!(
            (url.as_str(), auth),
            ("nats://nats:4222", NatsAuth::default())
        );
    }

    #[test]
    fn sensitive_values_never_show_in_debug() {
        let auth = NatsAuth {
            user: Some("qleet".into()),
            password: Some("hunter2".parse().expect("infallible")),
            token: Some(Sensitive::new("t0ken")),
            ..NatsAuth::default()
        };
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(
            debug.contains("<redacted>") && debug.contains("qleet"),
            "{debug}"
        );
        assert_eq!(auth.token.as_ref().map(Sensitive::expose), Some("t0ken"));
    }

    fn notification(cause: Cause) -> Notification {
        Notification {
            kind: QleetKind::Workload,
            namespace: Some("team-a".into()),
            name: "web.v2".into(),
            uid: "u1".into(),
            resource_version: "42".into(),
            cause,
        }
    }

    #[test]
    fn subject_keeps_name_one_token() {
        assert_eq!(
            notification(Cause::Change).subject(),
            "qleetos.work.workload.team-a.web_v2"
        );
        let mut runtime = notification(Cause::Change);
        runtime.kind = QleetKind::KubernetesRuntime;
        runtime.namespace = None;
        assert_eq!(runtime.subject(), "qleetos.work.kubernetesruntime._.web_v2");
    }

    #[test]
    fn message_ids_dedupe_one_change_but_not_different_causes() {
        assert_eq!(notification(Cause::Change).message_id(), "u1:42");
        assert_eq!(
            notification(Cause::Resync { period: 7 }).message_id(),
            "u1:resync:7"
        );
        let drift = Cause::Drift {
            runtime: "eu".into(),
            object: "o1:9".into(),
        };
        assert_eq!(notification(drift).message_id(), "u1:drift:eu:o1:9");
    }

    #[test]
    fn round_trips_as_json() {
        let n = notification(Cause::Resync { period: 3 });
        let text = serde_json::to_string(&n).expect("serialises");
        assert_eq!(
            serde_json::from_str::<Notification>(&text).expect("parses"),
            n
        );
    }
}
