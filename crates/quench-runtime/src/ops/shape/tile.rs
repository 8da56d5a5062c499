//! Tile (a per-axis gather with wrap-around) and Trilu.

use super::common::{Movable, elems, gather_axes, with_movable, wrap};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "Tile", build_tile);
    r.register("", "Trilu", build_trilu);
}

#[derive(Debug)]
struct Tile;

fn build_tile(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    if ctx.opset < 6 {
        bail_unsupported!("Tile before opset 6 (tiles/axis inputs)");
    }
    Ok(Box::new(Tile))
}

impl Op for Tile {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let reps = required(inputs, 1)?.to_i64_vec()?;
        if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
            bail_invalid!(
                "input 1 (repeats) {reps:?} must hold {} non-negative values",
                x.rank()
            );
        }
        let shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d.saturating_mul(usize::try_from(r).unwrap_or(usize::MAX)))
            .collect();
        quench_ir::tensor::checked_numel(&shape)?;
        let maps: Vec<Vec<usize>> = shape
            .iter()
            .zip(x.shape())
            .map(|(&n, &d)| (0..n).map(|o| o % d).collect())
            .collect();
        let y = with_movable!(x.dtype(), T => {
            let v = gather_axes(elems::<T>(x, "input 0")?, x.shape(), &maps, &T::default());
            wrap(shape, v, x.dtype())
        })?;
        Ok(vec![y])
    }
}

#[derive(Debug)]
struct Trilu {
    upper: bool,
}

fn build_trilu(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Trilu {
        upper: ctx.node.attr_int_or("upper", 1)? != 0,
    }))
}

fn trilu<T: Movable>(src: &[T], rows: usize, cols: usize, k: i64, upper: bool) -> Vec<T> {
    let mut out = src.to_vec();
    if rows * cols == 0 {
        return out;
    }
    for m in out.chunks_exact_mut(rows * cols) {
        for i in 0..rows {
            for j in 0..cols {
                let d = j as i64 - i as i64;
                let keep = if upper { d >= k } else { d <= k };
                if !keep {
                    m[i * cols + j] = T::default();
                }
            }
        }
    }
    out
}

impl Op for Trilu {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let r = x.rank();
        if r < 2 {
            bail_invalid!("input 0 has shape {:?}, expected rank >= 2", x.shape());
        }
        let k = match optional(inputs, 1) {
            Some(t) => match t.to_i64_vec()?.as_slice() {
                [k] => *k,
                _ => bail_invalid!("input 1 (k) must be a scalar"),
            },
            None => 0,
        };
        let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
        let y = with_movable!(x.dtype(), T => {
            let v = trilu(elems::<T>(x, "input 0")?, rows, cols, k, self.upper);
            wrap(x.shape().to_vec(), v, x.dtype())
        })?;
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_repeats() {
        let x = Tensor::from_vec(vec![2], vec![1u8, 2]).unwrap();
        let r = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        let y = Tile
            .run(&RunCtx { threads: 1 }, &[Some(&x), Some(&r)])
            .unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[1, 2, 1, 2, 1, 2]);
        let bad = Tensor::from_vec(vec![2], vec![1i64, 1]).unwrap();
        assert!(
            Tile.run(&RunCtx { threads: 1 }, &[Some(&x), Some(&bad)])
                .is_err()
        );
    }

    #[test]
    fn trilu_keeps_triangles() {
        let v: Vec<i32> = (1..=6).collect(); // [[1,2,3],[4,5,6]]
        assert_eq!(trilu(&v, 2, 3, 0, true), vec![1, 2, 3, 0, 5, 6]);
        assert_eq!(trilu(&v, 2, 3, -1, false), vec![0, 0, 0, 4, 0, 0]);
        assert_eq!(trilu(&v, 2, 3, 1, true), vec![0, 2, 3, 0, 0, 6]);
    }
}
