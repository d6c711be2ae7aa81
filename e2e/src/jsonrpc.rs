//! A minimal Ethereum JSON-RPC client over HTTP, enough to tell that an RPC node answers.
//!
//! Every call takes `resolve_to`: where to connect instead of resolving the URL's host, the
//! way the tests play cluster DNS (`http://rpc.shop.svc:8545` reaches the loopback address
//! an anvil stand-in listens on). The URL's port wins over the port of `resolve_to`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::Error;

/// Upper bound for one call, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two attempts of [`wait_block_number`].
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// `eth_blockNumber`: the number of the node's latest block.
pub async fn block_number(url: &str, resolve_to: Option<SocketAddr>) -> Result<u64, Error> {
    call_quantity(url, resolve_to, "eth_blockNumber").await
}

/// `eth_chainId`: the chain id the node signs transactions for (EIP-155).
pub async fn chain_id(url: &str, resolve_to: Option<SocketAddr>) -> Result<u64, Error> {
    call_quantity(url, resolve_to, "eth_chainId").await
}

/// Asks for `eth_blockNumber` until the node answers (e.g. while it starts), for at most
/// `timeout`; then fails with the last error.
pub async fn wait_block_number(
    url: &str,
    resolve_to: Option<SocketAddr>,
    timeout: Duration,
) -> Result<u64, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(remaining, block_number(url, resolve_to)).await;
        let last_error = match attempt {
            Ok(Ok(number)) => return Ok(number),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => None,
        };
        if Instant::now() + RETRY_INTERVAL >= deadline {
            return Err(Error::Timeout {
                what: format!("{} to answer eth_blockNumber", redacted(url)),
                timeout,
                last_error,
            });
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

/// Calls a method without parameters whose result is a quantity (`"0x…"`).
async fn call_quantity(
    url: &str,
    resolve_to: Option<SocketAddr>,
    method: &'static str,
) -> Result<u64, Error> {
    let result = call(url, resolve_to, method).await?;
    result
        .as_str()
        .and_then(parse_quantity)
        .ok_or_else(|| Error::JsonRpc {
            method,
            url: redacted(url),
            detail: format!("the result {result} is not a hex quantity"),
        })
}

/// POSTs one JSON-RPC 2.0 request and returns its `result`.
async fn call(
    url: &str,
    resolve_to: Option<SocketAddr>,
    method: &'static str,
) -> Result<Value, Error> {
    let fail = |detail: String| Error::JsonRpc {
        method,
        url: redacted(url),
        detail,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("invalid URL: {e}")))?;
    let mut builder = crate::http::client_builder()
        .no_proxy()
        .timeout(CALL_TIMEOUT);
    if let Some(address) = resolve_to {
        let host = parsed
            .host_str()
            .ok_or_else(|| fail("the URL has no host".to_owned()))?;
        builder = builder.resolve(host, address);
    }
    let client = builder
        .build()
        .map_err(|e| fail(format!("cannot build the HTTP client: {}", describe(e))))?;
    let id = 1;
    let response = client
        .post(parsed)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": []}))
        .send()
        .await
        .map_err(|e| fail(describe(e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| fail(format!("reading the answer: {}", describe(e))))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {}", excerpt(&body))));
    }
    let answer: Value = serde_json::from_str(&body)
        .map_err(|e| fail(format!("the answer is not JSON ({e}): {}", excerpt(&body))))?;
    if let Some(error) = answer.get("error") {
        let code = error
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(fail(format!("error {code}: {message}")));
    }
    if answer.get("id") != Some(&json!(id)) {
        return Err(fail(format!(
            "the answer has another id: {}",
            excerpt(&body)
        )));
    }
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| fail(format!("the answer has no result: {}", excerpt(&body))))
}

/// A JSON-RPC quantity: `0x` and up to 16 hex digits.
fn parse_quantity(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// `url` without user, password and query, where credentials and API keys go.
fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<an unparsable URL>".to_owned();
    };
    // Both only fail for URLs that cannot have credentials at all.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    parsed.to_string()
}

/// A reqwest error with its causes (connection refused, timed out, …), without the URL,
/// which the caller reports redacted.
fn describe(error: reqwest::Error) -> String {
    let timed_out = error.is_timeout();
    let error = error.without_url();
    let mut parts: Vec<String> = Vec::new();
    if timed_out {
        parts.push(format!("timed out after {CALL_TIMEOUT:?}"));
    }
    let mut source: Option<&dyn std::error::Error> = Some(&error);
    while let Some(cause) = source {
        let message = cause.to_string();
        if !parts.iter().any(|part| part.contains(&message)) {
            parts.push(message);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The start of a response body, for error messages.
fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let body = body.trim();
    match body.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("0x0"), Some(0));
        assert_eq!(parse_quantity("0x7a69"), Some(31337));
        assert_eq!(parse_quantity("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_quantity("0x"), None);
        assert_eq!(parse_quantity("7a69"), None);
        assert_eq!(parse_quantity("0x1ffffffffffffffff"), None);
        assert_eq!(parse_quantity("0xzz"), None);
    }

    #[test]
    fn redacts_credentials_and_keys() {
        assert_eq!(
            redacted("https://user:secret@rpc.example.test:8545/v1?apikey=secret#x"),
            "https://rpc.example.test:8545/v1"
        );
        assert_eq!(
            redacted("http://rpc.shop.svc:8545"),
            "http://rpc.shop.svc:8545/"
        );
        assert!(!redacted("not a url secret").contains("secret"));
    }

    #[tokio::test]
    async fn unreachable_node_names_the_url_but_no_secret() {
        // A port that was free a moment ago: nothing listens there.
        let address = crate::cluster::free_loopback_address(0).unwrap();
        let url = format!(
            "http://user:secret@rpc.shop.svc:{}/?key=secret",
            address.port()
        );
        let err = chain_id(&url, Some(address)).await.unwrap_err().to_string();
        assert!(err.contains("eth_chainId"), "{err}");
        assert!(err.contains("rpc.shop.svc"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = wait_block_number(&url, Some(address), Duration::from_millis(500))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
