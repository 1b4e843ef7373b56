//! The file connector: every request is appended to a JSON-lines file as
//! `{"connector", "node", "request"}` and answered `{"written": true}`. For tests, demos and
//! air-gapped runs; the node that wrote the request does not know it was not a broker.
//!
//! The file is opened on first use and appended to (a resumed run adds to what the interrupted
//! one wrote, as the output does); each line is flushed before the answer. A run that starts
//! fresh empties it first ([`Connector::start_afresh`]) unless the connector says `append`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::{Call, Connector, ConnectorError};

#[derive(Debug)]
pub struct FileConnector {
    name: String,
    path: PathBuf,
    out: Mutex<Option<std::fs::File>>,
    /// Never emptied by [`Connector::start_afresh`].
    append: bool,
}

impl FileConnector {
    pub fn new(name: &str, path: &Path) -> Self {
        FileConnector { name: name.into(), path: path.to_path_buf(), out: Mutex::new(None), append: false }
    }

    /// Keeps what earlier runs wrote (`"append": true`).
    pub fn appending(mut self, append: bool) -> Self {
        self.append = append;
        self
    }
}

impl Connector for FileConnector {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn start_afresh(&self) -> std::io::Result<()> {
        if self.append {
            return Ok(());
        }
        // Before any call: only a file already there needs emptying (none is created).
        match std::fs::OpenOptions::new().write(true).truncate(true).open(&self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), format!("cannot empty {}: {e}", self.path.display()))),
        }
    }

    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError> {
        let (node, request) = (call.node, call.request);
        let mut line = serde_json::to_vec(&json!({"connector": self.name, "node": node, "request": request}))
            .map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let file = match &mut *out {
            Some(file) => file,
            None => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
                out.insert(file)
            }
        };
        // One write per line: with O_APPEND, lines from several workers never interleave.
        file.write_all(&line).map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        Ok(json!({"written": true}))
    }
}
