use super::*;
use crate::passes::test_util::*;
use quench_ir::{Attr, Model};

fn bn(b: &mut Builder, name: &str, x: &str, y: &str, c: usize) {
    let s = b.init(&format!("{name}_s"), rand_positive(&[c], 11));
    let o = b.weight(&format!("{name}_b"), &[c]);
    let m = b.weight(&format!("{name}_m"), &[c]);
    let v = b.init(&format!("{name}_v"), rand_positive(&[c], 12));
    b.node("BatchNormalization", name, &[x, &s, &o, &m, &v], &[y]);
    b.attr("epsilon", Attr::Float(1e-3));
}

/// Folds, checks the BN nodes are gone, and compares outputs on random data.
fn check_fold(model: Model, input: (&str, &[usize]), expect_folded: usize) {
    let mut folded = model.clone();
    let report = fold_batch_norms(&mut folded.graph).unwrap();
    assert_eq!(report.len(), expect_folded, "{report:?}");
    let left = folded
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .count();
    let before = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .count();
    assert_eq!(left, before - expect_folded);
    for seed in 0..3 {
        let x = rand_tensor(input.1, 100 + seed);
        let a = run(&model, &[(input.0, x.clone())]);
        let b = run(&folded, &[(input.0, x)]);
        for (a, b) in a.iter().zip(&b) {
            let d = rel_diff(a, b);
            assert!(d <= 1e-5, "relative difference {d}");
        }
    }
}

#[test]
fn conv_bn_with_and_without_bias_and_groups() {
    for (bias, group) in [(true, 1), (false, 1), (true, 2)] {
        let mut b = Builder::new(&[("x", &[2, 4, 6, 6])]);
        let w = b.weight("w", &[6, 4 / group, 3, 3]);
        let bias_name = if bias {
            b.weight("cb", &[6])
        } else {
            String::new()
        };
        b.node("Conv", "conv", &["x", &w, &bias_name], &["c"]);
        b.attr("group", Attr::Int(group as i64));
        bn(&mut b, "bn", "c", "y", 6);
        check_fold(b.build(&["y"]), ("x", &[2, 4, 6, 6]), 1);
    }
}

#[test]
fn conv_transpose_bn_with_groups() {
    for group in [1usize, 2] {
        let mut b = Builder::new(&[("x", &[1, 4, 5, 5])]);
        let w = b.weight("w", &[4, 6 / group, 3, 3]);
        b.node("ConvTranspose", "ct", &["x", &w], &["c"]);
        b.attr("group", Attr::Int(group as i64));
        bn(&mut b, "bn", "c", "y", 6);
        check_fold(b.build(&["y"]), ("x", &[1, 4, 5, 5]), 1);
    }
}

#[test]
fn gemm_bn_both_layouts() {
    for trans_b in [0, 1] {
        let mut b = Builder::new(&[("x", &[3, 8])]);
        let shape: &[usize] = if trans_b == 1 { &[5, 8] } else { &[8, 5] };
        let w = b.weight("w", shape);
        let c = b.weight("c", &[5]);
        b.node("Gemm", "gemm", &["x", &w, &c], &["g"]);
        b.attr("transB", Attr::Int(trans_b));
        b.attr("beta", Attr::Float(0.5));
        b.attr("alpha", Attr::Float(2.0));
        bn(&mut b, "bn", "g", "y", 5);
        check_fold(b.build(&["y"]), ("x", &[3, 8]), 1);
    }
}

#[test]
fn no_fold_when_conv_output_is_shared_or_params_are_inputs() {
    let mut b = Builder::new(&[("x", &[1, 2, 4, 4])]);
    let w = b.weight("w", &[3, 2, 1, 1]);
    b.node("Conv", "conv", &["x", &w], &["c"]);
    bn(&mut b, "bn", "c", "y", 3);
    let mut m = b.build(&["y", "c"]);
    assert!(fold_batch_norms(&mut m.graph).unwrap().is_empty());

    let mut b = Builder::new(&[("x", &[1, 2, 4, 4]), ("bn_m", &[3])]);
    let w = b.weight("w", &[3, 2, 1, 1]);
    b.node("Conv", "conv", &["x", &w], &["c"]);
    bn(&mut b, "bn", "c", "y", 3);
    let mut m = b.build(&["y"]);
    assert!(fold_batch_norms(&mut m.graph).unwrap().is_empty());
    assert_eq!(m.graph.nodes.len(), 2);
}

#[test]
fn chained_convs_fold_and_weights_shared_elsewhere_are_kept() {
    let mut b = Builder::new(&[("x", &[1, 3, 6, 6])]);
    let w = b.weight("w", &[3, 3, 3, 3]);
    b.node("Conv", "c1", &["x", &w], &["a"]);
    bn(&mut b, "bn1", "a", "a2", 3);
    b.node("Conv", "c2", &["a2", &w], &["d"]);
    bn(&mut b, "bn2", "d", "y", 3);
    let m = b.build(&["y"]);
    check_fold(m.clone(), ("x", &[1, 3, 6, 6]), 2);
    let mut f = m;
    fold_batch_norms(&mut f.graph).unwrap();
    assert!(!f.graph.initializers.contains_key("w"));
    assert!(!f.graph.initializers.contains_key("bn1_m"));
    assert_eq!(f.graph.nodes.len(), 2);
}
