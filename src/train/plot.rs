//! `loss.png` of a `kd train` run (plotters): stage-1 loss terms, stage-2 loss, and the stage-2
//! dev metric, against the optimizer step of each stage.
//!
//! Text needs a TrueType font: `$KD_FONT`, else DejaVu Sans / Liberation Sans from the usual
//! system paths. Without one (or on any drawing error) the plot is skipped with a warning; the
//! same numbers are in `log.csv`, and training never fails because of a figure.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::train::distill::LogRow;

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Register a sans-serif font once per process; false if none could be found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var("KD_FONT").ok();
        let candidates = env.iter().map(String::as_str).chain(FONT_PATHS);
        for p in candidates {
            if let Ok(bytes) = std::fs::read(p) {
                // plotters keeps fonts for the whole process ('static); this happens once.
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draw the run's curves into `path` (atomically); warn and return on failure.
pub fn plot_run(path: &Path, metric_name: &str, log: &[LogRow]) {
    if log.is_empty() {
        return;
    }
    if !font_ready() {
        eprintln!("warning: no TrueType font found (set KD_FONT); {} not drawn", path.display());
        return;
    }
    let tmp = path.with_extension("tmp.png");
    match draw(&tmp, metric_name, log) {
        Ok(()) => {
            if let Err(e) = std::fs::rename(&tmp, path) {
                eprintln!("warning: {}: {e}", path.display());
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("warning: {} not drawn: {e}", path.display());
        }
    }
}

type Series = Vec<(f64, f64)>;

fn range(points: &[&Series], log_y: bool) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let xs = points.iter().flat_map(|s| s.iter().map(|p| p.0));
    let ys = points.iter().flat_map(|s| s.iter().map(|p| p.1)).filter(|y| y.is_finite() && (!log_y || *y > 0.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if !y0.is_finite() {
        (y0, y1) = (0.1, 1.0);
    }
    if log_y {
        (y0, y1) = (y0 * 0.8, y1 * 1.25);
    } else {
        let pad = ((y1 - y0) * 0.1).max(1e-3);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    (x0.min(x1 - 1.0).max(0.0)..x1, y0..y1)
}

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[(&str, &Series, RGBColor)],
    log_y: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let all: Vec<&Series> = series.iter().map(|s| s.1).collect();
    if all.iter().all(|s| s.is_empty()) {
        area.titled(&format!("{title} (not run)"), ("sans-serif", 18))?;
        return Ok(());
    }
    let (xr, yr) = range(&all, log_y);
    let mut b = ChartBuilder::on(area);
    b.caption(title, ("sans-serif", 18)).margin(10).x_label_area_size(35).y_label_area_size(60);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc("step").y_desc(y_label).label_style(("sans-serif", 12)).draw()?;
            for (name, s, color) in series {
                if s.is_empty() {
                    continue;
                }
                let c = *color;
                chart
                    .draw_series(LineSeries::new(s.iter().copied().filter(|p| !log_y || p.1 > 0.0), c.stroke_width(2)))?
                    .label(*name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .draw()?;
        }};
    }
    if log_y {
        finish!(b.build_cartesian_2d(xr, yr.log_scale())?);
    } else {
        finish!(b.build_cartesian_2d(xr, yr)?);
    }
    Ok(())
}

fn draw(path: &Path, metric_name: &str, log: &[LogRow]) -> Result<(), Box<dyn std::error::Error>> {
    let pick = |stage: u8, f: fn(&LogRow) -> Option<f64>| -> Series {
        log.iter().filter(|r| r.stage == stage).filter_map(|r| f(r).map(|v| (r.step as f64, v))).collect()
    };
    let s1_total = pick(1, |r| Some(r.loss));
    let s1_att = pick(1, |r| Some(r.att_loss));
    let s1_hid = pick(1, |r| Some(r.hid_loss));
    let s2_loss = pick(2, |r| Some(r.loss));
    let s2_dev = pick(2, |r| r.dev_metric);
    let root = BitMapBackend::new(path, (1500, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, 3));
    panel(
        &areas[0],
        "stage 1: layer-wise loss",
        "MSE",
        &[("total", &s1_total, BLACK), ("attention", &s1_att, RED), ("hidden", &s1_hid, BLUE)],
        true,
    )?;
    panel(&areas[1], "stage 2: training loss", "loss", &[("loss", &s2_loss, BLACK)], false)?;
    panel(&areas[2], &format!("stage 2: dev {metric_name}"), metric_name, &[(metric_name, &s2_dev, GREEN)], false)?;
    root.present()?;
    Ok(())
}
