//! Dropout: in training mode each element is kept with probability 1 - ratio
//! and scaled by 1 / (1 - ratio); the mask comes from the step's seed, so a
//! resumed run draws the same masks.

use crate::op::{Ctx, Fwd, Grad, Op, Saved, check_len, f32_in, f32_tensor, opt_in, req, saved};
use crate::rng::Rng;
use crate::{Result, invalid};
use quench_ir::{Node, Tensor};
use std::sync::Arc;

pub struct Dropout {
    ratio_attr: f32,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(Dropout {
        ratio_attr: node.attr_float_or("ratio", 0.5)?,
    }))
}

struct SavedMask(Option<Vec<f32>>);

impl Op for Dropout {
    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let t = req(x, 0)?;
        let xs = f32_in(x, 0)?;
        let ratio = match opt_in(x, 1) {
            Some(r) => match r.to_f32_vec()?.as_slice() {
                [v] => *v,
                _ => invalid!("ratio must be a scalar"),
            },
            None => self.ratio_attr,
        };
        if !(0.0..1.0).contains(&ratio) {
            invalid!("ratio {ratio} must be in [0, 1)");
        }
        let shape = t.shape().to_vec();
        let (y, mask) = if cx.train && ratio > 0.0 {
            let mut rng = Rng::new(cx.seed);
            let k = 1.0 / (1.0 - ratio);
            let mask: Vec<f32> = (0..xs.len())
                .map(|_| if rng.uniform() < ratio { 0.0 } else { k })
                .collect();
            (
                xs.iter().zip(&mask).map(|(a, m)| a * m).collect(),
                Some(mask),
            )
        } else {
            (xs.to_vec(), None)
        };
        let bits: Vec<bool> = match &mask {
            Some(m) => m.iter().map(|&v| v != 0.0).collect(),
            None => vec![true; xs.len()],
        };
        let sv = (need.first() == Some(&true)).then(|| Box::new(SavedMask(mask)) as Saved);
        Ok(Fwd::new(
            vec![
                f32_tensor(shape.clone(), y)?,
                Tensor::from_vec(shape, bits)?,
            ],
            sv,
        ))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let SavedMask(mask) = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(match mask {
            Some(m) => {
                check_len(g, m.len())?;
                g.iter().zip(m).map(|(a, b)| a * b).collect()
            }
            None => g.clone(),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Node, Tensor};

    #[test]
    fn dropout_matches_finite_differences_and_drops_about_ratio() {
        let n = Node::new("Dropout", "d", &["x", "r"], &["y"]);
        let r = Tensor::scalar(0.3f32);
        check_node(
            &n,
            &[("x", rand_input(&[4, 5], 1))],
            &[("r", r.clone())],
            17,
        );
        let y = run_node(
            &n,
            &[(
                "x",
                Tensor::from_vec(vec![10000], vec![1f32; 10000]).unwrap(),
            )],
            &[("r", r)],
        )
        .unwrap();
        let zeros = y
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .filter(|&&v| v == 0.0)
            .count();
        assert!((2700..3300).contains(&zeros), "{zeros}");
    }

    #[test]
    fn ratio_of_one_is_an_error() {
        let n = Node::new("Dropout", "d", &["x", "r"], &["y"]);
        let r = run_node(
            &n,
            &[("x", rand_input(&[2], 1))],
            &[("r", Tensor::scalar(1f32))],
        );
        assert!(r.unwrap_err().to_string().contains("ratio"));
    }
}
