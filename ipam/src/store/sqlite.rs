//! The SQLite store: tortie's embedded default, one file that many processes (the node
//! agent, `tortiectl`, CNI plugins, tests) open at once.
//!
//! - WAL journal: readers never block the writer and a killed process never corrupts the
//!   file; `synchronous=NORMAL`, which in WAL mode survives any process crash and can lose
//!   only the last commits on a power cut, never consistency.
//! - Every write is one `BEGIN IMMEDIATE` transaction (take the write lock first, so two
//!   writers never deadlock upgrading read locks), which bumps one global revision counter,
//!   as etcd does, so a deleted and recreated object never reuses a revision.
//! - A busy timeout makes writers queue for the lock instead of failing.
//! - The file is marked with an `application_id`; any other database (or any other file)
//!   is refused before anything is written to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{Decision, Read, ReadVisitor, Revision, Step, Store, StoreError, Versioned};
use crate::model::{Kind, Resource};

/// `application_id` of a tortie database: "trti".
const APPLICATION_ID: i32 = 0x7472_7469;
const SCHEMA_VERSION: i64 = 1;
/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    node     TEXT,
    revision INTEGER NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_node ON objects (kind, node, name);
";

/// See the module docs.
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if absent) the tortie database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let location = path.display().to_string();
        let backend = |what: &str, error: rusqlite::Error| StoreError::Backend {
            location: location.clone(),
            what: what.to_string(),
            source: Box::new(error),
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let connection = Connection::open_with_flags(&path, flags)
            .map_err(|e| backend("cannot open the database file", e))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| backend("setting the busy timeout", e))?;

        // Refuse a foreign file before changing anything in it (even the journal mode).
        Self::refuse_foreign(&connection, &path)?;

        let mode =
            Self::switch_to_wal(&connection).map_err(|e| backend("switching to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend {
                location,
                what: "switching to WAL mode".to_string(),
                source: format!("SQLite kept journal mode {mode} (is the file on a filesystem without shared memory?)")
                    .into(),
            });
        }
        connection
            // mmap: pages are read from the shared page cache instead of copied by read(2).
            .execute_batch(
                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; PRAGMA mmap_size = 268435456; \
                 PRAGMA cache_size = -16384;",
            )
            .map_err(|e| backend("setting pragmas", e))?;

        let mut connection = connection;
        {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend("locking the database to create its tables", e))?;
            // Another process may have initialised it meanwhile: decide again under the lock.
            Self::refuse_foreign(&transaction, &path)?;
            transaction
                .execute_batch(SCHEMA)
                .map_err(|e| backend("creating tables", e))?;
            transaction
                .execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID};"))
                .map_err(|e| backend("marking the database as tortie's", e))?;
            transaction
                .execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(|e| backend("initialising the revision counter", e))?;
            let schema: i64 = transaction
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| {
                    row.get(0)
                })
                .map_err(|e| backend("reading the schema version", e))?;
            if schema != SCHEMA_VERSION {
                return Err(StoreError::Foreign {
                    path,
                    why: format!(
                        "schema version {schema}, this build reads version {SCHEMA_VERSION}"
                    ),
                });
            }
            transaction
                .commit()
                .map_err(|e| backend("committing the tables", e))?;
        }
        Ok(SqliteStore {
            path,
            connection: Mutex::new(connection),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refuse_foreign(connection: &Connection, path: &Path) -> Result<(), StoreError> {
        let foreign = |why: String| StoreError::Foreign {
            path: path.to_path_buf(),
            why,
        };
        // The header's id and the table list in one statement, so one snapshot: read apart,
        // another process's first commit could land between them (tables, yet id 0).
        let read = connection.query_row(
            "SELECT (SELECT application_id FROM pragma_application_id()), \
                    (SELECT group_concat(name, ',') FROM sqlite_master WHERE type = 'table')",
            [],
            |row| Ok((row.get::<_, i32>(0)?, row.get::<_, Option<String>>(1)?)),
        );
        let (application_id, tables) = match read {
            Ok(read) => read,
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == ErrorCode::NotADatabase =>
            {
                return Err(foreign("the file is not a SQLite database".to_string()));
            }
            Err(error) => {
                return Err(StoreError::Backend {
                    location: path.display().to_string(),
                    what: "reading the database header".to_string(),
                    source: Box::new(error),
                });
            }
        };
        if application_id == APPLICATION_ID {
            return Ok(());
        }
        if application_id != 0 {
            return Err(foreign(format!(
                "a SQLite database with application_id {application_id:#x}"
            )));
        }
        let mut tables: Vec<&str> = tables
            .as_deref()
            .map_or(Vec::new(), |names| names.split(',').collect());
        tables.sort_unstable();
        if tables.is_empty() {
            Ok(())
        } else {
            Err(foreign(format!(
                "a SQLite database of another application, with tables {}",
                tables.join(", ")
            )))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // rusqlite rolls back an unfinished transaction when it is dropped, so a panic while
        // the lock was held left the connection usable.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn backend(&self, what: String, error: rusqlite::Error) -> StoreError {
        StoreError::Backend {
            location: self.path.display().to_string(),
            what,
            source: Box::new(error),
        }
    }

    fn decode(
        &self,
        kind: Kind,
        name: &str,
        revision: i64,
        text: &str,
    ) -> Result<Versioned, StoreError> {
        let value = Resource::from_json(kind, text).map_err(|error| StoreError::Corrupt {
            location: self.path.display().to_string(),
            kind,
            name: name.to_string(),
            problem: error.to_string(),
        })?;
        Ok(Versioned {
            value: Arc::new(value),
            revision: Revision::number(revision as u64),
        })
    }

    fn encode(&self, value: &Resource) -> Result<String, StoreError> {
        value.to_json().map_err(|error| StoreError::Backend {
            location: self.path.display().to_string(),
            what: format!("encoding {} {}", value.kind(), value.name()),
            source: Box::new(error),
        })
    }

    /// Runs one write under the write lock: `body` gets the transaction and the next
    /// revision, and decides whether to commit (Ok) or roll back (Err).
    fn write<T>(
        &self,
        what: impl Fn() -> String,
        body: impl FnOnce(&rusqlite::Transaction<'_>, i64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.backend(what(), e))?;
        let revision: i64 = transaction
            .prepare_cached(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| self.backend(what(), e))?;
        let result = body(&transaction, revision)?;
        transaction.commit().map_err(|e| self.backend(what(), e))?;
        Ok(result)
    }

    fn current_revision(
        &self,
        transaction: &rusqlite::Transaction<'_>,
        kind: Kind,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        transaction
            .prepare_cached("SELECT revision FROM objects WHERE kind = ?1 AND name = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row(params![kind.as_str(), name], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| self.backend(format!("reading {kind} {name}"), e))
    }
}

impl SqliteStore {
    /// [`Store::apply`] in one write transaction: read, decide, write, with the write lock
    /// held throughout, so processes never overtake each other and one commit suffices.
    fn apply_in_transaction(
        &self,
        kind: Kind,
        name: &str,
        step: &mut Step<'_>,
    ) -> Result<(), StoreError> {
        let what = || format!("changing {kind} {name}");
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.backend(what(), e))?;
        let row = read_row(&transaction, kind, name).map_err(|e| self.backend(what(), e))?;
        let mut current = match row {
            None => None,
            Some((revision, text)) => {
                let versioned = self.decode(kind, name, revision, &text)?;
                Some(Arc::try_unwrap(versioned.value).unwrap_or_else(|shared| (*shared).clone()))
            }
        };
        let existed = current.is_some();
        let (value, delete) = match step(current.as_mut()) {
            Decision::Keep => return Ok(()),
            Decision::Delete if !existed => return Ok(()),
            Decision::Updated if !existed => return Ok(()),
            Decision::Delete => (None, true),
            Decision::Put(value) => (Some(value), false),
            Decision::Updated => (current, false),
        };
        let revision: i64 = transaction
            .prepare_cached(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| self.backend(what(), e))?;
        let result = match (value, delete) {
            (_, true) => transaction
                .prepare_cached("DELETE FROM objects WHERE kind = ?1 AND name = ?2")
                .and_then(|mut statement| statement.execute(params![kind.as_str(), name])),
            (Some(value), false) => {
                let text = self.encode(&value)?;
                transaction
                    .prepare_cached(
                        "INSERT INTO objects (kind, name, node, revision, value) VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (kind, name) DO UPDATE SET node = excluded.node, \
                         revision = excluded.revision, value = excluded.value",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![kind.as_str(), name, value.node(), revision, text])
                    })
            }
            (None, false) => Ok(0),
        };
        result.map_err(|e| self.backend(what(), e))?;
        transaction.commit().map_err(|e| self.backend(what(), e))
    }
}

/// One object's revision and stored text, if it exists (inside a transaction or not: a
/// `Transaction` is a `Connection`).
fn read_row(
    connection: &Connection,
    kind: Kind,
    name: &str,
) -> rusqlite::Result<Option<(i64, String)>> {
    connection
        .prepare_cached("SELECT revision, value FROM objects WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind.as_str(), name], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
}

/// (name, revision, stored text) of every object of a kind, or of one node's, in name
/// order (inside a transaction or not).
fn list_rows(
    connection: &Connection,
    kind: Kind,
    node: Option<&str>,
) -> rusqlite::Result<Vec<(String, i64, String)>> {
    let row = |row: &rusqlite::Row<'_>| Ok((row.get(0)?, row.get(1)?, row.get(2)?));
    match node {
        None => connection
            .prepare_cached("SELECT name, revision, value FROM objects WHERE kind = ?1 ORDER BY name")?
            .query_map(params![kind.as_str()], row)?
            .collect(),
        Some(node) => connection
            .prepare_cached(
                "SELECT name, revision, value FROM objects WHERE kind = ?1 AND node = ?2 ORDER BY name",
            )?
            .query_map(params![kind.as_str(), node], row)?
            .collect(),
    }
}

fn matches(current: i64, expected: &Revision) -> bool {
    expected.as_number() == Some(current as u64)
}

impl Store for SqliteStore {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        let connection = self.lock();
        let row = read_row(&connection, kind, name)
            .map_err(|e| self.backend(format!("reading {kind} {name}"), e))?;
        row.map(|(revision, text)| self.decode(kind, name, revision, &text))
            .transpose()
    }

    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let connection = self.lock();
        let rows = list_rows(&connection, kind, node)
            .map_err(|e| self.backend(format!("listing {kind}"), e))?;
        rows.into_iter()
            .map(|(name, revision, text)| self.decode(kind, &name, revision, &text))
            .collect()
    }

    fn visit_each(
        &self,
        reads: &[Read<'_>],
        visitor: &mut ReadVisitor<'_>,
    ) -> Result<(), StoreError> {
        let mut connection = self.lock();
        // One read transaction for all of them: the reads see one state of the file, and
        // the WAL read lock is taken once, not once per read.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.backend("starting a read".to_string(), e))?;
        for (index, read) in reads.iter().enumerate() {
            let kind = read.kind;
            let rows = list_rows(&transaction, kind, read.node)
                .map_err(|e| self.backend(format!("listing {kind}"), e))?;
            for (name, revision, text) in rows {
                visitor(index, &self.decode(kind, &name, revision, &text)?.value);
            }
        }
        transaction
            .commit()
            .map_err(|e| self.backend("ending a read".to_string(), e))
    }

    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let text = self.encode(&value)?;
        self.write(
            || format!("creating {kind} {name}"),
            |transaction, revision| {
                if self.current_revision(transaction, kind, &name)?.is_some() {
                    return Err(StoreError::AlreadyExists { kind, name: name.clone() });
                }
                transaction
                    .prepare_cached(
                        "INSERT INTO objects (kind, name, node, revision, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![kind.as_str(), name, value.node(), revision, text])
                    })
                    .map_err(|e| self.backend(format!("creating {kind} {name}"), e))?;
                Ok(Revision::number(revision as u64))
            },
        )
    }

    fn update(&self, value: Resource, expected: &Revision) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let text = self.encode(&value)?;
        self.write(
            || format!("updating {kind} {name}"),
            |transaction, revision| {
                match self.current_revision(transaction, kind, &name)? {
                    None => return Err(StoreError::NotFound { kind, name: name.clone() }),
                    Some(current) if !matches(current, expected) => {
                        return Err(StoreError::Conflict { kind, name: name.clone(), expected: expected.clone() });
                    }
                    Some(_) => {}
                }
                transaction
                    .prepare_cached("UPDATE objects SET node = ?3, revision = ?4, value = ?5 WHERE kind = ?1 AND name = ?2")
                    .and_then(|mut statement| {
                        statement.execute(params![kind.as_str(), name, value.node(), revision, text])
                    })
                    .map_err(|e| self.backend(format!("updating {kind} {name}"), e))?;
                Ok(Revision::number(revision as u64))
            },
        )
    }

    fn delete(&self, kind: Kind, name: &str, expected: &Revision) -> Result<(), StoreError> {
        self.write(
            || format!("deleting {kind} {name}"),
            |transaction, _| {
                match self.current_revision(transaction, kind, name)? {
                    None => {
                        return Err(StoreError::NotFound {
                            kind,
                            name: name.to_string(),
                        });
                    }
                    Some(current) if !matches(current, expected) => {
                        return Err(StoreError::Conflict {
                            kind,
                            name: name.to_string(),
                            expected: expected.clone(),
                        });
                    }
                    Some(_) => {}
                }
                transaction
                    .prepare_cached("DELETE FROM objects WHERE kind = ?1 AND name = ?2")
                    .and_then(|mut statement| statement.execute(params![kind.as_str(), name]))
                    .map_err(|e| self.backend(format!("deleting {kind} {name}"), e))?;
                Ok(())
            },
        )
    }

    fn apply(&self, kind: Kind, name: &str, step: &mut Step<'_>) -> Result<(), StoreError> {
        self.apply_in_transaction(kind, name, step)
    }

    /// The global revision counter in `meta`: every write transaction (create, update,
    /// delete, apply) moves it on in the same commit as its change, so another process
    /// sees the new number exactly when it can see the change. A write that is refused
    /// (conflict, not found) rolls back and leaves it. One primary-key read.
    fn generation(&self) -> Result<u64, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached("SELECT value FROM meta WHERE key = 'revision'")
            .and_then(|mut statement| statement.query_row([], |row| row.get::<_, i64>(0)))
            .map(|revision| revision as u64)
            .map_err(|e| self.backend("reading the store's generation".to_string(), e))
    }
}

impl SqliteStore {
    /// `PRAGMA journal_mode = WAL`, retried while another process holds the lock. SQLite
    /// answers SQLITE_BUSY here without calling the busy handler when another connection is
    /// opening the same new file at that moment (two agents started together on a fresh
    /// datastore hit it), so the busy timeout alone does not cover it.
    fn switch_to_wal(connection: &Connection) -> Result<String, rusqlite::Error> {
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if matches!(
                        error.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                outcome => return outcome,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tortie-ipam-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("tortie.db")
    }

    /// Agents started together on a fresh datastore all open it at once: every one must get
    /// in (SQLite's WAL switch does not wait on its own while another opens the file).
    #[test]
    fn many_connections_opening_a_fresh_file_at_once_all_succeed() {
        for round in 0..20 {
            let path = scratch(&format!("together-{round}"));
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                let openers: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            SqliteStore::open(&path).map(|_| ())
                        })
                    })
                    .collect();
                for opener in openers {
                    let opened = opener.join().expect("an opener panicked");
                    assert!(opened.is_ok(), "round {round}: {opened:?}");
                }
            });
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn keeps_the_compare_and_swap_contract() {
        let path = scratch("contract");
        super::super::conformance::run(&SqliteStore::open(&path).unwrap());
        // And the data is there for the next process to open.
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.list(Kind::BlockAffinity, None).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn generation_is_shared_by_every_handle_on_one_file() {
        use crate::cluster::BGPPeer;

        let path = scratch("generation");
        let writer = SqliteStore::open(&path).unwrap();
        let watcher = SqliteStore::open(&path).unwrap();
        let peer = |address: &str| {
            Resource::BGPPeer(BGPPeer {
                name: "tor".to_string(),
                peer_ip: Some(address.to_string()),
                as_number: Some(64513),
                ..BGPPeer::default()
            })
        };
        let start = watcher.generation().unwrap();
        assert_eq!(writer.generation().unwrap(), start);
        let created = writer.create(peer("192.0.2.1")).unwrap();
        let after_create = watcher.generation().unwrap();
        assert!(after_create > start);
        let updated = writer.update(peer("192.0.2.2"), &created).unwrap();
        let after_update = watcher.generation().unwrap();
        assert!(after_update > after_create);
        // A refused write rolls back, generation included.
        assert!(writer.update(peer("192.0.2.3"), &created).is_err());
        assert_eq!(watcher.generation().unwrap(), after_update);
        writer.delete(Kind::BGPPeer, "tor", &updated).unwrap();
        let after_delete = watcher.generation().unwrap();
        assert!(after_delete > after_update, "a delete moves the generation");
        // And the other way round, and for a handle opened later.
        watcher.create(peer("192.0.2.1")).unwrap();
        assert!(writer.generation().unwrap() > after_delete);
        assert_eq!(
            SqliteStore::open(&path).unwrap().generation().unwrap(),
            writer.generation().unwrap()
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn refuses_foreign_files_and_leaves_them_alone() {
        let path = scratch("foreign");
        std::fs::write(&path, b"this is a text file, not a database\n".repeat(200)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = SqliteStore::open(&path)
            .err()
            .expect("a text file must be refused");
        assert!(
            error.to_string().contains("not a SQLite database"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);

        let other = path.with_file_name("other.db");
        let connection = Connection::open(&other).unwrap();
        connection
            .execute_batch("CREATE TABLE accounts (id INTEGER);")
            .unwrap();
        drop(connection);
        let before = std::fs::read(&other).unwrap();
        let error = SqliteStore::open(&other)
            .err()
            .expect("another application's database must be refused");
        assert!(error.to_string().contains("accounts"), "{error}");
        assert_eq!(std::fs::read(&other).unwrap(), before);

        let error = SqliteStore::open(path.with_file_name("missing-dir").join("x.db"))
            .err()
            .unwrap();
        assert!(error.to_string().contains("missing-dir"), "{error}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn corrupt_documents_are_named() {
        let path = scratch("corrupt");
        let store = SqliteStore::open(&path).unwrap();
        store
            .lock()
            .execute(
                "INSERT INTO objects (kind, name, node, revision, value) VALUES ('IPPool', 'bad', NULL, 99, '{\"cidr\": 5}')",
                [],
            )
            .unwrap();
        let error = store.get(Kind::IPPool, "bad").err().unwrap().to_string();
        assert!(error.contains("IPPool bad does not parse"), "{error}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
