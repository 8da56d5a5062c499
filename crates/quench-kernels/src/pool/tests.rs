use super::*;

fn geom2(input: [usize; 2], k: [usize; 2], s: [usize; 2], p: [usize; 2], out: [usize; 2]) -> Geom3 {
    Geom3::lift(&input, &k, &out, &s, &[1, 1], &p).unwrap()
}

#[test]
fn max_pool_with_padding_and_indices() {
    // 3×3 input, 2×2 window, stride 2, pad 1 before: windows see 1, 2, 2, 4 taps.
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let g = geom2([3, 3], [2, 2], [2, 2], [1, 1], [2, 2]);
    let mut y = vec![0.0; 4];
    let mut idx = vec![0i64; 4];
    max_pool(&g, 1, &x, &mut y, Some(&mut idx), false, f32::MIN, 1);
    assert_eq!(y, [1.0, 3.0, 7.0, 9.0]);
    assert_eq!(idx, [0, 2, 6, 8]);
    max_pool(&g, 1, &x, &mut y, Some(&mut idx), true, f32::MIN, 1);
    assert_eq!(idx, [0, 6, 2, 8]);
}

#[test]
fn max_pool_parallel_planes_offset_indices() {
    let x: Vec<u8> = vec![1, 5, 3, 2, 9, 4, 0, 7];
    let g = Geom3::lift(&[4], &[2], &[2], &[2], &[1], &[0]).unwrap();
    let mut y = vec![0u8; 4];
    let mut idx = vec![0i64; 4];
    max_pool(&g, 2, &x, &mut y, Some(&mut idx), false, 0, 2);
    assert_eq!(y, [5, 3, 9, 7]);
    assert_eq!(idx, [1, 2, 4, 7]);
}

#[test]
fn avg_pool_counts_padding_only_when_asked() {
    let x = vec![1.0f32, 2.0, 3.0, 4.0];
    let g = geom2([2, 2], [2, 2], [1, 1], [1, 1], [3, 3]);
    let pg = PoolGeom {
        g,
        pads_end: [0, 1, 1],
    };
    let mut y = vec![0.0; 9];
    avg_pool(&pg, 1, &x, &mut y, false, 1);
    assert_eq!(y[0], 1.0);
    assert_eq!(y[4], 2.5);
    avg_pool(&pg, 1, &x, &mut y, true, 1);
    assert_eq!(y[0], 0.25);
    assert_eq!(y[4], 2.5);
}

#[test]
fn avg_pool_ceil_mode_room_is_not_counted() {
    // 1-D, len 3, k 2, s 2, no pads, ceil mode gives 2 outputs; the last
    // window only has one real tap and no declared padding.
    let pg = PoolGeom {
        g: Geom3::lift(&[3], &[2], &[2], &[2], &[1], &[0]).unwrap(),
        pads_end: [0; 3],
    };
    let mut y = vec![0.0f64; 2];
    avg_pool(&pg, 1, &[1.0f64, 3.0, 5.0], &mut y, true, 1);
    assert_eq!(y, [2.0, 5.0]);
}

#[test]
fn global_pools() {
    let x: Vec<f32> = (0..20).map(|v| v as f32).collect();
    let mut y = vec![0.0; 2];
    global_pool_f32(2, 10, &x, &mut y, false);
    assert_eq!(y, [4.5, 14.5]);
    global_pool_f32(2, 10, &x, &mut y, true);
    assert_eq!(y, [9.0, 19.0]);
}

#[test]
fn row_max_pool_matches_window_max_pool() {
    let x: Vec<f32> = (0..2 * 11 * 9)
        .map(|i| ((i * 37) % 23) as f32 - 11.0)
        .collect();
    for (k, s, d, p) in [(3, 2, 1, 1), (2, 1, 1, 0), (3, 3, 2, 2), (1, 2, 1, 0)] {
        let out = |n: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
        let g = Geom3::lift(
            &[11, 9],
            &[k, k],
            &[out(11), out(9)],
            &[s, s],
            &[d, d],
            &[p, p],
        )
        .unwrap();
        let n = 2 * g.out_size();
        let (mut fast, mut slow, mut idx) = (vec![0.0; n], vec![0.0; n], vec![0i64; n]);
        max_pool(&g, 2, &x, &mut fast, None, false, f32::MIN, 1);
        max_pool(&g, 2, &x, &mut slow, Some(&mut idx), false, f32::MIN, 1);
        assert_eq!(fast, slow, "{g:?}");
    }
}

#[test]
fn max_pool_row_path_matches_general_path() {
    // Without indices 2-D pooling takes the row path; with them, the general one.
    for (k, s, d, p) in [(3, 2, 1, 1), (2, 1, 1, 0), (3, 3, 2, 2), (5, 2, 1, 2)] {
        let (ih, iw) = (9, 11);
        let out = |n: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
        let (oh, ow) = (out(ih), out(iw));
        let g = Geom3::lift(&[ih, iw], &[k, k], &[oh, ow], &[s, s], &[d, d], &[p, p]).unwrap();
        let x: Vec<f32> = (0..2 * ih * iw)
            .map(|i| ((i * 37) % 23) as f32 - 11.0)
            .collect();
        let mut fast = vec![0.0; 2 * oh * ow];
        let mut slow = vec![0.0; 2 * oh * ow];
        let mut idx = vec![0i64; 2 * oh * ow];
        max_pool(&g, 2, &x, &mut fast, None, false, f32::MIN, 1);
        max_pool(&g, 2, &x, &mut slow, Some(&mut idx), false, f32::MIN, 1);
        assert_eq!(fast, slow, "k{k} s{s} d{d} p{p}");
    }
}
