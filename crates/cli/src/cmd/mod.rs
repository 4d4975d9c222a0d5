//! One module per subcommand.

pub mod bench;
pub mod dataset;
pub mod debug;
pub mod demo;
pub mod doctor;
pub mod models;
pub mod sample;
pub mod train;
pub mod ui;
pub mod validate;
