-- conveyor's PostgreSQL schema, version 1. "{schema}" is the engine's own schema (`?schema=`,
-- default conveyor), so these tables sit beside the application's. Times are unix seconds
-- (float8) from the server's clock, so workers on hosts whose clocks differ agree on leases.
-- Keys are COLLATE "C" so a prefix scan is an index range.

-- Every message until it is acked. `available_at` is when it may next be handed out: its ETA,
-- its retry time, or the end of its lease; `owner` is the consumer holding the lease.
CREATE TABLE "{schema}".messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id text COLLATE "C" NOT NULL UNIQUE,
    queue text COLLATE "C" NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    body bytea NOT NULL,
    available_at float8 NOT NULL,
    eta float8,
    owner text,
    deliveries integer NOT NULL DEFAULT 0
) WITH (
    -- A queue table's rows live seconds: vacuum it after a few hundred dead rows, not after
    -- 20% of the table, and without the cost delay, so it stays near its idle size.
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 2000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX messages_next ON "{schema}".messages (queue, priority DESC, available_at, id);

-- Wakes idle workers: one notification per statement that adds messages, sent at its commit
-- (so never for a rolled-back transactional enqueue).
CREATE FUNCTION "{schema}".announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{schema}.queued', '');
    RETURN NULL;
END $$;
CREATE TRIGGER announce AFTER INSERT ON "{schema}".messages
    FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".announce();

CREATE TABLE "{schema}".dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id text COLLATE "C" NOT NULL UNIQUE,
    queue text NOT NULL,
    priority smallint NOT NULL,
    body bytea NOT NULL,
    reason text NOT NULL,
    failed_at float8 NOT NULL
);

-- The state store: values, sets and the grants of sliding rate windows.
CREATE TABLE "{schema}".kv (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL,
    expires_at float8
);
CREATE TABLE "{schema}".set_members (
    key text COLLATE "C" NOT NULL,
    member text NOT NULL,
    expires_at float8,
    PRIMARY KEY (key, member)
);
CREATE TABLE "{schema}".rate_grants (
    key text COLLATE "C" NOT NULL,
    expires_at float8 NOT NULL
);
CREATE INDEX rate_grants_key ON "{schema}".rate_grants (key, expires_at);

-- Results, progress reports and generator items. A stream's items are numbered from 0; the
-- row numbered -1 marks it closed.
CREATE TABLE "{schema}".results (
    task_id text COLLATE "C" PRIMARY KEY,
    data bytea NOT NULL,
    expires_at float8
);
CREATE TABLE "{schema}".progress (
    task_id text COLLATE "C" PRIMARY KEY,
    data bytea NOT NULL,
    expires_at float8
);
CREATE TABLE "{schema}".stream_items (
    task_id text COLLATE "C" NOT NULL,
    seq integer NOT NULL,
    data bytea,
    expires_at float8,
    PRIMARY KEY (task_id, seq)
);
CREATE INDEX kv_expiry ON "{schema}".kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX results_expiry ON "{schema}".results (expires_at) WHERE expires_at IS NOT NULL;
