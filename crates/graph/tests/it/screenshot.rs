//! What a person sees: headless Chromium draws the SVG of lab-everything.json with the cluster colours
//! where the layout put them, white row boxes with dark text, and no text spilling out of a box.
//!
//! Without Chromium the test is skipped, except under CI=true or IOMMU_LAB_REQUIRED=1, where it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The target directory (`CARGO_TARGET_DIR` or the workspace's `target/`): three levels above this test
/// binary (`target/debug/deps/it-…`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IOMMUCTL_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs `cmd` with a time limit; true when it exited 0 in time.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> bool {
    let Ok(mut child) = cmd.spawn() else { return false };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Screenshots `svg` (its width x height) into `png`; tries `--headless`, then `--headless=new`.
fn screenshot(chromium: &Path, svg: &Path, png: &Path, w: u32, h: u32, work: &Path) -> Result<(), String> {
    let mut log = String::new();
    for headless in ["--headless", "--headless=new"] {
        let profile = tempfile::tempdir_in(work).unwrap();
        let err_path = work.join("chromium.stderr");
        let _ = std::fs::remove_file(png);
        let mut cmd = Command::new(chromium);
        cmd.args([
            headless,
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("file://{}", svg.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
        let ok = run_with_timeout(&mut cmd, Duration::from_secs(120));
        if ok && png.is_file() {
            return Ok(());
        }
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        log.push_str(&format!("{headless}: exited ok={ok}, png={}; stderr tail: {tail:?}\n", png.is_file()));
    }
    Err(log)
}

struct Image {
    w: u32,
    h: u32,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn load(p: &Path) -> Image {
        let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        let bytes = &buf[..info.buffer_size()];
        let rgb = match info.color_type {
            png::ColorType::Rgb => bytes.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Rgba => bytes.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Grayscale => bytes.iter().map(|&g| [g, g, g]).collect(),
            png::ColorType::GrayscaleAlpha => bytes.chunks_exact(2).map(|p| [p[0], p[0], p[0]]).collect(),
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        Image { w: info.width, h: info.height, rgb }
    }

    fn at(&self, x: f64, y: f64) -> [u8; 3] {
        let (x, y) = (x as u32, y as u32);
        assert!(x < self.w && y < self.h, "({x},{y}) outside the {}x{} screenshot", self.w, self.h);
        self.rgb[(y * self.w + x) as usize]
    }

    /// Pixels in [x0, x1) x [y0, y1) for which `f` holds.
    fn count(&self, x0: f64, x1: f64, y0: f64, y1: f64, f: impl Fn([u8; 3]) -> bool) -> usize {
        let mut n = 0;
        for y in y0 as u32..y1 as u32 {
            for x in x0 as u32..x1 as u32 {
                n += usize::from(f(self.at(f64::from(x), f64::from(y))));
            }
        }
        n
    }
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn near(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tol)
}

const WHITE: [u8; 3] = [255, 255, 255];

fn dark(p: [u8; 3]) -> bool {
    p.iter().all(|&c| c < 110)
}

#[test]
fn chromium_draws_the_clusters_where_the_layout_put_them() {
    let Some(chromium) = find_chromium() else {
        let required = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var("IOMMU_LAB_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "chromium not found on PATH (set IOMMUCTL_CHROMIUM, or run scripts/lab-setup)");
        println!("SKIPPED: chromium not found on PATH; install it (scripts/lab-setup does) to check the drawing");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let svg = work.path().join("graph.svg");
    let out = work.path().join("graph.png");
    std::fs::write(&svg, iommu_graph::svg(&model(&lab("lab-everything.json")))).unwrap();
    let d = parse_svg(&std::fs::read_to_string(&svg).unwrap());
    let (w, h) = (d.width as u32, d.height as u32);
    screenshot(&chromium, &svg, &out, w, h, work.path()).unwrap_or_else(|e| panic!("chromium failed:\n{e}"));
    let saved = target_dir().join("graph-screenshot.png");
    let _ = std::fs::copy(&out, &saved);
    println!("screenshot: {}", saved.display());
    let img = Image::load(&out);
    assert_eq!((img.w, img.h), (w, h), "screenshot size");

    // White background in the corners and below the last row.
    for (x, y) in [(1.0, 1.0), (d.width - 2.0, 1.0), (1.0, d.height - 2.0), (d.width - 2.0, d.height - 2.0)] {
        assert_eq!(img.at(x, y), WHITE, "background at ({x},{y})");
    }
    // Each cluster's colour fills its right end (beside its label, away from rows and connectors), and
    // the cluster reads as a region of that colour: most of a strip down its right edge has it.
    let mut colours = BTreeSet::new();
    for (g, r, fill) in &d.clusters {
        let want = hex(fill);
        let (x, y) = (r.x + r.w - 4.0, r.y + r.h / 2.0);
        assert!(near(img.at(x, y), want, 6), "group {g}: {:?} at ({x},{y}), want {fill}", img.at(x, y));
        let strip = img.count(r.x + r.w - 6.0, r.x + r.w - 2.0, r.y + 6.0, r.y + r.h - 6.0, |p| near(p, want, 6));
        let area = (4.0 * (r.h - 12.0)) as usize;
        assert!(strip * 10 >= area * 9, "group {g}: {strip} of {area} pixels in its colour");
        colours.insert(want);
        // Between the rows' right edge and the cluster's label column there is only the cluster colour.
        let lx = d.label_x.unwrap();
        let row_right = d.rows.iter().map(|r| r.1.x + r.1.w).fold(0.0, f64::max);
        assert_eq!(img.count(row_right + 2.0, lx - 2.0, r.y + 4.0, r.y + r.h - 4.0, |p| !near(p, want, 6)), 0);
    }
    assert!(colours.len() >= 10, "clusters should come in clearly different colours: {colours:?}");
    // Rows: white boxes with dark text, and no text spilling past the box's right padding.
    for (a, r, _) in &d.rows {
        let inside = img.count(r.x + 2.0, r.x + r.w - 2.0, r.y + 2.0, r.y + r.h - 2.0, dark);
        assert!(inside >= 60, "{a}: only {inside} dark pixels in its box (text not drawn?)");
        assert!(near(img.at(r.x + r.w - 3.0, r.y + r.h / 2.0), WHITE, 3), "{a}: box not white at its right end");
        let spill = img.count(r.x + r.w - 4.0, r.x + r.w - 1.0, r.y + 2.0, r.y + r.h - 2.0, dark);
        assert_eq!(spill, 0, "{a}: text reaches the right edge of its box");
    }
}
