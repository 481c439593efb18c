//! The graph method against the float path-norm definition, and the
//! properties every effective mask must have.

mod common;

use maskforge::analysis::effective::effective_masks;
use maskforge::{analysis::oracle, zoo};
use proptest::prelude::*;

/// Exact agreement on random masks of every zoo model, from mild to extreme sparsity.
#[test]
fn graph_method_equals_float_definition_on_every_zoo_model() {
    let cases: &[(&str, &[f64])] = &[
        ("mlp:30-20-20-10", &[0.5, 0.1, 0.03]),
        ("lenet300", &[0.1, 0.003, 0.0005]),
        ("lenet5", &[0.3, 0.05, 0.01]),
        ("vgg11", &[0.01, 0.001]),
        ("vgg16", &[0.1, 0.003, 0.0005]),
        ("vgg19", &[0.001, 0.0002]),
        ("resnet20", &[0.3, 0.01, 0.002]),
        ("resnet18", &[0.001]),
        ("resnet50", &[0.0005]),
    ];
    for &(name, densities) in cases {
        let net = zoo::build(name, 1).unwrap();
        for (i, &d) in densities.iter().enumerate() {
            let m = common::random_masks(&net, d, 100 + i as u64);
            let graph = effective_masks(&net, &m);
            let float = oracle::effective_masks(&net, &m).unwrap();
            for (li, l) in net.layers.iter().enumerate() {
                assert_eq!(
                    graph.layers[li].count_ones(),
                    float.layers[li].count_ones(),
                    "{name} density {d}: layer {}",
                    l.name
                );
            }
            assert_eq!(graph, float, "{name} density {d}");
            // The test is only worth something where pruning leaves inactive weights.
            if d <= 0.003 {
                assert!(
                    graph.count_ones() < m.count_ones(),
                    "{name} {d}: no inactive weight"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Active is a subset of kept, and the effective mask is a fixed point.
    #[test]
    fn effective_masks_are_subsets_and_idempotent(
        model in prop::sample::select(vec!["lenet5", "resnet20", "mlp:16-12-12-4", "vgg11"]),
        log_density in -3.5f64..0.0,
        seed in 0u64..1000,
    ) {
        let net = zoo::build(model, 0).unwrap();
        let m = common::random_masks(&net, 10f64.powf(log_density), seed);
        let e = effective_masks(&net, &m);
        prop_assert!(e.is_subset_of(&m));
        prop_assert_eq!(effective_masks(&net, &e), e);
    }
}
