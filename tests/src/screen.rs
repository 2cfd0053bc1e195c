//! Something to share: a window on an X display that shows the synthetic camera's stamped
//! picture (pattern id, frame counter, time), redrawn 20 times a second from a thread of its own,
//! so whoever captures it (the media crate, a `confer` sharing it, a peer receiving the share)
//! can read back whose pattern arrived and how fresh it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use confer_media::I420Frame;
use confer_media::synthetic::{SyntheticCamera, SyntheticScreen};
use x11rb::connection::Connection as _;
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, ImageFormat, PropMode,
    StackMode, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Rows per PutImage request: under the core protocol's 256 KiB request limit at 1920 wide.
const BAND: usize = 32;

/// A window painting a stamped pattern until dropped or [`PatternWindow::close`]d. Once opened,
/// its first picture is on the server.
#[derive(Debug)]
pub struct PatternWindow {
    /// The X window id: share it as `window:<id>`.
    pub id: u32,
    conn: Arc<RustConnection>,
    stop: Arc<AtomicBool>,
    painter: Option<JoinHandle<()>>,
}

/// What a window shows.
enum Picture {
    Camera(SyntheticCamera),
    Page(SyntheticScreen),
}

impl Picture {
    fn next(&mut self) -> I420Frame {
        match self {
            Self::Camera(camera) => camera.next_frame(crate::unix_ms()).0,
            Self::Page(page) => page.next_frame(crate::unix_ms()).0,
        }
    }
}

impl PatternWindow {
    /// A `width` x `height` window at (`x`, `y`) on `display`, titled `title`, showing the
    /// synthetic camera's picture of pattern `pattern`.
    pub fn open(
        display: &str,
        title: &str,
        pattern: u32,
        at: (i16, i16),
        (width, height): (u16, u16),
    ) -> Self {
        let camera = SyntheticCamera::new(pattern, usize::from(width), usize::from(height))
            .unwrap()
            .with_name("shared window");
        Self::showing(display, title, Picture::Camera(camera), at, (width, height))
    }

    /// A window showing the synthetic page of text (pattern `pattern`), scrolling `scroll`
    /// pixels at each repaint (0: still).
    pub fn open_page(
        display: &str,
        title: &str,
        pattern: u32,
        scroll: usize,
        at: (i16, i16),
        (width, height): (u16, u16),
    ) -> Self {
        let page = SyntheticScreen::new(pattern, usize::from(width), usize::from(height), scroll).unwrap();
        Self::showing(display, title, Picture::Page(page), at, (width, height))
    }

    fn showing(
        display: &str,
        title: &str,
        mut picture: Picture,
        (x, y): (i16, i16),
        (width, height): (u16, u16),
    ) -> Self {
        let (conn, screen) = x11rb::connect(Some(display)).expect("the test's X display");
        let conn = Arc::new(conn);
        let root = conn.setup().roots[screen].clone();
        let id = conn.generate_id().unwrap();
        conn.create_window(
            root.root_depth,
            id,
            root.root,
            x,
            y,
            width,
            height,
            0,
            WindowClass::INPUT_OUTPUT,
            root.root_visual,
            &CreateWindowAux::new().background_pixel(root.black_pixel),
        )
        .unwrap();
        conn.change_property8(PropMode::REPLACE, id, AtomEnum::WM_NAME, AtomEnum::STRING, title.as_bytes())
            .unwrap();
        conn.map_window(id).unwrap();
        conn.flush().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (painted_tx, painted) = std::sync::mpsc::sync_channel(1);
        let painter = {
            let (conn, stop) = (conn.clone(), stop.clone());
            let depth = root.root_depth;
            std::thread::spawn(move || {
                let gc = conn.generate_id().unwrap();
                conn.create_gc(gc, id, &CreateGCAux::new()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let bgrx = to_bgrx(&picture.next());
                    let stride = usize::from(width) * 4;
                    for (band, rows) in bgrx.chunks(stride * BAND).enumerate() {
                        let lines = (rows.len() / stride) as u16;
                        // The window may be gone (closed by the test): stop painting then.
                        if conn
                            .put_image(
                                ImageFormat::Z_PIXMAP,
                                id,
                                gc,
                                width,
                                lines,
                                0,
                                (band * BAND) as i16,
                                0,
                                depth,
                                rows,
                            )
                            .is_err()
                        {
                            return;
                        }
                    }
                    if conn.sync().is_err() {
                        return;
                    }
                    let _ = painted_tx.try_send(());
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        // Opened means showing its picture: the first frame has reached the server.
        painted.recv_timeout(Duration::from_secs(10)).expect("the pattern window paints");
        Self { id, conn, stop, painter: Some(painter) }
    }

    /// `window:<id>`.
    pub fn share_id(&self) -> String {
        format!("window:{}", self.id)
    }

    /// Raises the window above the others.
    pub fn raise(&self) {
        self.conn.configure_window(self.id, &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE)).unwrap();
        self.conn.flush().unwrap();
    }

    /// Destroys the window, as closing it would.
    pub fn close(mut self) {
        self.stop_painting();
        self.conn.destroy_window(self.id).unwrap();
        self.conn.flush().unwrap();
        self.conn.sync().unwrap();
    }

    fn stop_painting(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(painter) = self.painter.take() {
            let _ = painter.join();
        }
    }
}

impl Drop for PatternWindow {
    fn drop(&mut self) {
        self.stop_painting();
    }
}

/// I420 to the B G R X bytes of a 24-bit X visual.
pub fn to_bgrx(frame: &I420Frame) -> Vec<u8> {
    frame.to_rgb().chunks_exact(3).flat_map(|p| [p[2], p[1], p[0], 0]).collect()
}
