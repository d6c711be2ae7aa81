//! The HTTP routes.

pub mod approve;
pub mod console;
pub mod identity;
pub mod images;
pub mod plan;
pub mod resources;
pub mod rollback;
pub mod system;
pub mod watch;
