//! The HTTP routes.

pub mod images;
pub mod resources;
pub mod system;
pub mod watch;
