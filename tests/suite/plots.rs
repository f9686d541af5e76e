//! The examples' plots and metrics files (`examples/common/svg.rs` and `metrics.rs`, compiled
//! here as they are there): what the SVG and the CSV hold, and the errors for bad input.

#[allow(dead_code)] // the examples use more of them than these tests
#[path = "../../examples/common/svg.rs"]
mod svg;

#[allow(dead_code)]
#[path = "../../examples/common/metrics.rs"]
mod metrics;

use metrics::{Epoch, Metrics};
use svg::{Chart, Series};
use tapegrad_golden::Scratch;

fn two_panels() -> Vec<Chart> {
    let train: Vec<(f64, f64)> = (1..=6).map(|e| (e as f64, 1.0 / e as f64)).collect();
    let test: Vec<(f64, f64)> = (1..=6).map(|e| (e as f64, 1.2 / e as f64 + 0.1)).collect();
    vec![
        Chart::new("Loss & friends", "epoch", "loss")
            .y_from_zero()
            .series(Series::new("train <dashed>", "#1f77b4", train).dashed())
            .series(Series::new("test", "#d62728", test)),
        Chart::new("Accuracy", "epoch", "accuracy (%)").series(Series::new(
            "test",
            "#2ca02c",
            vec![(1.0, 90.0), (2.0, f64::NAN), (3.0, 95.5)],
        )),
    ]
}

#[test]
fn charts_are_svg_with_titles_axes_legends_and_lines() {
    let svg = svg::render("Two panels", &two_panels()).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.contains(r#"width="1080""#), "two panels of 540 pixels");
    // Text is escaped, and everything named is drawn.
    for text in ["Two panels", "Loss &amp; friends", "Accuracy", "train &lt;dashed&gt;", "accuracy (%)", "epoch"] {
        assert!(svg.contains(text), "{text} missing");
    }
    // The lines in their colours (plotters writes colours as #RRGGBB).
    for color in ["#1F77B4", "#D62728", "#2CA02C"] {
        assert!(svg.to_uppercase().contains(color), "{color} missing");
    }
    // Whole epochs get whole tick labels (plotters puts a text node's content on its own line).
    assert!(svg.contains("\n3\n</text>") && !svg.contains("\n2.5\n</text>"));
}

#[test]
fn bad_colours_are_errors_and_empty_charts_draw() {
    let bad = Chart::new("t", "x", "y").series(Series::new("s", "blue", vec![(0.0, 1.0)]));
    let err = svg::render("bad", &[bad]).unwrap_err();
    assert!(err.to_string().contains("\"blue\""), "{err}");
    // No data, no series, one point: still a valid drawing.
    let svg = svg::render("empty", &[Chart::new("nothing", "x", "y")]).unwrap();
    assert!(svg.contains("nothing"));
    let one = Chart::new("one", "x", "y").series(Series::new("p", "#000000", vec![(1.0, 2.0)]));
    svg::render("one point", &[one]).unwrap();
}

#[test]
fn metrics_are_csv_beside_the_plot() {
    let dir = Scratch::new("plots", "metrics");
    let out = dir.path("run/curves.svg");
    let mut m = Metrics::create(&out, "A run", &["penalty"]).unwrap();
    assert_eq!(m.csv_path(), dir.path("run/curves.csv"));
    for epoch in 1..=3 {
        let e = Epoch {
            epoch,
            lr: Some(0.1 / epoch as f64),
            train_loss: Some(1.0 / epoch as f64),
            test_acc: Some(0.5 + 0.1 * epoch as f64),
            extra: vec![epoch as f64],
            ..Epoch::default()
        };
        m.record("with dropout, p=0.5", e.clone()).unwrap();
        m.record("plain", e).unwrap();
    }
    let csv = std::fs::read_to_string(m.csv_path()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "run,epoch,lr,train_loss,test_loss,train_acc,test_acc,epoch_seconds,wall_seconds,penalty");
    assert_eq!(lines.len(), 7);
    // A run name with a comma is quoted; values not measured are empty cells.
    assert!(lines[1].starts_with("\"with dropout, p=0.5\",1,0.1,1,,,0.6,,"), "{}", lines[1]);
    assert!(lines[6].starts_with("plain,3,"), "{}", lines[6]);
    assert!(lines[6].ends_with(",3"), "{}", lines[6]);
    // The plot was drawn beside it: loss, accuracy, the changing learning rate and the extra.
    let svg = std::fs::read_to_string(&out).unwrap();
    for text in ["A run", "Loss", "Accuracy", "Learning rate", "penalty", "plain train"] {
        assert!(svg.contains(text), "{text} missing");
    }
    // One value per extra column, and a plot that is not a .csv.
    let err = m.record("plain", Epoch { epoch: 4, ..Epoch::default() }).unwrap_err();
    assert!(err.to_string().contains("0 extra values"), "{err}");
    assert!(Metrics::create(&dir.path("x.csv"), "t", &[]).is_err());
}
