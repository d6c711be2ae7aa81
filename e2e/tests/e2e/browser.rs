//! A real browser for the console trial: Debian's headless chromium, driven through its
//! chromedriver (WebDriver) with fantoccini. Screenshots are kept as test artefacts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use qleetos_e2e::cluster::free_port;
use qleetos_e2e::operator::target_dir;
use qleetos_e2e::process::{ChildProcess, ProcessSpec, spawn};
use serde_json::{Map, Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER_READY: Duration = Duration::from_secs(30);
/// How long an element may take to show up (the console polls every 5 s).
pub const SHOWS_WITHIN: Duration = Duration::from_secs(60);

/// One browser session; close it with [`Browser::close`].
pub struct Browser {
    client: Client,
    _driver: ChildProcess,
    artefacts: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session. `artefacts` receives screenshots.
    pub async fn start(log_dir: &Path, artefacts: PathBuf) -> Result<Self> {
        for program in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(program).is_file() {
                bail!(
                    "{program} is missing: install Debian's chromium and chromium-driver packages \
                     (scripts/install-deps.sh does)"
                );
            }
        }
        std::fs::create_dir_all(&artefacts)?;
        let port = free_port()?;
        let mut driver = spawn(ProcessSpec {
            component: "chromedriver".into(),
            program: CHROMEDRIVER.into(),
            args: vec![format!("--port={port}").into()],
            env: vec![],
            log_path: log_dir.join("chromedriver.log"),
        })
        .await?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&mut driver, &url).await?;
        let profile = log_dir.join("chromium-profile");
        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", format!("--user-data-dir={}", profile.display()),
            ]}),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("starting a chromium session through chromedriver")?;
        Ok(Self {
            client,
            _driver: driver,
            artefacts,
        })
    }

    pub async fn open(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// The element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let found = self
            .client
            .wait()
            .at_most(SHOWS_WITHIN)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => Ok(element),
            Err(error) => {
                let body = self.body_text().await.unwrap_or_default();
                bail!("no element {css} within {SHOWS_WITHIN:?} ({error}); the page shows: {body}")
            }
        }
    }

    /// Waits until the element matching `css` exists and its text contains `text`.
    pub async fn find_text(&self, css: &str, text: &str) -> Result<Element> {
        let deadline = tokio::time::Instant::now() + SHOWS_WITHIN;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.text().await.is_ok_and(|t| t.contains(text))
            {
                return Ok(element);
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.body_text().await.unwrap_or_default();
                bail!("no {css} saying {text:?} within {SHOWS_WITHIN:?}; the page shows: {body}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Types `text` into the field matching `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// Everything the page shows, as text.
    pub async fn body_text(&self) -> Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    /// The page's markup as the browser holds it now (after the script ran).
    pub async fn source(&self) -> Result<String> {
        Ok(self.client.source().await?)
    }

    /// Runs a script in the page and returns its result.
    pub async fn run(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Saves a PNG screenshot as `<name>.png` among the artefacts.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = self.artefacts.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// chromedriver's `/status` answers. (The environment's `http::wait_ready` reads until the
/// connection closes, which chromedriver's keep-alive never does.)
async fn wait_for_driver(driver: &mut ChildProcess, url: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DRIVER_READY;
    let client = qleetos_e2e::http::client_builder().build()?;
    loop {
        driver.check_running()?;
        let answer = client.get(format!("{url}/status")).send().await;
        if answer.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("chromedriver did not answer on {url} within {DRIVER_READY:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `target/e2e-artefacts/<name>`, beside the binaries the trials run.
pub fn artefacts_dir(name: &str) -> PathBuf {
    target_dir().join("e2e-artefacts").join(name)
}
