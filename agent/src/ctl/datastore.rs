//! Which datastore `tortiectl` talks to: `--datastore sqlite:<path>`, or `TORTIE_DATASTORE`,
//! or the node agent's default file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tortie_ipam::{Ipam, SqliteStore};

/// Where the node agent keeps its SQLite datastore unless told otherwise.
pub const DEFAULT_DATASTORE: &str = "sqlite:/var/lib/tortie/tortie.db";

/// A parsed `--datastore` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    Sqlite(PathBuf),
}

impl Datastore {
    pub fn parse(text: &str) -> Result<Datastore> {
        match text.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => {
                Ok(Datastore::Sqlite(PathBuf::from(path)))
            }
            Some(("sqlite", _)) => bail!(
                "--datastore {text:?}: sqlite: needs a path, e.g. sqlite:/var/lib/tortie/tortie.db"
            ),
            Some((scheme @ ("etcd" | "etcdv3" | "kubernetes"), _)) => {
                bail!(
                    "--datastore {text:?}: the {scheme} datastore is not supported yet; use sqlite:<path>"
                )
            }
            _ => bail!(
                "--datastore {text:?}: expected sqlite:<path> (e.g. sqlite:/var/lib/tortie/tortie.db)"
            ),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Datastore::Sqlite(path) => path,
        }
    }

    /// Opens the datastore for reading: it must exist already (a read never creates one).
    pub fn open_existing(&self) -> Result<Ipam<SqliteStore>> {
        let path = self.path();
        if !path.exists() {
            bail!(
                "datastore {} does not exist (nothing has been stored yet; create a pool with `tortiectl pool create`)",
                path.display()
            );
        }
        self.open()
    }

    /// Opens the datastore for writing, creating the file and its directory if needed.
    pub fn open_or_create(&self) -> Result<Ipam<SqliteStore>> {
        let path = self.path();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("creating the datastore's directory {}", parent.display())
            })?;
        }
        self.open()
    }

    fn open(&self) -> Result<Ipam<SqliteStore>> {
        let store = SqliteStore::open(self.path())?;
        Ok(Ipam::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_and_refuses_the_rest() {
        assert_eq!(
            Datastore::parse("sqlite:/tmp/x.db").unwrap(),
            Datastore::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Datastore::parse(DEFAULT_DATASTORE).unwrap(),
            Datastore::Sqlite("/var/lib/tortie/tortie.db".into())
        );
        assert!(
            Datastore::parse("sqlite:")
                .unwrap_err()
                .to_string()
                .contains("needs a path")
        );
        assert!(
            Datastore::parse("etcd:http://x")
                .unwrap_err()
                .to_string()
                .contains("not supported yet")
        );
        assert!(
            Datastore::parse("/tmp/x.db")
                .unwrap_err()
                .to_string()
                .contains("expected sqlite:<path>")
        );
    }
}
