//! `tortie-node install-cni`: what the manifest's init container runs. Copies the plugins
//! into the runtime's CNI binary directory and writes `10-tortie.conflist` (tortie, then the
//! reference `portmap`), both atomically (a temporary file in the same directory, then a
//! rename), so a runtime never runs half a binary nor reads half a configuration. A file
//! already as wanted is left untouched, so running it again changes nothing.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The plugins installed, from the directory `tortie-node` runs from.
pub const PLUGINS: &[&str] = &["tortie", "tortie-ipam"];
/// The configuration's file name: `10-` so it sorts before most others.
pub const CONFLIST: &str = "10-tortie.conflist";
/// The network's name (Calico's), and so the first part of every pod's handle.
pub const NETWORK_NAME: &str = "k8s-pod-network";

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where the plugin binaries are now.
    pub source_dir: PathBuf,
    /// The runtime's CNI binary directory (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The runtime's CNI configuration directory (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The pods' MTU; 0 leaves it to the plugin's default.
    pub mtu: u32,
    pub node_name: String,
    pub agent_socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Written(PathBuf),
    Unchanged(PathBuf),
}

/// The conflist for these options.
pub fn conflist(options: &InstallOptions) -> serde_json::Value {
    serde_json::json!({
        "name": NETWORK_NAME,
        // The reference plugins of Debian's containernetworking-plugins speak up to 1.0.0.
        "cniVersion": "1.0.0",
        "plugins": [
            {
                "type": "tortie",
                "mtu": options.mtu,
                "nodename": options.node_name,
                "agent_socket": options.agent_socket,
            },
            {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
        ],
    })
}

/// Copies the plugins and writes the conflist.
pub fn install(options: &InstallOptions) -> Result<Vec<Outcome>, InstallError> {
    let mut outcomes = Vec::new();
    for plugin in PLUGINS {
        let source = options.source_dir.join(plugin);
        let bytes = fs::read(&source).map_err(|source_error| InstallError::Io {
            action: "reading the plugin",
            path: source.clone(),
            source: source_error,
        })?;
        outcomes.push(write_atomically(
            &options.bin_dir.join(plugin),
            &bytes,
            0o755,
        )?);
    }
    let mut text = serde_json::to_string_pretty(&conflist(options)).unwrap_or_default();
    text.push('\n');
    outcomes.push(write_atomically(
        &options.conf_dir.join(CONFLIST),
        text.as_bytes(),
        0o644,
    )?);
    Ok(outcomes)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<Outcome, InstallError> {
    if let Ok(existing) = fs::read(path) {
        let same_mode = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode);
        if existing == bytes && same_mode {
            return Ok(Outcome::Unchanged(path.to_path_buf()));
        }
    }
    let directory = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(directory).map_err(io_error("creating", directory))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{name}.tortie-{}", std::process::id()));
    let written = fs::write(&temporary, bytes)
        .and_then(|()| fs::set_permissions(&temporary, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(io_error("writing", path)(error));
    }
    Ok(Outcome::Written(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_then_changes_nothing() {
        let root = std::env::temp_dir().join(format!("tortie-install-{}", std::process::id()));
        let source_dir = root.join("source");
        fs::create_dir_all(&source_dir).unwrap();
        for plugin in PLUGINS {
            fs::write(source_dir.join(plugin), format!("binary {plugin}")).unwrap();
        }
        let options = InstallOptions {
            source_dir,
            bin_dir: root.join("bin"),
            conf_dir: root.join("net.d"),
            mtu: 1400,
            node_name: "node-1".into(),
            agent_socket: "/var/run/tortie/agent.sock".into(),
        };
        let first = install(&options).unwrap();
        assert!(
            first.iter().all(|o| matches!(o, Outcome::Written(_))),
            "{first:?}"
        );
        let second = install(&options).unwrap();
        assert!(
            second.iter().all(|o| matches!(o, Outcome::Unchanged(_))),
            "{second:?}"
        );
        let mode = fs::metadata(root.join("bin/tortie"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("net.d").join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(written["plugins"][0]["mtu"], 1400);
        assert_eq!(written["plugins"][0]["nodename"], "node-1");
        assert_eq!(written["plugins"][1]["type"], "portmap");
        let missing = InstallOptions {
            source_dir: root.join("nowhere"),
            ..options
        };
        let error = install(&missing).unwrap_err().to_string();
        assert!(error.contains("nowhere/tortie"), "{error}");
        fs::remove_dir_all(&root).unwrap();
    }
}
