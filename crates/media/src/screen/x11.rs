//! X11 capture through x11rb's pure-Rust connection (no libxcb needed): monitors from RandR and
//! grabbed from the root window, windows named by the window manager (`_NET_CLIENT_LIST`, or the
//! mapped top-level windows where no window manager runs) and grabbed through XComposite, so a
//! window partly covered by another still shows its own content.

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::{ConnectionError, ReplyError};
use x11rb::protocol::ErrorKind;
use x11rb::protocol::composite::{self, ConnectionExt as _};
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ConnectionExt as _, ImageFormat, ImageOrder, MapState, Rectangle, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;

use super::{Grab, GrabError, ScreenError, ShareEnded, ShareKind, ShareSource, ShareTarget};

/// Windows smaller than this (tool tips, 1-pixel helpers) are not offered.
const MIN_WINDOW: u16 = 32;

pub(crate) struct X11 {
    conn: RustConnection,
    root: Window,
    composite: bool,
    randr: bool,
    net_client_list: Atom,
    net_wm_name: Atom,
    net_wm_pid: Atom,
    utf8_string: Atom,
    /// Windows this connection has redirected (XComposite keeps them redirected until it closes).
    redirected: Vec<Window>,
}

impl std::fmt::Debug for X11 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11").field("root", &self.root).field("composite", &self.composite).finish()
    }
}

fn lost(err: impl std::fmt::Display) -> ScreenError {
    ScreenError::NoDisplay(err.to_string())
}

impl X11 {
    pub(crate) fn connect() -> Result<Self, ScreenError> {
        if std::env::var_os("DISPLAY").is_none() {
            return Err(if std::env::var_os("WAYLAND_DISPLAY").is_some() {
                ScreenError::Unsupported(
                    "this is a Wayland session, and sharing through the desktop portal is not built yet"
                        .into(),
                )
            } else {
                ScreenError::NoDisplay("no DISPLAY is set".into())
            });
        }
        let (conn, screen) = x11rb::connect(None).map_err(lost)?;
        let root = conn.setup().roots.get(screen).map(|s| s.root).ok_or_else(|| lost("no such screen"))?;
        let composite = conn.extension_information(composite::X11_EXTENSION_NAME).map_err(lost)?.is_some()
            && conn.composite_query_version(0, 4).map_err(lost)?.reply().is_ok();
        let randr = conn.extension_information(randr::X11_EXTENSION_NAME).map_err(lost)?.is_some()
            && conn.randr_query_version(1, 5).map_err(lost)?.reply().is_ok_and(|v| v.minor_version >= 5);
        let atom = |name: &[u8]| -> Result<Atom, ScreenError> {
            Ok(conn.intern_atom(false, name).map_err(lost)?.reply().map_err(lost)?.atom)
        };
        let (net_client_list, net_wm_name, net_wm_pid, utf8_string) = (
            atom(b"_NET_CLIENT_LIST")?,
            atom(b"_NET_WM_NAME")?,
            atom(b"_NET_WM_PID")?,
            atom(b"UTF8_STRING")?,
        );
        Ok(Self {
            conn,
            root,
            composite,
            randr,
            net_client_list,
            net_wm_name,
            net_wm_pid,
            utf8_string,
            redirected: Vec::new(),
        })
    }

    /// The monitors, in RandR's order (the root window as one screen where RandR 1.5 is missing).
    fn monitors(&self) -> Result<Vec<(String, Rectangle)>, ScreenError> {
        if self.randr {
            let reply = self.conn.randr_get_monitors(self.root, true).map_err(lost)?.reply().map_err(lost)?;
            let mut monitors = Vec::new();
            for (n, monitor) in reply.monitors.iter().enumerate() {
                let name = self
                    .conn
                    .get_atom_name(monitor.name)
                    .ok()
                    .and_then(|c| c.reply().ok())
                    .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| format!("Screen {}", n + 1));
                let rect =
                    Rectangle { x: monitor.x, y: monitor.y, width: monitor.width, height: monitor.height };
                monitors.push((name, rect));
            }
            if !monitors.is_empty() {
                return Ok(monitors);
            }
        }
        let geometry = self.conn.get_geometry(self.root).map_err(lost)?.reply().map_err(lost)?;
        Ok(vec![(
            "Screen 1".into(),
            Rectangle { x: 0, y: 0, width: geometry.width, height: geometry.height },
        )])
    }

    /// Application windows: the window manager's list, else mapped top-level windows.
    fn windows(&self) -> Result<Vec<Window>, ScreenError> {
        let listed = self
            .conn
            .get_property(false, self.root, self.net_client_list, AtomEnum::WINDOW, 0, 4096)
            .map_err(lost)?
            .reply()
            .ok()
            .and_then(|reply| reply.value32().map(Iterator::collect::<Vec<_>>))
            .unwrap_or_default();
        if !listed.is_empty() {
            return Ok(listed);
        }
        let tree = self.conn.query_tree(self.root).map_err(lost)?.reply().map_err(lost)?;
        let mut windows = Vec::new();
        for window in tree.children {
            let Ok(Ok(attributes)) = self.conn.get_window_attributes(window).map(|c| c.reply()) else {
                continue;
            };
            if attributes.map_state == MapState::VIEWABLE
                && !attributes.override_redirect
                && attributes.class == WindowClass::INPUT_OUTPUT
            {
                windows.push(window);
            }
        }
        Ok(windows)
    }

    fn title(&self, window: Window) -> Option<String> {
        let read = |property: Atom, kind: Atom| {
            self.conn
                .get_property(false, window, property, kind, 0, 1024)
                .ok()?
                .reply()
                .ok()
                .filter(|reply| !reply.value.is_empty())
                .map(|reply| String::from_utf8_lossy(&reply.value).into_owned())
        };
        read(self.net_wm_name, self.utf8_string)
            .or_else(|| read(AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()))
    }

    /// The process that owns `window`, as it says (`_NET_WM_PID`).
    fn pid(&self, window: Window) -> Option<u32> {
        let reply = self
            .conn
            .get_property(false, window, self.net_wm_pid, AtomEnum::CARDINAL, 0, 1)
            .ok()?
            .reply()
            .ok()?;
        reply.value32()?.next()
    }

    /// Gets `target` ready to be grabbed with its own content: a window is redirected (once per
    /// connection). Returns whether that was new: the window's own picture then arrives as its
    /// program repaints (X sends it an Expose), and a grab at once may show what covered it.
    pub(crate) fn prepare(&mut self, target: ShareTarget) -> bool {
        let ShareTarget::Window(window) = target else { return false };
        if !self.composite || self.redirected.contains(&window) {
            return false;
        }
        let redirected = self
            .conn
            .composite_redirect_window(window, composite::Redirect::AUTOMATIC)
            .ok()
            .is_some_and(|cookie| cookie.check().is_ok());
        if redirected {
            self.redirected.push(window);
        }
        redirected
    }

    pub(crate) fn sources(&mut self) -> Result<Vec<ShareSource>, ScreenError> {
        let mut sources: Vec<ShareSource> = self
            .monitors()?
            .into_iter()
            .enumerate()
            .map(|(n, (name, rect))| ShareSource {
                id: ShareTarget::Screen(n as u32).id(),
                kind: ShareKind::Screen,
                name,
                width: u32::from(rect.width),
                height: u32::from(rect.height),
            })
            .collect();
        for window in self.windows()? {
            // This process's own windows (the app sharing) would show themselves in a loop.
            if self.pid(window) == Some(std::process::id()) {
                continue;
            }
            let Some(title) = self.title(window) else { continue };
            let Ok(Ok(geometry)) = self.conn.get_geometry(window).map(|c| c.reply()) else { continue };
            if geometry.width < MIN_WINDOW || geometry.height < MIN_WINDOW {
                continue;
            }
            sources.push(ShareSource {
                id: ShareTarget::Window(window).id(),
                kind: ShareKind::Window,
                name: title.chars().take(200).collect(),
                width: u32::from(geometry.width),
                height: u32::from(geometry.height),
            });
        }
        Ok(sources)
    }

    /// That `target` exists now.
    pub(crate) fn check(&mut self, target: ShareTarget) -> Result<(), ScreenError> {
        let exists = match target {
            ShareTarget::Screen(n) => (n as usize) < self.monitors()?.len(),
            ShareTarget::Window(window) => self.conn.get_geometry(window).map_err(lost)?.reply().is_ok(),
        };
        if exists { Ok(()) } else { Err(ScreenError::NoSuchSource(target.id())) }
    }

    pub(crate) fn grab(&mut self, target: ShareTarget) -> Result<Grab, GrabError> {
        match target {
            ShareTarget::Screen(n) => {
                let monitors =
                    self.monitors().map_err(|e| GrabError::Ended(ShareEnded::Failed(e.to_string())))?;
                let (_, rect) = monitors.get(n as usize).ok_or(GrabError::Ended(ShareEnded::ScreenGone))?;
                self.image(self.root, *rect).map_err(|e| ended(e, ShareEnded::ScreenGone))
            }
            ShareTarget::Window(window) => self.grab_window(window),
        }
    }

    fn grab_window(&mut self, window: Window) -> Result<Grab, GrabError> {
        let closed = |e: ReplyError| ended(e, ShareEnded::WindowClosed);
        let attributes =
            self.conn.get_window_attributes(window).map_err(|e| cut(&e))?.reply().map_err(closed)?;
        if attributes.map_state != MapState::VIEWABLE {
            return Err(GrabError::Hidden);
        }
        let geometry = self.conn.get_geometry(window).map_err(|e| cut(&e))?.reply().map_err(closed)?;
        let rect = Rectangle { x: 0, y: 0, width: geometry.width, height: geometry.height };
        if !self.composite {
            return self.image(window, rect).map_err(closed);
        }
        if !self.redirected.contains(&window) {
            // Automatic redirection: the server keeps drawing the window on screen as before.
            self.conn
                .composite_redirect_window(window, composite::Redirect::AUTOMATIC)
                .map_err(|e| cut(&e))?
                .check()
                .map_err(closed)?;
            self.redirected.push(window);
        }
        // A pixmap named per grab follows resizes (a named pixmap keeps the size it had).
        let pixmap =
            self.conn.generate_id().map_err(|e| GrabError::Ended(ShareEnded::Failed(e.to_string())))?;
        self.conn.composite_name_window_pixmap(window, pixmap).map_err(|e| cut(&e))?.check().map_err(
            |e| match e {
                // Unmapped between the two requests.
                ReplyError::X11Error(ref x) if x.error_kind == ErrorKind::Match => GrabError::Hidden,
                other => closed(other),
            },
        )?;
        let grab = self.image(pixmap, rect).map_err(closed);
        let _ = self.conn.free_pixmap(pixmap);
        grab
    }

    /// The pixels of `rect` of `drawable`, as B G R X.
    fn image(&self, drawable: u32, rect: Rectangle) -> Result<Grab, ReplyError> {
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, drawable, rect.x, rect.y, rect.width, rect.height, !0)?
            .reply()?;
        let setup = self.conn.setup();
        let bits = setup.pixmap_formats.iter().find(|f| f.depth == reply.depth).map(|f| f.bits_per_pixel);
        let (width, height) = (usize::from(rect.width), usize::from(rect.height));
        if bits != Some(32) || (reply.depth != 24 && reply.depth != 32) {
            return Err(ReplyError::ConnectionError(ConnectionError::UnsupportedExtension));
        }
        let mut bgrx = reply.data;
        if setup.image_byte_order == ImageOrder::MSB_FIRST {
            // X R G B: reverse each pixel's bytes.
            for pixel in bgrx.chunks_exact_mut(4) {
                pixel.reverse();
            }
        }
        Ok(Grab { bgrx, width, height })
    }
}

/// A request that could not be sent: the display is gone.
fn cut(err: &ConnectionError) -> GrabError {
    GrabError::Ended(ShareEnded::Failed(format!("lost the display: {err}")))
}

/// An X error on a grab: the source is gone (`gone`) if the server says the window or drawable
/// no longer exists, a failure otherwise.
fn ended(err: ReplyError, gone: ShareEnded) -> GrabError {
    match err {
        ReplyError::X11Error(ref x)
            if matches!(x.error_kind, ErrorKind::Window | ErrorKind::Drawable | ErrorKind::Match) =>
        {
            GrabError::Ended(gone)
        }
        ReplyError::ConnectionError(ConnectionError::UnsupportedExtension) => {
            GrabError::Ended(ShareEnded::Failed("the display's pixel format is not 24-bit colour".into()))
        }
        other => GrabError::Ended(ShareEnded::Failed(other.to_string())),
    }
}
