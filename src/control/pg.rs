//! PostgreSQL connections for everything grayshift reads or writes itself
//! (rule signals, the exposure ledger): one client per URL, kept across
//! uses and dropped after a connection failure or a timeout, so the next use
//! reconnects. Every use is bounded by a timeout; a query that overruns is
//! cancelled on the server, so the next one does not queue behind it.
//! The URL and its TLS options are read by [`Target`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::control::rules::engine::fmt_duration;
pub use crate::pg_target::Target;

/// A PostgreSQL client shared by the users of one URL.
pub type PgSlot = Arc<Mutex<Option<Arc<Client>>>>;

/// The slot's client, connecting first when there is none or it died.
pub async fn client(slot: &PgSlot, url: &str) -> Result<Arc<Client>, ConnectError> {
    let mut guard = slot.lock().await;
    if let Some(client) = guard.as_ref().filter(|c| !c.is_closed()) {
        return Ok(client.clone());
    }
    *guard = None;
    let target = Target::parse(url).map_err(ConnectError::Config)?;
    let (client, connection) = target.config.connect(target.tls().map_err(ConnectError::Config)?).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    let client = Arc::new(client);
    *guard = Some(client.clone());
    Ok(client)
}

/// Drop the slot's client if it is still `client` (another user may have
/// reconnected meanwhile).
pub async fn forget(slot: &PgSlot, client: &Arc<Client>) {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
        *guard = None;
    }
}

/// Connect if needed and run `work` on the client, the whole bounded by
/// `timeout`. Errors are sentences for `/status`.
pub async fn with_client<T, F, Fut>(slot: &PgSlot, url: &str, timeout: Duration, work: F) -> Result<T, String>
where
    F: FnOnce(Arc<Client>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let client = match tokio::time::timeout_at(deadline, client(slot, url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(ConnectError::Config(e))) => return Err(e),
        Ok(Err(ConnectError::Postgres(e))) => return Err(format!("cannot connect to PostgreSQL: {}", error_text(&e))),
        Err(_) => return Err(format!("connecting to PostgreSQL timed out after {}", fmt_duration(timeout))),
    };
    match tokio::time::timeout_at(deadline, work(client.clone())).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            if client.is_closed() {
                forget(slot, &client).await;
            }
            Err(format!("query failed: {}", error_text(&e)))
        }
        Err(_) => {
            // The query may still be running on the server: cancel it, and
            // do not queue the next query behind it.
            let cancel = client.cancel_token();
            if let Ok(tls) = Target::parse(url).and_then(|t| t.tls()) {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), cancel.cancel_query(tls)).await;
                });
            }
            forget(slot, &client).await;
            Err(format!("query timed out after {}", fmt_duration(timeout)))
        }
    }
}

/// One query over the simple protocol (any column type reads as text).
pub async fn simple_query(
    slot: &PgSlot,
    url: &str,
    query: &str,
    timeout: Duration,
) -> Result<Vec<SimpleQueryMessage>, String> {
    with_client(slot, url, timeout, |client| async move { client.simple_query(query).await }).await
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or its TLS settings (CA file) are unusable.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// The server's message, or the error with its causes (a TLS handshake
/// failure names the certificate problem only in its source).
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
