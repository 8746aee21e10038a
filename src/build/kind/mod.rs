//! (being written)
pub mod gem;
pub mod pip;
