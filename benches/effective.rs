//! The exact effective-mask pass against the float path-norm definition on
//! the same masks (issue: effective pass >= 20x faster), on ResNet-50 and
//! VGG-16, at a dense and two sparse random masks.

use criterion::{criterion_group, criterion_main, Criterion};
use maskforge::bitset::BitSet;
use maskforge::graph::Network;
use maskforge::mask::MaskSet;
use maskforge::{analysis::effective, analysis::oracle, zoo};
use rand::{Rng, SeedableRng};

fn random_masks(net: &Network, density: f64) -> MaskSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    MaskSet {
        layers: net
            .layers
            .iter()
            .map(|l| BitSet::from_fn(l.numel(), |_| rng.random::<f64>() < density))
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("effective");
    g.sample_size(10);
    for model in ["vgg16", "resnet50"] {
        let net = zoo::build(model, 0).unwrap();
        for density in [1.0, 0.01, 0.001] {
            let m = random_masks(&net, density);
            g.bench_function(format!("graph/{model}/d={density}"), |b| {
                b.iter(|| effective::effective_masks(&net, &m))
            });
            g.bench_function(format!("pathnorm/{model}/d={density}"), |b| {
                b.iter(|| oracle::effective_masks(&net, &m).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
