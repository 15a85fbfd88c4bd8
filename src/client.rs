//! A minimal one-shot HTTP/1.1 client for the low-rate calls grayshift
//! makes itself: rule signals, webhooks, and `grayshift ctl`. A fresh
//! connection per call keeps it obviously correct; none of these calls are
//! on the request path.

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
}

/// Send one request and read the whole (bounded) response.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(header::HeaderName, String)],
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    tokio::time::timeout(timeout, send(method, url, headers, body)).await.unwrap_or(Err(ClientError::Timeout(timeout)))
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(header::HeaderName, String)],
    body: Option<Bytes>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.to_string()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.clone(),
        _ => return Err(ClientError::Url(url.to_string())),
    };
    let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let stream = TcpStream::connect(&address).await.map_err(|e| ClientError::Connect(address.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
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
