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

use super::{Entry, Key, Row, Stored};

/// `PRAGMA application_id` of a fetchall state ("fa11" in ASCII).
const APP_ID: i32 = 0x6661_3131;
/// The schema this fetchall writes and reads.
pub(super) const SCHEMA: i32 = 4;
/// SQLite's page cache, in KiB (its default is 2 MiB): part of the run's memory.
const CACHE_KIB: u32 = 16 * 1024;
/// The page cache while the keys' index is built ([`INDEX_KEYS`]), in KiB: SQLite's sorter
/// takes as much memory again as the cache, so the cache is cut for the build (which reads the
/// table once, in order) and given back after it.
const SORT_CACHE_KIB: u32 = 4 * 1024;
/// The write-ahead log is copied into the file once it holds this many pages (64 MiB of 4 KiB
/// pages; SQLite's default is 1000). Disk space, not memory.
const CHECKPOINT_PAGES: u32 = 16 * 1024;

/// The outcomes, schema 4 (their last-fetched times also in [`FETCHED`]). Rows are numbered
/// in the order keys were first seen (about the input's order), and the key (a hash, so in no
/// useful order) finds its row through an index ([`INDEX_KEYS`]). A round goes through its
/// input in the same order again, so the writes of one transaction land on a few pages in
/// sequence rather than one page each all over the file; a lookup first tries the row after
/// the one it last found (see [`Statements::entry`]), and a write names the row its lookup
/// answered, so neither searches the index while the input keeps its order.
const CREATE: &str = "
CREATE TABLE outcome (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
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

/// A fetch that leaves the stored outcome as it was (a `304`, or the same response again)
/// writes only its time, in a narrow table of its own: row id and time, about 35 bytes a row
/// where the outcome's row is about 190. A warm round changes every key's last-fetched time,
/// and kept in the outcome's row that rewrote every page of the table, all of it through the
/// write-ahead log and a checkpoint (190 MB at 1,000,000 keys); here it is a sixth of that,
/// and an unchanged outcome's page is left alone. `outcome.last_fetched` is when its outcome
/// was last written, `fetched.at` when it was last confirmed; a key's last fetch is the later
/// of the two, which the view `state` shows with the rest of its row (times are RFC 3339
/// UTC, so they compare as text).
const FETCHED: &str = "
CREATE TABLE fetched (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE VIEW state AS
SELECT o.id, o.key, o.etag, o.last_modified, o.body_sha256, o.status, o.ok, o.error_kind,
       o.first_seen, max(o.last_fetched, coalesce(f.at, o.last_fetched)) AS last_fetched,
       o.last_changed
FROM outcome AS o LEFT JOIN fetched AS f ON f.id = o.id;
";

/// The keys' index. A new file gets it at the end of its first round, built in one sorted
/// pass: added key by key, each of a million new keys changed a page of it somewhere, and
/// every transaction wrote most of the index to the log again. Until it exists every key is
/// new (the file had no rows), so no lookup needs it. Schema 2 had it as the table's `UNIQUE`
/// constraint, which serves the same (see [`KEYS_INDEXED`]).
const INDEX_KEYS: &str = "CREATE UNIQUE INDEX outcome_key ON outcome (key)";

/// Whether the keys have their unique index (this schema's, or schema 2's `UNIQUE`).
const KEYS_INDEXED: &str = "
SELECT EXISTS (
    SELECT 1 FROM pragma_index_list('outcome') AS l
    WHERE l.\"unique\" AND (SELECT group_concat(name) FROM pragma_index_info(l.name)) = 'key'
)
";

/// Two lines asking the same thing in a new file's first round were both new, and both
/// written: the first one's row stays (it was seen first), before the index is built.
const DROP_REPEATED_KEYS: &str = "
DELETE FROM outcome WHERE id NOT IN (SELECT min(id) FROM outcome GROUP BY key)
";

/// Schema 1 kept the rows in key order (`key` was the primary key, `WITHOUT ROWID`) and whole
/// sha256s as keys. Its table is set aside, this schema's created ([`CREATE`]), its rows
/// moved over by [`FROM_SCHEMA_1`] and the keys indexed.
const SET_SCHEMA_1_ASIDE: &str = "ALTER TABLE outcome RENAME TO outcome_schema_1;";

/// Schema 1's rows into this schema's table, in the order they were first seen, each key cut
/// to the 16 bytes kept now (see `Key`).
const FROM_SCHEMA_1: &str = "
INSERT INTO outcome (key, etag, last_modified, body_sha256, status, ok, error_kind,
                     first_seen, last_fetched, last_changed)
SELECT substr(key, 1, 16), etag, last_modified, body_sha256, status, ok, error_kind,
       first_seen, last_fetched, last_changed
FROM outcome_schema_1 ORDER BY first_seen, key;
DROP TABLE outcome_schema_1;
";

/// A new key's first outcome, in the row its lookup numbered, in a new file's first round
/// (before its keys are indexed). Its parameters are [`UPDATE`]'s, with the key last (see
/// [`write`]).
const INSERT: &str = "
INSERT INTO outcome (id, key, etag, last_modified, body_sha256, status, ok, error_kind,
                     first_seen, last_fetched, last_changed)
VALUES (?1, ?9, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)
";

/// A new key's first outcome once the keys are indexed. The key may have been written since
/// its lookup (two lines asking the same in one round): then that row takes the outcome.
const UPSERT: &str = "
INSERT INTO outcome (id, key, etag, last_modified, body_sha256, status, ok, error_kind,
                     first_seen, last_fetched, last_changed)
VALUES (?1, ?9, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)
ON CONFLICT (key) DO UPDATE SET
    etag = excluded.etag,
    last_modified = excluded.last_modified,
    body_sha256 = excluded.body_sha256,
    status = excluded.status,
    ok = excluded.ok,
    error_kind = excluded.error_kind,
    last_fetched = excluded.last_fetched,
    last_changed = excluded.last_changed
";

/// A new outcome in the row its lookup found. It changes no key, so SQLite leaves the keys'
/// index alone.
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

/// A fetch that left the stored outcome as it was moves only its time (see [`FETCHED`]);
/// [`TOUCH_FIRST`] when the row has no such time yet (see [`Statements::touch`]).
const TOUCH: &str = "UPDATE fetched SET at = ?2 WHERE id = ?1";

/// A row's first time in [`FETCHED`].
const TOUCH_FIRST: &str = "INSERT INTO fetched (id, at) VALUES (?1, ?2)";

/// A key's outcome, through the keys' index.
const SELECT: &str = "
SELECT id, etag, last_modified, body_sha256, status, ok, error_kind, key FROM outcome
WHERE key = ?1
";

/// The outcome in one row, whatever its key: [`Statements::entry`]'s guess.
const SELECT_ROW: &str = "
SELECT id, etag, last_modified, body_sha256, status, ok, error_kind, key FROM outcome
WHERE id = ?1
";

pub(super) struct Store {
    conn: Connection,
    /// The keys have no index yet (a file without rows: see [`INDEX_KEYS`]).
    unindexed: bool,
}

/// The statements that read and write outcomes, prepared once for the state thread's life
/// (a statement looked up in rusqlite's cache by its text for every message cost about a
/// sixth of the thread's instructions).
pub(super) struct Statements<'c> {
    conn: &'c Connection,
    select: Statement<'c>,
    select_row: Statement<'c>,
    insert: Statement<'c>,
    /// Prepared once the keys are indexed: its conflict is on their index.
    upsert: Option<Statement<'c>>,
    update: Statement<'c>,
    touch: Statement<'c>,
    touch_first: Statement<'c>,
    /// Every row of [`FETCHED`] is at or before this one.
    fetched_end: i64,
    /// The row after the one the last lookup found: the next lookup's guess.
    next: Option<i64>,
    /// The row the next new key gets: after every row there is and every row numbered.
    new_row: i64,
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
        let unindexed = match Self::check_or_create(&conn) {
            Ok(unindexed) => unindexed,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        conn.execute_batch("COMMIT").map_err(|e| describe(&e))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(|e| describe(&e))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(|e| describe(&e))?;
        // Lookups whose guess misses go through the keys' index, whose pages are hit in no
        // order: a bigger page cache keeps more of them between transactions (fewer reads),
        // and checkpoints made seldom write a page changed many times once and sync the file
        // less often.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{CACHE_KIB}; PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"
        ))
        .map_err(|e| describe(&e))?;
        Ok(Store { conn, unindexed })
    }

    /// Inside the opening transaction: an empty file gets the schema; any other must be ours,
    /// and is brought to this schema. Whether the keys are left unindexed (no rows yet).
    fn check_or_create(conn: &Connection) -> Result<bool, String> {
        let pragma = |name: &str| -> Result<i32, String> {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .map_err(|e| describe(&e))
        };
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| describe(&e))?;
        let (app, version) = (pragma("application_id")?, pragma("user_version")?);
        if tables == 0 && app == 0 && version == 0 {
            conn.execute_batch(CREATE)
                .and_then(|()| conn.execute_batch(FETCHED))
                .map_err(|e| describe(&e))?;
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APP_ID}; PRAGMA user_version = {SCHEMA};"
            ))
            .map_err(|e| describe(&e))?;
            return Ok(true);
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
            // In the opening transaction: a failed upgrade leaves the file as it was. Schema
            // 2 differs from 3 only in where its keys' index comes from, and 3 from 4 only in
            // the table of last-fetched times, which starts empty (each outcome's own time
            // stands until its key is fetched again).
            let moved = if version < 2 {
                conn.execute_batch(SET_SCHEMA_1_ASIDE)
                    .and_then(|()| conn.execute_batch(CREATE))
                    .and_then(|()| conn.execute_batch(FROM_SCHEMA_1))
            } else {
                Ok(())
            };
            moved
                .and_then(|()| conn.execute_batch(FETCHED))
                .and_then(|()| conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA};")))
                .map_err(|e| {
                    format!(
                        "cannot upgrade from state schema {version}: {}",
                        describe(&e)
                    )
                })?;
            tracing::info!("state: upgraded from schema {version} to {SCHEMA}");
        }
        let indexed: bool = conn
            .query_row(KEYS_INDEXED, [], |r| r.get(0))
            .map_err(|e| describe(&e))?;
        if indexed {
            return Ok(false);
        }
        let empty: bool = conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM outcome)", [], |r| {
                r.get(0)
            })
            .map_err(|e| describe(&e))?;
        if empty {
            return Ok(true);
        }
        // Rows without an index: a first run that was stopped before the end of its round
        // (killed, or its machine went down).
        index_keys(conn).map_err(|e| format!("cannot index the keys: {}", describe(&e)))?;
        Ok(false)
    }

    /// Whether the keys have no index yet: the file had no rows when it was opened.
    pub(super) fn unindexed(&self) -> bool {
        self.unindexed
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
            conn: &self.conn,
            select: prepare(SELECT)?,
            select_row: prepare(SELECT_ROW)?,
            insert: prepare(INSERT)?,
            upsert: match self.unindexed {
                true => None,
                false => Some(prepare(UPSERT)?),
            },
            update: prepare(UPDATE)?,
            touch: prepare(TOUCH)?,
            touch_first: prepare(TOUCH_FIRST)?,
            fetched_end: self
                .conn
                .query_row("SELECT coalesce(max(id), 0) FROM fetched", [], |r| r.get(0))
                .map_err(|e| describe(&e))?,
            next: None,
            new_row: self
                .conn
                .query_row("SELECT coalesce(max(id), 0) + 1 FROM outcome", [], |r| {
                    r.get(0)
                })
                .map_err(|e| describe(&e))?,
        })
    }

    /// Close the file, checkpointing the WAL into it.
    pub(super) fn close(self) -> Result<(), String> {
        self.conn.close().map_err(|(_, e)| describe(&e))
    }
}

/// Build the keys' unique index, first dropping the rows of keys written twice (see
/// [`DROP_REPEATED_KEYS`]) if there are any.
fn index_keys(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("PRAGMA cache_size = -{SORT_CACHE_KIB}"))?;
    let built = match conn.execute_batch(INDEX_KEYS) {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => conn
            .execute_batch(DROP_REPEATED_KEYS)
            .and_then(|()| conn.execute_batch(INDEX_KEYS)),
        built => built,
    };
    conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB}"))?;
    built
}

impl Statements<'_> {
    /// Whether the keys are still unindexed: every key is new.
    pub(super) fn unindexed(&self) -> bool {
        self.upsert.is_none()
    }

    /// Index the keys (in the open transaction), if they are not yet: from here on a lookup
    /// can find what the round wrote.
    pub(super) fn index_keys(&mut self) -> Result<(), String> {
        if !self.unindexed() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        index_keys(self.conn).map_err(|e| format!("cannot index the keys: {}", describe(&e)))?;
        self.upsert = Some(self.conn.prepare(UPSERT).map_err(|e| describe(&e))?);
        tracing::debug!(
            "state: the keys of {} rows indexed in {}",
            self.new_row - 1,
            crate::units::HumanDuration(started.elapsed())
        );
        Ok(())
    }

    /// Where `key` is and what is stored for it. A round asks for its keys in the order the
    /// last round did, which is about the order of the rows: the row after the last one found
    /// is tried first, and the index (whose pages, at a million keys, mostly miss SQLite's
    /// cache) is searched only when that row holds another key. A new key gets the next row.
    /// (A new file's first round, whose keys have no index yet, is not asked here: every key
    /// of it is new, and `State::lookup` answers it.)
    pub(super) fn entry(&mut self, key: &Key) -> Result<Entry, String> {
        Ok(match self.find(key)? {
            Some(found) => {
                self.next = Some(found.row.0 + 1);
                found
            }
            None => {
                self.new_row += 1;
                Entry {
                    row: Row(self.new_row - 1),
                    stored: None,
                }
            }
        })
    }

    fn find(&mut self, key: &Key) -> Result<Option<Entry>, String> {
        if let Some(id) = self.next
            && let Some(found) = self
                .select_row
                .query_row(params![id], |r| read(r, key))
                .optional()
                .map_err(|e| describe(&e))?
                .flatten()
        {
            return Ok(Some(found));
        }
        self.select
            .query_row(params![&key.0[..]], |r| read(r, key))
            .optional()
            .map(Option::flatten)
            .map_err(|e| describe(&e))
    }

    pub(super) fn insert(
        &mut self,
        key: &Key,
        Row(id): Row,
        outcome: &Stored,
        at: &str,
    ) -> Result<(), String> {
        // A new file's first round numbers its rows without the thread (see `State::lookup`).
        self.new_row = self.new_row.max(id + 1);
        let stmt = match &mut self.upsert {
            Some(upsert) => upsert,
            None => &mut self.insert,
        };
        write(stmt, id, outcome, at, &&key.0[..])
    }

    pub(super) fn update(
        &mut self,
        Row(id): Row,
        outcome: &Stored,
        changed: bool,
        at: &str,
    ) -> Result<(), String> {
        write(&mut self.update, id, outcome, at, &changed)
    }

    /// Move the time in `id`'s row of [`FETCHED`], or give it one. The first round that
    /// confirms outcomes gives every row its first time, in about the rows' order: a row after
    /// the table's last has none yet, and gets it without the update that would miss.
    pub(super) fn touch(&mut self, Row(id): Row, at: &str) -> Result<(), String> {
        let moved = if id > self.fetched_end {
            self.fetched_end = id;
            0
        } else {
            self.touch
                .execute(params![id, at])
                .map_err(|e| describe(&e))?
        };
        if moved == 0 {
            self.touch_first
                .execute(params![id, at])
                .map_err(|e| describe(&e))?;
        }
        Ok(())
    }
}

/// Run a write of `outcome` in row `id`, fetched `at`: [`INSERT`], [`UPSERT`] and [`UPDATE`]
/// share their first eight parameters, and `last` is the ninth (the key of an insert; for an
/// update, whether it is a change).
fn write(
    stmt: &mut Statement<'_>,
    id: i64,
    outcome: &Stored,
    at: &str,
    last: &dyn rusqlite::ToSql,
) -> Result<(), String> {
    stmt.execute(params![
        id,
        outcome.etag,
        outcome.last_modified,
        outcome.body_sha256.as_ref().map(|h| &h[..]),
        outcome.status,
        outcome.ok,
        outcome.error_kind,
        at,
        last,
    ])
    .map(drop)
    .map_err(|e| describe(&e))
}

/// A row of [`SELECT`] or [`SELECT_ROW`] as what a lookup of `key` found; `None` when the row
/// holds another key.
fn read(r: &rusqlite::Row<'_>, key: &Key) -> rusqlite::Result<Option<Entry>> {
    if r.get_ref(7)?.as_blob()? != &key.0[..] {
        return Ok(None);
    }
    let hash: Option<&[u8]> = r.get_ref(3)?.as_blob_or_null()?;
    Ok(Some(Entry {
        row: Row(r.get(0)?),
        stored: Some(Stored {
            etag: r.get(1)?,
            last_modified: r.get(2)?,
            body_sha256: hash.and_then(|h| <[u8; 32]>::try_from(h).ok()),
            status: r.get(4)?,
            ok: r.get(5)?,
            error_kind: r.get(6)?,
        }),
    }))
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
