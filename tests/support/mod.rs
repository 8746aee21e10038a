#![allow(dead_code)]

pub mod app;
pub mod client;
pub mod cmd;
pub mod fixtures;
pub mod origin;
pub mod raw;
pub mod site;
pub mod tls;
