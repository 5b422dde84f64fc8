//! Debian's headless Chromium driven over WebDriver (chromedriver on a loopback port, fantoccini
//! as the client). `scripts/install-tools.sh` installs `chromium` and `chromium-driver`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use ordo_event_store::testing::free_port;
use ordo_tests::bin_dir;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// How long an element or a condition is awaited before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Flags without which Chromium waits on the network this machine does not have.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
];

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver and a browser session with a fresh profile.
    pub async fn start(log_dir: &Path) -> Browser {
        let driver_bin =
            which("chromedriver").expect("chromedriver (Debian package chromium-driver; scripts/install-tools.sh)");
        let chromium = which("chromium").expect("chromium (Debian package chromium; scripts/install-tools.sh)");
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_dir.join("chromedriver.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, which the browsers it starts join: dropping the Browser
            // (a failed test) ends them all, not just the driver.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while !http.get(format!("{url}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = bin_dir().join("browser-profiles").join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&profile).unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
        let client =
            ClientBuilder::new(HttpConnector::new()).capabilities(caps).connect(&url).await.expect("browser session");
        Browser { client, driver, profile }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element matching `css`, once it exists.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.map(|v| v.len()).unwrap_or(0)
    }

    pub async fn click(&self, css: &str) {
        self.until(&format!("{css} to be clickable"), || async move {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            e.click().await.ok()
        })
        .await;
    }

    /// Replaces the value of an input or textarea.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Sets an input's value by script (date and select inputs, long tokens).
    pub async fn set_value(&self, css: &str, value: &str) {
        self.find(css).await;
        self.client
            .execute(
                "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
                 e.dispatchEvent(new Event('change', {bubbles: true}));",
                vec![json!(css), json!(value)],
            )
            .await
            .unwrap();
    }

    /// The visible text of `css`, once it contains `needle`.
    pub async fn text_containing(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                let message = self.text("#message").await;
                panic!(
                    "timed out waiting for {css} to contain {needle:?}: it shows {text:?} (page message: {message:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The visible text of `css` (empty when it does not exist).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls `check` until it answers `Some`, or fails the test after [`PATIENCE`].
    pub async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                let message = self.text("#message").await;
                panic!("timed out waiting for {what} (page message: {message:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Calls the query API from inside the page with `token`, as a script in the page could:
    /// `(status, content type, body)`.
    pub async fn fetch(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, String, Value) {
        let answer = self
            .client
            .execute_async(
                "const [method, path, token, body, done] = arguments;
                 fetch(path, {method, headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
                              body: body === null ? undefined : JSON.stringify(body)})
                   .then(async r => done({status: r.status, type: r.headers.get('content-type'), body: await r.text()}))
                   .catch(e => done({status: 0, type: '', body: String(e)}));",
                vec![json!(method), json!(path), json!(token), body.unwrap_or(Value::Null)],
            )
            .await
            .unwrap();
        let text = answer["body"].as_str().unwrap_or_default();
        (
            answer["status"].as_u64().unwrap_or(0) as u16,
            answer["type"].as_str().unwrap_or_default().to_owned(),
            serde_json::from_str(text).unwrap_or(Value::String(text.to_owned())),
        )
    }

    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session, the browser and the driver (a test that fails before this leaves them
    /// to [`Drop`]).
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.start_kill();
        let _ = self.driver.wait().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Not closed (the test failed): end the driver's whole process group, browsers included.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}
