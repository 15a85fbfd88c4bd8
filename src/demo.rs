//! `grayshift demo` and `grayshift upstream`: built-in upstreams that say
//! which version answered, so a newcomer can watch the split work.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serve a demo upstream named `name` on `listener` until the process ends.
/// Every path answers 200 with a line naming the version; `/healthz` too.
pub async fn serve_upstream(name: String, listener: TcpListener) {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                if let Some(order) = req.uri().path().strip_prefix("/api/orders/").and_then(|id| id.parse().ok()) {
                    return Ok::<_, Infallible>(order_response(name, order));
                }
                let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                let text = format!(
                    "hello from {name}: {} {} user={} bucket={} pool={}\n",
                    req.method(),
                    req.uri().path(),
                    header("x-user-id"),
                    header("x-gray-bucket"),
                    header("x-gray-pool"),
                );
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `GET /api/orders/N` as JSON, for shadow reads to compare. `new` "migrated"
/// the orders with a bug: one total in ten is off by one. `served_at`
/// differs on every answer: noise the comparison learns to ignore.
fn order_response(name: &str, id: u64) -> Response<Full<Bytes>> {
    let mut cents = id * 125;
    if name == "new" && id % 10 == 7 {
        cents += 100;
    }
    let served_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let body =
        format!("{{\"id\":{id},\"total\":\"{}.{:02}\",\"served_at\":\"{served_at}\"}}\n", cents / 100, cents % 100);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// Start the demo upstreams on the addresses the demo config's pools name.
pub async fn start_upstreams(config: &crate::config::Config) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    for name in crate::config::PoolName::ALL {
        for endpoint in &config.pool(name).endpoints {
            let listener = TcpListener::bind(endpoint.as_str()).await?;
            bound.push(listener.local_addr()?);
            tokio::spawn(serve_upstream(name.as_str().to_string(), listener));
        }
    }
    Ok(bound)
}

/// The lines `grayshift demo` prints to get a newcomer going.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr, config_path: &str) -> String {
    format!(
        r#"grayshift demo is running ({config_path})
  proxy  http://{proxy}    admin  http://{admin}

Try:
  curl -s http://{proxy}/ -H 'X-User-ID: alice'          # the same user always lands on the same side
  for u in alice bob carol dave erin frank; do curl -s http://{proxy}/ -H "X-User-ID: $u"; done
  cargo run --release -- bucket --config {config_path} alice      # which side does alice see?
  cargo run --release -- ctl --admin http://{admin} set-percent 50
  cargo run --release -- ctl --admin http://{admin} status
  cargo run --release -- ctl --admin http://{admin} rollback L1 --reason "demo"
  cargo run --release -- ctl --admin http://{admin} resume L1
  curl -s http://{admin}/metrics | grep grayshift_requests_total
  for i in $(seq 1 300); do curl -s -o /dev/null http://{proxy}/api/orders/$i; done   # shadow reads: new lost data
  curl -s http://{admin}/shadow/samples                  # which orders differ, field by field (L3 fired)
  cargo run --release -- ctl --admin http://{admin} resume L3 --confirm

Ctrl-C stops it."#
    )
}
