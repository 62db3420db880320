//! The Figure 13 timeline (bench/faults): bytes/s of the storage writer
//! and of the network server over time, across a crash and restart of the
//! network domain. Input: the JSON `bench/faults/fig13.sh` writes.

use crate::plot::font;
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

const WRITER: RGBColor = RGBColor(30, 80, 200);
const SERVER: RGBColor = RGBColor(200, 30, 30);
const CRASH: RGBColor = RGBColor(120, 120, 120);

/// (seconds since the start, bytes/s) per 100 ms bucket of `v`, relative to `t0`.
fn series(v: &Value, t0: f64) -> Vec<(f64, f64)> {
    let own = v["t0"].as_f64().unwrap_or(t0);
    let mut pts: Vec<(f64, f64)> = v["buckets"]
        .as_object()
        .map(|b| {
            b.iter()
                .filter_map(|(k, n)| {
                    let t = own - t0 + k.parse::<f64>().ok()? / 10.0;
                    Some((t, n.as_f64()? * 10.0))
                })
                .collect()
        })
        .unwrap_or_default();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Empty buckets are zero throughput (the server while it restarts).
    let mut filled = Vec::new();
    let mut prev: Option<f64> = None;
    for (t, y) in pts {
        if let Some(p) = prev {
            let mut g = p + 0.1;
            while g < t - 0.05 {
                filled.push((g, 0.0));
                g += 0.1;
            }
        }
        filled.push((t, y));
        prev = Some(t);
    }
    filled
}

pub fn render(json: &Path, out: &Path) -> anyhow::Result<()> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let t0 = doc["t0"].as_f64().unwrap_or(0.0);
    let writer = series(&doc["writer"], t0);
    let server = series(&doc["server"], t0);
    let crash = doc["crash_at"].as_f64().map(|c| c - t0);
    let ready = doc["ready_at"].as_f64().map(|c| c - t0);
    let stem = out.join("fault_timeline");
    let size = (1000, 520);
    let svg = stem.with_extension("svg");
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        &writer,
        &server,
        crash,
        ready,
    )?;
    let png = stem.with_extension("png");
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        &writer,
        &server,
        crash,
        ready,
    )?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    writer: &[(f64, f64)],
    server: &[(f64, f64)],
    crash: Option<f64>,
    ready: Option<f64>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let text = font().is_some();
    let tmax = writer
        .iter()
        .chain(server)
        .map(|p| p.0)
        .fold(1.0f64, f64::max);
    let ymax = writer
        .iter()
        .chain(server)
        .map(|p| p.1 / 1e6)
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut b = ChartBuilder::on(&root);
    b.margin(20).x_label_area_size(40).y_label_area_size(60);
    if text {
        b.caption(
            "Figure 13: network domain killed and restarted under a server; the storage writer goes on",
            ("sans-serif", 18),
        );
    }
    let mut chart = b.build_cartesian_2d(0.0..tmax, 0.0..ymax).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("time (s)").y_desc("MB/s");
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw().map_err(err)?;
    for (pts, color, name) in [
        (writer, WRITER, "dd-like writer (storage domain)"),
        (server, SERVER, "TCP server (network domain)"),
    ] {
        let s = chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(t, y)| (t, y / 1e6)),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            s.label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    for t in [crash, ready].into_iter().flatten() {
        chart
            .draw_series(LineSeries::new(
                [(t, 0.0), (t, ymax)],
                CRASH.stroke_width(1),
            ))
            .map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
