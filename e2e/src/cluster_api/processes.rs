//! Finding processes through `/proc`, to tell which local clusters still run.

use std::path::Path;

/// A live process (zombies count as gone).
#[derive(Debug, Clone)]
pub(super) struct ProcessInfo {
    pub pid: u32,
    pub parent: u32,
    /// The command name (`comm`), at most 15 bytes.
    pub name: String,
    /// The arguments, joined with spaces.
    pub command_line: String,
}

/// Every live process this user can see.
pub(super) fn live_processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_process(&Path::new("/proc").join(pid.to_string()), pid))
        .collect()
}

fn read_process(dir: &Path, pid: u32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // `<pid> (<comm>) <state> <ppid> ...`; comm may itself contain spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let parent = rest.next()?.parse().ok()?;
    let command_line = std::fs::read(dir.join("cmdline")).ok()?;
    Some(ProcessInfo {
        pid,
        parent,
        name: stat.get(open + 1..close)?.to_owned(),
        command_line: String::from_utf8_lossy(&command_line).replace('\0', " "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process() {
        let me = std::process::id();
        let processes = live_processes();
        let this = processes.iter().find(|p| p.pid == me);
        assert!(this.is_some_and(|p| p.parent == std::os::unix::process::parent_id()));
    }
}
