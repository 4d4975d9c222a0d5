//! One module per subcommand.

pub mod bench;
pub mod debug;
pub mod doctor;
pub mod validate;
