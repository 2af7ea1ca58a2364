-- The statements of the PostgreSQL engine, by name (`-- name: x` starts statement x).
-- `{s}` is the engine's schema and `{now}` the server's clock in unix seconds; both are filled
-- in once, when a database object is made. A receipt is ($1 row id, $2 owner, $3 deliveries):
-- it matches only the claim it came from.

-- `insert` also runs through the caller's connection, in its driver's parameter style
-- (enqueue.py): keep its parameters written as CAST($n AS type).
-- name: insert
INSERT INTO {s}.messages (task_id, queue, priority, body, available_at, eta)
SELECT t, q, p, b, coalesce(e, {now}), e
FROM unnest(CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS int2[]), CAST($4 AS bytea[]),
    CAST($5 AS float8[])) AS m(t, q, p, b, e)
ON CONFLICT (task_id) DO NOTHING

-- name: claim
-- One ordered index range per queue (`messages_next`), cut at the server's time read once (a
-- sub-select, so it is an index condition): a claim reads the rows it takes, not the backlog
-- (`queue = ANY(...)` in one range made the planner scan and sort the whole table).
WITH picked AS (
    SELECT m.id, m.was FROM unnest($1::text[]) AS q(name), LATERAL (
        SELECT id, priority, available_at AS was FROM {s}.messages
        WHERE queue = q.name AND available_at <= (SELECT {now})
        ORDER BY priority DESC, available_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
    ) m
    ORDER BY m.priority DESC, m.was, m.id LIMIT $2
)
UPDATE {s}.messages m SET owner = $3, available_at = {now} + $4, deliveries = m.deliveries + 1
FROM picked WHERE m.id = picked.id
RETURNING m.id, m.task_id, m.queue, m.body, m.deliveries, m.priority, picked.was

-- name: due
SELECT min(available_at) - {now} FROM {s}.messages WHERE queue = ANY($1::text[])

-- name: queues
SELECT DISTINCT queue FROM {s}.messages

-- name: extend
UPDATE {s}.messages m SET available_at = {now} + $4
FROM unnest($1::int8[], $2::text[], $3::int4[]) AS r(id, owner, n)
WHERE m.id = r.id AND m.owner = r.owner AND m.deliveries = r.n

-- name: ack
DELETE FROM {s}.messages m USING unnest($1::int8[], $2::text[], $3::int4[]) AS r(id, owner, n)
WHERE m.id = r.id AND m.owner = r.owner AND m.deliveries = r.n

-- name: ack_with_result
-- Receipts, task ids, results and TTLs of many deliveries; a task id twice keeps its last result.
WITH r AS (
    SELECT * FROM unnest($1::int8[], $2::text[], $3::int4[], $4::text[], $5::bytea[],
        $6::float8[]) WITH ORDINALITY AS r(id, owner, n, task_id, data, ttl, i)
),
acked AS (
    DELETE FROM {s}.messages m USING r
    WHERE m.id = r.id AND m.owner = r.owner AND m.deliveries = r.n
),
stored AS (
    INSERT INTO {s}.results (task_id, data, expires_at)
    SELECT DISTINCT ON (task_id) task_id, data, {now} + ttl FROM r ORDER BY task_id, i DESC
    ON CONFLICT (task_id) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at
)
SELECT pg_notify($7, task_id) FROM r

-- name: release
WITH back AS (
    UPDATE {s}.messages SET body = coalesce($4, body), available_at = {now} + $5,
        eta = CASE WHEN $5 > 0 THEN {now} + $5 END, owner = NULL
    WHERE id = $1 AND owner = $2 AND deliveries = $3 RETURNING 1
)
SELECT pg_notify($6, '') FROM back

-- name: dead_letter
WITH gone AS (
    DELETE FROM {s}.messages WHERE id = $1 AND owner = $2 AND deliveries = $3
    RETURNING queue, priority
)
INSERT INTO {s}.dead_letters (task_id, queue, priority, body, reason, failed_at)
SELECT coalesce(nullif($4, ''), '<row ' || $1 || '>'), queue, priority, $5, $6, {now} FROM gone
ON CONFLICT (task_id) DO UPDATE SET queue = EXCLUDED.queue, priority = EXCLUDED.priority,
    body = EXCLUDED.body, reason = EXCLUDED.reason, failed_at = EXCLUDED.failed_at

-- name: locate
SELECT owner, available_at <= {now} AS ready FROM {s}.messages WHERE task_id = $1

-- name: remove
DELETE FROM {s}.messages WHERE task_id = $1 AND (owner IS NULL OR available_at <= {now})

-- name: stats
SELECT queue, count(*) FILTER (WHERE available_at <= now.t) AS ready,
    count(*) FILTER (WHERE available_at > now.t AND owner IS NULL) AS scheduled,
    count(*) FILTER (WHERE available_at > now.t AND owner IS NOT NULL) AS running
FROM {s}.messages, (SELECT {now} AS t) now GROUP BY queue ORDER BY queue

-- name: purge
DELETE FROM {s}.messages WHERE ($1::text IS NULL OR queue = $1)
AND (owner IS NULL OR available_at <= {now})

-- name: dead_letters
SELECT task_id, queue, body, reason, failed_at, priority FROM {s}.dead_letters
ORDER BY failed_at, id LIMIT $1

-- name: drop_dead
DELETE FROM {s}.dead_letters d USING unnest($1::text[], $2::float8[]) AS r(task_id, failed_at)
WHERE d.task_id = r.task_id AND d.failed_at = r.failed_at

-- Results: `results` and `progress` rows expire; a stream's rows share their expiry.

-- name: set_result
WITH stored AS (
    INSERT INTO {s}.results (task_id, data, expires_at) VALUES ($1, $2, {now} + $3)
    ON CONFLICT (task_id) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at
)
SELECT pg_notify($4, $1)

-- name: get_result
SELECT data FROM {s}.results WHERE task_id = $1 AND (expires_at IS NULL OR expires_at > {now})

-- name: set_progress
INSERT INTO {s}.progress (task_id, data, expires_at) VALUES ($1, $2, {now} + $3)
ON CONFLICT (task_id) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at

-- name: get_progress
SELECT data FROM {s}.progress WHERE task_id = $1 AND (expires_at IS NULL OR expires_at > {now})

-- name: drop_expired_stream
DELETE FROM {s}.stream_items WHERE task_id = $1 AND expires_at <= {now}

-- name: push
WITH opened AS (DELETE FROM {s}.stream_items WHERE task_id = $1 AND seq = -1)
INSERT INTO {s}.stream_items (task_id, seq, data)
SELECT $1, last.n + u.i - 1, u.item
FROM unnest($2::bytea[]) WITH ORDINALITY AS u(item, i),
    (SELECT coalesce(max(seq) + 1, 0) AS n FROM {s}.stream_items
     WHERE task_id = $1 AND seq >= 0) last

-- name: close
INSERT INTO {s}.stream_items (task_id, seq) VALUES ($1, -1) ON CONFLICT DO NOTHING

-- name: renew_stream
UPDATE {s}.stream_items SET expires_at = {now} + $2 WHERE task_id = $1

-- name: read
SELECT seq, data FROM {s}.stream_items
WHERE task_id = $1 AND (seq >= $2 OR seq = -1) AND (expires_at IS NULL OR expires_at > {now})
ORDER BY seq

-- name: delete_stream
DELETE FROM {s}.stream_items WHERE task_id = $1

-- name: delete_results
WITH r AS (DELETE FROM {s}.results WHERE task_id = $1),
p AS (DELETE FROM {s}.progress WHERE task_id = $1)
DELETE FROM {s}.stream_items WHERE task_id = $1

-- The state store. A read-then-write primitive holds the advisory lock of its key (`lock`).

-- name: get
SELECT value FROM {s}.kv WHERE key = $1 AND (expires_at IS NULL OR expires_at > {now})

-- name: get_many
SELECT key, value FROM {s}.kv
WHERE key = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > {now})

-- name: set
INSERT INTO {s}.kv (key, value, expires_at) VALUES ($1, $2, {now} + $3)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at

-- name: set_nx
INSERT INTO {s}.kv AS k (key, value, expires_at) VALUES ($1, $2, {now} + $3)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
WHERE k.expires_at IS NOT NULL AND k.expires_at <= {now} RETURNING 1

-- name: delete
DELETE FROM {s}.kv WHERE key = $1 RETURNING (expires_at IS NULL OR expires_at > {now})

-- name: incr
INSERT INTO {s}.kv AS k (key, value, expires_at)
VALUES ($1, convert_to($2::int8::text, 'UTF8'), {now} + $3)
ON CONFLICT (key) DO UPDATE SET
    value = convert_to((CASE WHEN k.expires_at IS NULL OR k.expires_at > {now}
        THEN convert_from(k.value, 'UTF8')::int8 ELSE 0 END + $2)::text, 'UTF8'),
    expires_at = CASE WHEN k.expires_at IS NULL OR k.expires_at > {now}
        THEN k.expires_at ELSE EXCLUDED.expires_at END
RETURNING convert_from(value, 'UTF8')::int8

-- name: scan
SELECT key, value FROM {s}.kv
WHERE key LIKE $1 AND (expires_at IS NULL OR expires_at > {now})

-- name: lock
SELECT pg_advisory_xact_lock(hashtext($1))

-- name: set_expired
DELETE FROM {s}.set_members WHERE key = $1 AND expires_at <= {now}

-- name: set_add
INSERT INTO {s}.set_members (key, member, expires_at)
SELECT $1, $2, coalesce({now} + $3,
    (SELECT max(expires_at) FROM {s}.set_members WHERE key = $1))
ON CONFLICT DO NOTHING

-- name: set_renew
UPDATE {s}.set_members SET expires_at = {now} + $2 WHERE key = $1

-- name: set_size
SELECT count(*) FROM {s}.set_members WHERE key = $1

-- name: window_expired
DELETE FROM {s}.rate_grants WHERE key = $1 AND expires_at <= {now}

-- name: window
SELECT count(*), min(expires_at) - {now} FROM {s}.rate_grants WHERE key = $1

-- name: grant
INSERT INTO {s}.rate_grants (key, expires_at) VALUES ($1, {now} + $2)

-- Housekeeping: expired rows of every table, about once a minute per process.

-- name: sweep
WITH kv AS (DELETE FROM {s}.kv WHERE expires_at <= {now}),
sm AS (DELETE FROM {s}.set_members WHERE expires_at <= {now}),
rg AS (DELETE FROM {s}.rate_grants WHERE expires_at <= {now}),
r AS (DELETE FROM {s}.results WHERE expires_at <= {now}),
p AS (DELETE FROM {s}.progress WHERE expires_at <= {now})
DELETE FROM {s}.stream_items WHERE expires_at <= {now}

-- name: vacuum
VACUUM (SKIP_LOCKED) {s}.messages

-- name: version
SELECT max(version) FROM {s}.version
