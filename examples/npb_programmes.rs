//! Every programme of an official NPB run (a fixtures/npb/*.json.gz made by
//! fixtures/npb/make.sh) solved again by maskforge: per programme, the
//! objective their cvxpy/HiGHS run reached, ours, and the difference (how
//! far their solver stopped from the optimum); then the largest difference.
//!
//!     cargo run --release --example npb_programmes fixtures/npb/vgg16_0.001.json.gz

use std::io::Read;

use maskforge::methods::npb::programme::Programme;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: npb_programmes RUN.json.gz")?;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path)?).read_to_end(&mut text)?;
    let doc: serde_json::Value = serde_json::from_slice(&text)?;
    let mut worst: f64 = 0.0;
    println!(
        "{:<28} {:>5} {:>6} {:>16} {:>16} {:>10}",
        "layer", "chunk", "n", "theirs", "ours", "ours-theirs"
    );
    for r in doc["programmes"].as_array().ok_or("no programmes")? {
        let param = r["param"].as_str().unwrap_or("?");
        let path_in = doc["p_in"][param]
            .as_array()
            .ok_or("no p_in")?
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
        let p = Programme {
            path_in,
            outputs: r["shape"][0].as_u64().unwrap_or(0) as usize,
            budget: r["n_params"].as_u64().unwrap_or(0) as usize,
            max_taps: r["max_param_per_kernel"].as_u64().unwrap_or(1) as usize,
            alpha: r["alpha"].as_f64().unwrap_or(0.0),
            beta: r["beta"].as_f64().unwrap_or(0.0),
        };
        let theirs = r["objective"].as_f64().unwrap_or(f64::NAN);
        let ours = p.solve()?.objective;
        worst = worst.max(ours - theirs);
        println!(
            "{param:<28} {:>5} {:>6} {theirs:>16.9} {ours:>16.9} {:>10.2e}",
            r["chunk"],
            p.budget,
            ours - theirs
        );
    }
    println!("largest gain over their solver: {worst:.3e}");
    Ok(())
}
