//! Reading what `lxc-ls -f -F …` and `lxc-info -s -p -H` print, and LXC's
//! state names.

use homeserver_domain::ContainerState;

use crate::error::LxcError;

/// One row of `lxc-ls -f -F NAME,STATE,PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LsEntry {
    /// Container name.
    pub(crate) name: String,
    /// LXC state name as printed (`RUNNING`).
    pub(crate) state: String,
    /// Init PID (in the host's PID namespace) when running.
    pub(crate) pid: Option<u32>,
}

/// Parses the fancy (column) output of `lxc-ls -f -F NAME,STATE,PID`.
///
/// The first non-empty line is the header and names the columns, so their
/// order does not matter; columns are separated by any run of spaces, and
/// an empty cell is printed as `-`. No containers means no output at all.
pub(crate) fn parse_ls_fancy(out: &str) -> Result<Vec<LsEntry>, LxcError> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = header.split_whitespace().map(str::to_ascii_uppercase).collect();
    let index = |name: &str| columns.iter().position(|c| c == name);
    let (Some(name_at), Some(state_at)) = (index("NAME"), index("STATE")) else {
        return Err(LxcError::Unexpected(format!("lxc-ls printed no NAME/STATE header: {header:?}")));
    };
    let pid_at = index("PID");
    let mut entries = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        // Extra cells can only belong to a first NAME column (LXC allows
        // spaces in names); anything else is not a row we understand.
        if cells.len() < columns.len() || (cells.len() > columns.len() && name_at != 0) {
            return Err(LxcError::Unexpected(format!("lxc-ls row {line:?} does not match its header {header:?}")));
        }
        let extra = cells.len() - columns.len();
        let name = if name_at == 0 { cells[..=extra].join(" ") } else { cells[name_at].to_owned() };
        let cell = |at: usize| if at == name_at { name.as_str() } else { cells[at + extra] };
        let pid = pid_at.and_then(|at| cell(at).parse::<u32>().ok()).filter(|p| *p > 0);
        entries.push(LsEntry { name: name.clone(), state: cell(state_at).to_owned(), pid });
    }
    Ok(entries)
}

/// What `lxc-info -s -p -H` says about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    /// LXC state name (`RUNNING`).
    pub(crate) state: String,
    /// Init PID when running.
    pub(crate) pid: Option<u32>,
}

/// Parses `State:  RUNNING` / `PID:  1234` lines; other keys are ignored.
pub(crate) fn parse_info(out: &str) -> Result<Info, LxcError> {
    let mut state = None;
    let mut pid = None;
    for line in out.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "state" => state = Some(value.to_owned()),
            "pid" => pid = value.parse::<u32>().ok().filter(|p| *p > 0),
            _ => {}
        }
    }
    match state {
        Some(state) => Ok(Info { state, pid }),
        None => Err(LxcError::Unexpected(format!("lxc-info printed no state: {out:?}"))),
    }
}

/// Maps an LXC state name to the domain's state.
///
/// `FREEZING` is on its way to `FROZEN`, so it counts as paused (unpause
/// is what undoes it); `THAWED` is what a container is right after
/// `lxc-unfreeze`, i.e. running. `ABORTING` is a failed start.
pub(crate) fn map_state(lxc: &str) -> ContainerState {
    match lxc.trim().to_ascii_uppercase().as_str() {
        "STOPPED" => ContainerState::Stopped,
        "STARTING" => ContainerState::Starting,
        "RUNNING" | "THAWED" => ContainerState::Running,
        "STOPPING" => ContainerState::Stopping,
        "ABORTING" => ContainerState::Error,
        "FREEZING" | "FROZEN" => ContainerState::Paused,
        _ => ContainerState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from lxc 5.0.2 (`lxc-ls -f -F NAME,STATE,PID`), trailing spaces included.
    const LS: &str = "NAME            STATE   PID  \nhs-a            RUNNING 3747 \nhs-b            STOPPED -    \nweb.prod        FROZEN  5175 \n";

    #[test]
    fn ls_fancy_rows_follow_the_header() {
        let rows = parse_ls_fancy(LS).unwrap();
        assert_eq!(
            rows,
            [
                LsEntry { name: "hs-a".into(), state: "RUNNING".into(), pid: Some(3747) },
                LsEntry { name: "hs-b".into(), state: "STOPPED".into(), pid: None },
                LsEntry { name: "web.prod".into(), state: "FROZEN".into(), pid: Some(5175) },
            ]
        );
    }

    #[test]
    fn ls_fancy_handles_reordered_columns_no_output_and_garbage() {
        assert!(parse_ls_fancy("").unwrap().is_empty());
        assert!(parse_ls_fancy("\n  \n").unwrap().is_empty());
        let rows = parse_ls_fancy("STATE PID NAME\nRUNNING 12 a\n").unwrap();
        assert_eq!(rows, [LsEntry { name: "a".into(), state: "RUNNING".into(), pid: Some(12) }]);
        // A name with a space (LXC allows it) when NAME is the first column.
        let rows = parse_ls_fancy("NAME STATE PID\nmy box STOPPED -\n").unwrap();
        assert_eq!(rows[0].name, "my box");
        assert!(parse_ls_fancy("hello world\n").is_err());
        assert!(parse_ls_fancy("NAME STATE PID\nonly-two STOPPED\n").is_err());
    }

    #[test]
    fn info_reads_state_and_pid() {
        let info = parse_info("State:          RUNNING\nPID:            3747\n").unwrap();
        assert_eq!(info, Info { state: "RUNNING".into(), pid: Some(3747) });
        let info = parse_info("State:          STOPPED\n").unwrap();
        assert_eq!(info, Info { state: "STOPPED".into(), pid: None });
        // -i/-S lines are ignored, IPv6 colons included.
        let info = parse_info("State: RUNNING\nPID: 9\nIP: fe80::1\nMemory use: 1234\n").unwrap();
        assert_eq!(info.pid, Some(9));
        assert!(parse_info("nope doesn't exist\n").is_err());
    }

    #[test]
    fn lxc_states_map_to_domain_states() {
        use ContainerState::*;
        for (lxc, state) in [
            ("STOPPED", Stopped),
            ("STARTING", Starting),
            ("RUNNING", Running),
            ("STOPPING", Stopping),
            ("ABORTING", Error),
            ("FREEZING", Paused),
            ("FROZEN", Paused),
            ("THAWED", Running),
            ("running", Running),
            ("WEIRD", Unknown),
        ] {
            assert_eq!(map_state(lxc), state, "{lxc}");
        }
    }
}
