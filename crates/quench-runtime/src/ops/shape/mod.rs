//! Shape and data-movement operators. They only move elements, so every
//! kernel is generic over [`common::Movable`] and works for every dtype with
//! a fixed element size (float16 and float8 included, as opaque bytes).

use crate::Registry;

pub(crate) mod common;
mod concat_split;
mod gather;
mod generate;
mod pad;
mod reshape;
mod slice;
mod tile;
mod transpose;

pub fn register(r: &mut Registry) {
    reshape::register(r);
    transpose::register(r);
    concat_split::register(r);
    slice::register(r);
    gather::register(r);
    generate::register(r);
    pad::register(r);
    tile::register(r);
}
