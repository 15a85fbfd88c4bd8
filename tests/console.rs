//! The operator console (`GET /ui`) in a real browser: Debian's chromium,
//! headless, through chromedriver, against a real grayshift with two real
//! upstreams. Plus the security model's edges with raw HTTP requests.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const TOKEN: &str = "console-t0ken";
/// How long the page may take to show something (it polls once a second).
const PAGE_DEADLINE: Duration = Duration::from_secs(60);
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const RULE: &str = r#"
[rollback]
interval = "100ms"

[[rules]]
name = "new-error-rate"
level = "L1"
signal = { source = "local", metric = "error_rate", pool = "new", window = "10s" }
above = 0.05
for = "5s"
min_requests = 10
"#;

/// A grayshift whose admin API wants [`TOKEN`] for changes.
async fn start_with_token(text: &str) -> Proxy {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let text = text.replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{dir}/token\"",
    );
    Proxy::start_in(dir, &text).await
}

async fn find_text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Wait until the element at `css` shows text for which `ok` holds.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(PAGE_DEADLINE, what, || async { find_text(c, css).await.filter(|t| ok(t)) }).await
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Open the console and wait for its first polls to be drawn.
async fn open(c: &Client, proxy: &Proxy) {
    c.goto(&proxy.admin_url("/ui")).await.unwrap();
    eventually(PAGE_DEADLINE, "the console's first two polls", || async {
        (js(c, "return window.grayshiftConsole ? window.grayshiftConsole.polls : 0").await.as_u64() >= Some(2))
            .then_some(())
    })
    .await;
}

/// What went wrong in the page: script errors, failed loads and CSP
/// violations the page itself saw, and the SEVERE entries of the browser's
/// console as chromedriver reports them.
async fn page_errors(c: &Client) -> Value {
    let mut seen =
        js(c, "return window.grayshiftConsole ? window.grayshiftConsole.errors : ['the console script never ran']")
            .await;
    // A refused change (the 401 before the token, a 409) is logged by the
    // browser too; the page handles those answers, they are not errors.
    let handled = |m: &String| {
        ["/percent", "/rollback", "/resume", "/ramp"]
            .iter()
            .any(|p| m.contains(&format!("{p} - Failed to load resource")))
            && m.contains("responded with a status of 4")
    };
    let console = browser::severe_console_entries(c).await.into_iter().filter(|m| !handled(m));
    seen.as_array_mut().expect("an array").extend(console.map(Value::from));
    seen
}

/// Answer the token dialog the first change opens.
async fn give_token(c: &Client, token: &str) {
    eventually(PAGE_DEADLINE, "the token dialog", || async {
        c.find(Locator::Css("#token-dialog[open]")).await.ok().map(|_| ())
    })
    .await;
    let input = c.find(Locator::Css("#token-input")).await.unwrap();
    input.send_keys(token).await.unwrap();
    click(c, "#token-ok").await;
}

fn user_share_on_new(hits_new: usize, total: usize) -> f64 {
    hits_new as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_clean_shows_the_config_and_a_screenshot_is_taken() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    // Shadow reads too, of `/bytes/` (the same bytes from both test
    // upstreams): what differs in the picture is new failing, below.
    let shadow = "[shadow]\nsample = \"50%\"\npaths = [\"/bytes/\"]\n";
    let proxy = start_with_token(&config(&[&stable], &[&new], 20, &format!("{RULE}\n{shadow}"))).await;
    // Some traffic, so the chart has something to draw.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = background_traffic(&proxy, stop.clone());
    let reads = background_traffic_to(&proxy, "/bytes/64", stop.clone());

    let c = browser::browser(1280, 2150).await;
    open(&c, &proxy).await;
    assert_eq!(page_errors(&c).await, json!([]), "the page reported errors");
    assert_eq!(c.title().await.unwrap(), "grayshift console");
    assert_eq!(find_text(&c, "#percent-desired").await.as_deref(), Some("20 %"));
    assert_eq!(find_text(&c, "#percent-effective").await.as_deref(), Some("20 %"));
    assert_eq!(js(&c, "return document.getElementById('percent-number').value").await, "20");
    assert_eq!(find_text(&c, "#percent-apply").await.as_deref(), Some("Send 20 % of users to new"));
    let rule = find_text(&c, "[data-rule='new-error-rate']").await.expect("the rule is shown");
    assert!(rule.contains("new-error-rate") && rule.contains("L1") && rule.contains("above 0.05"), "{rule}");
    let pools = find_text(&c, "#pools").await.unwrap();
    assert!(pools.contains(&stable.addr.to_string()) && pools.contains(&new.addr.to_string()), "{pools}");
    // Sections the server does not have yet say so.
    for id in ["ramp", "schema", "fleet", "ledger"] {
        assert_eq!(find_text(&c, &format!("#{id}")).await.as_deref(), Some("not configured"), "#{id}");
    }
    wait_text(&c, "#shadow", "shadow comparisons counted", |t| t.contains("compared") && !t.contains("compared\n0"))
        .await;
    // Live traffic from /metrics deltas.
    wait_text(&c, "#traffic [data-pool='stable'] .rps", "stable's requests/s", |t| {
        t.ends_with("req/s") && !t.starts_with("0 ")
    })
    .await;
    // The CSS is applied (a stylesheet blocked by the CSP would leave defaults).
    assert_eq!(js(&c, "return getComputedStyle(document.querySelector('.card')).borderRadius").await, "8px");

    // For the picture: an operator's change in the audit tail, and new
    // starting to fail so the rule is pending; a few seconds of history.
    let r = proxy.admin("PUT", "/percent", Some(json!({ "percent": 25 })), Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_text(&c, "#audit", "the change in the audit tail", |t| t.contains("20 → 25")).await;
    eventually(PAGE_DEADLINE, "a dozen polls of traffic history", || async {
        (js(&c, "return window.grayshiftConsole.polls").await.as_u64() >= Some(12)).then_some(())
    })
    .await;
    new.fail_every.store(4, Ordering::SeqCst);
    wait_text(&c, "[data-rule='new-error-rate'] .rule-head", "the rule pending", |t| !t.contains("ok")).await;
    wait_text(&c, "#shadow-samples", "new's failures among the shadow's mismatches", |t| t.contains("500")).await;
    let polls = js(&c, "return window.grayshiftConsole.polls").await.as_u64().unwrap();
    eventually(PAGE_DEADLINE, "two more polls drawn", || async {
        (js(&c, "return window.grayshiftConsole.polls").await.as_u64() >= Some(polls + 2)).then_some(())
    })
    .await;
    let png = c.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/console.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();

    // Keyboard: Tab reaches real controls.
    c.find(Locator::Css("body")).await.unwrap().send_keys("\u{e004}").await.unwrap();
    let focused = js(&c, "return document.activeElement.tagName + '#' + document.activeElement.id").await;
    assert!(["INPUT#", "BUTTON#"].iter().any(|p| focused.as_str().unwrap().starts_with(p)), "{focused}");

    // Phone-sized: nothing wider than the screen.
    c.set_window_size(390, 844).await.unwrap();
    eventually(PAGE_DEADLINE, "the phone layout without horizontal scrolling", || async {
        let w = js(&c, "return [document.documentElement.scrollWidth, window.innerWidth]").await;
        (w[0].as_u64().is_some() && w[0].as_u64() <= w[1].as_u64()).then_some(())
    })
    .await;
    assert_eq!(page_errors(&c).await, json!([]));
    c.close().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    reads.await.unwrap();
}

/// Requests from many users through the proxy until `stop`, paced a little.
fn background_traffic(proxy: &Proxy, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    background_traffic_to(proxy, "/", stop)
}

/// [`background_traffic`] to `path`.
fn background_traffic_to(proxy: &Proxy, path: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (url, client) = (proxy.url(path), proxy.client.clone());
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let req = http::Request::get(&url).header("x-user-id", format!("bg-{n}")).body(empty()).unwrap();
            if let Ok(resp) = client.request(req).await {
                let _ = Reply::read(resp).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_50_percent_needs_the_token_and_traffic_follows() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = start_with_token(&config(&[&stable], &[&new], 10, "")).await;
    let c = browser::browser(1280, 1000).await;
    open(&c, &proxy).await;

    // The number field to 49, then the slider one step by keyboard: 50.
    let number = c.find(Locator::Css("#percent-number")).await.unwrap();
    number.clear().await.unwrap();
    number.send_keys("49").await.unwrap();
    assert_eq!(js(&c, "return document.getElementById('percent-slider').value").await, "49");
    c.find(Locator::Css("#percent-slider")).await.unwrap().send_keys("\u{e014}").await.unwrap(); // →
    assert_eq!(js(&c, "return document.getElementById('percent-number').value").await, "50");
    // The button says what it will do.
    assert_eq!(find_text(&c, "#percent-apply").await.as_deref(), Some("Send 50 % of users to new"));

    // A wrong token: a clear 401, nothing changed.
    click(&c, "#percent-apply").await;
    give_token(&c, "not-the-token").await;
    let message = wait_text(&c, "#message", "the 401", |t| t.contains("401")).await;
    assert!(message.contains("401 Unauthorized") && message.contains("Nothing was changed"), "{message}");
    let why = wait_text(&c, "#token-why", "the dialog to say the token was refused", |t| t.contains("401")).await;
    assert!(why.contains("refused"), "{why}");
    click(&c, "#token-cancel").await;
    assert!(find_text(&c, "#message").await.unwrap().contains("401"), "the 401 stays on screen after cancelling");
    assert_eq!(proxy.status().await["percent"]["desired"], 10);
    assert_eq!(
        js(&c, "return sessionStorage.getItem('grayshift.adminToken')").await,
        Value::Null,
        "a refused token is forgotten"
    );

    // The right token: done, and the page shows it.
    click(&c, "#percent-apply").await;
    give_token(&c, TOKEN).await;
    wait_text(&c, "#message", "the change to be confirmed", |t| t.starts_with("Done: Send 50 % of users to new")).await;
    let status = proxy.status().await;
    assert_eq!(status["percent"]["desired"], 50, "{status:#}");
    assert_eq!(status["percent"]["effective"], 50);
    wait_text(&c, "#percent-effective", "effective 50 on the page", |t| t == "50 %").await;
    wait_text(&c, "#audit tbody", "the change in the page's audit tail", |t| {
        t.contains("admin") && t.contains("10 → 50")
    })
    .await;
    assert_eq!(js(&c, "return sessionStorage.getItem('grayshift.adminToken')").await, TOKEN);
    assert_eq!(js(&c, "return localStorage.length").await, 0, "the token is kept in the tab's session only");
    let audit = proxy.admin("GET", "/audit", None, None).await.json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one change, the good one: {audit:#}");
    assert_eq!((entries[0]["actor"].as_str(), entries[0]["new"].as_u64()), (Some("admin"), Some(50)));

    // Real traffic follows: about half of the users land on new.
    let before = new.hits();
    let total = 400;
    for u in 0..total {
        assert_eq!(proxy.get_as("/", Some(&format!("user-{u}"))).await.status, 200);
    }
    let share = user_share_on_new(new.hits() - before, total);
    assert!((0.35..=0.65).contains(&share), "share of users on new at 50 %: {share}");

    // The second change in the tab asks nothing: the token is remembered.
    let number = c.find(Locator::Css("#percent-number")).await.unwrap();
    number.clear().await.unwrap();
    number.send_keys("30").await.unwrap();
    click(&c, "#percent-apply").await;
    wait_text(&c, "#message", "the second change", |t| t.starts_with("Done: Send 30 %")).await;
    assert_eq!(proxy.status().await["percent"]["desired"], 30);
    assert_eq!(page_errors(&c).await, json!([]));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_click_resume_and_l3_needs_the_confirmation() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = start_with_token(&config(&[&stable], &[&new], 40, "")).await;
    let c = browser::browser(1280, 1000).await;
    open(&c, &proxy).await;

    wait_text(&c, "#rollback-L1", "the L1 button", |t| t == "Roll back L1: send everyone to stable").await;
    c.find(Locator::Css("#rollback-reason")).await.unwrap().send_keys("p99 looks bad").await.unwrap();
    click(&c, "#rollback-L1").await;
    give_token(&c, TOKEN).await;
    wait_text(&c, "#percent-effective", "effective 0 after L1", |t| t == "0 %").await;
    assert_eq!(find_text(&c, "#percent-desired").await.as_deref(), Some("40 %"));
    let reason = wait_text(&c, "#percent-reason", "the reason effective differs", |t| t.contains("L1")).await;
    assert!(reason.contains("p99 looks bad") && reason.contains("admin"), "{reason}");
    let detail = find_text(&c, "#level-L1-detail").await.unwrap();
    assert!(detail.contains("by admin") && detail.contains("p99 looks bad"), "{detail}");
    let status = proxy.status().await;
    assert_eq!(status["percent"]["effective"], 0);
    assert_eq!(status["rollback"]["active"]["L1"]["reason"], "p99 looks bad");

    // Resume L1 (the token is remembered now).
    let resume = wait_text(&c, "#resume-L1", "the resume button", |t| t.starts_with("Resume L1")).await;
    assert_eq!(resume, "Resume L1: route by the desired percent again");
    click(&c, "#resume-L1").await;
    wait_text(&c, "#percent-effective", "effective 40 after the resume", |t| t == "40 %").await;
    assert!(proxy.status().await["rollback"]["active"].get("L1").is_none());

    // L3: rolled back by click; its resume without the confirmation sends nothing.
    click(&c, "#rollback-L3").await;
    wait_text(&c, "#percent-effective", "effective 0 after L3", |t| t == "0 %").await;
    let resume = wait_text(&c, "#resume-L3", "L3's resume button", |t| t.starts_with("Resume L3")).await;
    assert!(resume.contains("needs the confirmation"), "{resume}");
    let audit_len =
        || async { proxy.admin("GET", "/audit", None, None).await.json()["entries"].as_array().unwrap().len() };
    let before = audit_len().await;
    click(&c, "#resume-L3").await;
    let message = wait_text(&c, "#message", "the confirmation request", |t| t.contains("confirmation")).await;
    assert!(message.contains("Nothing was sent"), "{message}");
    assert_eq!(proxy.status().await["rollback"]["level"], 3, "L3 is still active");
    assert_eq!(audit_len().await, before);
    // With the box ticked, it resumes.
    click(&c, "#resume-L3-confirm").await;
    click(&c, "#resume-L3").await;
    wait_text(&c, "#percent-effective", "effective 40 after resuming L3", |t| t == "40 %").await;
    let status = proxy.status().await;
    assert_eq!(status["rollback"]["level"], 0, "{status:#}");
    assert_eq!(page_errors(&c).await, json!([]));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_shows_pending_then_firing_without_a_reload() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    new.fail_every.store(2, Ordering::SeqCst); // half of new's answers are 500
    let proxy = start_with_token(&config(&[&stable], &[&new], 50, RULE)).await;
    let c = browser::browser(1280, 1000).await;
    open(&c, &proxy).await;
    let rule = "[data-rule='new-error-rate'] .rule-head";
    wait_text(&c, rule, "the rule's first state", |t| t.contains("ok")).await;
    js(&c, "window.notReloaded = true; return null").await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = background_traffic(&proxy, stop.clone());
    wait_text(&c, rule, "pending on the page", |t| t.contains("pending")).await;
    let timer =
        wait_text(&c, "[data-rule='new-error-rate'] .for", "the for timer", |t| t.contains("before it fires")).await;
    assert!(timer.contains("of 5s"), "{timer}");
    wait_text(&c, rule, "firing on the page", |t| t.contains("firing")).await;
    wait_text(&c, "#percent-effective", "effective 0 from the rule's L1", |t| t == "0 %").await;
    let detail = find_text(&c, "#level-L1-detail").await.unwrap();
    assert!(detail.contains("rule:new-error-rate"), "{detail}");
    assert_eq!(js(&c, "return window.notReloaded === true").await, true, "the page was not reloaded");
    // The sparkline has drawn readings.
    let points =
        js(&c, "return document.querySelector(\"[data-rule='new-error-rate'] polyline\").getAttribute('points')").await;
    assert!(points.as_str().unwrap().split(' ').count() >= 2, "{points}");
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert_eq!(page_errors(&c).await, json!([]));
    c.close().await.unwrap();
}

/// A tiny web server on another port: one page that attacks the admin API.
async fn attacker_page(admin: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let page = format!(
        r#"<!doctype html><html><head><title>loading</title></head><body>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" action="http://{admin}/rollback" enctype="text/plain" target="sink">
<input name='{{"level":"L1","reason":"' value='"}}'></form>
<iframe id="framed" src="http://{admin}/ui"></iframe>
<script>
const out = [];
document.getElementById("framed").addEventListener("load", () => out.push("framed-loaded"));
document.getElementById("sink").addEventListener("load", () => out.push("form-answered"));
(async () => {{
  try {{
    const r = await fetch("http://{admin}/percent", {{ method: "PUT", headers: {{ "Content-Type": "application/json" }}, body: '{{"percent":77}}' }});
    out.push("cors-put:" + r.status);
  }} catch (e) {{ out.push("cors-put:blocked"); }}
  try {{
    const r = await fetch("http://{admin}/rollback", {{ method: "POST", mode: "no-cors", headers: {{ "Content-Type": "text/plain" }}, body: '{{"level":"L3"}}' }});
    out.push("no-cors-post:" + r.type);
  }} catch (e) {{ out.push("no-cors-post:blocked"); }}
  document.getElementById("f").submit();
}})();
setInterval(() => {{ document.title = out.join(","); }}, 50);
</script></body></html>"#
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let page = page.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let page = page.clone();
                    async move {
                        let mut resp = http::Response::new(full(page));
                        resp.headers_mut().insert("content-type", "text/html".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origin_cannot_change_anything_nor_frame_the_console() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    // No token at all (loopback): the Origin rule is the only thing in the way.
    let proxy = Proxy::start(&config(&[&stable], &[&new], 10, "")).await;
    let (evil, server) = attacker_page(proxy.admin_addr).await;
    let c = browser::browser(1280, 1000).await;
    c.goto(&format!("http://{evil}/")).await.unwrap();
    let title = eventually(PAGE_DEADLINE, "the attacker page to try everything", || async {
        let t = c.title().await.ok()?;
        (t.contains("cors-put:")
            && t.contains("no-cors-post:")
            && t.contains("form-answered")
            && t.contains("framed-loaded"))
        .then_some(t)
    })
    .await;
    // A cross-origin PUT with JSON needs a preflight, which gets no CORS
    // allowance; the no-cors POST and the form were sent, and refused.
    assert!(title.contains("cors-put:blocked"), "{title}");
    assert!(title.contains("no-cors-post:opaque"), "{title}");
    let status = proxy.status().await;
    assert_eq!(status["percent"]["desired"], 10, "{status:#}");
    assert_eq!(status["rollback"]["level"], 0, "{status:#}");
    let audit = proxy.admin("GET", "/audit", None, None).await.json();
    assert_eq!(audit["entries"], json!([]), "nothing changed: {audit:#}");

    // The framed console did not render: the frame holds the browser's
    // error page, not the console (no script ran, no element exists).
    let frames = js(&c, "return window.frames.length").await;
    assert_eq!(frames, 2);
    c.enter_frame(1).await.unwrap();
    let inside =
        js(&c, "return [location.href, !!document.getElementById('percent-desired'), typeof window.grayshiftConsole]")
            .await;
    assert_eq!(inside[1], false, "the console rendered inside another origin's frame: {inside}");
    assert_eq!(inside[2], "undefined", "{inside}");
    assert!(!inside[0].as_str().unwrap().ends_with("/ui"), "{inside}");
    c.enter_parent_frame().await.unwrap();
    c.close().await.unwrap();
    server.abort();
}

/// One raw HTTP/1.1 request; returns the status and the head's lines.
fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_rule_admits_only_the_console_on_an_unforgeable_host() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = start_with_token(&config(&[&stable], &[&new], 10, "")).await;
    let admin = proxy.admin_addr;
    let port = admin.port();
    let put = |host: &str, origin: &str, extra: &str| {
        let head = format!(
            "PUT /percent HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{extra}"
        );
        raw(admin, &head, r#"{"percent":77}"#)
    };
    // DNS rebinding: evil.example resolved to 127.0.0.1, same-origin to the browser.
    let (status, text) = put("evil.example", "http://evil.example", "");
    assert_eq!(status, 403, "{text}");
    assert_eq!(put(&format!("evil.example:{port}"), &format!("http://evil.example:{port}"), "").0, 403);
    assert_eq!(
        put(&format!("localhost.evil.example:{port}"), &format!("http://localhost.evil.example:{port}"), "").0,
        403
    );
    // Another origin, even on loopback.
    assert_eq!(put(&format!("127.0.0.1:{port}"), "http://127.0.0.1:1", "").0, 403);
    assert_eq!(put(&format!("127.0.0.1:{port}"), "null", "").0, 403);
    // The browser says the request is cross-site.
    let origin = format!("http://127.0.0.1:{port}");
    assert_eq!(put(&format!("127.0.0.1:{port}"), &origin, "Sec-Fetch-Site: same-site\r\n").0, 403);
    assert_eq!(proxy.status().await["percent"]["desired"], 10, "nothing changed");
    // The console's own origin, with the token: accepted.
    let (status, text) = put(&format!("127.0.0.1:{port}"), &origin, "Sec-Fetch-Site: same-origin\r\n");
    assert_eq!(status, 200, "{text}");
    let (status, text) = put(&format!("localhost:{port}"), &format!("http://localhost:{port}"), "");
    assert_eq!(status, 200, "{text}");
    // ... but never without it.
    let head = format!(
        "PUT /percent HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\n"
    );
    assert_eq!(raw(admin, &head, r#"{"percent":5}"#).0, 401);
    assert_eq!(proxy.status().await["percent"]["desired"], 77);

    // A CORS preflight gets no allowance.
    let head = format!(
        "OPTIONS /percent HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:1\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: authorization, content-type\r\n"
    );
    let (status, text) = raw(admin, &head, "");
    assert!(status >= 400, "{text}");
    assert!(!text.to_ascii_lowercase().contains("access-control-allow"), "{text}");
}

#[tokio::test]
async fn the_console_is_served_with_its_security_headers_and_no_inline_code() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 10, "")).await;
    for (path, ctype) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let r = proxy.admin("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        let h = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("content-type").as_deref(), Some(ctype), "{path}");
        assert_eq!(h("content-security-policy").as_deref(), Some(CSP), "{path}");
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
        assert_eq!(h("referrer-policy").as_deref(), Some("no-referrer"), "{path}");
        assert_eq!(h("cache-control").as_deref(), Some("no-store"), "{path}");
        let text = r.text();
        // Nothing is fetched from anywhere but this listener (the one URL is
        // SVG's XML namespace, a name, not a request).
        assert_eq!(text.replace("http://www.w3.org/2000/svg", "").matches("://").count(), 0, "{path}");
        if path == "/ui" {
            assert!(!text.contains("<script>") && !text.contains(" style="), "inline code in {path}");
            let handler = text.split_whitespace().find(|w| w.starts_with("on") && w.contains('='));
            assert_eq!(handler, None, "an inline event handler in {path}");
        }
    }
    let r = proxy.admin("POST", "/ui", None, None).await;
    assert_eq!(r.status, 405);
}

/// A stand-in admin listener serving the console and a `/status` with every
/// optional section (fleet, schema, ramp, ledger, a blocked rollback), as
/// the release and fleet work will add them; it records the changes sent.
struct FakeAdmin {
    addr: SocketAddr,
    changes: Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAdmin {
    async fn start(status: Value) -> FakeAdmin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = changes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (status, seen) = (status.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (status, seen) = (status.clone(), seen.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let (ctype, text) = match parts.uri.path() {
                                "/ui" => ("text/html", include_str!("../src/admin/console/index.html").to_string()),
                                "/ui/app.js" => {
                                    ("text/javascript", include_str!("../src/admin/console/app.js").to_string())
                                }
                                "/ui/app.css" => ("text/css", include_str!("../src/admin/console/app.css").to_string()),
                                "/status" => ("application/json", status.to_string()),
                                "/metrics" => ("text/plain", String::new()),
                                "/audit" => ("application/json", r#"{"entries": []}"#.to_string()),
                                path => {
                                    let auth =
                                        parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                                    let body = String::from_utf8_lossy(&body).into_owned();
                                    let authorized = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
                                    seen.lock().unwrap().push((path.to_string(), auth.unwrap_or_default(), body));
                                    if authorized {
                                        ("application/json", r#"{"ok": true}"#.to_string())
                                    } else {
                                        ("401", r#"{"error": "a valid admin token is required"}"#.to_string())
                                    }
                                }
                            };
                            let (ctype, code) = if ctype == "401" { ("application/json", 401) } else { (ctype, 200) };
                            let mut resp = http::Response::new(full(text));
                            *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            resp.headers_mut().insert("content-type", ctype.parse().unwrap());
                            resp.headers_mut().insert("content-security-policy", CSP.parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeAdmin { addr, changes, task }
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_schema_ramp_and_ledger_are_drawn_when_status_has_them() {
    let status = json!({
        "percent": { "desired": 30, "effective": 10 },
        "rollback": { "level": 1, "shedding": false, "active": {
            "L1": { "reason": "rule p99", "actor": "rule:p99", "since": "2026-12-01T20:00:00Z", "blocked": true }
        } },
        "rules": [],
        "pools": { "stable": { "healthy": true, "endpoints": [{ "address": "10.0.0.1:8080", "healthy": true }] },
                   "new": { "healthy": false, "endpoints": [{ "address": "10.0.0.2:8080", "healthy": false }] } },
        "config": { "file": "/etc/grayshift/grayshift.toml", "version": "abc123", "group": "orders-v2" },
        "version": "0.1.0",
        "fleet": { "store": "connected", "name": "orders", "replica": "pod-a", "revision": 7, "members": [
            { "replica": "pod-a", "revision": 7, "effective_percent": 10, "rollback_level": 1, "seen": "2026-12-01T20:00:00Z" },
            { "replica": "pod-b", "revision": 6, "effective_percent": 30, "rollback_level": 0, "seen": "2026-12-01T19:59:58Z" }
        ] },
        "schema": { "tool": "alembic", "version": "3f2a1b", "new_ready": false, "stable_supported": true,
                    "error": null, "read_at": "2026-12-01T20:00:00Z" },
        "ramp": { "state": "running", "step": 2, "steps": [5, 30, 50, 80, 100], "percent": 30, "hold_left": 250, "requests": 1234 },
        "ledger": { "sink": "postgres", "queued": 3, "dropped": 0, "errors": 2, "last_flush": "2026-12-01T20:00:00Z" }
    });
    let fake = FakeAdmin::start(status).await;
    let c = browser::browser(1280, 1400).await;
    c.goto(&format!("http://{}/ui", fake.addr)).await.unwrap();
    eventually(PAGE_DEADLINE, "the first polls", || async {
        (js(&c, "return window.grayshiftConsole ? window.grayshiftConsole.polls : 0").await.as_u64() >= Some(2))
            .then_some(())
    })
    .await;
    assert_eq!(page_errors(&c).await, json!([]));

    let fleet = find_text(&c, "#fleet").await.unwrap();
    assert!(fleet.contains("connected") && fleet.contains("pod-a (this)") && fleet.contains("pod-b"), "{fleet}");
    let behind = find_text(&c, "#fleet tr.behind").await.unwrap();
    assert!(behind.contains("pod-b") && behind.contains("behind"), "pod-b (revision 6 of 7) is behind: {behind}");
    let schema = find_text(&c, "#schema").await.unwrap();
    assert!(schema.contains("alembic") && schema.contains("3f2a1b") && schema.contains("new ready\nno"), "{schema}");
    let ramp = find_text(&c, "#ramp").await.unwrap();
    assert!(
        ramp.contains("running") && ramp.contains("2 of 5") && ramp.contains("4 min 10 s") && ramp.contains("1234"),
        "{ramp}"
    );
    let ledger = find_text(&c, "#ledger").await.unwrap();
    assert!(ledger.contains("queued\n3") && ledger.contains("errors\n2"), "{ledger}");
    let l1 = find_text(&c, "#level-L1").await.unwrap();
    assert!(l1.contains("blocked") && l1.contains("NOT sent back to stable") && l1.contains("rule:p99"), "{l1}");
    let reason = find_text(&c, "#percent-reason").await.unwrap();
    assert!(
        reason.contains("L1 rollback")
            && reason.contains("BLOCKED: users are not sent back")
            && reason.contains("schema gate")
            && reason.contains("ramp running"),
        "{reason}"
    );

    // A ramp button sends its action with the token.
    click(&c, "button.ramp[data-action='pause']").await;
    give_token(&c, TOKEN).await;
    wait_text(&c, "#message", "the ramp change", |t| t.starts_with("Done: Pause the ramp")).await;
    // First without a token (answered 401, which opened the dialog), then with it.
    let changes = fake.changes.lock().unwrap().clone();
    let body = r#"{"action":"pause"}"#.to_string();
    assert_eq!(
        changes,
        vec![
            ("/ramp".to_string(), String::new(), body.clone()),
            ("/ramp".to_string(), format!("Bearer {TOKEN}"), body)
        ]
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_release_is_run_from_the_page_with_the_ramp_buttons() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let ramp = "\n[ramp]\nsteps = [10, 50, 100]\nhold = \"1h\"\n";
    let proxy = start_with_token(&config(&[&stable], &[&new], 0, &format!("{RULE}{ramp}"))).await;
    let c = browser::browser(1280, 1000).await;
    open(&c, &proxy).await;
    wait_text(&c, "#ramp", "the idle ramp", |t| t.contains("idle") && t.contains("10 → 50 → 100")).await;

    click(&c, "button.ramp[data-action='start']").await;
    give_token(&c, TOKEN).await;
    wait_text(&c, "#ramp", "step 1 running", |t| t.contains("running") && t.contains("1 of 3")).await;
    wait_text(&c, "#percent-desired", "10 % desired", |t| t == "10 %").await;
    click(&c, "button.ramp[data-action='promote']").await;
    wait_text(&c, "#ramp", "step 2", |t| t.contains("2 of 3")).await;
    assert_eq!(proxy.status().await["percent"]["desired"], 50);
    click(&c, "button.ramp[data-action='pause']").await;
    wait_text(&c, "#ramp", "paused", |t| t.contains("paused")).await;
    assert_eq!(proxy.status().await["ramp"]["state"], "paused");
    click(&c, "button.ramp[data-action='resume']").await;
    wait_text(&c, "#ramp", "running again", |t| t.contains("running")).await;
    click(&c, "button.ramp[data-action='promote']").await;
    wait_text(&c, "#ramp", "done", |t| t.contains("done") && t.contains("3 of 3")).await;
    wait_text(&c, "#percent-effective", "everyone on new", |t| t == "100 %").await;
    for u in 0..20 {
        assert_eq!(proxy.get_as("/", Some(&format!("u{u}"))).await.upstream(), "new", "real traffic follows");
    }

    // A refused action shows the server's answer and changes nothing.
    click(&c, "button.ramp[data-action='resume']").await;
    let message = wait_text(&c, "#message", "the server's refusal", |t| t.contains("not done")).await;
    assert!(message.starts_with("409") && message.contains("only a paused ramp resumes"), "{message}");
    assert_eq!(proxy.status().await["ramp"]["state"], "done");
    let audit = proxy.admin("GET", "/audit?limit=50", None, None).await.json();
    let ramp_events = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "ramp").count();
    assert_eq!(ramp_events, 5, "start, promote, pause, resume, promote to the last step: {audit:#}");
    assert_eq!(page_errors(&c).await, json!([]));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_panel_shows_counts_fields_and_a_real_mismatch_and_says_when_it_is_off() {
    // The test upstreams answer with their own name (in the body and in
    // X-Upstream): every read mirrored to the other side differs, a real
    // mismatch between two real servers.
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let proxy = Proxy::start(&config(&[&stable], &[&new], 50, "[shadow]\nsample = \"100%\"\n")).await;
    let c = browser::browser(1280, 1200).await;
    open(&c, &proxy).await;
    assert_eq!(find_text(&c, "#shadow-samples").await.as_deref(), Some("no mismatch yet"));
    assert_eq!(proxy.get_as("/orders/17", Some("user-17")).await.status, 200);
    let served = if proxy.get_as("/", Some("user-17")).await.upstream() == "new" { "new" } else { "stable" };

    let counts = wait_text(&c, "#shadow", "the mismatches counted", |t| t.contains("mismatched\n2")).await;
    assert!(counts.contains("sample\n100%") && counts.contains("compared\n2"), "{counts}");
    let cells = |table: &str| {
        format!(
            "return [...document.querySelectorAll('{table} tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
        )
    };
    let fields = js(&c, &cells("#shadow .shadow-fields")).await;
    assert_eq!(fields, json!([["body", "2", "0", "100 %"], ["header:x-upstream", "2", "0", "100 %"]]));
    wait_text(&c, "#shadow-samples", "both mismatches listed", |t| t.matches("user-17").count() == 2).await;
    let rows = js(&c, &cells("#shadow-samples")).await;
    let row =
        |i: usize| rows[i].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(row(0)[1..5], ["GET /", "user-17", served, "200 / 200"], "newest first");
    assert!(row(0)[5].contains("header:x-upstream: stable → new"), "both values, stable first: {:?}", row(0));
    assert_eq!(row(1)[1], "GET /orders/17");
    assert!(row(1)[0].ends_with('Z'), "when, RFC 3339: {:?}", row(1));
    assert_eq!(page_errors(&c).await, json!([]));

    // Without [shadow] the panel says so, and the page never asks for samples.
    let plain = Proxy::start(&config(&[&stable], &[&new], 50, "")).await;
    open(&c, &plain).await;
    assert_eq!(find_text(&c, "#shadow").await.as_deref(), Some("not configured (no [shadow] section)"));
    assert_eq!(find_text(&c, "#shadow-samples").await.as_deref(), Some(""));
    assert_eq!(page_errors(&c).await, json!([]), "no 404 from /shadow/samples");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_system_gets_the_dark_page_and_a_lost_listener_is_shown_stale() {
    let (stable, new) = (Upstream::start("stable").await, Upstream::start("new").await);
    let mut proxy = Proxy::start(&config(&[&stable], &[&new], 10, "")).await;
    let c = browser::browser_with(800, 900, &["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]).await;
    open(&c, &proxy).await;
    assert_eq!(js(&c, "return matchMedia('(prefers-color-scheme: dark)').matches").await, true);
    assert_eq!(js(&c, "return getComputedStyle(document.body).backgroundColor").await, "rgb(15, 18, 22)");
    assert_eq!(page_errors(&c).await, json!([]));

    // The admin listener goes away: the page says its numbers are old.
    proxy.stop().await;
    let conn = wait_text(&c, "#conn", "the page to say it is stale", |t| t.starts_with("STALE")).await;
    assert!(conn.contains("cannot read the admin API"), "{conn}");
    assert_eq!(js(&c, "return document.body.classList.contains('stale')").await, true);
    c.close().await.unwrap();
}
