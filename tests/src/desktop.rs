//! The desktop app in a real window: an Xvfb display of its own, Debian's WebKitWebDriver (the
//! driver `tauri-driver` forwards to, spoken to directly), the app built with its page embedded,
//! and a small W3C WebDriver client over plain HTTP/1.1.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key under which W3C WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A virtual X display, stopped when dropped.
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    /// `:N`
    pub display: String,
}

impl Xvfb {
    /// Starts Xvfb on a free display number (it picks one and says which), 1280 x 800.
    pub fn start() -> Self {
        Self::start_sized(1280, 800)
    }

    /// Starts Xvfb with a screen of `width` x `height`.
    pub fn start_sized(width: u32, height: u32) -> Self {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                &format!("{width}x{height}x24"),
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts (apt install xvfb)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let number: u32 = line.trim().parse().expect("Xvfb names its display");
        Self { child, display: format!(":{number}") }
    }
}

impl Xvfb {
    /// The X server's process id (to measure its CPU).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// With `CONFER_SCREENSHOTS=DIR` set, saves the screen's top-left `width`x`height` (where the
    /// app's window opens: there is no window manager) as `DIR/NAME.png` (xwd from x11-apps, and
    /// tools/xwd2png.py). How the README's screenshots are made.
    pub fn screenshot(&self, name: &str, (width, height): (u32, u32)) {
        let Some(dir) = std::env::var_os("CONFER_SCREENSHOTS") else { return };
        let dump = Command::new("xwd")
            .args(["-root", "-silent", "-display", &self.display])
            .output()
            .expect("xwd runs");
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/xwd2png.py");
        // A relative DIR is the repository's (tests run in the tests/ folder).
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir).join(format!("{name}.png"));
        let mut convert = Command::new("python3")
            .arg(tool)
            .arg(&out)
            .args(["0", "0", &width.to_string(), &height.to_string()])
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        convert.stdin.take().unwrap().write_all(&dump.stdout).unwrap();
        assert!(convert.wait().unwrap().success(), "screenshot {name}");
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The desktop app with its page embedded, built by cargo like the other binaries.
pub fn desktop_app() -> PathBuf {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist/index.html");
    assert!(
        dist.exists(),
        "the UI is not built: run `npm --prefix ui install && npm --prefix ui run build` (scripts/test does)"
    );
    crate::binary("confer-desktop", "confer-desktop")
}

/// A D-Bus session bus of its own (the single-instance handover goes over it), stopped when
/// dropped.
#[derive(Debug)]
pub struct SessionBus {
    child: Child,
    /// `unix:path=...`
    pub address: String,
}

impl SessionBus {
    /// Starts `dbus-daemon --session`.
    pub fn start() -> Self {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Self { child, address: line.trim().to_owned() }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where one app instance keeps its settings, data and logs (XDG directories of its own), and
/// the session bus it sees (none: no single-instance handover).
#[derive(Debug)]
pub struct AppHome {
    dir: tempfile::TempDir,
    bus: Option<String>,
    extra: Vec<(String, String)>,
}

impl AppHome {
    /// Empty directories.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["config", "data", "cache", "runtime", "videos"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // The user's folders, as a desktop's xdg-user-dirs names them: recordings go in the
        // videos folder, here and not in the real home.
        let videos = dir.path().join("videos");
        std::fs::write(
            dir.path().join("config/user-dirs.dirs"),
            format!("XDG_VIDEOS_DIR=\"{}\"\n", videos.display()),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path().join("runtime"), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        Self { dir, bus: None, extra: Vec::new() }
    }

    /// The app sees this variable in its environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The app sees this session bus.
    pub fn with_bus(mut self, bus: &SessionBus) -> Self {
        self.bus = Some(bus.address.clone());
        self
    }

    /// The user's videos folder (where the app saves recordings, under `Confer`).
    pub fn videos(&self) -> PathBuf {
        self.dir.path().join("videos")
    }

    /// The app, started directly (as a launcher starts it) with this home and display.
    pub fn command(&self, binary: &Path, display: &str) -> Command {
        let mut command = Command::new(binary);
        self.env(&mut command, display);
        command
    }

    /// Writes the app's settings file before it starts.
    pub fn settings(&self, settings: &Value) {
        let dir = self.dir.path().join("config/org.confer.desktop");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
    }

    /// The app's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/org.confer.desktop/logs/confer.log"))
            .unwrap_or_default()
    }

    fn env(&self, command: &mut Command, display: &str) {
        let path = |sub: &str| self.dir.path().join(sub);
        command
            .env("DISPLAY", display)
            .env("GDK_BACKEND", "x11")
            .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("NO_AT_BRIDGE", "1")
            .env("XDG_CONFIG_HOME", path("config"))
            .env("XDG_DATA_HOME", path("data"))
            .env("XDG_CACHE_HOME", path("cache"))
            .env("XDG_RUNTIME_DIR", path("runtime"))
            .env_remove("WAYLAND_DISPLAY");
        match &self.bus {
            Some(bus) => command.env("DBUS_SESSION_BUS_ADDRESS", bus),
            None => command.env_remove("DBUS_SESSION_BUS_ADDRESS"),
        };
        command.envs(self.extra.iter().map(|(k, v)| (k, v)));
    }
}

impl Default for AppHome {
    fn default() -> Self {
        Self::new()
    }
}

/// WebKitWebDriver on a free port, driving one app instance; both stop when dropped.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Driver {
    /// Starts the driver and, through it, the app (`binary` with `args`) on `display`.
    pub fn start(binary: &Path, args: &[&str], display: &str, home: &AppHome) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new("WebKitWebDriver");
        command.arg(format!("--port={port}")).arg("--host=127.0.0.1");
        home.env(&mut command, display);
        // tauri-runtime-wry lets a driver in only with this set (the app inherits it).
        command.env("TAURI_WEBVIEW_AUTOMATION", "true").stdout(Stdio::null()).stderr(Stdio::null());
        let child = command.spawn().expect("WebKitWebDriver starts (apt install webkit2gtk-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "WebKitWebDriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut driver = Self { child, port, session: String::new() };
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "webkitgtk:browserOptions": {
            "binary": binary, "args": args,
        }}}});
        let reply = driver.request("POST", "/session", Some(&capabilities));
        driver.session =
            reply["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {reply}")).to_owned();
        driver
    }

    /// The driver's process id (the app is its child, WebKit's processes the app's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // The driver may answer chunked; its JSON is one chunk.
        let json = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            json.split_once("\r\n").map_or("", |(_, rest)| rest).rsplitn(2, "\r\n0").last().unwrap_or("")
        } else {
            json
        };
        let value: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Runs `script` in the page (a function body; `arguments` holds `args`) and returns its value.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.request(
            "POST",
            &self.session_path("/execute/sync"),
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching `css`, waiting up to `timeout` for it.
    pub fn find(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.request(
                "POST",
                &self.session_path("/element"),
                Some(&json!({ "using": "css selector", "value": css })),
            );
            if let Some(id) = reply[ELEMENT].as_str() {
                return id.to_owned();
            }
            if Instant::now() >= deadline {
                panic!("no element {css} in {timeout:?}: {reply}; {}", self.page_state());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Clicks the element matching `css` once it is enabled (a DOM click: WebKitWebDriver's
    /// pointer clicks were lost now and then under Xvfb, with no window manager).
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let element = self.find(css, Duration::from_secs(30));
            let reply = self.execute(
                "if (arguments[0].disabled) return 'disabled'; arguments[0].click(); return null;",
                &[json!({ ELEMENT: element })],
            );
            if reply.is_null() {
                return;
            }
            assert!(Instant::now() < deadline, "click on {css}: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` into the element matching `css` (after clearing it).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css, Duration::from_secs(30));
        self.request("POST", &self.session_path(&format!("/element/{element}/clear")), Some(&json!({})));
        let reply = self.request(
            "POST",
            &self.session_path(&format!("/element/{element}/value")),
            Some(&json!({ "text": text })),
        );
        assert!(reply.is_null(), "typing into {css}: {reply}");
    }

    /// The visible text of the element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css, Duration::from_secs(30));
        self.request("GET", &self.session_path(&format!("/element/{element}/text")), None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// From the home screen, opens the lobby of `link` and waits until it shows the saved name
    /// and the device lists; returns the chosen camera's name as the picker shows it.
    pub fn open_lobby(&self, link: &str, name: &str) -> Value {
        self.type_into("[data-testid=link]", link);
        self.click("[data-testid=join]");
        self.wait_for(
            "the lobby shows the saved name",
            &format!(
                "return document.querySelector('[data-testid=name]')?.value === {} && !document.querySelector('[data-testid=join-now]').disabled",
                json!(name)
            ),
            Duration::from_secs(10),
        );
        self.wait_for(
            "the camera picker shows the camera chosen in the settings",
            "const s = document.querySelector('[data-testid=camera]'); return s.selectedIndex >= 0 && s.options[s.selectedIndex].text",
            Duration::from_secs(20),
        )
    }

    /// What an automated accessibility audit (axe-core, the UI's dev dependency) finds wrong
    /// with the page as it is now: each rule broken, with the elements that break it. Rules
    /// that need a human (is the text meaningful?) are not its business; names, roles, labels,
    /// contrast, focusable controls and landmarks are.
    pub fn accessibility_violations(&self) -> Vec<Value> {
        let axe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&axe)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/test installs the UI's packages)", axe.display()));
        self.execute(&format!("{source}\n;return null"), &[]);
        self.execute(
            "window.__axe = undefined; axe.run(document, { resultTypes: ['violations'] }).then(\
               (r) => { window.__axe = r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, \
                 nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + n.failureSummary) })) },\
               (e) => { window.__axe = [{ id: 'axe-failed', help: String(e) }] }); return null",
            &[],
        );
        let found = self.wait_for(
            "the accessibility audit",
            "return window.__axe !== undefined && JSON.stringify(window.__axe)",
            Duration::from_secs(30),
        );
        serde_json::from_str(found.as_str().unwrap_or("[]")).unwrap_or_default()
    }

    /// What the page shows and its probe says (frame socket, tiles), for a failure's message.
    fn page_state(&self) -> String {
        let page = self.execute("return document.body.innerText", &[]);
        let probe =
            self.execute("return window.__confer && [window.__confer.feed(), window.__confer.tiles()]", &[]);
        format!("probe: {probe}; the page says:\n{}", page.as_str().unwrap_or(""))
    }

    /// Waits until `script` returns something truthy, and returns it.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(script, &[]);
            if !(value.is_null() || value == false || value == 0 || value == "") {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {timeout:?} (last: {value}); {}", self.page_state());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends the session, which closes the app.
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.request("DELETE", &path, None)
            }));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
