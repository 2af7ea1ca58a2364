-- The tables of the SQLite engine, schema version 2 (`db.SCHEMA_VERSION`, kept in
-- `PRAGMA user_version`), created by `db` when it opens a file. Times are unix seconds (REAL),
-- and an `expires_at` of NULL is never. `db` splits this file at each semicolon, so no comment
-- may hold one.
--
-- Receipts and dead-letter refs name rows by rowid: `messages` and `dead_letters` keep an index
-- (their primary key), without which the VACUUM of `space` would renumber their rows.

-- Every message until it is acked (`transport`): `available_at` is when it may next be handed
-- out (its ETA, its retry time or the end of its lease), `owner` the consumer leasing it.
CREATE TABLE IF NOT EXISTS messages (
    task_id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    available_at REAL NOT NULL,
    eta REAL,
    owner TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_claim ON messages (queue, priority DESC, available_at);

-- Messages given up on, with why.
CREATE TABLE IF NOT EXISTS dead_letters (
    task_id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);

-- The state store (`store`): one row per grant of a sliding rate window, sets and their
-- members, and values by key.
CREATE TABLE IF NOT EXISTS rates (key TEXT NOT NULL, at REAL NOT NULL, period REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sets (key TEXT PRIMARY KEY, expires_at REAL);
CREATE TABLE IF NOT EXISTS set_members (
    key TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (key, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rates_key ON rates (key, at);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);

-- The result store (`results`): results and progress reports by task id, and the items of
-- generator tasks, numbered from 0, with each stream's length and closed flag.
CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS progress (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS streams (
    task_id TEXT PRIMARY KEY,
    length INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS stream_items (
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
