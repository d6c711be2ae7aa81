//! Turning a runtime's kubeconfig (the bytes of a Secret key) into a client configuration
//! without ever repeating its content: every problem is a fixed message (a line and column
//! at most), and features that run programs or read the operator's files are refused unless
//! operations allow them.

use kube::Config;
use kube::config::{AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Kubeconfig features operations may allow; everything is refused by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KubeconfigPolicy {
    /// `exec` credential plugins and `auth-provider`s (they run programs in the operator).
    pub allow_exec: bool,
    /// `tokenFile`, `client-certificate`, `client-key` and `certificate-authority` paths
    /// (they read files of the operator's host).
    pub allow_files: bool,
}

/// Where in the YAML a problem is, when the parser knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, " (line {}, column {})", self.line, self.column)?;
        }
        Ok(())
    }
}

/// What is wrong with a kubeconfig, in words that never quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigProblem {
    #[error("is missing (the Secret has no such key)")]
    MissingKey,
    #[error("is not UTF-8 text")]
    NotUtf8,
    #[error("is not valid kubeconfig YAML{0}")]
    NotYaml(Position),
    #[error("mixes documents of different kinds or API versions")]
    MixedDocuments,
    #[error("sets no current-context")]
    NoCurrentContext,
    #[error("has no context named by its current-context")]
    ContextNotFound,
    #[error("has no cluster named by its current context")]
    ClusterNotFound,
    #[error("has no server URL in the cluster of its current context")]
    MissingServer,
    #[error("has a server URL that is not a valid URL")]
    InvalidServer,
    #[error("has a proxy-url that is not a valid URL")]
    InvalidProxy,
    #[error(
        "has credentials (user information before `@`) in a server or proxy URL; put them in the user entry instead"
    )]
    CredentialsInUrl,
    #[error("has certificate-authority-data that is not base64-encoded PEM certificates")]
    InvalidCertificateAuthority,
    #[error("has client-certificate-data that is not base64-encoded PEM")]
    InvalidClientCertificate,
    #[error("has client-key-data that is not base64-encoded PEM")]
    InvalidClientKey,
    #[error("has TLS or credential settings no client can be built with")]
    UnusableClient,
    #[error(
        "uses an exec credential plugin, which would run a program inside the operator; use an inline token or client certificate, or start the operator with --allow-kubeconfig-exec"
    )]
    ExecRefused,
    #[error(
        "uses an auth-provider plugin, which would run provider code inside the operator; use an inline token or client certificate, or start the operator with --allow-kubeconfig-exec"
    )]
    AuthProviderRefused,
    #[error(
        "refers to a file with `{0}`, which would read the operator's own files; inline the data (e.g. `token`, `client-key-data`), or start the operator with --allow-kubeconfig-files"
    )]
    FileRefused(&'static str),
    #[error("cannot be loaded")]
    Unloadable,
}

impl KubeconfigProblem {
    /// True when the kubeconfig is well-formed but uses a feature the policy refuses.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Self::ExecRefused | Self::AuthProviderRefused | Self::FileRefused(_)
        )
    }
}

/// Parses the kubeconfig bytes of a Secret key.
pub fn parse(bytes: &[u8]) -> Result<Kubeconfig, KubeconfigProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| KubeconfigProblem::NotUtf8)?;
    Kubeconfig::from_yaml(text).map_err(|error| match error {
        KubeconfigError::Parse(inner) => {
            let position = inner.location().map(|l| Position {
                line: l.line(),
                column: l.column(),
            });
            KubeconfigProblem::NotYaml(position.unwrap_or_default())
        }
        KubeconfigError::KindMismatch | KubeconfigError::ApiVersionMismatch => {
            KubeconfigProblem::MixedDocuments
        }
        _ => KubeconfigProblem::Unloadable,
    })
}

/// Checks the current context's cluster and user against `policy`, then builds the client
/// configuration.
pub async fn client_config(
    kubeconfig: Kubeconfig,
    policy: KubeconfigPolicy,
) -> Result<Config, KubeconfigProblem> {
    let (cluster, user) = current(&kubeconfig)?;
    check_cluster(&cluster, policy)?;
    check_user(&user, policy)?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(config_problem)
}

/// The cluster and user of the current context, resolved as kube does.
fn current(kubeconfig: &Kubeconfig) -> Result<(Cluster, AuthInfo), KubeconfigProblem> {
    let name = kubeconfig
        .current_context
        .as_ref()
        .ok_or(KubeconfigProblem::NoCurrentContext)?;
    let context: &Context = kubeconfig
        .contexts
        .iter()
        .find(|c| &c.name == name)
        .and_then(|c| c.context.as_ref())
        .ok_or(KubeconfigProblem::ContextNotFound)?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or(KubeconfigProblem::ClusterNotFound)?;
    let user = context
        .user
        .as_ref()
        .and_then(|user| kubeconfig.auth_infos.iter().find(|a| &a.name == user))
        .and_then(|a| a.auth_info.clone())
        .unwrap_or_default();
    Ok((cluster, user))
}

fn check_cluster(cluster: &Cluster, policy: KubeconfigPolicy) -> Result<(), KubeconfigProblem> {
    let server = cluster
        .server
        .as_deref()
        .ok_or(KubeconfigProblem::MissingServer)?;
    check_url(server, KubeconfigProblem::InvalidServer)?;
    if let Some(proxy) = cluster.proxy_url.as_deref().filter(|p| !p.is_empty()) {
        check_url(proxy, KubeconfigProblem::InvalidProxy)?;
    }
    if cluster.certificate_authority.is_some() && !policy.allow_files {
        return Err(KubeconfigProblem::FileRefused("certificate-authority"));
    }
    Ok(())
}

/// A URL whose authority carries no `user:password@` (kube checks the rest when it parses it).
fn check_url(url: &str, invalid: KubeconfigProblem) -> Result<(), KubeconfigProblem> {
    let (_, rest) = url.split_once("://").ok_or(invalid)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(KubeconfigProblem::CredentialsInUrl);
    }
    Ok(())
}

fn check_user(user: &AuthInfo, policy: KubeconfigPolicy) -> Result<(), KubeconfigProblem> {
    if !policy.allow_exec {
        if user.exec.is_some() {
            return Err(KubeconfigProblem::ExecRefused);
        }
        if user.auth_provider.is_some() {
            return Err(KubeconfigProblem::AuthProviderRefused);
        }
    }
    if !policy.allow_files {
        let files = [
            ("tokenFile", &user.token_file),
            ("client-certificate", &user.client_certificate),
            ("client-key", &user.client_key),
        ];
        if let Some((field, _)) = files.iter().find(|(_, path)| path.is_some()) {
            return Err(KubeconfigProblem::FileRefused(field));
        }
    }
    Ok(())
}

/// The fixed problem for each kube error; the error's own text (which may quote the
/// kubeconfig) is dropped.
fn config_problem(error: KubeconfigError) -> KubeconfigProblem {
    match error {
        KubeconfigError::CurrentContextNotSet => KubeconfigProblem::NoCurrentContext,
        KubeconfigError::LoadContext(_) => KubeconfigProblem::ContextNotFound,
        KubeconfigError::LoadClusterOfContext(_) => KubeconfigProblem::ClusterNotFound,
        KubeconfigError::MissingClusterUrl => KubeconfigProblem::MissingServer,
        KubeconfigError::ParseClusterUrl(_) => KubeconfigProblem::InvalidServer,
        KubeconfigError::ParseProxyUrl(_) => KubeconfigProblem::InvalidProxy,
        KubeconfigError::LoadCertificateAuthority(_) | KubeconfigError::ParseCertificates(_) => {
            KubeconfigProblem::InvalidCertificateAuthority
        }
        KubeconfigError::LoadClientCertificate(_) => KubeconfigProblem::InvalidClientCertificate,
        KubeconfigError::LoadClientKey(_) => KubeconfigProblem::InvalidClientKey,
        _ => KubeconfigProblem::Unloadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "qleet-secret-token-4f9a1c";

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n{user}"
        )
    }

    async fn problem_of(text: &str, policy: KubeconfigPolicy) -> KubeconfigProblem {
        let parsed = match parse(text.as_bytes()) {
            Ok(parsed) => parsed,
            Err(problem) => return problem,
        };
        match client_config(parsed, policy).await {
            Ok(config) => match kube::Client::try_from(config) {
                Ok(_) => panic!("kubeconfig accepted"),
                Err(_) => KubeconfigProblem::UnusableClient,
            },
            Err(problem) => problem,
        }
    }

    #[tokio::test]
    async fn an_inline_token_is_accepted() {
        let text = kubeconfig(&format!("    token: {TOKEN}\n"));
        let config = client_config(parse(text.as_bytes()).expect("parses"), Default::default())
            .await
            .expect("accepted");
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
    }

    #[tokio::test]
    async fn a_mis_indented_line_is_reported_by_position_only() {
        let text = kubeconfig(&format!(
            "    token: {TOKEN}\n   client-key-data: {TOKEN}x\n"
        ));
        let raw = Kubeconfig::from_yaml(&text).err().map(|e| e.to_string());
        assert!(
            raw.is_some_and(|r| r.contains(TOKEN)),
            "kube's own text quotes the token"
        );
        let problem = problem_of(&text, Default::default()).await;
        let KubeconfigProblem::NotYaml(position) = problem else {
            panic!("unexpected problem {problem:?}");
        };
        assert_eq!(
            position,
            Position {
                line: 17,
                column: 4
            }
        );
        let message = problem.to_string();
        assert!(message.starts_with("is not valid kubeconfig YAML (line "));
        assert!(!message.contains("qleet-secret"), "{message}");
    }

    #[tokio::test]
    async fn a_wrongly_typed_field_quotes_nothing() {
        let text = kubeconfig(&format!("    token: [{TOKEN}]\n"));
        let raw = Kubeconfig::from_yaml(&text).err().map(|e| e.to_string());
        assert!(
            raw.is_some_and(|r| r.contains(TOKEN)),
            "kube's own text quotes the token"
        );
        let message = problem_of(&text, Default::default()).await.to_string();
        assert!(
            message.starts_with("is not valid kubeconfig YAML"),
            "{message}"
        );
        assert!(!message.contains("qleet-secret"), "{message}");
    }

    #[test]
    fn bytes_that_are_not_text_are_refused() {
        assert_eq!(
            parse(&[0xff, 0xfe, 0x00]).err(),
            Some(KubeconfigProblem::NotUtf8)
        );
    }

    #[tokio::test]
    async fn exec_and_auth_providers_need_the_exec_flag() {
        let exec = kubeconfig(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/steal\n",
        );
        assert_eq!(
            problem_of(&exec, Default::default()).await,
            KubeconfigProblem::ExecRefused
        );
        let allowed = KubeconfigPolicy {
            allow_exec: true,
            ..Default::default()
        };
        let config = client_config(parse(exec.as_bytes()).expect("parses"), allowed).await;
        assert!(config.is_ok(), "exec allowed by the flag");
        let provider = kubeconfig("    auth-provider:\n      name: gcp\n");
        assert_eq!(
            problem_of(&provider, Default::default()).await,
            KubeconfigProblem::AuthProviderRefused
        );
    }

    #[tokio::test]
    async fn file_references_need_the_files_flag() {
        for (field, user) in [
            ("tokenFile", "    tokenFile: /var/run/secrets/token\n"),
            (
                "client-certificate",
                "    client-certificate: /etc/cert.pem\n",
            ),
            ("client-key", "    client-key: /etc/key.pem\n"),
        ] {
            assert_eq!(
                problem_of(&kubeconfig(user), Default::default()).await,
                KubeconfigProblem::FileRefused(field)
            );
        }
        let ca = kubeconfig("    token: t\n").replace(
            "    server:",
            "    certificate-authority: /etc/ca.pem\n    server:",
        );
        assert_eq!(
            problem_of(&ca, Default::default()).await,
            KubeconfigProblem::FileRefused("certificate-authority")
        );
        let token_file = kubeconfig("    tokenFile: /var/run/secrets/token\n");
        let allowed = KubeconfigPolicy {
            allow_files: true,
            ..Default::default()
        };
        let config = client_config(parse(token_file.as_bytes()).expect("parses"), allowed).await;
        assert!(config.is_ok(), "file allowed by the flag");
    }

    #[tokio::test]
    async fn credentials_in_the_server_url_are_refused() {
        let text = kubeconfig("    token: t\n").replace(
            "https://127.0.0.1",
            &format!("https://admin:{TOKEN}@127.0.0.1"),
        );
        let problem = problem_of(&text, Default::default()).await;
        assert_eq!(problem, KubeconfigProblem::CredentialsInUrl);
        assert!(!problem.to_string().contains(TOKEN));
    }

    #[tokio::test]
    async fn bad_inline_data_quotes_nothing() {
        let text = kubeconfig(&format!(
            "    client-key-data: {TOKEN}!\n    client-certificate-data: {TOKEN}!\n"
        ));
        assert_eq!(
            problem_of(&text, Default::default()).await,
            KubeconfigProblem::UnusableClient
        );
        let ca = kubeconfig("    token: t\n").replace(
            "    server:",
            &format!("    certificate-authority-data: {TOKEN}\n    server:"),
        );
        assert_eq!(
            problem_of(&ca, Default::default()).await,
            KubeconfigProblem::InvalidCertificateAuthority
        );
    }

    #[tokio::test]
    async fn a_missing_current_context_is_named() {
        let text = kubeconfig("    token: t\n").replace("current-context: c\n", "");
        assert_eq!(
            problem_of(&text, Default::default()).await,
            KubeconfigProblem::NoCurrentContext
        );
        let other =
            kubeconfig("    token: t\n").replace("current-context: c", "current-context: d");
        assert_eq!(
            problem_of(&other, Default::default()).await,
            KubeconfigProblem::ContextNotFound
        );
    }

    #[test]
    fn refusals_are_told_apart_from_invalid_kubeconfigs() {
        assert!(KubeconfigProblem::ExecRefused.is_refusal());
        assert!(KubeconfigProblem::FileRefused("tokenFile").is_refusal());
        assert!(!KubeconfigProblem::NotYaml(Position::default()).is_refusal());
        assert_eq!(
            KubeconfigProblem::NotYaml(Position::default()).to_string(),
            "is not valid kubeconfig YAML"
        );
    }
}
