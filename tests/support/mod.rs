#![allow(dead_code)]

pub mod app;
pub mod client;
pub mod origin;
pub mod raw;
pub mod tls;
