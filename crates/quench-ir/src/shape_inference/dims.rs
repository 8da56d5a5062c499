//! Dimension arithmetic shared by the op rules: broadcasting, unification,
//! axis normalisation and the formatting used in error messages.

use crate::Dim;

/// Renders a shape as `[batch, 3, ?]` for messages.
pub fn fmt_shape(s: &[Dim]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Renders an optional shape; `None` (unknown rank) is `[..]`.
pub fn fmt_opt(s: Option<&[Dim]>) -> String {
    s.map(fmt_shape).unwrap_or_else(|| "[..]".into())
}

pub fn fixed(d: &Dim) -> Option<u64> {
    match d {
        Dim::Fixed(v) => Some(*v),
        _ => None,
    }
}

/// All dims as numbers, when every one is fixed.
pub fn all_fixed(s: &[Dim]) -> Option<Vec<u64>> {
    s.iter().map(fixed).collect()
}

/// A non-negative i64 as a fixed dim; anything else is unknown.
pub fn dim_from_i64(v: i64) -> Dim {
    if v >= 0 {
        Dim::Fixed(v as u64)
    } else {
        Dim::Unknown
    }
}

/// The product of dims: fixed when all are fixed, the symbol when it is the
/// only non-unit factor, unknown otherwise.
pub fn product(dims: &[Dim]) -> Dim {
    let mut p: u64 = 1;
    let mut sym: Option<&Dim> = None;
    for d in dims {
        match d {
            Dim::Fixed(v) => p = p.saturating_mul(*v),
            Dim::Symbol(_) if sym.is_none() => sym = Some(d),
            _ => return Dim::Unknown,
        }
    }
    match sym {
        None => Dim::Fixed(p),
        Some(_) if p == 0 => Dim::Fixed(0),
        Some(s) if p == 1 => s.clone(),
        Some(_) => Dim::Unknown,
    }
}

/// Sum of two dims (Concat, Pad): fixed only when both are.
pub fn add(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => Dim::Fixed(x.saturating_add(*y)),
        (d, Dim::Fixed(0)) | (Dim::Fixed(0), d) => d.clone(),
        _ => Dim::Unknown,
    }
}

/// Unifies two dims that must be equal (Concat's other axes, MatMul's inner
/// dims, If branches with `strict`): the most specific one wins.
pub fn unify(a: &Dim, b: &Dim) -> Result<Dim, ()> {
    Ok(match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) if x != y => return Err(()),
        (Dim::Fixed(_), _) => a.clone(),
        (_, Dim::Fixed(_)) => b.clone(),
        (Dim::Symbol(x), Dim::Symbol(y)) if x != y => Dim::Unknown,
        (Dim::Symbol(_), _) => a.clone(),
        (_, Dim::Symbol(_)) => b.clone(),
        _ => Dim::Unknown,
    })
}

/// The dim that both of two possible values fit (If branches that differ).
pub fn join(a: &Dim, b: &Dim) -> Dim {
    if a == b { a.clone() } else { Dim::Unknown }
}

/// Multidirectional (numpy) broadcasting, as ONNX infers it: a fixed dim other
/// than 1 wins, equal symbols survive, anything else is unknown.
pub fn broadcast(shapes: &[&[Dim]]) -> Result<Vec<Dim>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut value: Option<u64> = None;
        let mut symbolic: Vec<&Dim> = Vec::new();
        for s in shapes {
            let Some(d) = (i + s.len()).checked_sub(rank).and_then(|j| s.get(j)) else {
                continue;
            };
            match d {
                Dim::Fixed(1) => {}
                Dim::Fixed(v) => match value {
                    Some(w) if w != *v => {
                        let all: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                        return Err(format!(
                            "shapes {} cannot be broadcast together (dim {v} vs {w})",
                            all.join(" and ")
                        ));
                    }
                    _ => value = Some(*v),
                },
                _ => symbolic.push(d),
            }
        }
        out.push(match (value, symbolic.first()) {
            (Some(v), _) => Dim::Fixed(v),
            (None, None) => Dim::Fixed(1),
            (None, Some(first)) => {
                if symbolic.iter().all(|d| d == first) && matches!(first, Dim::Symbol(_)) {
                    (*first).clone()
                } else {
                    Dim::Unknown
                }
            }
        });
    }
    Ok(out)
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// Normalises a list of axes, refusing duplicates.
pub fn axes(list: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let n = axis(a, rank)?;
        if out.contains(&n) {
            return Err(format!("axis {a} is repeated in {list:?}"));
        }
        out.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Dim {
        Dim::Symbol(n.into())
    }

    #[test]
    fn broadcast_keeps_symbols_and_rejects_mismatches() {
        let a = [s("b"), Dim::Fixed(1), Dim::Fixed(3)];
        let b = [Dim::Fixed(4), Dim::Fixed(1)];
        assert_eq!(
            broadcast(&[&a, &b]).unwrap(),
            vec![s("b"), Dim::Fixed(4), Dim::Fixed(3)]
        );
        assert_eq!(
            broadcast(&[&[s("x")], &[s("y")]]).unwrap(),
            vec![Dim::Unknown]
        );
        assert_eq!(
            broadcast(&[&[s("x")], &[Dim::Fixed(5)]]).unwrap(),
            vec![Dim::Fixed(5)]
        );
        let err = broadcast(&[&[Dim::Fixed(2), Dim::Fixed(3)], &[Dim::Fixed(4)]]).unwrap_err();
        assert!(err.contains("[2, 3] and [4]"), "{err}");
    }

    #[test]
    fn product_and_unify() {
        assert_eq!(product(&[Dim::Fixed(2), Dim::Fixed(3)]), Dim::Fixed(6));
        assert_eq!(product(&[Dim::Fixed(1), s("b")]), s("b"));
        assert_eq!(product(&[Dim::Fixed(2), s("b")]), Dim::Unknown);
        assert_eq!(unify(&s("b"), &Dim::Fixed(3)), Ok(Dim::Fixed(3)));
        assert!(unify(&Dim::Fixed(2), &Dim::Fixed(3)).is_err());
        assert_eq!(axis(-1, 3), Ok(2));
        assert!(axis(3, 3).is_err());
    }
}
