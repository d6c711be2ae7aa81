//! A minimal HTTP/1.1 GET over loopback, for probing the processes the environment starts.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::time::Duration;

use crate::error::Error;
use crate::process::ChildProcess;

/// `GET http://127.0.0.1:<port><path>`, returning the status code and body.
pub async fn get(port: u16, path: &str) -> Result<(u16, String), Error> {
    let address = format!("127.0.0.1:{port}");
    let io = |source| Error::Http {
        address: address.clone(),
        source,
    };
    let mut stream = TcpStream::connect(&address).await.map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `GET <path>` on a process started by the environment until it answers 200, failing
/// early when the process exits and, after `timeout`, with the last answer or error.
pub async fn wait_ready(
    process: &mut ChildProcess,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    while tokio::time::Instant::now() < deadline {
        process.check_running()?;
        match get(port, path).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last_error = Some(format!("{status} {body}")),
            Err(error) => last_error = Some(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Timeout {
        what: format!("{} {path}", process.component()),
        timeout,
        last_error,
    })
}

/// A backend process of the test's own: answers every HTTP/1.1 request on 127.0.0.1 with
/// `200` and a fixed body, until dropped.
#[derive(Debug)]
pub struct Responder {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    pub async fn start(body: &str) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::NoFreePort)?;
        let port = listener.local_addr().map_err(Error::NoFreePort)?.port();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reqwest client builder that works however the workspace's features unify: when another
/// crate of the build enables reqwest's rustls without a provider (the operator does, for chart
/// repositories), a client needs a process-wide rustls provider; ring is installed then.
pub fn client_builder() -> reqwest::ClientBuilder {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have installed one meanwhile; either is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
}
