//! Parsing and validating what callers put in paths and query strings.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::ApiError;

/// Query parameters of a list.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Kubernetes label selector, e.g. `app=web,tier!=dev`.
    pub label_selector: Option<String>,
    /// Maximum number of items to return (1–1000); use `continue` for the next page.
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    pub limit: Option<u32>,
    /// Continue token of the previous page (`metadata.continue`).
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// Largest page a list returns.
pub const MAX_LIMIT: u32 = 1000;

impl ListQuery {
    pub fn list_params(&self) -> Result<kube::api::ListParams, ApiError> {
        let mut params = kube::api::ListParams::default();
        if let Some(selector) = self.label_selector.as_deref().filter(|s| !s.is_empty()) {
            params = params.labels(selector);
        }
        if let Some(limit) = self.limit {
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(ApiError::bad_request(
                    "InvalidQuery",
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                ));
            }
            params = params.limit(limit);
        }
        if let Some(token) = self.continue_token.as_deref().filter(|s| !s.is_empty()) {
            params = params.continue_token(token);
        }
        Ok(params)
    }
}

/// Query parameters of the image hook.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq, JsonSchema)]
pub struct WaitQuery {
    /// Wait until every placement has rolled out the new images and is Ready, at most this
    /// long: `<number><unit>` with unit `ms`, `s`, `m` or `h` (a bare number means seconds).
    #[schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$"))]
    pub wait: Option<String>,
}

/// Parses `120s`, `2m`, `500ms`, `1h` or `90` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, ApiError> {
    qleetos_crds::parse_duration(text).map_err(|e| ApiError::bad_request("InvalidQuery", e))
}

/// A `?wait=` value, bounded by `max`.
pub fn wait_duration(query: &WaitQuery, max: Duration) -> Result<Option<Duration>, ApiError> {
    let Some(text) = query.wait.as_deref() else {
        return Ok(None);
    };
    let wait = parse_duration(text)?;
    if wait > max {
        return Err(ApiError::bad_request(
            "InvalidQuery",
            format!("wait may be at most {}s", max.as_secs()),
        ));
    }
    Ok(Some(wait))
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` of at most 63 characters (a namespace).
pub const LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// DNS-1123 subdomain (an object name).
pub const SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

pub fn validate_namespace(namespace: &str) -> Result<(), ApiError> {
    if is_label(namespace) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidName",
            format!("{namespace:?} is not a valid namespace name (lower-case DNS label)"),
        ))
    }
}

pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.len() <= 253 && name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidName",
            format!("{name:?} is not a valid object name (lower-case DNS subdomain)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("120s").ok(), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        for bad in ["", "s", "-1s", "1.5s", "10d", "9999999999s", "1 s"] {
            let error = parse_duration(bad).expect_err(bad);
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn bounds_wait() {
        let max = Duration::from_secs(60);
        let q = |w: &str| WaitQuery {
            wait: Some(w.into()),
        };
        assert_eq!(wait_duration(&WaitQuery::default(), max).ok(), Some(None));
        assert_eq!(
            wait_duration(&q("30s"), max).ok(),
            Some(Some(Duration::from_secs(30)))
        );
        assert!(wait_duration(&q("2m"), max).is_err());
    }

    #[test]
    fn list_params_validate_limit() {
        let query = ListQuery {
            label_selector: Some("app=web".into()),
            limit: Some(10),
            continue_token: Some("abc".into()),
        };
        let params = query.list_params().expect("valid");
        assert_eq!(params.label_selector.as_deref(), Some("app=web"));
        assert_eq!(params.limit, Some(10));
        assert_eq!(params.continue_token.as_deref(), Some("abc"));
        for limit in [0, MAX_LIMIT + 1] {
            let query = ListQuery {
                limit: Some(limit),
                ..ListQuery::default()
            };
            assert!(query.list_params().is_err());
        }
    }

    #[test]
    fn validates_names() {
        assert!(validate_namespace("team-a").is_ok());
        assert!(validate_name("web.v2").is_ok());
        for bad in ["", "Team", "-a", "a-", "a_b", "a/b", &"x".repeat(64)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
        for bad in ["", "a..b", ".a", "A", "a b", "%2F"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
