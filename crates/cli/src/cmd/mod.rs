//! One module per subcommand.

pub mod bench;
pub mod dataset;
pub mod debug;
pub mod doctor;
pub mod ui;
pub mod validate;
