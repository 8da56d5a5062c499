//! (control operators: not yet implemented)

use crate::Registry;

pub fn register(_r: &mut Registry) {}
