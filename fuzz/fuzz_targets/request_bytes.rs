//! Raw bytes into grayshift's own HTTP/1 server (`h1_server::serve`, set
//! up as a listener sets it up, default limits), over an in-memory duplex,
//! with grayshift's target and Host check as the service (accepted requests
//! have their body read to the end, as forwarding would).
//! Never panics or hangs, and whatever comes back starts with a valid
//! HTTP/1.x status line (or nothing: the connection was closed).
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use grayshift::proxy::body::{ClientBody, ResponseBody};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[split]
percent = 50
group = "fuzz"
[pools.stable]
endpoints = ["127.0.0.1:1"]
[pools.new]
endpoints = ["127.0.0.1:2"]
"#;

fn server() -> &'static grayshift::config::ServerConfig {
    static SERVER: OnceLock<grayshift::config::ServerConfig> = OnceLock::new();
    SERVER.get_or_init(|| grayshift::config::parse(CONFIG, "fuzz.toml").expect("fuzz config").server)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

fn reply(status: StatusCode, body: String, close: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::text(body));
    *resp.status_mut() = status;
    if close {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

async fn service(req: Request<ClientBody>) -> Result<Response<ResponseBody>, Infallible> {
    if let Err(e) = grayshift::proxy::framing::check(&req, server().max_uri_bytes) {
        return Ok(reply(e.status(), e.to_string(), true));
    }
    Ok(match req.into_body().collect().await {
        Ok(body) => reply(StatusCode::OK, format!("read {}", body.to_bytes().len()), false),
        Err(e) => reply(StatusCode::BAD_REQUEST, e.to_string(), true),
    })
}

fn valid_status_line(out: &[u8]) -> bool {
    let Some(rest) = out.strip_prefix(b"HTTP/1.1 ").or_else(|| out.strip_prefix(b"HTTP/1.0 ")) else {
        return false;
    };
    rest.len() >= 5
        && rest[..3].iter().all(u8::is_ascii_digit)
        && (b'1'..=b'5').contains(&rest[0])
        && (rest[3] == b' ' || rest[3] == b'\r')
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (client, server_io) = tokio::io::duplex(1 << 16);
        let settings = grayshift::proxy::h1_server::Settings::new(server());
        let conn = tokio::spawn(async move {
            let info = grayshift::proxy::handle::ConnInfo::new(([127, 0, 0, 1], 1).into(), false);
            let handler = |_, req| service(req);
            let drain = grayshift::proxy::server::DrainWatch::detached();
            let started = tokio::time::Instant::now();
            let _ = grayshift::proxy::h1_server::serve(server_io, Default::default(), started, info, &handler, settings, drain)
                .await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let (_, out) = tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(write, read) })
            .await
            .expect("connection hung after the client's EOF");
        conn.await.expect("connection task panicked");
        if !out.is_empty() {
            assert!(
                valid_status_line(&out),
                "bad response start: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(80)])
            );
        }
    });
});
