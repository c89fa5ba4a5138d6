//! `<state-dir>/state.json`: what `demo up` made, so that `demo status` and `demo down`
//! work from a later tortiectl process. Written after every step of `up`, so that even a
//! half-built demo is recorded.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

const FILE: &str = "state.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// The encapsulation asked for and what it became (`auto` → `vxlan`).
    pub encap: String,
    /// The pool settings the agents were started with.
    pub pool_env: Vec<(String, String)>,
    pub switches: Vec<String>,
    pub router: Option<String>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub address: String,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The agent's process, once started.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub name: String,
    pub node: String,
    pub netns: String,
    /// Empty until the plugin wired it.
    pub address: String,
    pub link: String,
}

impl State {
    /// Every namespace recorded, in the order they go: pods, nodes, router, switches.
    pub fn namespaces_for_removal(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self.pods.iter().map(|p| p.netns.clone()).collect();
        namespaces.extend(self.nodes.iter().map(|n| n.netns.clone()));
        namespaces.extend(self.router.iter().cloned());
        namespaces.extend(self.switches.iter().cloned());
        namespaces
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The recorded state, or `None` when no demo is recorded there.
pub fn load(state_dir: &Path) -> Result<Option<State>> {
    let file = path(state_dir);
    match fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a demo state file", file.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn save(state_dir: &Path, state: &State) -> Result<()> {
    let file = path(state_dir);
    let temporary = write_temporary(state_dir, state)?;
    fs::rename(&temporary, &file).with_context(|| format!("cannot write {}", file.display()))
}

/// Records the first state of a new demo, unless a state file is there already: the file is
/// linked into place, which fails when it exists, so of two `up`s started together exactly
/// one gets the state dir. `Ok(false)`: another demo holds it.
pub fn claim(state_dir: &Path, state: &State) -> Result<bool> {
    let file = path(state_dir);
    let temporary = write_temporary(state_dir, state)?;
    let linked = fs::hard_link(&temporary, &file);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", file.display())),
    }
}

/// The state in a file of this writer's own beside the state file.
fn write_temporary(state_dir: &Path, state: &State) -> Result<PathBuf> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = state_dir.join(format!("{FILE}.{}-{write}.tmp", std::process::id()));
    fs::write(&temporary, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    Ok(temporary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_namespaces_pods_first() {
        let dir = std::env::temp_dir().join(format!("tortie-demo-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        let state = State {
            name: "d".into(),
            encap: "vxlan".into(),
            switches: vec!["d-sw".into()],
            router: Some("d-rtr".into()),
            nodes: vec![NodeState {
                name: "node-0".into(),
                netns: "d-node0".into(),
                address: "198.51.100.10/24".into(),
                socket: "/x/agent.sock".into(),
                log: "/x/node0.log".into(),
                pid: Some(42),
            }],
            pods: vec![PodState {
                name: "pod-0-0".into(),
                node: "node-0".into(),
                netns: "d-n0-p0".into(),
                address: "198.18.0.1".into(),
                link: "cali0".into(),
            }],
            ..State::default()
        };
        save(&dir, &state).unwrap();
        let loaded = load(&dir).unwrap().unwrap();
        assert_eq!(loaded, state);
        assert_eq!(
            loaded.namespaces_for_removal(),
            ["d-n0-p0", "d-node0", "d-rtr", "d-sw"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn of_many_claims_at_once_exactly_one_wins_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("tortie-demo-claim-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let start = std::sync::Barrier::new(8);
        let wins = std::thread::scope(|scope| {
            let claims: Vec<_> = (0..8)
                .map(|i| {
                    let (dir, start) = (&dir, &start);
                    scope.spawn(move || {
                        let state = State {
                            name: format!("d{i}"),
                            ..State::default()
                        };
                        start.wait();
                        claim(dir, &state).unwrap()
                    })
                })
                .collect();
            claims
                .into_iter()
                .map(|claim| claim.join().unwrap())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(wins, 1);
        assert!(load(&dir).unwrap().is_some());
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(FILE)], "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
