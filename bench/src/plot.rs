//! Throughput and p99 against concurrency, as a hand-written SVG.

use crate::scenarios::{Op, Point, Side};
use std::fmt::Write;

const W: f64 = 980.0;
const H: f64 = 430.0;
const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 280.0;
const TOP: f64 = 50.0;

/// Two panels: requests per second (linear) and p99 in ms (log) against
/// concurrent connections, one line per side and operation.
pub fn svg(points: &[Point], concurrency: &[u32], title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let max_rps = points.iter().map(|p| p.result.rps).fold(1.0, f64::max);
    let min_p99 = points
        .iter()
        .map(|p| p.result.p99_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let max_p99 = points.iter().map(|p| p.result.p99_ms).fold(0.01, f64::max);
    let lin = Axis::linear(max_rps);
    let log = Axis::log(min_p99.min(max_p99), max_p99);
    panel(&mut s, 70.0, "requests per second", &lin, points, concurrency, |p| {
        p.result.rps
    });
    panel(
        &mut s,
        560.0,
        "p99 latency, ms (log scale)",
        &log,
        points,
        concurrency,
        |p| p.result.p99_ms,
    );
    legend(&mut s);
    s.push_str("</svg>\n");
    s
}

/// A y axis: maps values to 0..1 and lists its ticks.
struct Axis {
    ticks: Vec<f64>,
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn linear(max: f64) -> Axis {
        let raw = max / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|st| *st >= raw)
            .unwrap_or(10.0 * mag);
        let hi = (max / step).ceil() * step;
        let ticks = (0..=((hi / step).round() as usize)).map(|i| i as f64 * step).collect();
        Axis {
            ticks,
            log: false,
            lo: 0.0,
            hi,
        }
    }

    fn log(min: f64, max: f64) -> Axis {
        let lo = 10f64.powf(min.max(1e-3).log10().floor());
        let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
        let mut ticks = Vec::new();
        let mut t = lo;
        while t <= hi * 1.0001 {
            ticks.push(t);
            t *= 10.0;
        }
        Axis {
            ticks,
            log: true,
            lo,
            hi,
        }
    }

    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            v / self.hi
        }
    }
}

fn series() -> Vec<(Side, Op, &'static str, &'static str)> {
    vec![
        (Side::Handler, Op::Get, "#d95f02", ""),
        (Side::Handler, Op::Put, "#d95f02", "6,4"),
        (Side::Floor, Op::Get, "#7570b3", ""),
        (Side::Floor, Op::Put, "#7570b3", "6,4"),
        (Side::Redis, Op::Get, "#1b6ac9", ""),
        (Side::Redis, Op::Put, "#1b6ac9", "6,4"),
        (Side::Python, Op::Get, "#1a9850", ""),
        (Side::Python, Op::Put, "#1a9850", "6,4"),
    ]
}

fn panel(
    s: &mut String,
    x0: f64,
    title: &str,
    axis: &Axis,
    points: &[Point],
    concurrency: &[u32],
    value: impl Fn(&Point) -> f64,
) {
    let y = |v: f64| TOP + PANEL_H - axis.frac(v) * PANEL_H;
    let x = |i: usize| x0 + 20.0 + i as f64 * (PANEL_W - 40.0) / (concurrency.len().max(2) - 1) as f64;
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
        x0 + PANEL_W / 2.0,
        TOP - 10.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/>"##
    );
    for &t in &axis.ticks {
        let ty = y(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            ty + 4.0,
            tick_label(t)
        );
    }
    for (i, c) in concurrency.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{c}</text>"#,
            x(i),
            TOP + PANEL_H + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrent connections</text>"#,
        x0 + PANEL_W / 2.0,
        TOP + PANEL_H + 34.0
    );
    for (side, op, color, dash) in series() {
        let pts: Vec<String> = concurrency
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let p = points.iter().find(|p| p.side == side && p.op == op && p.conns == *c)?;
                Some(format!("{:.1},{:.1}", x(i), y(value(p))))
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
    }
}

fn legend(s: &mut String) {
    let y0 = TOP + PANEL_H + 60.0;
    for (i, (side, op, color, dash)) in series().into_iter().enumerate() {
        let x = 70.0 + (i % 4) as f64 * 225.0;
        let y = y0 + (i / 4) as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{} {}</text>"#,
            x + 30.0,
            x + 38.0,
            y + 4.0,
            escape(side.label()),
            op.label()
        );
    }
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_owned()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadResult;

    /// The last full run's figures (BENCHMARKS.md), with a made-up floor
    /// at 1.1× the handler: all eight series.
    fn sample() -> Vec<Point> {
        #[rustfmt::skip]
        let rows = [
            (1, Op::Get, [5002., 0.176, 0.465], [7276., 0.079, 0.367], [1069., 0.874, 1.827]),
            (1, Op::Put, [2669., 0.260, 3.435], [4963., 0.183, 0.575], [671., 1.379, 4.638]),
            (16, Op::Get, [8202., 1.488, 14.575], [17027., 0.375, 3.287], [855., 16.823, 114.943]),
            (16, Op::Put, [8771., 1.469, 9.972], [15592., 0.471, 3.063], [915., 15.876, 85.938]),
            (64, Op::Get, [14266., 4.086, 10.818], [25278., 1.319, 2.935], [1699., 36.708, 90.216]),
            (64, Op::Put, [14452., 3.980, 10.873], [21494., 1.607, 3.751], [1328., 48.222, 69.413]),
            (256, Op::Get, [15792., 15.107, 24.931], [18256., 6.223, 15.599], [1285., 170.055, 345.114]),
            (256, Op::Put, [15915., 15.364, 29.145], [16865., 6.751, 13.223], [1267., 165.364, 436.265]),
        ];
        let mut points = Vec::new();
        for (conns, op, handler, redis, python) in rows {
            let floor = handler.map(|v| v * 1.1);
            for (side, [rps, p50_ms, p99_ms]) in [
                (Side::Handler, handler),
                (Side::Floor, floor),
                (Side::Redis, redis),
                (Side::Python, python),
            ] {
                let result = LoadResult {
                    rps,
                    p50_ms,
                    p99_ms,
                    errors: 0,
                };
                points.push(Point::single(side, op, conns, result, None));
            }
        }
        points
    }

    /// The plot is an SVG with both panels' captions, every concurrency
    /// level and every series in the legend.
    #[test]
    fn draws_both_panels_and_every_series() {
        let svg = svg(
            &sample(),
            &[1, 16, 64, 256],
            "handler vs floor vs redis-benchmark vs Python peer",
        );
        if let Some(path) = std::env::var_os("PLOT_OUT") {
            std::fs::write(path, &svg).unwrap();
        }
        assert!(svg.starts_with("<svg"), "{svg}");
        let flat = svg.replace('\n', "");
        for text in [
            "requests per second",
            "p99 latency",
            "concurrent connections",
            ">256<",
            "Python peer PUT",
            "floor GET",
        ] {
            assert!(flat.contains(text), "no {text:?} in the SVG");
        }
    }
}
