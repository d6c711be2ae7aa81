//! What a caller may do, asked of the management API as the caller with a
//! SelfSubjectAccessReview: an API server answers a forbidden watch only inside the stream, and
//! the console hides actions the caller may not take.

use serde_json::{Value, json};

use crate::caller::Caller;
use crate::error::ApiError;

const SELF_SUBJECT_ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// One request to authorise on a QleetOS resource.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The authorizer's reason, often empty.
    pub reason: String,
}

pub async fn review(caller: &Caller, attributes: Attributes<'_>) -> Result<Decision, ApiError> {
    let body = serde_json::to_vec(&review_body(attributes))
        .map_err(|e| ApiError::BadGateway(format!("encoding an access review: {e}")))?;
    let request = http::Request::post(SELF_SUBJECT_ACCESS_REVIEWS)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError::bad_request("BadRequest", e.to_string()))?;
    let answer = caller.send(request).await?;
    let status = &answer["status"];
    Ok(Decision {
        allowed: status["allowed"].as_bool() == Some(true),
        reason: status["reason"].as_str().unwrap_or_default().to_owned(),
    })
}

/// 403 in the API server's own wording unless the caller may do it.
pub async fn ensure(caller: &Caller, attributes: Attributes<'_>) -> Result<(), ApiError> {
    let decision = review(caller, attributes).await?;
    if decision.allowed {
        return Ok(());
    }
    Err(ApiError::Forbidden(denied_message(
        caller, attributes, &decision,
    )))
}

pub fn review_body(attributes: Attributes<'_>) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "group": qleetos_crds::GROUP,
            "resource": attributes.resource,
            "verb": attributes.verb,
            "namespace": attributes.namespace,
            "name": attributes.name,
        }}
    })
}

fn denied_message(caller: &Caller, attributes: Attributes<'_>, decision: &Decision) -> String {
    let group = qleetos_crds::GROUP;
    let Attributes { verb, resource, .. } = attributes;
    let mut message = format!(
        "{resource}.{group} \"{}\" is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"",
        attributes.name.unwrap_or_default(),
        caller.identity().username,
    );
    if let Some(namespace) = attributes.namespace {
        message.push_str(&format!(" in the namespace \"{namespace}\""));
    }
    if !decision.reason.is_empty() {
        message.push_str(&format!(": {}", decision.reason));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_names_verb_resource_and_object() {
        let review = review_body(Attributes {
            verb: "watch",
            resource: "workloads",
            namespace: Some("ci"),
            name: Some("web"),
        });
        let attributes = &review["spec"]["resourceAttributes"];
        assert_eq!(attributes["verb"], "watch");
        assert_eq!(attributes["resource"], "workloads");
        assert_eq!(attributes["group"], "qleetos.io");
        assert_eq!(attributes["namespace"], "ci");
        assert_eq!(attributes["name"], "web");
    }
}
