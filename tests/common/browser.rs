//! A real browser for the console tests: Debian's `chromium` driven through
//! `chromedriver` (WebDriver) with `fantoccini`, headless.
//!
//! One chromedriver per test process, started on a free port at first use.
//! It runs under a small `sh` that is its process group's leader and waits on
//! a pipe from this process: when the test process exits (pass, fail or
//! panic), the pipe closes and the shell kills its group (chromedriver and
//! the browsers it started), by process group id.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

struct Driver {
    url: String,
    /// Held for the life of the process; its closing stops the driver.
    _keepalive: Mutex<ChildStdin>,
}

static DRIVER: OnceLock<Driver> = OnceLock::new();

fn program(env: &str, candidates: &[&str]) -> String {
    if let Ok(p) = std::env::var(env) {
        return p;
    }
    candidates
        .iter()
        .find(|c| std::path::Path::new(c).exists())
        .map(|c| c.to_string())
        .unwrap_or_else(|| candidates.last().unwrap().to_string())
}

fn chromium() -> String {
    program("GRAYSHIFT_TEST_CHROMIUM", &["/usr/lib/chromium/chromium", "/usr/bin/chromium", "chromium"])
}

fn driver() -> &'static Driver {
    DRIVER.get_or_init(|| {
        let chromedriver = program("GRAYSHIFT_TEST_CHROMEDRIVER", &["/usr/bin/chromedriver", "chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("grayshift-chromedriver-{port}.log"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" --port="$1" --log-path="$2" --log-level=WARNING & read _ignored; kill -TERM 0"#)
            .arg(&chromedriver)
            .arg(port.to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver} (apt-get install chromium chromium-driver): {e}"));
        let stdin = child.stdin.take().unwrap();
        // The shell is reaped by nobody once it exits; that is fine for a
        // test process that ends right after.
        std::mem::forget(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let mut text = String::new();
                let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
                panic!(
                    "{chromedriver} did not listen on port {port} within 30 s (is chromium-driver installed?): {text}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { url: format!("http://127.0.0.1:{port}"), _keepalive: Mutex::new(stdin) }
    })
}

/// A new headless browser session (close it with [`Client::close`]).
pub async fn browser(width: u32, height: u32) -> Client {
    browser_with(width, height, &[]).await
}

/// [`browser`] with extra chromium flags.
pub async fn browser_with(width: u32, height: u32, extra: &[&str]) -> Client {
    let url = &driver().url;
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--window-size={width},{height}"));
    let caps = json!({
        "browserName": "chrome",
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": {
            "binary": chromium(),
            "args": args,
        },
    });
    let serde_json::Value::Object(caps) = caps else { unreachable!() };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a chromium session through {url}: {e}"))
}

/// chromedriver's browser-log command (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.to_string()))
    }
}

/// The browser console's entries at level SEVERE since the last call
/// (script errors, failed loads, CSP violations, `console.error`).
pub async fn severe_console_entries(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.unwrap_or_else(|e| panic!("reading the browser log: {e}"));
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}
