//! Plots of a run, as SVG beside its JSON: latency percentiles against offered load (a
//! sweep) and decisions answered per second over time.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::measure::Run;

const SIZE: (u32, u32) = (900, 500);
const COLOURS: [RGBColor; 6] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

/// An axis label: 1.5M, 250k, 12.
fn number(v: &f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e4 => format!("{:.0}k", v / 1e3),
        a if a >= 1e3 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

fn colour(i: usize) -> RGBColor {
    COLOURS.get(i % COLOURS.len()).copied().unwrap_or(BLACK)
}

/// p50, p99 and p99.9 (log scale) against the load each step offered.
pub fn latency_vs_load(path: &Path, title: &str, steps: &[Run]) -> anyhow::Result<()> {
    let points = |f: fn(&Run) -> f64| -> Vec<(f64, f64)> { steps.iter().map(|r| (r.offered.unwrap_or(0.0) * r.batch as f64, f(r).max(1.0))).collect() };
    let series = [("p50", points(|r| r.p50_us)), ("p99", points(|r| r.p99_us)), ("p99.9", points(|r| r.p999_us))];
    let x_max = steps.iter().filter_map(|r| r.offered.map(|o| o * r.batch as f64)).fold(1.0, f64::max) * 1.05;
    let y_max = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(10.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (1f64..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered decisions/s (open loop)")
        .y_desc("latency, µs (from when each request was due)")
        .x_label_formatter(&number)
        .y_label_formatter(&number)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled()))).map_err(|e| err(&e))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Decisions answered per second over time, one line per named series (seconds from
/// each series' own start, or laid end to end when `consecutive`).
pub fn throughput(path: &Path, title: &str, series: &[(String, Vec<[f64; 2]>)], consecutive: bool) -> anyhow::Result<()> {
    over_time(path, (title, "decisions/s"), series, consecutive)
}

/// Any quantity over time (`y` names it), drawn as [`throughput`] draws decisions/s.
pub fn over_time(path: &Path, (title, y): (&str, &str), series: &[(String, Vec<[f64; 2]>)], consecutive: bool) -> anyhow::Result<()> {
    let mut offset = 0.0;
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, pts)| {
            let at = if consecutive { offset } else { 0.0 };
            offset += pts.last().map_or(0.0, |p| p[0]);
            (name.clone(), pts.iter().map(|p| (p[0] + at, p[1])).collect())
        })
        .collect();
    let x_max = lines.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);
    let y_max = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("seconds measured").y_desc(y).y_label_formatter(&number).draw().map_err(|e| err(&e))?;
    let labelled = lines.len() <= 12;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let c = colour(i);
        let drawn = chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))).map_err(|e| err(&e))?;
        if labelled {
            drawn.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 2, c.filled()))).map_err(|e| err(&e))?;
    }
    if labelled {
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::measure::tests::run_at;

    #[test]
    fn plots_are_svg_with_a_line_per_series() {
        let dir = std::env::temp_dir().join(format!("pdp-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let steps: Vec<Run> = (1..=4).map(|k| run_at(k as f64 * 1000.0, [10.0 * k as f64, 100.0 * k as f64, 300.0 * k as f64])).collect();
        let latency = dir.join("l.svg");
        latency_vs_load(&latency, "Hit: latency", &steps).unwrap();
        let svg = std::fs::read_to_string(&latency).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Hit: latency"));
        for label in ["p50", "p99", "p99.9", "offered decisions/s"] {
            assert!(svg.contains(label), "{label} missing");
        }
        // A line of 4 points and a legend entry per percentile, in its own colour.
        let lines = |svg: &str| -> Vec<usize> { svg.split("<polyline").filter(|p| p.contains(r#"stroke-width="2""#)).map(|p| p.split(" points=").nth(1).map_or(0, |pts| pts.split('"').nth(1).unwrap_or("").split_whitespace().count())).collect() };
        assert_eq!(lines(&svg), [4, 4, 4, 2, 2, 2], "three percentile lines of 4 steps, three legend entries");
        let timeline = dir.join("t.svg");
        let series: Vec<_> = steps.iter().map(|r| (format!("{}/s", r.per_s), r.timeline.clone())).collect();
        throughput(&timeline, "steps", &series, true).unwrap();
        let svg = std::fs::read_to_string(&timeline).unwrap();
        assert_eq!(lines(&svg), [2, 2, 2, 2, 2, 2, 2, 2], "a line of 2 seconds per step, a legend entry per step");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
