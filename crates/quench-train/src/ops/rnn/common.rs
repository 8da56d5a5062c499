//! Attributes LSTM and GRU share, and the subset training supports.

use crate::{Result, invalid, unsupported};
use quench_ir::Node;

/// The attributes of a recurrent node that its backward rule needs.
// Read by the LSTM and GRU rules once they exist.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct RnnAttrs {
    /// One entry per direction: does it run backwards in time?
    pub reverse: Vec<bool>,
    /// `layout = 1`: batch is the first axis of X, Y, Y_h (and Y_c).
    pub batch_first: bool,
    pub hidden_size: Option<usize>,
}

impl RnnAttrs {
    /// Parses the shared attributes; the default activations are the only
    /// ones training supports (what PyTorch's nn.LSTM / nn.GRU export).
    pub fn parse(node: &Node, default_acts: &[&str]) -> Result<RnnAttrs> {
        let reverse = match node.attr_string_or("direction", "forward")?.as_str() {
            "forward" => vec![false],
            "reverse" => vec![true],
            "bidirectional" => vec![false, true],
            d => {
                invalid!("attribute direction is '{d}', expected forward, reverse or bidirectional")
            }
        };
        if let Some(acts) = node.attr_strings("activations")? {
            let want: Vec<String> = (0..reverse.len())
                .flat_map(|_| default_acts.iter().map(|a| a.to_string()))
                .collect();
            if !acts
                .iter()
                .zip(&want)
                .all(|(a, w)| a.eq_ignore_ascii_case(w))
                || acts.len() != want.len()
            {
                unsupported!(
                    "{} activations {acts:?}: training supports only the defaults {default_acts:?}",
                    node.op_type
                );
            }
        }
        if node.attr_float("clip")?.is_some() {
            unsupported!(
                "{} attribute clip: training does not support cell clipping",
                node.op_type
            );
        }
        let batch_first = match node.attr_int_or("layout", 0)? {
            0 => false,
            1 => true,
            l => invalid!("attribute layout is {l}, expected 0 or 1"),
        };
        let hidden_size = match node.attr_int("hidden_size")? {
            Some(h) if h <= 0 => invalid!("attribute hidden_size is {h}, expected > 0"),
            h => h.map(|h| h as usize),
        };
        Ok(RnnAttrs {
            reverse,
            batch_first,
            hidden_size,
        })
    }
}
