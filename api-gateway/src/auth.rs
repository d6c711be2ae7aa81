//! Who is calling: the bearer token is reviewed by the management API server (TokenReview,
//! as the gateway's own identity), and every operation then runs *as the caller* through
//! user impersonation, so Kubernetes RBAC decides and the audit log names the caller.
//!
//! The token itself is never logged, stored or echoed in an error.

use std::collections::BTreeMap;

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::ApiError;

/// The reviewed identity of a caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The bearer token of a request: 401 when absent or not a bearer credential.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing bearer token (Authorization: Bearer <token>)".into())
    })?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be `Bearer <token>`".into()))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <token>`".into(),
        ));
    }
    Ok(token)
}

/// Asks the management API server who the token belongs to.
pub async fn review(client: &Client, token: &str) -> Result<Identity, ApiError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(token_review_error)?;
    identity_from(reviewed)
}

/// A failing TokenReview never carries the token; only the API server's answer is kept.
fn token_review_error(error: kube::Error) -> ApiError {
    match ApiError::from(error) {
        // The gateway itself may not review tokens: a deployment problem, not the caller's.
        ApiError::Forbidden(message) => {
            ApiError::BadGateway(format!("the gateway may not review tokens: {message}"))
        }
        other => other,
    }
}

fn identity_from(review: TokenReview) -> Result<Identity, ApiError> {
    let status = review.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(ApiError::Unauthorized("invalid bearer token".into()));
    }
    let user = status.user.unwrap_or_default();
    let username = user
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("the token names no user".into()))?;
    Ok(Identity {
        username,
        uid: user.uid.filter(|u| !u.is_empty()),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default().into_iter().collect(),
    })
}

impl Identity {
    /// Adds the Kubernetes impersonation headers for this identity to a request.
    pub fn impersonate(&self, headers: &mut HeaderMap) -> Result<(), ApiError> {
        headers.insert("impersonate-user", header_value(&self.username)?);
        if let Some(uid) = &self.uid {
            headers.insert("impersonate-uid", header_value(uid)?);
        }
        for group in &self.groups {
            headers.append("impersonate-group", header_value(group)?);
        }
        for (key, values) in &self.extra {
            let name = extra_header_name(key)?;
            for value in values {
                headers.append(name.clone(), header_value(value)?);
            }
        }
        Ok(())
    }
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|_| {
        ApiError::Unauthorized("the caller's identity cannot be carried in HTTP headers".into())
    })
}

/// `Impersonate-Extra-<key>` with the key percent-encoded, as the API server decodes it.
pub fn extra_header_name(key: &str) -> Result<HeaderName, ApiError> {
    let mut name = String::from("impersonate-extra-");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            name.push(char::from(byte.to_ascii_lowercase()));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ApiError::Unauthorized("the caller's identity cannot be carried in HTTP headers".into())
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(auth).expect("header"));
        headers
    }

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(
            bearer_token(&headers("Bearer abc.def")).ok(),
            Some("abc.def")
        );
        assert_eq!(bearer_token(&headers("bearer  abc ")).ok(), Some("abc"));
        for bad in ["Basic dXNlcjpwdw==", "Bearer ", "Bearer", "abc"] {
            let error = bearer_token(&headers(bad)).expect_err(bad);
            assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
            assert!(!error.to_string().contains("dXNlcjpwdw"), "token echoed");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn unauthenticated_review_is_401() {
        let review = TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(false),
                error: Some("invalid bearer token, token secret-ish".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let error = identity_from(review).expect_err("unauthenticated");
        assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
        assert!(!error.to_string().contains("secret-ish"));
    }

    #[test]
    fn impersonates_user_groups_and_extra() {
        let review = TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some("system:serviceaccount:ci:bot".into()),
                    uid: Some("u-1".into()),
                    groups: Some(vec!["system:serviceaccounts".into(), "ci".into()]),
                    extra: Some(
                        [(
                            "authentication.kubernetes.io/credential-id".to_owned(),
                            vec!["JTI=1".to_owned()],
                        )]
                        .into(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let identity = identity_from(review).expect("authenticated");
        let mut map = HeaderMap::new();
        identity.impersonate(&mut map).expect("headers");
        assert_eq!(map["impersonate-user"], "system:serviceaccount:ci:bot");
        assert_eq!(map["impersonate-uid"], "u-1");
        let groups: Vec<_> = map.get_all("impersonate-group").iter().collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            map["impersonate-extra-authentication.kubernetes.io%2fcredential-id"],
            "JTI=1"
        );
    }
}
