//! The two figures, as SVG and PNG, with `plotters`.
//!
//! Text needs a font: with the `ab_glyph` feature plotters lays out and
//! renders text from a TrueType file registered at run time, so we look for a
//! common system font (DejaVu Sans or Liberation Sans, Debian's
//! `fonts-dejavu-core` / `fonts-liberation`). Without one the figures are
//! drawn without any text (axes, lines and points only) and the caller
//! records that in the notes; the tables in RESULTS.md carry the numbers.

use crate::results::{FcntlResults, QueuePingResults, StreamResults, TcpLatResults, WritePoint};
use crate::stats::{fmt_bytes, fmt_ns, Summary};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Register a system font as "sans-serif" once. Returns its path, or None
/// when no usable font exists (figures are then drawn without text).
/// `VIRTUOS_BENCH_NO_FONT=1` forces the no-text mode (to test it).
pub fn font() -> Option<&'static str> {
    static FONT: OnceLock<Option<&'static str>> = OnceLock::new();
    *FONT.get_or_init(|| {
        if std::env::var_os("VIRTUOS_BENCH_NO_FONT").is_some_and(|v| v == "1") {
            return None;
        }
        FONT_CANDIDATES.iter().copied().find(|p| {
            let Ok(bytes) = std::fs::read(p) else {
                return false;
            };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

const FWD: RGBColor = RGBColor(200, 30, 30);
const QUEUE: RGBColor = RGBColor(30, 80, 200);
const NATIVE: RGBColor = RGBColor(0, 0, 0);
const FLOOR: RGBColor = RGBColor(120, 120, 120);

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Write `<stem>.svg` and `<stem>.png` of the fcntl figure.
pub fn fcntl_figure(
    dir: &Path,
    stem: &str,
    f: &FcntlResults,
    q: Option<&QueuePingResults>,
) -> anyhow::Result<()> {
    let text = font().is_some();
    let size = (900, 560);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_fcntl(&root, f, q, text).map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
    }
    let root = BitMapBackend::new(&png, size).into_drawing_area();
    draw_fcntl(&root, f, q, text).map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    Ok(())
}

/// Texts of a throughput-vs-buffer-size figure.
struct Labels {
    title: String,
    native: &'static str,
    forwarded: &'static str,
    ratio: &'static str,
    x_desc: &'static str,
}

/// Write `<stem>.svg` and `<stem>.png` of the write-throughput figure.
pub fn write_figure(
    dir: &Path,
    stem: &str,
    w: &crate::results::WriteResults,
) -> anyhow::Result<()> {
    let labels = Labels {
        title: format!(
            "write throughput vs buffer size, {} per run (median)",
            fmt_bytes(w.total)
        ),
        native: "native tmpfs",
        forwarded: "forwarded /storage (storage domain, tmpfs)",
        ratio: "throughput ratio forwarded / native",
        x_desc: "buffer size (bytes per write)",
    };
    throughput_figure(dir, stem, &w.points, &labels)
}

/// Write `<stem>.svg` and `<stem>.png` of the TCP stream figure.
pub fn stream_figure(dir: &Path, stem: &str, t: &StreamResults) -> anyhow::Result<()> {
    let labels = Labels {
        title: format!(
            "TCP stream throughput vs buffer size, {} per connection (median)",
            fmt_bytes(t.total)
        ),
        native: "native (host loopback)",
        forwarded: "virtuos (network domain loopback)",
        ratio: "throughput ratio virtuos / native",
        x_desc: "buffer size (bytes per send/recv)",
    };
    throughput_figure(dir, stem, &t.points, &labels)
}

fn throughput_figure(
    dir: &Path,
    stem: &str,
    points: &[WritePoint],
    labels: &Labels,
) -> anyhow::Result<()> {
    let text = font().is_some();
    let size = (900, 900);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_write(&root, points, labels, text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
    }
    let root = BitMapBackend::new(&png, size).into_drawing_area();
    draw_write(&root, points, labels, text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    Ok(())
}

/// Write `<stem>.svg` and `<stem>.png` of the TCP round-trip figure.
pub fn tcp_lat_figure(dir: &Path, stem: &str, l: &TcpLatResults) -> anyhow::Result<()> {
    let text = font().is_some();
    let size = (900, 560);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_tcp_lat(&root, l, text).map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
    }
    let root = BitMapBackend::new(&png, size).into_drawing_area();
    draw_tcp_lat(&root, l, text).map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    Ok(())
}

/// Native and each virtuos configuration as a column: the median as a
/// point, p10..p90 as an error bar, on a log axis.
fn draw_tcp_lat<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    l: &TcpLatResults,
    text: bool,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let mut cols: Vec<(String, Option<&Summary>, RGBColor)> =
        vec![("native".into(), Some(&l.native), NATIVE)];
    for p in &l.points {
        let label = match p.spin {
            None => format!("virtuos, {} spin", p.config),
            Some(s) => format!("virtuos, {} spin ({s})", p.config),
        };
        cols.push((label, p.forwarded.summary.as_ref(), FWD));
    }
    let y = log_range(
        cols.iter()
            .filter_map(|c| c.1)
            .flat_map(|s| [s.p10, s.p90, s.median]),
    );
    let n = cols.len();
    let x = -0.5..(n as f64 - 0.5);
    let mut b = ChartBuilder::on(root);
    b.margin(20);
    if text {
        b.caption(
            format!("TCP 1-byte round trip, {} per repetition (median)", l.iters),
            ("sans-serif", 24),
        )
        .x_label_area_size(50)
        .y_label_area_size(80);
    }
    let mut chart = b.build_cartesian_2d(x, y.log_scale())?;
    let names: Vec<String> = cols.iter().map(|c| c.0.clone()).collect();
    let label_col = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().max_light_lines(4);
    if text {
        mesh.y_desc("time per round trip (log); bars: p10..p90")
            .y_labels(8)
            .x_labels(4 * n + 1)
            .x_label_formatter(&label_col)
            .y_label_formatter(&|v| fmt_ns(*v))
            .label_style(("sans-serif", 15));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    for (i, (_, s, color)) in cols.iter().enumerate() {
        let Some(s) = s else { continue };
        let x = i as f64;
        chart.draw_series(std::iter::once(Circle::new(
            (x, s.median),
            6,
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(ErrorBar::new_vertical(
            x,
            s.p10,
            s.median,
            s.p90,
            color.stroke_width(2),
            12,
        )))?;
        if text {
            let ratio = s.median / l.native.median;
            chart.draw_series(std::iter::once(Text::new(
                format!("{} ({ratio:.2}x)", fmt_ns(s.median)),
                (x + 0.06, s.median),
                ("sans-serif", 15),
            )))?;
        }
    }
    Ok(())
}

/// A log-scale range around `values` with some head room.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    (lo / 1.6)..(hi * 1.6)
}

fn draw_fcntl<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    f: &FcntlResults,
    q: Option<&QueuePingResults>,
    text: bool,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let spins: Vec<u32> = f.forwarded.iter().map(|p| p.spin).collect();
    let n = spins.len().max(1);
    let fwd_bars: Vec<(f64, &Summary)> = f
        .forwarded
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i as f64, p.forwarded.summary.as_ref()?)))
        .collect();
    let fwd: Vec<(f64, f64)> = fwd_bars.iter().map(|(x, s)| (*x, s.median)).collect();
    // Queue pings at the same spin values as the fcntl points.
    // Offset a little to the right so that the error bars do not overlap.
    let queue_bars: Vec<(f64, &Summary)> = q
        .map(|q| {
            q.points
                .iter()
                .filter_map(|p| {
                    let i = spins.iter().position(|&s| s == p.spin)?;
                    Some((i as f64 + 0.08, p.forwarded.summary.as_ref()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let queue: Vec<(f64, f64)> = queue_bars.iter().map(|(x, s)| (*x, s.median)).collect();
    let floor = f.floor.as_ref().map(|s| s.median);
    let all = fwd_bars
        .iter()
        .chain(&queue_bars)
        .flat_map(|(_, s)| [s.p10, s.p90])
        .chain([f.native.median])
        .chain(floor);
    let y = log_range(all);
    // Head room for the legend above the data.
    let y = y.start..(y.end * 3.0);
    let x = -0.3..(n as f64 - 0.7);

    let mut b = ChartBuilder::on(root);
    b.margin(20);
    if text {
        b.caption(
            "fcntl(F_GETFL) latency vs spin threshold (median)",
            ("sans-serif", 24),
        )
        .x_label_area_size(50)
        .y_label_area_size(80);
    }
    let mut chart = b.build_cartesian_2d(x.clone(), y.log_scale())?;
    let label_spin = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < spins.len() {
            spins[i as usize].to_string()
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().max_light_lines(4);
    if text {
        mesh.x_desc("spin threshold (VIRTUOS_SPIN / client polls before sleeping)")
            .y_desc("ns per call (log); bars: p10..p90")
            .y_labels(8)
            .x_labels(4 * n + 1)
            .x_label_formatter(&label_spin)
            .y_label_formatter(&|v| fmt_ns(*v))
            .label_style(("sans-serif", 15));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;

    let hline = |v: f64| vec![(x.start, v), (x.end, v)];
    let native = chart.draw_series(DashedLineSeries::new(
        hline(f.native.median),
        10,
        6,
        NATIVE.stroke_width(2),
    ))?;
    if text {
        native
            .label(format!("native ({})", fmt_ns(f.native.median)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], NATIVE.stroke_width(2)));
    }
    if let Some(fl) = floor {
        let s = chart.draw_series(DashedLineSeries::new(
            hline(fl),
            4,
            4,
            FLOOR.stroke_width(2),
        ))?;
        if text {
            s.label(format!("floor: cache-line round trip ({})", fmt_ns(fl)))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], FLOOR.stroke_width(2))
                });
        }
    }
    if !fwd.is_empty() {
        let s = chart.draw_series(LineSeries::new(fwd.clone(), FWD.stroke_width(2)))?;
        if text {
            s.label("forwarded fcntl (preload + queue + domain)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], FWD.stroke_width(2)));
        }
        chart.draw_series(fwd.iter().map(|&p| Circle::new(p, 5, FWD.filled())))?;
        chart.draw_series(fwd_bars.iter().map(|(x, s)| {
            ErrorBar::new_vertical(*x, s.p10, s.median, s.p90, FWD.stroke_width(1), 8)
        }))?;
    }
    if !queue.is_empty() {
        let s = chart.draw_series(LineSeries::new(queue.clone(), QUEUE.stroke_width(2)))?;
        if text {
            s.label("OP_PING queue round trip (no preload)")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], QUEUE.stroke_width(2))
                });
        }
        chart.draw_series(
            queue
                .iter()
                .map(|&p| TriangleMarker::new(p, 6, QUEUE.filled())),
        )?;
        chart.draw_series(queue_bars.iter().map(|(x, s)| {
            ErrorBar::new_vertical(*x, s.p10, s.median, s.p90, QUEUE.stroke_width(1), 8)
        }))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    Ok(())
}

fn draw_write<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[WritePoint],
    labels: &Labels,
    text: bool,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(520);
    let log2 = |c: u64| (c as f64).log2();
    let native: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (log2(p.chunk), p.native.median))
        .collect();
    let fwd: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((log2(p.chunk), p.forwarded.median()?)))
        .collect();
    let ratio: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((log2(p.chunk), p.forwarded.median()? / p.native.median)))
        .collect();
    let (xlo, xhi) = native
        .iter()
        .map(|p| p.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (xlo, xhi) = if xlo.is_finite() {
        (xlo, xhi)
    } else {
        (5.0, 21.0)
    };
    let x = (xlo - 0.3)..(xhi + 0.3);
    let label_size = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            fmt_bytes(1u64 << i as u32).replace(' ', "")
        } else {
            String::new()
        }
    };
    let nlabels = (xhi - xlo) as usize + 2;

    // Top: absolute throughput (Figure 3).
    let y = log_range(native.iter().chain(&fwd).map(|p| p.1));
    let mut b = ChartBuilder::on(&top);
    b.margin(20);
    if text {
        b.caption(labels.title.as_str(), ("sans-serif", 24))
            .x_label_area_size(40)
            .y_label_area_size(80);
    }
    let mut chart = b.build_cartesian_2d(x.clone(), y.log_scale())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.y_desc("MB/s (log); bars: p10..p90")
            .max_light_lines(1)
            .x_labels(nlabels)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_label_formatter(&label_size)
            .label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    let s = chart.draw_series(LineSeries::new(native.clone(), NATIVE.stroke_width(2)))?;
    if text {
        s.label(labels.native)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], NATIVE.stroke_width(2)));
    }
    chart.draw_series(native.iter().map(|&p| Circle::new(p, 4, NATIVE.filled())))?;
    chart.draw_series(points.iter().map(|p| {
        let s = &p.native;
        ErrorBar::new_vertical(
            log2(p.chunk),
            s.p10,
            s.median,
            s.p90,
            NATIVE.stroke_width(1),
            6,
        )
    }))?;
    if !fwd.is_empty() {
        let s = chart.draw_series(LineSeries::new(fwd.clone(), FWD.stroke_width(2)))?;
        if text {
            s.label(labels.forwarded)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], FWD.stroke_width(2)));
        }
        chart.draw_series(fwd.iter().map(|&p| Circle::new(p, 4, FWD.filled())))?;
        chart.draw_series(points.iter().filter_map(|p| {
            let s = p.forwarded.summary.as_ref()?;
            Some(ErrorBar::new_vertical(
                log2(p.chunk) + 0.06,
                s.p10,
                s.median,
                s.p90,
                FWD.stroke_width(1),
                6,
            ))
        }))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }

    // Bottom: ratio (Figure 4).
    let rmax = ratio.iter().map(|p| p.1).fold(1.0f64, f64::max);
    let mut b = ChartBuilder::on(&bottom);
    b.margin(20);
    if text {
        b.caption(labels.ratio, ("sans-serif", 20))
            .x_label_area_size(50)
            .y_label_area_size(80);
    }
    let mut chart = b.build_cartesian_2d(x.clone(), 0.0..(rmax * 1.15))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(labels.x_desc)
            .y_desc("ratio")
            .max_light_lines(1)
            .x_labels(nlabels)
            .x_label_formatter(&label_size)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    chart.draw_series(DashedLineSeries::new(
        vec![(x.start, 1.0), (x.end, 1.0)],
        10,
        6,
        NATIVE.stroke_width(1),
    ))?;
    if !ratio.is_empty() {
        chart.draw_series(LineSeries::new(ratio.clone(), FWD.stroke_width(2)))?;
        chart.draw_series(ratio.iter().map(|&p| Circle::new(p, 4, FWD.filled())))?;
    }
    Ok(())
}

/// Write `<stem>.svg` and `<stem>.png` of the process-creation figure
/// (the paper's Figure 5): time per batch vs N, native, process and vm.
pub fn fork_figure(
    dir: &Path,
    stem: &str,
    f: &crate::results::ForkResults,
    vm_label: &str,
) -> anyhow::Result<()> {
    let text = font().is_some();
    let size = (900, 600);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_fork(&root, f, vm_label, text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
    }
    let root = BitMapBackend::new(&png, size).into_drawing_area();
    draw_fork(&root, f, vm_label, text).map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    Ok(())
}

const VM: RGBColor = RGBColor(30, 80, 200);

fn draw_fork<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    f: &crate::results::ForkResults,
    vm_label: &str,
    text: bool,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let log2 = |n: u32| f64::from(n.max(1)).log2();
    type Pick = fn(&crate::results::ForkPoint) -> Option<&Summary>;
    let vm_name = format!("virtuos, vm backend ({vm_label})");
    let series: [(&str, Pick, RGBColor, f64); 3] = [
        ("native", |p| Some(&p.native), NATIVE, -0.04),
        (
            "virtuos, process backend",
            |p| p.process.summary.as_ref(),
            FWD,
            0.0,
        ),
        (vm_name.as_str(), |p| p.vm.summary.as_ref(), VM, 0.04),
    ];
    let all = f
        .points
        .iter()
        .flat_map(|p| series.iter().filter_map(move |s| (s.1)(p)))
        .flat_map(|s| [s.p10, s.p90, s.median]);
    let y = log_range(all);
    let y = y.start..(y.end * 3.0);
    let (xlo, xhi) = f
        .points
        .iter()
        .map(|p| log2(p.n))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (xlo, xhi) = if xlo.is_finite() {
        (xlo, xhi)
    } else {
        (0.0, 5.0)
    };
    let x = (xlo - 0.3)..(xhi + 0.3);
    let mut b = ChartBuilder::on(root);
    b.margin(20);
    if text {
        b.caption(
            "process creation: N forks that exit at once, time per batch (median)",
            ("sans-serif", 22),
        )
        .x_label_area_size(50)
        .y_label_area_size(110);
    }
    let mut chart = b.build_cartesian_2d(x.clone(), y.log_scale())?;
    let label_n = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            (1u64 << i as u32).to_string()
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.max_light_lines(1);
    if text {
        mesh.x_desc("N (children per batch)")
            .y_desc("time per batch (log); bars: p10..p90")
            .x_labels((xhi - xlo) as usize + 2)
            .y_labels(8)
            .x_label_formatter(&label_n)
            .y_label_formatter(&|v| fmt_ns(*v))
            .label_style(("sans-serif", 15));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    for (name, pick, color, dx) in series {
        let pts: Vec<(f64, &Summary)> = f
            .points
            .iter()
            .filter_map(|p| Some((log2(p.n) + dx, pick(p)?)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let line: Vec<(f64, f64)> = pts.iter().map(|(x, s)| (*x, s.median)).collect();
        let s = chart.draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?;
        if text {
            s.label(name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        chart.draw_series(pts.iter().map(|(x, s)| {
            ErrorBar::new_vertical(*x, s.p10, s.median, s.p90, color.stroke_width(1), 6)
        }))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    Ok(())
}
