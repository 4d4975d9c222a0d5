//! A line plot as a PNG, drawn with the `image` crate alone: the demo's loss curve. Axes with
//! "nice" ticks (1, 2, 5 × 10ᵏ) and grid lines, one colour per series, a legend.

use crate::font::{draw_text, text_width, GLYPH_HEIGHT};
use crate::media::MediaError;
use image::{Rgb, RgbImage};
use std::path::Path;

/// Plot size in pixels.
pub const PLOT_WIDTH: u32 = 960;
pub const PLOT_HEIGHT: u32 = 540;

const MARGIN_LEFT: u32 = 90;
const MARGIN_RIGHT: u32 = 24;
const MARGIN_TOP: u32 = 24;
const MARGIN_BOTTOM: u32 = 48;
const LABEL_SCALE: u32 = 2;

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];
const LEGEND_BORDER: [u8; 3] = [160, 160, 160];

/// Series colours (the familiar "category10" palette), reused cyclically.
pub const SERIES_COLOURS: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Tick positions covering [lo, hi] with about `target` steps of 1, 2 or 5 × 10ᵏ, and the step.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// A tick label with as many decimals as the step needs; scientific for very large or small.
pub fn tick_label(value: f64, step: f64) -> String {
    let value = if value.abs() < step * 1e-9 {
        0.0
    } else {
        value
    };
    if value != 0.0 && (value.abs() >= 1e6 || step < 1e-4) {
        return format!("{value:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// The value range of all finite points, widened when flat; (0, 1) when there are none.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (lo.abs() * 0.1).max(0.5);
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// Draws the plot in memory.
pub fn render_loss_plot(series: &[(&str, &[(f64, f64)])]) -> RgbImage {
    let mut img = RgbImage::from_pixel(PLOT_WIDTH, PLOT_HEIGHT, Rgb(WHITE));
    let (x0, y0) = (MARGIN_LEFT as f64, MARGIN_TOP as f64);
    let (w, h) = (
        (PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT) as f64,
        (PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) as f64,
    );
    let (xmin, xmax) = range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)));
    let (ymin, ymax) = range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    // Head room above and below so the curve's extremes do not sit on the frame.
    let pad = (ymax - ymin) * 0.05;
    let (ymin, ymax) = (ymin - pad, ymax + pad);
    let to_px = |x: f64, y: f64| {
        (
            x0 + (x - xmin) / (xmax - xmin) * w,
            y0 + (1.0 - (y - ymin) / (ymax - ymin)) * h,
        )
    };

    // Grid, ticks and labels.
    let char_h = (GLYPH_HEIGHT * LABEL_SCALE) as i64;
    let (xticks, xstep) = nice_ticks(xmin, xmax, 8);
    for x in xticks {
        let (px, _) = to_px(x, ymin);
        let px = px.round() as i64;
        line(&mut img, (px, y0 as i64), (px, (y0 + h) as i64), GRID, 1);
        line(
            &mut img,
            (px, (y0 + h) as i64),
            (px, (y0 + h) as i64 + 6),
            BLACK,
            1,
        );
        let label = tick_label(x, xstep);
        let half = text_width(&label, LABEL_SCALE) as i64 / 2;
        draw_text(
            &mut img,
            px - half,
            (y0 + h) as i64 + 12,
            &label,
            LABEL_SCALE,
            BLACK,
        );
    }
    let (yticks, ystep) = nice_ticks(ymin, ymax, 6);
    for y in yticks {
        let (_, py) = to_px(xmin, y);
        let py = py.round() as i64;
        line(&mut img, (x0 as i64, py), ((x0 + w) as i64, py), GRID, 1);
        line(&mut img, (x0 as i64 - 6, py), (x0 as i64, py), BLACK, 1);
        let label = tick_label(y, ystep);
        let width = text_width(&label, LABEL_SCALE) as i64;
        draw_text(
            &mut img,
            x0 as i64 - 12 - width,
            py - char_h / 2,
            &label,
            LABEL_SCALE,
            BLACK,
        );
    }
    // Axes.
    line(
        &mut img,
        (x0 as i64, y0 as i64),
        (x0 as i64, (y0 + h) as i64),
        BLACK,
        2,
    );
    line(
        &mut img,
        (x0 as i64, (y0 + h) as i64),
        ((x0 + w) as i64, (y0 + h) as i64),
        BLACK,
        2,
    );

    // Series; a non-finite point breaks the line.
    for (index, (_, points)) in series.iter().enumerate() {
        let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
        let mut previous: Option<(i64, i64)> = None;
        for &(x, y) in points.iter() {
            if !(x.is_finite() && y.is_finite()) {
                previous = None;
                continue;
            }
            let (px, py) = to_px(x, y);
            let here = (px.round() as i64, py.round() as i64);
            line(&mut img, previous.unwrap_or(here), here, colour, 2);
            previous = Some(here);
        }
    }

    // Legend, top right inside the plot area.
    if !series.is_empty() {
        let row = char_h + 8;
        let widest = series
            .iter()
            .map(|(name, _)| text_width(name, LABEL_SCALE))
            .max()
            .unwrap_or(0) as i64;
        let box_w = 16 + 28 + 8 + widest + 12;
        let box_h = 8 + row * series.len() as i64;
        let left = (x0 + w) as i64 - box_w - 10;
        let top = y0 as i64 + 10;
        fill(&mut img, left, top, box_w, box_h, WHITE);
        rectangle(&mut img, left, top, box_w, box_h, LEGEND_BORDER);
        for (index, (name, _)) in series.iter().enumerate() {
            let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
            let y = top + 8 + row * index as i64;
            let mid = y + char_h / 2;
            line(&mut img, (left + 12, mid), (left + 40, mid), colour, 3);
            draw_text(&mut img, left + 52, y, name, LABEL_SCALE, BLACK);
        }
    }
    img
}

/// Writes the plot of `series` (name, points (x, y)) as a PNG, atomically.
pub fn write_loss_plot_png(
    series: &[(&str, &[(f64, f64)])],
    path: &Path,
) -> Result<(), MediaError> {
    let img = render_loss_plot(series);
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|source| MediaError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    crate::atomic::write_atomically(path, &bytes).map_err(|e| MediaError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn put(img: &mut RgbImage, x: i64, y: i64, colour: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(colour));
    }
}

/// Bresenham's line, `thickness` pixels wide (a square brush).
fn line(img: &mut RgbImage, from: (i64, i64), to: (i64, i64), colour: [u8; 3], thickness: i64) {
    let (mut x, mut y) = from;
    let (dx, dy) = ((to.0 - x).abs(), -(to.1 - y).abs());
    let (sx, sy) = (if x < to.0 { 1 } else { -1 }, if y < to.1 { 1 } else { -1 });
    let mut err = dx + dy;
    let lo = -(thickness - 1) / 2;
    let hi = thickness / 2;
    loop {
        for ox in lo..=hi {
            for oy in lo..=hi {
                put(img, x + ox, y + oy, colour);
            }
        }
        if (x, y) == to {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn fill(img: &mut RgbImage, left: i64, top: i64, w: i64, h: i64, colour: [u8; 3]) {
    for y in top..top + h {
        for x in left..left + w {
            put(img, x, y, colour);
        }
    }
}

fn rectangle(img: &mut RgbImage, left: i64, top: i64, w: i64, h: i64, colour: [u8; 3]) {
    line(img, (left, top), (left + w - 1, top), colour, 1);
    line(
        img,
        (left, top + h - 1),
        (left + w - 1, top + h - 1),
        colour,
        1,
    );
    line(img, (left, top), (left, top + h - 1), colour, 1);
    line(
        img,
        (left + w - 1, top),
        (left + w - 1, top + h - 1),
        colour,
        1,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_use_1_2_5_steps() {
        let (ticks, step) = nice_ticks(0.0, 1000.0, 8);
        assert_eq!(step, 200.0);
        assert_eq!(ticks, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        let (ticks, step) = nice_ticks(0.013, 0.087, 6);
        assert!((step - 0.02).abs() < 1e-12);
        assert_eq!(ticks.len(), 4);
        assert!((ticks[0] - 0.02).abs() < 1e-12);
        assert_eq!(tick_label(0.04, 0.02), "0.04");
        assert_eq!(tick_label(1500.0, 500.0), "1500");
        assert_eq!(tick_label(2.5e-5, 1e-5), "2.5e-5");
    }

    #[test]
    fn series_are_drawn_in_their_colours_with_a_legend() {
        let a: Vec<(f64, f64)> = (0..100)
            .map(|s| (s as f64, 1.0 / (1.0 + s as f64)))
            .collect();
        let b: Vec<(f64, f64)> = (0..100).map(|s| (s as f64, 0.5)).collect();
        let img = render_loss_plot(&[("train", &a), ("val", &b)]);
        assert_eq!(img.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
        let count = |colour: [u8; 3]| img.pixels().filter(|p| p.0 == colour).count();
        // Series lines are hundreds of pixels long, plus the legend swatch.
        assert!(
            count(SERIES_COLOURS[0]) > 500,
            "{}",
            count(SERIES_COLOURS[0])
        );
        assert!(count(SERIES_COLOURS[1]) > 500);
        assert_eq!(count(SERIES_COLOURS[2]), 0);
        // The x axis runs along the bottom of the plot area.
        let axis_y = PLOT_HEIGHT - MARGIN_BOTTOM;
        assert_eq!(img.get_pixel(PLOT_WIDTH / 2, axis_y).0, BLACK);
        // The first series starts at its maximum (x = 0, y = 1): at the left edge, 5% of the
        // plot height below the top (the head room).
        let plot_h = (PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) as f64;
        let top = (MARGIN_TOP as f64 + plot_h * 0.05 / 1.1).round() as u32;
        assert_eq!(img.get_pixel(MARGIN_LEFT + 1, top).0, SERIES_COLOURS[0]);
    }

    #[test]
    fn empty_and_flat_input_still_draws() {
        let img = render_loss_plot(&[]);
        assert_eq!(img.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
        let flat = [(0.0, 2.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 2.0)];
        let img = render_loss_plot(&[("flat", &flat)]);
        assert!(img.pixels().any(|p| p.0 == SERIES_COLOURS[0]));
    }

    #[test]
    fn png_is_written_atomically_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let pts = [(0.0, 1.0), (10.0, 0.3)];
        write_loss_plot_png(&[("loss", &pts)], &path).unwrap();
        let back = image::open(&path).unwrap();
        assert_eq!((back.width(), back.height()), (PLOT_WIDTH, PLOT_HEIGHT));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
