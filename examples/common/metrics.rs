//! What a training example measured, epoch by epoch, written as it goes: a CSV file that other
//! tools read (`pandas.read_csv`, a spreadsheet, gnuplot) and, beside it, an SVG of the curves
//! (losses, accuracies, the learning rate, and any columns of the example's own), both rewritten
//! after every epoch so that a long run can be watched and an interrupted one keeps its curves.
//!
//! The CSV has one row per run and epoch: `run,epoch,lr,train_loss,test_loss,train_acc,test_acc,
//! epoch_seconds,wall_seconds`, then the example's own columns; accuracies are fractions, a value
//! an example does not measure is an empty cell, `wall_seconds` counts from [`Metrics::create`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tapegrad::{Error, Result};

use super::svg::{self, Chart, Series, PALETTE};

/// The columns every metrics file has, before the example's own.
const COLUMNS: [&str; 9] =
    ["run", "epoch", "lr", "train_loss", "test_loss", "train_acc", "test_acc", "epoch_seconds", "wall_seconds"];

/// What one epoch of one run measured; `None` where the example does not measure it.
#[derive(Clone, Debug, Default)]
pub struct Epoch {
    /// 1-based (or the step, for an example that logs steps).
    pub epoch: usize,
    /// The learning rate the epoch trained with.
    pub lr: Option<f64>,
    /// The mean training loss.
    pub train_loss: Option<f64>,
    /// The mean test (or validation) loss.
    pub test_loss: Option<f64>,
    /// The training accuracy, a fraction.
    pub train_acc: Option<f64>,
    /// The test (or validation) accuracy, a fraction.
    pub test_acc: Option<f64>,
    /// The epoch's training time.
    pub seconds: Option<f64>,
    /// The example's own columns, in the order given to [`Metrics::create`].
    pub extra: Vec<f64>,
}

impl Epoch {
    /// The common row: an epoch trained at `lr` with mean loss `train_loss`, then scored on the
    /// test (or validation) set, in `seconds` of training.
    pub fn measured(epoch: usize, lr: f64, train_loss: f64, test: (f64, f64), seconds: f64) -> Epoch {
        let (test_loss, test_acc) = test;
        Epoch {
            epoch,
            lr: Some(lr),
            train_loss: Some(train_loss),
            test_loss: Some(test_loss),
            test_acc: Some(test_acc),
            seconds: Some(seconds),
            ..Epoch::default()
        }
    }
}

/// A metrics file and its plot: see the module's doc.
pub struct Metrics {
    csv: PathBuf,
    svg: PathBuf,
    file: BufWriter<File>,
    title: String,
    loss_title: String,
    /// Losses plotted as log10 (they span decades).
    log_loss: bool,
    x_label: String,
    extra: Vec<String>,
    start: Instant,
    /// Each run's epochs, runs in the order they first appeared.
    runs: Vec<(String, Vec<Epoch>)>,
}

impl Metrics {
    /// Starts the plot at `svg` (`--out`) and the metrics file beside it (the same name, with
    /// `.csv`), creating their folder, with the example's own columns `extra`; `title` heads the
    /// plot.
    ///
    /// # Errors
    /// `svg` ends in `.csv` (the two files would be one), or the file cannot be created.
    pub fn create(svg: &Path, title: impl Into<String>, extra: &[&str]) -> Result<Metrics> {
        let csv = svg.with_extension("csv");
        if csv == svg {
            return Err(Error::arg(
                "metrics",
                format!("--out {}: the plot is SVG, its metrics go beside it as .csv", svg.display()),
            ));
        }
        let header: Vec<&str> = COLUMNS.iter().chain(extra).copied().collect();
        let file = start_csv(&csv, &header.join(",")).map_err(|e| Error::io(&csv, e))?;
        Ok(Metrics {
            csv,
            svg: svg.to_path_buf(),
            file,
            title: title.into(),
            loss_title: "Loss".into(),
            log_loss: false,
            x_label: "epoch".into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            start: Instant::now(),
            runs: vec![],
        })
    }

    /// Names the x axis of the plot (`"epoch"` unless set: `"step"` for an example that logs
    /// steps).
    pub fn x_label(mut self, label: impl Into<String>) -> Metrics {
        self.x_label = label.into();
        self
    }

    /// Titles the loss panel (`"Loss"` unless set).
    pub fn loss_title(mut self, title: impl Into<String>) -> Metrics {
        self.loss_title = title.into();
        self
    }

    /// Plots the losses' log10 (for losses that fall by decades); the file keeps the values.
    pub fn log_loss(mut self) -> Metrics {
        self.log_loss = true;
        self
    }

    /// Where the metrics go.
    pub fn csv_path(&self) -> &Path {
        &self.csv
    }

    /// Where the plot goes.
    pub fn svg_path(&self) -> &Path {
        &self.svg
    }

    /// Appends `epoch` of `run` to the file, then redraws the plot.
    ///
    /// # Errors
    /// `epoch.extra` does not have one value per extra column, or a file cannot be written.
    pub fn record(&mut self, run: &str, epoch: Epoch) -> Result<()> {
        if epoch.extra.len() != self.extra.len() {
            let msg = format!("{} extra values for the columns {:?}", epoch.extra.len(), self.extra);
            return Err(Error::arg("metrics", msg));
        }
        let cell = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let mut row = vec![csv_text(run), epoch.epoch.to_string()];
        row.extend(
            [epoch.lr, epoch.train_loss, epoch.test_loss, epoch.train_acc, epoch.test_acc, epoch.seconds].map(cell),
        );
        row.push(format!("{:.3}", self.start.elapsed().as_secs_f64()));
        row.extend(epoch.extra.iter().map(|v| v.to_string()));
        writeln!(self.file, "{}", row.join(","))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.csv, e))?;
        match self.runs.iter_mut().find(|(name, _)| name == run) {
            Some((_, epochs)) => epochs.push(epoch),
            None => self.runs.push((run.to_string(), vec![epoch])),
        }
        svg::write(&self.svg, &self.title, &self.charts()).map_err(|e| Error::io(&self.svg, e))
    }

    /// The plot's panels: the losses (train dashed, test solid), the accuracies in percent (the
    /// same), the learning rate when it changes, and one panel per extra column; a panel with
    /// nothing to show is left out.
    pub fn charts(&self) -> Vec<Chart> {
        let mut loss = if self.log_loss {
            Chart::new(&self.loss_title, &self.x_label, "log10(loss)")
        } else {
            Chart::new(&self.loss_title, &self.x_label, "loss").y_from_zero()
        };
        let scale = |v: f64| if self.log_loss { v.log10() } else { v };
        let mut acc = Chart::new("Accuracy", &self.x_label, "accuracy (%)");
        let mut lr = Chart::new("Learning rate", &self.x_label, "lr").y_from_zero();
        let mut extra: Vec<Chart> =
            self.extra.iter().map(|c| Chart::new(c.replace('_', " "), &self.x_label, c)).collect();
        for (i, (run, epochs)) in self.runs.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let label = |what: &str| if self.runs.len() == 1 { what.to_string() } else { format!("{run} {what}") };
            let curve = |f: &dyn Fn(&Epoch) -> Option<f64>| -> Vec<(f64, f64)> {
                epochs.iter().filter_map(|e| f(e).map(|v| (e.epoch as f64, v))).collect()
            };
            let line = |chart: &mut Chart, what: &str, points: Vec<(f64, f64)>, dashed: bool| {
                if !points.is_empty() {
                    let series = Series::new(label(what), color, points);
                    chart.series.push(if dashed { series.dashed() } else { series });
                }
            };
            line(&mut loss, "train", curve(&|e| e.train_loss.map(scale)), true);
            line(&mut loss, "test", curve(&|e| e.test_loss.map(scale)), false);
            line(&mut acc, "train", curve(&|e| e.train_acc.map(|a| 100.0 * a)), true);
            line(&mut acc, "test", curve(&|e| e.test_acc.map(|a| 100.0 * a)), false);
            let rates = curve(&|e| e.lr);
            if rates.iter().any(|&(_, r)| r != rates[0].1) {
                line(&mut lr, "lr", rates, false);
            }
            for (k, chart) in extra.iter_mut().enumerate() {
                line(chart, &self.extra[k].replace('_', " "), curve(&|e| e.extra.get(k).copied()), false);
            }
        }
        [loss, acc, lr].into_iter().chain(extra).filter(|c| !c.series.is_empty()).collect()
    }
}

/// Creates the file at `csv` (and its folder) and writes the `header` line.
fn start_csv(csv: &Path, header: &str) -> io::Result<BufWriter<File>> {
    if let Some(dir) = csv.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = BufWriter::new(File::create(csv)?);
    writeln!(file, "{header}")?;
    file.flush()?;
    Ok(file)
}

/// `text` as one CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_text(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
