//! What the machine must allow for the test environment, checked before anything starts.

use crate::error::Error;

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";
/// The trials run up to about 30 local clusters at once, and their API servers, controller
/// managers and Cluster API managers each watch certificate files with inotify.
const INOTIFY_INSTANCES_NEEDED: u64 = 512;

/// Fails, saying how to fix it, when the machine allows too few inotify instances (the
/// programs would then fail at random with "too many open files").
pub fn check_limits() -> Result<(), Error> {
    let Ok(text) = std::fs::read_to_string(INOTIFY_INSTANCES) else {
        return Ok(());
    };
    match text.trim().parse::<u64>() {
        Ok(instances) if instances < INOTIFY_INSTANCES_NEEDED => Err(Error::Setup(format!(
            "fs.inotify.max_user_instances is {instances}; the test environment needs at least \
             {INOTIFY_INSTANCES_NEEDED}: run `make deps` (it raises it to 1024) or \
             `sudo sysctl -w fs.inotify.max_user_instances=1024`"
        ))),
        _ => Ok(()),
    }
}
