//! A minimal one-shot HTTP/1.1 client for the low-rate calls grayshift
//! makes itself: rule signals, webhooks, and `grayshift ctl`. A fresh
//! connection per call keeps it obviously correct; none of these calls are
//! on the request path. `https://` URLs go over rustls, checking the
//! certificate and host name against the system's roots or the URL's `ca`
//! file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Responses larger than this are refused (signals and admin answers are small).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("response body: {0}")]
    Body(String),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
}

/// A URL as logs and `/status` may show it: scheme and host only, since a
/// webhook's path or query (Slack's) or its userinfo can be the secret.
pub fn redacted(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) if uri.authority().is_some() => {
            let host = uri.host().unwrap_or("");
            let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if uri.path_and_query().is_some_and(|p| p.as_str() != "/") { "/…" } else { "" };
            format!("{}://{host}{port}{rest}", uri.scheme_str().unwrap_or("http"))
        }
        _ => "(invalid URL)".into(),
    }
}

/// Send one request and read the whole (bounded) response. `ca`: the CA
/// file to trust for an `https://` URL (else the system's roots).
pub async fn request(
    method: Method,
    url: &str,
    ca: Option<&Path>,
    headers: &[(header::HeaderName, String)],
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    tokio::time::timeout(timeout, send(method, url, ca, headers, body))
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout)))
}

async fn send(
    method: Method,
    url: &str,
    ca: Option<&Path>,
    headers: &[(header::HeaderName, String)],
    body: Option<Bytes>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.to_string()))?;
    let (tls, authority) = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => (false, a.clone()),
        (Some("https"), Some(a)) => (true, a.clone()),
        _ => return Err(ClientError::Url(url.to_string())),
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(if tls { 443 } else { 80 }));
    let stream = TcpStream::connect(&address).await.map_err(|e| ClientError::Connect(address.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let mut sender = if tls {
        let tls_error = |e: String| ClientError::Tls(address.clone(), e);
        let config = crate::outbound_tls::client_config(crate::outbound_tls::Verify::Full, ca).map_err(tls_error)?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| tls_error(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| tls_error(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        sender
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        sender
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, authority.as_str());
    for (name, value) in headers {
        req = req.header(name, value);
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(body.unwrap_or_default())).map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| ClientError::Body(e.to_string()))?
        .to_bytes();
    Ok((status, bytes))
}
