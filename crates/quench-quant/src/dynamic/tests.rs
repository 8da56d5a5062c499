use super::*;
use crate::passes::test_util::{Builder, rand_tensor, rel_diff, run, sqnr};
use quench_ir::{Attr, Tensor};

fn ops(m: &Model) -> Vec<&str> {
    m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect()
}

fn cfg(f: impl FnOnce(&mut DynamicConfig)) -> DynamicConfig {
    let mut c = DynamicConfig::default();
    f(&mut c);
    c
}

/// x[2,3,16] → MatMul(W[16,8]) → Add(b[8]) → y
fn linear() -> Model {
    let mut b = Builder::new(&[("x", &[2, 3, 16])]);
    b.weight("w", &[16, 8]);
    b.weight("b", &[8]);
    b.node("MatMul", "fc", &["x", "w"], &["h"]);
    b.node("Add", "fc_bias", &["h", "b"], &["y"]);
    b.build(&["y"])
}

#[test]
fn matmul_bias_becomes_one_dynamic_quantize_matmul() {
    let m = linear();
    let (q, r) = quantize_dynamic(&m, &DynamicConfig::default()).unwrap();
    assert_eq!(ops(&q), vec!["DynamicQuantizeMatMul"]);
    assert_eq!(q.graph.nodes[0].inputs.len(), 5, "bias folded in");
    assert!(
        !q.graph.initializers.contains_key("w"),
        "float weight dropped"
    );
    assert_eq!(q.opset("com.microsoft"), Some(1));
    assert_eq!(r.quantized.len(), 1);
    assert_eq!(r.quantized[0].float_bytes, 16 * 8 * 4);
    assert_eq!(r.quantized[0].quant_bytes, 16 * 8 + 8 * 4 + 8);
    let x = rand_tensor(&[2, 3, 16], 7);
    let want = &run(&m, &[("x", x.clone())])[0];
    let got = &run(&q, &[("x", x)])[0];
    assert!(sqnr(want, got) > 30.0, "sqnr {}", sqnr(want, got));
}

#[test]
fn onnx_format_and_per_tensor_match_the_contrib_op() {
    let m = linear();
    let x = rand_tensor(&[2, 3, 16], 3);
    for per_channel in [true, false] {
        let (c, _) = quantize_dynamic(&m, &cfg(|c| c.per_channel = per_channel)).unwrap();
        let (o, _) = quantize_dynamic(
            &m,
            &cfg(|c| {
                c.per_channel = per_channel;
                c.format = DynamicFormat::Onnx;
            }),
        )
        .unwrap();
        assert!(ops(&o).contains(&"MatMulInteger"));
        assert!(ops(&o).contains(&"DynamicQuantizeLinear"));
        assert_eq!(o.opset("com.microsoft"), None);
        let a = &run(&c, &[("x", x.clone())])[0];
        let b = &run(&o, &[("x", x.clone())])[0];
        assert!(rel_diff(a, b) < 1e-5, "{}", rel_diff(a, b));
    }
}

#[test]
fn per_token_is_standard_onnx_and_tracks_row_ranges() {
    // Rows of very different magnitude: one scale for all wastes bits.
    let mut b = Builder::new(&[("x", &[2, 3, 16])]);
    b.weight("w", &[16, 8]);
    b.node("MatMul", "fc", &["x", "w"], &["y"]);
    let m = b.build(&["y"]);
    let mut xv = rand_tensor(&[2, 3, 16], 5).into_vec::<f32>().unwrap();
    for (i, v) in xv.iter_mut().enumerate() {
        *v *= [0.01f32, 1.0, 30.0][(i / 16) % 3];
    }
    let x = Tensor::from_vec(vec![2, 3, 16], xv).unwrap();
    let (t, _) = quantize_dynamic(&m, &cfg(|c| c.per_token = true)).unwrap();
    assert!(t.graph.nodes.iter().all(|n| n.domain.is_empty()));
    assert!(ops(&t).contains(&"MatMulInteger"));
    let (p, _) = quantize_dynamic(&m, &DynamicConfig::default()).unwrap();
    let want = &run(&m, &[("x", x.clone())])[0];
    let tok = &run(&t, &[("x", x.clone())])[0];
    let ten = &run(&p, &[("x", x)])[0];
    assert_eq!(tok.shape(), want.shape());
    // Row 0 (magnitude 0.01) is lost under one per-tensor scale, kept per token.
    let row =
        |t: &Tensor| Tensor::from_vec(vec![8], t.as_slice::<f32>().unwrap()[..8].to_vec()).unwrap();
    assert!(
        sqnr(&row(want), &row(tok)) > 30.0,
        "{}",
        sqnr(&row(want), &row(tok))
    );
    assert!(sqnr(&row(want), &row(ten)) < sqnr(&row(want), &row(tok)));
}

#[test]
fn gemm_transb_alpha_beta_and_bias() {
    for c_shape in [vec![6usize], vec![4, 6]] {
        let mut b = Builder::new(&[("x", &[4, 10])]);
        b.weight("w", &[6, 10]);
        b.weight("c", &c_shape);
        b.node("Gemm", "g", &["x", "w", "c"], &["y"]);
        b.attr("transB", Attr::Int(1));
        b.attr("alpha", Attr::Float(0.5));
        b.attr("beta", Attr::Float(2.0));
        let m = b.build(&["y"]);
        let x = rand_tensor(&[4, 10], 9);
        let want = &run(&m, &[("x", x.clone())])[0];
        for per_token in [false, true] {
            let (q, r) = quantize_dynamic(&m, &cfg(|c| c.per_token = per_token)).unwrap();
            assert_eq!(r.quantized.len(), 1, "{c_shape:?}");
            let got = &run(&q, &[("x", x.clone())])[0];
            assert!(
                sqnr(want, got) > 30.0,
                "{c_shape:?} {per_token}: {}",
                sqnr(want, got)
            );
        }
    }
}

#[test]
fn weights_behind_transpose_and_constant_nodes() {
    let mut b = Builder::new(&[("x", &[3, 12])]);
    b.node("Constant", "wc", &[], &["w_t"]);
    b.attr("value", Attr::Tensor(rand_tensor(&[5, 12], 4)));
    b.node("Transpose", "tw", &["w_t"], &["w"]);
    b.attr("perm", Attr::Ints(vec![1, 0]));
    b.node("MatMul", "fc", &["x", "w"], &["y"]);
    let m = b.build(&["y"]);
    let (q, r) = quantize_dynamic(&m, &DynamicConfig::default()).unwrap();
    assert_eq!(
        ops(&q),
        vec!["DynamicQuantizeMatMul"],
        "transpose folded away"
    );
    assert_eq!(r.constants, 1);
    let x = rand_tensor(&[3, 12], 2);
    let (want, got) = (&run(&m, &[("x", x.clone())])[0], &run(&q, &[("x", x)])[0]);
    assert!(sqnr(want, got) > 30.0);
}

#[test]
fn runtime_weights_and_unsupported_shapes_are_skipped_with_a_reason() {
    let mut b = Builder::new(&[("x", &[2, 4]), ("w", &[4, 3])]);
    b.weight("w3", &[2, 3, 5]);
    b.node("MatMul", "dyn_w", &["x", "w"], &["h"]);
    b.node("MatMul", "batched_w", &["h", "w3"], &["y"]);
    let m = b.build(&["y"]);
    let (q, r) = quantize_dynamic(&m, &DynamicConfig::default()).unwrap();
    assert_eq!(q.graph.nodes, m.graph.nodes);
    assert_eq!(r.skipped.len(), 2);
    assert!(r.skipped[0].reason.contains("run time"), "{:?}", r.skipped);
    assert!(r.skipped[1].reason.contains("2-D"), "{:?}", r.skipped);
    let text = r.to_string();
    assert!(text.contains("kept float: dyn_w"), "{text}");
}

#[test]
fn exclude_op_types_and_bad_names() {
    let m = linear();
    let (q, r) = quantize_dynamic(&m, &cfg(|c| c.exclude = vec!["fc".into()])).unwrap();
    assert_eq!(q.graph.nodes, m.graph.nodes);
    assert_eq!(r.skipped[0].reason, "excluded by name");
    let (q, _) = quantize_dynamic(&m, &cfg(|c| c.op_types = vec!["LSTM".into()])).unwrap();
    assert_eq!(q.graph.nodes, m.graph.nodes);
    assert!(quantize_dynamic(&m, &cfg(|c| c.exclude = vec!["nope".into()])).is_err());
    assert!(quantize_dynamic(&m, &cfg(|c| c.op_types = vec!["Relu".into()])).is_err());
}

fn rnn(op: &str, gates: usize) -> Model {
    let (i, h) = (6, 5);
    let mut b = Builder::new(&[("x", &[7, 2, i])]);
    b.weight("W", &[1, gates * h, i]);
    b.weight("R", &[1, gates * h, h]);
    b.weight("B", &[1, 2 * gates * h]);
    b.node(op, "rnn", &["x", "W", "R", "B"], &["y", "yh"]);
    b.attr("hidden_size", Attr::Int(h as i64));
    b.build(&["y", "yh"])
}

#[test]
fn lstm_becomes_dynamic_quantize_lstm_and_gru_stays_float() {
    let m = rnn("LSTM", 4);
    let x = rand_tensor(&[7, 2, 6], 11);
    let want = run(&m, &[("x", x.clone())]);
    for per_channel in [true, false] {
        let (q, r) = quantize_dynamic(&m, &cfg(|c| c.per_channel = per_channel)).unwrap();
        assert_eq!(ops(&q), vec!["DynamicQuantizeLSTM"]);
        let n = &q.graph.nodes[0];
        assert_eq!(n.inputs.len(), 12);
        let wq = &q.graph.initializers[&n.inputs[1]];
        assert_eq!(wq.shape(), &[1, 6, 20], "W transposed to [dirs, in, 4h]");
        let ws = &q.graph.initializers[&n.inputs[8]];
        assert_eq!(
            ws.shape(),
            if per_channel { &[1, 20][..] } else { &[1][..] }
        );
        assert!(r.quantized[0].float_bytes > r.quantized[0].quant_bytes);
        let got = run(&q, &[("x", x.clone())]);
        for (a, b) in want.iter().zip(&got) {
            assert!(sqnr(a, b) > 30.0, "{}", sqnr(a, b));
        }
    }
    let g = rnn("GRU", 3);
    let (q, r) = quantize_dynamic(&g, &DynamicConfig::default()).unwrap();
    assert_eq!(q.graph.nodes, g.graph.nodes);
    assert!(r.skipped[0].reason.contains("GRU"));
}

#[test]
fn conv_is_opt_in_and_becomes_conv_integer() {
    let mut b = Builder::new(&[("x", &[1, 3, 8, 8])]);
    b.weight("w", &[4, 3, 3, 3]);
    b.weight("b", &[4]);
    b.node("Conv", "conv", &["x", "w", "b"], &["y"]);
    b.attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
    let m = b.build(&["y"]);
    let (q, _) = quantize_dynamic(&m, &DynamicConfig::default()).unwrap();
    assert_eq!(q.graph.nodes, m.graph.nodes, "Conv is off by default");
    let x = rand_tensor(&[1, 3, 8, 8], 3);
    let want = &run(&m, &[("x", x.clone())])[0];
    for per_channel in [true, false] {
        let c = cfg(|c| {
            c.op_types = vec!["Conv".into()];
            c.per_channel = per_channel;
        });
        let (q, r) = quantize_dynamic(&m, &c).unwrap();
        assert!(ops(&q).contains(&"ConvInteger"), "{:?}", ops(&q));
        assert_eq!(r.quantized.len(), 1);
        let got = &run(&q, &[("x", x.clone())])[0];
        assert!(sqnr(want, got) > 30.0, "{}", sqnr(want, got));
    }
}
