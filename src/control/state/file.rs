//! The state file and the audit log on disk: read back at start, written
//! atomically (temp file, fsync, rename, fsync the directory), appended to.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{State, StateFileError};

pub(super) fn read_state(path: &Path) -> Result<Option<State>, StateFileError> {
    let err = |message: String| StateFileError { path: path.display().to_string(), message };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let state: State = serde_json::from_str(&text).map_err(|e| err(format!("corrupt: {e}")))?;
    if state.desired_percent > 100 || state.config_percent > 100 {
        return Err(err("corrupt: percent above 100".into()));
    }
    Ok(Some(state))
}

/// Temp file, fsync, rename, fsync the directory: after a crash the file
/// is either the old state or the new one, never half of each.
pub(super) fn write_state(path: &Path, state: &State) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(serde_json::to_string_pretty(state).expect("state serializes").as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}

pub(crate) fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(format!("{line}\n").as_bytes())
}

/// The last `limit` audit entries, oldest first.
pub fn read_audit(path: &Path, limit: usize) -> std::io::Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(limit);
    Ok(lines[start..].iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
