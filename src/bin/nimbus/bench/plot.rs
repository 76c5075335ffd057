//! The autoscale plot: concurrency over time against Little's law, and throughput over time,
//! as an SVG (plotters' SVG backend; no system fonts needed).

use std::path::Path;

use plotters::prelude::*;

use super::scenarios::Curve;

pub(crate) fn autoscale_svg(
    path: &Path,
    curves: &[Curve],
    target: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let t_max = curves
        .iter()
        .flat_map(|c| c.samples.iter().map(|s| s.0))
        .fold(0.1, f64::max);
    let c_max = curves
        .iter()
        .flat_map(|c| c.samples.iter().map(|s| s.1))
        .fold(target, f64::max)
        * 1.15;
    let x_max = curves
        .iter()
        .flat_map(|c| c.samples.iter().map(|s| s.2))
        .fold(1.0, f64::max)
        * 1.15;
    let concurrency = Panel {
        title: "Concurrency after a step in arrival rate",
        y_desc: "concurrent invocations",
        y_max: c_max,
        y: |s| s.1,
        target: Some(target),
    };
    let throughput = Panel {
        title: "Throughput",
        y_desc: "completions per second",
        y_max: x_max,
        y: |s| s.2,
        target: None,
    };
    chart(&top, &concurrency, t_max, curves)?;
    chart(&bottom, &throughput, t_max, curves)?;
    root.present()?;
    Ok(())
}

/// What one chart shows: the samples projected by `y`, with an optional Little's law line.
#[derive(Clone, Copy)]
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    y_max: f64,
    y: fn(&(f64, f64, f64)) -> f64,
    target: Option<f64>,
}

fn chart(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    t_max: f64,
    curves: &[Curve],
) -> Result<(), Box<dyn std::error::Error>> {
    let Panel {
        title,
        y_desc,
        y_max,
        y,
        target,
    } = *panel;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the step")
        .y_desc(y_desc)
        .draw()?;
    if let Some(target) = target {
        chart
            .draw_series(LineSeries::new(
                [(0.0, target), (t_max, target)],
                BLACK.stroke_width(1),
            ))?
            .label(format!("Little's law λ·d = {target:.0}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    }
    for (curve, color) in curves.iter().zip(colors) {
        chart
            .draw_series(LineSeries::new(
                curve.samples.iter().map(|s| (s.0, y(s))),
                color.stroke_width(2),
            ))?
            .label(curve.system.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}
