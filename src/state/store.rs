//! The SQLite file behind the state: its schema, the checks made when it is opened, and the
//! statements that read and write one outcome. Used only from the state thread.
//!
//! The file is a fetchall state when its `application_id` is [`APP_ID`]; its schema version is
//! `PRAGMA user_version`. It is held with `locking_mode=EXCLUSIVE` from the first transaction
//! to the close, so a second fetchall on the same file fails at once instead of interleaving
//! its writes. Journal: WAL with `synchronous=NORMAL`, so a killed process loses at most the
//! transaction it was in and never leaves a torn one; checkpoints are made seldom and the page
//! cache is 16 MiB. Rows are in the order keys were first seen (see [`CREATE`]).

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Statement, params};

use super::{Found, Key, Row, Stored};

/// `PRAGMA application_id` of a fetchall state ("fa11" in ASCII).
const APP_ID: i32 = 0x6661_3131;
/// The schema this fetchall writes and reads.
const SCHEMA: i32 = 2;
/// SQLite's page cache, in KiB (its default is 2 MiB): part of the run's memory.
const CACHE_KIB: u32 = 16 * 1024;
/// The write-ahead log is copied into the file once it holds this many pages (64 MiB of 4 KiB
/// pages; SQLite's default is 1000). Disk space, not memory.
const CHECKPOINT_PAGES: u32 = 16 * 1024;

/// The table, schema 2. Rows are numbered in the order keys were first seen (about the
/// input's order), and the key (a hash, so in no useful order) finds its row through an index.
/// A round goes through its input in the same order again, so the writes of one transaction
/// land on a few pages in sequence rather than one page each all over the file; and a write
/// names the row its lookup found, so it needs no second search by key.
const CREATE: &str = "
CREATE TABLE outcome (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    etag TEXT,
    last_modified TEXT,
    body_sha256 BLOB,
    status INTEGER,
    ok INTEGER NOT NULL,
    error_kind TEXT,
    first_seen TEXT NOT NULL,
    last_fetched TEXT NOT NULL,
    last_changed TEXT NOT NULL
);
";

/// Schema 1 kept the rows in key order (`key` was the primary key, `WITHOUT ROWID`) and whole
/// sha256s as keys. Its table is set aside, schema 2's created ([`CREATE`]), and its rows moved
/// over by [`FROM_SCHEMA_1`].
const SET_SCHEMA_1_ASIDE: &str = "ALTER TABLE outcome RENAME TO outcome_schema_1;";

/// Schema 1's rows into schema 2's table, in the order they were first seen, each key cut to
/// the 16 bytes schema 2 keeps (see `Key`).
const FROM_SCHEMA_1: &str = "
INSERT INTO outcome (key, etag, last_modified, body_sha256, status, ok, error_kind,
                     first_seen, last_fetched, last_changed)
SELECT substr(key, 1, 16), etag, last_modified, body_sha256, status, ok, error_kind,
       first_seen, last_fetched, last_changed
FROM outcome_schema_1 ORDER BY first_seen, key;
DROP TABLE outcome_schema_1;
";

/// A key not found by its lookup (or written twice in one round: two lines asking the same).
const UPSERT: &str = "
INSERT INTO outcome (key, etag, last_modified, body_sha256, status, ok, error_kind,
                     first_seen, last_fetched, last_changed)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)
ON CONFLICT (key) DO UPDATE SET
    etag = excluded.etag,
    last_modified = excluded.last_modified,
    body_sha256 = excluded.body_sha256,
    status = excluded.status,
    ok = excluded.ok,
    error_kind = excluded.error_kind,
    last_fetched = excluded.last_fetched,
    last_changed = CASE WHEN ?9 THEN excluded.last_changed ELSE outcome.last_changed END
";

/// A new outcome in the row its lookup found.
const UPDATE: &str = "
UPDATE outcome SET
    etag = ?2,
    last_modified = ?3,
    body_sha256 = ?4,
    status = ?5,
    ok = ?6,
    error_kind = ?7,
    last_fetched = ?8,
    last_changed = CASE WHEN ?9 THEN ?8 ELSE last_changed END
WHERE id = ?1
";

/// A fetch that left the stored outcome as it was moves only its time.
const TOUCH: &str = "UPDATE outcome SET last_fetched = ?2 WHERE id = ?1";

const SELECT: &str = "
SELECT id, etag, last_modified, body_sha256, status, ok, error_kind FROM outcome WHERE key = ?1
";

pub(super) struct Store {
    conn: Connection,
}

/// The statements that read and write outcomes, prepared once for the state thread's life
/// (a statement looked up in rusqlite's cache by its text for every message cost about a
/// sixth of the thread's instructions).
pub(super) struct Statements<'c> {
    select: Statement<'c>,
    upsert: Statement<'c>,
    update: Statement<'c>,
    touch: Statement<'c>,
}

impl Store {
    /// Open or create the file, refusing (and leaving as it is) anything that is not a
    /// fetchall state of a schema this version knows, or that another process holds.
    pub(super) fn open(path: &Path) -> Result<Store, String> {
        check_header(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| describe(&e))?;
        // Held from the first transaction to the close: a second opener gets SQLITE_BUSY.
        conn.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))
            .map_err(|e| describe(&e))?;
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(|e| describe(&e))?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| describe(&e))?;
        if let Err(e) = Self::check_or_create(&conn) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        conn.execute_batch("COMMIT").map_err(|e| describe(&e))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(|e| describe(&e))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(|e| describe(&e))?;
        // Lookups go through the key's index, whose pages are hit in no order: a bigger page
        // cache keeps more of them between transactions (fewer reads), and checkpoints made
        // seldom write a page changed many times once and sync the file less often.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{CACHE_KIB}; PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"
        ))
        .map_err(|e| describe(&e))?;
        Ok(Store { conn })
    }

    /// Inside the opening transaction: an empty file gets the schema; any other must be ours.
    fn check_or_create(conn: &Connection) -> Result<(), String> {
        let pragma = |name: &str| -> Result<i32, String> {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .map_err(|e| describe(&e))
        };
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| describe(&e))?;
        let (app, version) = (pragma("application_id")?, pragma("user_version")?);
        if tables == 0 && app == 0 && version == 0 {
            conn.execute_batch(CREATE).map_err(|e| describe(&e))?;
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APP_ID}; PRAGMA user_version = {SCHEMA};"
            ))
            .map_err(|e| describe(&e))?;
            return Ok(());
        }
        if app != APP_ID {
            return Err(
                "not a fetchall state file (an SQLite database of another program); \
                        left as it is"
                    .to_owned(),
            );
        }
        if version > SCHEMA {
            return Err(format!(
                "written by a newer fetchall (state schema {version}; this one knows {SCHEMA}); \
                 left as it is"
            ));
        }
        // Read the table once, so a damaged page shows here rather than mid-run.
        conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
            .map_err(|e| describe(&e))
            .and_then(|verdict| match verdict.as_str() {
                "ok" => Ok(()),
                other => Err(format!(
                    "the file is corrupt ({}); left as it is",
                    crate::redact::bounded(other, 120)
                )),
            })?;
        if version < SCHEMA {
            // In the opening transaction: a failed upgrade leaves the file as it was.
            conn.execute_batch(SET_SCHEMA_1_ASIDE)
                .and_then(|()| conn.execute_batch(CREATE))
                .and_then(|()| conn.execute_batch(FROM_SCHEMA_1))
                .and_then(|()| conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA};")))
                .map_err(|e| {
                    format!(
                        "cannot upgrade from state schema {version}: {}",
                        describe(&e)
                    )
                })?;
            tracing::info!("state: upgraded from schema {version} to {SCHEMA}");
        }
        Ok(())
    }

    pub(super) fn begin(&self) -> Result<(), String> {
        self.conn.execute_batch("BEGIN").map_err(|e| describe(&e))
    }

    pub(super) fn commit(&self) -> Result<(), String> {
        self.conn.execute_batch("COMMIT").map_err(|e| describe(&e))
    }

    pub(super) fn statements(&self) -> Result<Statements<'_>, String> {
        let prepare = |sql| self.conn.prepare(sql).map_err(|e| describe(&e));
        Ok(Statements {
            select: prepare(SELECT)?,
            upsert: prepare(UPSERT)?,
            update: prepare(UPDATE)?,
            touch: prepare(TOUCH)?,
        })
    }

    /// Close the file, checkpointing the WAL into it.
    pub(super) fn close(self) -> Result<(), String> {
        self.conn.close().map_err(|(_, e)| describe(&e))
    }
}

impl Statements<'_> {
    pub(super) fn get(&mut self, key: &Key) -> Result<Option<Found>, String> {
        self.select
            .query_row(params![&key.0[..]], |r| {
                let hash: Option<&[u8]> = r.get_ref(3)?.as_blob_or_null()?;
                Ok(Found {
                    row: Row(r.get(0)?),
                    stored: Stored {
                        etag: r.get(1)?,
                        last_modified: r.get(2)?,
                        body_sha256: hash.and_then(|h| <[u8; 32]>::try_from(h).ok()),
                        status: r.get(4)?,
                        ok: r.get(5)?,
                        error_kind: r.get(6)?,
                    },
                })
            })
            .optional()
            .map_err(|e| describe(&e))
    }

    pub(super) fn put(
        &mut self,
        key: &Key,
        row: Option<Row>,
        outcome: &Stored,
        changed: bool,
        at: &str,
    ) -> Result<(), String> {
        let key = &key.0[..];
        let (stmt, id): (_, &dyn rusqlite::ToSql) = match &row {
            Some(Row(id)) => (&mut self.update, id),
            None => (&mut self.upsert, &key),
        };
        stmt.execute(params![
            id,
            outcome.etag,
            outcome.last_modified,
            outcome.body_sha256.as_ref().map(|h| &h[..]),
            outcome.status,
            outcome.ok,
            outcome.error_kind,
            at,
            changed,
        ])
        .map(drop)
        .map_err(|e| describe(&e))
    }

    pub(super) fn touch(&mut self, Row(id): Row, at: &str) -> Result<(), String> {
        self.touch
            .execute(params![id, at])
            .map(drop)
            .map_err(|e| describe(&e))
    }
}

/// A non-empty file must start like an SQLite database before SQLite is let near it.
fn check_header(path: &Path) -> Result<(), String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    if read == 0 || &head[..read] == b"SQLite format 3\0" {
        return Ok(());
    }
    Err("not a fetchall state file (not an SQLite database); left as it is".to_owned())
}

/// One line for an SQLite error, naming the common causes in words.
fn describe(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "in use by another fetchall (or another program); left as it is".to_owned()
        }
        Some(ErrorCode::NotADatabase) => {
            "not a fetchall state file (not an SQLite database); left as it is".to_owned()
        }
        Some(ErrorCode::DatabaseCorrupt) => "the file is corrupt; left as it is".to_owned(),
        _ => crate::redact::bounded(&e.to_string(), 200).into_owned(),
    }
}
