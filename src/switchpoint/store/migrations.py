"""The store's schema: the migration that brings a file of each version to the next (run in
order by :func:`~switchpoint.store.schema.upgrade_schema`), and the bounds its triggers hold
that the store's other modules read too (what retention prunes and keeps, the promotions and the
ended experiments kept, how far back a start looks in the spend ledger)."""

from __future__ import annotations

from switchpoint.store.sums import (
    STAT_COUNTS,
    error_totals,
    stat_backfill,
    stat_drop,
    stat_table,
    stat_triggers,
)

SCHEMA_VERSION = 25


#: How far back a start looks in the spend ledger for reservations that may still be open, from
#: its last row (the process that wrote it was running then, so none of its reservations is
#: older) or from now, whichever is earlier: past the longest a reservation can hold (a
#: request's deadline, gateway.max_total_s, is at most a day, plus its grace), so a start never
#: frees one early, and however long the service stayed down, it finds those its last run left
#: open (see switchpoint.governance.ledger; migration 18 closes those further back).
LEDGER_LOOKBACK_S = 2 * 86400.0

#: The promotions of one experiment the store keeps, the newest (the last applies).
PROMOTIONS_KEPT = 100
#: The experiments created at run time and since ended that the store keeps (their names stay
#: taken and their reports readable), the newest; an older one goes as another one ends.
ENDED_KEPT = 100

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE decisions (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        selected_model TEXT NOT NULL,
        cluster_id INTEGER NOT NULL,
        cost_weight REAL NOT NULL,
        candidates TEXT NOT NULL,
        cache_hit INTEGER NOT NULL,
        routing_ms REAL NOT NULL,
        embedding_ms REAL NOT NULL,
        policy TEXT NOT NULL,
        weights_id TEXT NOT NULL,
        expected_error REAL NOT NULL,
        cost_adjusted_score REAL NOT NULL
    );
    CREATE INDEX decisions_ts ON decisions (ts);
    CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    """,
    2: """
    CREATE TABLE requests (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        ts REAL NOT NULL,
        session_id TEXT,
        requested_model TEXT NOT NULL,
        routed_model TEXT,
        model TEXT,
        upstream_model TEXT,
        models_tried TEXT NOT NULL,
        attempts TEXT NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        error_kind TEXT,
        error TEXT,
        escalated INTEGER NOT NULL,
        pin_state TEXT NOT NULL,
        pin TEXT NOT NULL,
        stream INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost_usd REAL,
        cluster_id INTEGER,
        expected_error REAL,
        routing_ms REAL,
        decision_id TEXT,
        reasoning TEXT NOT NULL,
        excluded TEXT NOT NULL
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_session ON requests (session_id);
    CREATE TRIGGER requests_no_update BEFORE UPDATE ON requests
        BEGIN SELECT RAISE(ABORT, 'requests are append-only'); END;
    CREATE TRIGGER requests_no_delete BEFORE DELETE ON requests
        BEGIN SELECT RAISE(ABORT, 'requests are append-only'); END;
    """,
    # Who asked (client key id, tenant), what budgets were charged, what governance decided;
    # the spend ledger (see switchpoint.governance.ledger).
    3: """
    ALTER TABLE requests ADD COLUMN key_id TEXT;
    ALTER TABLE requests ADD COLUMN tenant TEXT;
    ALTER TABLE requests ADD COLUMN charged_usd REAL;
    CREATE INDEX requests_tenant ON requests (tenant, ts);
    CREATE INDEX requests_decision ON requests (decision_id);
    ALTER TABLE decisions ADD COLUMN key_id TEXT;
    ALTER TABLE decisions ADD COLUMN tenant TEXT;
    ALTER TABLE decisions ADD COLUMN expected_errors TEXT;
    ALTER TABLE decisions ADD COLUMN expected_costs TEXT;
    ALTER TABLE decisions ADD COLUMN governance TEXT;
    CREATE TABLE spend (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        reservation_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        request_id TEXT,
        key_id TEXT,
        tenant TEXT,
        model TEXT,
        provider TEXT,
        amount_usd REAL NOT NULL,
        tokens INTEGER,
        holds TEXT,
        expires_at REAL
    );
    CREATE INDEX spend_ts ON spend (ts);
    CREATE TRIGGER spend_no_update BEFORE UPDATE ON spend
        BEGIN SELECT RAISE(ABORT, 'the spend ledger is append-only'); END;
    CREATE TRIGGER spend_no_delete BEFORE DELETE ON spend
        BEGIN SELECT RAISE(ABORT, 'the spend ledger is append-only'); END;
    """,
    # Retention: what a prune may delete (rows older than its cutoff, never retained ones).
    4: """
    CREATE TABLE prunes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        cutoff REAL NOT NULL
    );
    CREATE TRIGGER prunes_no_update BEFORE UPDATE ON prunes
        BEGIN SELECT RAISE(ABORT, 'prunes are append-only'); END;
    CREATE TRIGGER prunes_no_delete BEFORE DELETE ON prunes
        BEGIN SELECT RAISE(ABORT, 'prunes are append-only'); END;
    CREATE TRIGGER prunes_not_ahead BEFORE INSERT ON prunes
        WHEN NEW.cutoff > CAST(strftime('%s', 'now') AS REAL)
        BEGIN SELECT RAISE(ABORT, 'a retention cutoff cannot be in the future'); END;
    DROP TRIGGER decisions_no_delete;
    CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
        WHEN OLD.ts >= coalesce((SELECT max(cutoff) FROM prunes), 0)
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    DROP TRIGGER requests_no_delete;
    CREATE TRIGGER requests_no_delete BEFORE DELETE ON requests
        WHEN OLD.ts >= coalesce((SELECT max(cutoff) FROM prunes), 0)
        BEGIN SELECT RAISE(ABORT, 'requests are append-only'); END;
    """,
    # Learning from outcomes (see switchpoint.store.learning): the feedback log (append-only,
    # replayed on every start and reload), the decisions still open to feedback (bounded to
    # the learning memory), who chose each decision and its experiment arm, promotions.
    5: """
    CREATE TABLE feedback (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        tenant TEXT NOT NULL,
        decision_id TEXT NOT NULL,
        model TEXT NOT NULL,
        served TEXT,
        quality REAL NOT NULL,
        weight REAL NOT NULL,
        chosen TEXT,
        cost REAL,
        embedding BLOB,
        units TEXT,
        weights_id TEXT,
        key_id TEXT,
        comment TEXT
    );
    CREATE INDEX feedback_decision ON feedback (decision_id, tenant);
    CREATE INDEX feedback_tenant ON feedback (tenant, seq);
    CREATE TRIGGER feedback_no_update BEFORE UPDATE ON feedback
        BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
    CREATE TRIGGER feedback_no_delete BEFORE DELETE ON feedback
        BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
    CREATE TABLE pending (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        decision_id TEXT NOT NULL UNIQUE,
        ts REAL NOT NULL,
        tenant TEXT NOT NULL,
        chosen TEXT NOT NULL,
        candidates TEXT NOT NULL,
        embedding BLOB,
        units TEXT,
        expected_cost REAL,
        weights_id TEXT NOT NULL
    );
    ALTER TABLE decisions ADD COLUMN source TEXT;
    ALTER TABLE decisions ADD COLUMN memory_fallback TEXT;
    ALTER TABLE decisions ADD COLUMN experiment TEXT;
    ALTER TABLE decisions ADD COLUMN arm TEXT;
    CREATE INDEX decisions_experiment ON decisions (experiment, arm);
    CREATE TABLE promotions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        experiment TEXT NOT NULL,
        arm TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TRIGGER promotions_no_update BEFORE UPDATE ON promotions
        BEGIN SELECT RAISE(ABORT, 'promotions are append-only'); END;
    CREATE TRIGGER promotions_no_delete BEFORE DELETE ON promotions
        BEGIN SELECT RAISE(ABORT, 'promotions are append-only'); END;
    """,
    # Preference comparisons waiting for their scores (bounded, expiring), so a score sent
    # after a restart still teaches.
    6: """
    CREATE TABLE compares (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        compare_id TEXT NOT NULL UNIQUE,
        ts REAL NOT NULL,
        expires REAL NOT NULL,
        tenant TEXT NOT NULL,
        labels TEXT NOT NULL,
        answered TEXT NOT NULL,
        embedding BLOB NOT NULL,
        units TEXT,
        weights_id TEXT NOT NULL
    );
    """,
    # What an answer really cost, when its feedback said so (teaches the units' costs).
    7: """
    ALTER TABLE feedback ADD COLUMN measured_cost REAL;
    """,
    # The prompt's tokens as a priced catalog estimated them, so a measured cost reported later
    # is read against the price the decision was made on; what each compared answer cost.
    8: """
    ALTER TABLE pending ADD COLUMN prompt_tokens INTEGER;
    ALTER TABLE compares ADD COLUMN costs TEXT;
    """,
    # Why a request was made when not for a client's own conversation ("compare": one answer
    # of a preference comparison, scored through the comparison, never as feedback).
    9: """
    ALTER TABLE requests ADD COLUMN purpose TEXT;
    """,
    # Comparisons are capped per tenant: each tenant's newest, in order.
    10: """
    CREATE INDEX compares_by_tenant ON compares (tenant, seq);
    """,
    # Whether a comparison's answers were blind, and when a score revealed its models (a blind
    # comparison takes no score after that). A comparison kept before reads as blind.
    11: """
    ALTER TABLE compares ADD COLUMN blind INTEGER;
    ALTER TABLE compares ADD COLUMN revealed REAL;
    """,
    # Retention prunes the spend ledger too, but never a row the budgets still read: those of
    # the calendar month under way and of the week before it (a week that began in the month
    # before; a reservation still open looks back a day). See LEDGER_KEEP_S.
    12: """
    DROP TRIGGER spend_no_delete;
    CREATE TRIGGER spend_no_delete BEFORE DELETE ON spend
        WHEN OLD.ts >= min(coalesce((SELECT max(cutoff) FROM prunes), 0),
                           CAST(strftime('%s', 'now', 'start of month') AS REAL) - 604800)
        BEGIN SELECT RAISE(ABORT, 'the spend ledger is append-only'); END;
    """,
    # The stats' totals, kept as the logs grow and shrink (in the transaction that inserts or
    # prunes a row), so that reading them costs the number of groups, not of logged rows: made
    # by migration 16, as they are kept now (a file of version 13 to 15 has them with float
    # costs, which 16 makes again), so an older file counts its rows into them once.
    13: "",
    # The prunes table stays small: a prune deletes the rows behind the newest it keeps (see
    # PRUNES_KEPT), never the newest row nor the one holding the latest cutoff, which the
    # triggers read.
    14: """
    DROP TRIGGER prunes_no_delete;
    CREATE TRIGGER prunes_no_delete BEFORE DELETE ON prunes
        WHEN OLD.seq = (SELECT max(seq) FROM prunes)
          OR OLD.cutoff > coalesce((SELECT max(cutoff) FROM prunes WHERE seq <> OLD.seq), -1)
        BEGIN SELECT RAISE(ABORT, 'the newest prune and the latest cutoff stay'); END;
    """,
    # A cutoff is compared with the clock to the millisecond SQLite keeps (plus that much for
    # the float that holds it), not to the whole second: a cutoff less than a second old was
    # refused as "in the future".
    15: """
    DROP TRIGGER prunes_not_ahead;
    CREATE TRIGGER prunes_not_ahead BEFORE INSERT ON prunes
        WHEN NEW.cutoff > (julianday('now') - 2440587.5) * 86400.0 + 0.002
        BEGIN SELECT RAISE(ABORT, 'a retention cutoff cannot be in the future'); END;
    """,
    # The stats' totals (see 13), their costs in whole nano-dollars, not as float sums that
    # drifted from a scan as rows were logged and pruned (and went below zero once all were
    # pruned): made again, and counted from the rows the logs hold.
    16: stat_drop() + STAT_COUNTS,
    # What each compared answer really was (its request id, finish reason, failure), which a
    # blind comparison shows only once a score reveals its models.
    17: """
    ALTER TABLE compares ADD COLUMN details TEXT;
    """,
    # A reservation an earlier version left open (its process stopped mid-request, and that
    # version's next start wrote no expiry), with later runs' rows after it, lies further back
    # than a start looks (LEDGER_LOOKBACK_S before the ledger's last row) and stayed open in the
    # table for good, holding nothing. Each is closed once with the ``expire`` row a start
    # writes, dated at its expiry: never after the ledger's last row, from which a start looks
    # back (those a start does see are left to it).
    18: f"""
    INSERT INTO spend (ts, reservation_id, kind, key_id, tenant, amount_usd, expires_at)
    SELECT min(coalesce(r.expires_at, r.ts), last.ts), r.reservation_id, 'expire', r.key_id,
           r.tenant, 0.0, r.expires_at
    FROM spend AS r, (SELECT max(ts) AS ts FROM spend) AS last
    WHERE r.kind = 'reserve' AND r.ts < last.ts - {LEDGER_LOOKBACK_S!r}
      AND r.reservation_id NOT IN (SELECT reservation_id FROM spend WHERE kind != 'reserve')
    ORDER BY r.seq;
    """,
    # The stats' totals per tenant (see 16), kept the same way, so that one tenant's stats cost
    # the number of its groups, not a read of its rows (an index by tenant did not help: the
    # rows are read whole, and one at a time by the index, slower than the scan it replaced).
    # Made again if there, as 16 makes the totals.
    19: stat_drop(by_tenant=True) + stat_table(by_tenant=True) + stat_triggers(by_tenant=True)
    + stat_backfill(by_tenant=True),
    20: error_totals(),
    # Retention prunes the feedback log too, but only rows older than its cutoff, and of those
    # only the ones the learning checkpoint already holds (see switchpoint.store.retention):
    # what was learned from them is in the checkpoint, which a start takes up.
    21: """
    DROP TRIGGER feedback_no_delete;
    CREATE TRIGGER feedback_no_delete BEFORE DELETE ON feedback
        WHEN OLD.ts >= coalesce((SELECT max(cutoff) FROM prunes), 0)
        BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
    """,
    # An experiment keeps its newest PROMOTIONS_KEPT promotions (the last one is the one that
    # applies): older ones go as a new one is written, and no other delete is let through.
    # And an experiment's decisions retention prunes still count in its report: each, as it is
    # deleted, adds to its arm's kept totals what the report read of it then (its rows, with
    # one per gateway request made for it; the cost of those answered; the latest outcome
    # of each tenant about it, as moments: how many, their sum and sum of squares, how many
    # were 1 and how many neither 0 nor 1, the lowest and the highest). Retention deletes
    # decisions before requests and feedback, so both are still there to read.
    22: f"""
    DROP TRIGGER IF EXISTS promotions_no_delete;
    CREATE TRIGGER promotions_no_delete BEFORE DELETE ON promotions
        WHEN (SELECT count(*) FROM promotions p WHERE p.experiment = OLD.experiment
              AND p.seq > OLD.seq) < {PROMOTIONS_KEPT}
        BEGIN SELECT RAISE(ABORT, 'promotions are append-only'); END;
    CREATE TRIGGER IF NOT EXISTS promotions_kept AFTER INSERT ON promotions
        BEGIN
            DELETE FROM promotions WHERE experiment = NEW.experiment AND seq < (
                SELECT min(seq) FROM (SELECT seq FROM promotions
                                      WHERE experiment = NEW.experiment
                                      ORDER BY seq DESC LIMIT {PROMOTIONS_KEPT}));
        END;
    CREATE TABLE IF NOT EXISTS experiment_kept (
        experiment TEXT NOT NULL,
        arm TEXT NOT NULL,
        decisions INTEGER NOT NULL DEFAULT 0,
        cost_sum REAL NOT NULL DEFAULT 0,
        cost_n INTEGER NOT NULL DEFAULT 0,
        n INTEGER NOT NULL DEFAULT 0,
        total REAL NOT NULL DEFAULT 0,
        squares REAL NOT NULL DEFAULT 0,
        ones INTEGER NOT NULL DEFAULT 0,
        others INTEGER NOT NULL DEFAULT 0,
        low REAL,
        high REAL,
        PRIMARY KEY (experiment, arm)
    );
    CREATE TRIGGER IF NOT EXISTS experiment_kept_on_prune AFTER DELETE ON decisions
        WHEN OLD.experiment IS NOT NULL AND OLD.arm IS NOT NULL
        BEGIN
            INSERT INTO experiment_kept (experiment, arm, decisions, cost_sum, cost_n, n,
                                         total, squares, ones, others, low, high)
            SELECT OLD.experiment, OLD.arm,
                   max(1, (SELECT count(*) FROM requests WHERE decision_id = OLD.id)),
                   coalesce((SELECT sum(cost_usd) FROM requests WHERE decision_id = OLD.id),
                            0),
                   (SELECT count(cost_usd) FROM requests WHERE decision_id = OLD.id),
                   count(q), coalesce(sum(q), 0), coalesce(sum(q * q), 0),
                   count(CASE WHEN q = 1.0 THEN 1 END),
                   count(CASE WHEN q != 0.0 AND q != 1.0 THEN 1 END), min(q), max(q)
            FROM (SELECT f.quality AS q FROM feedback f WHERE f.decision_id = OLD.id
                  AND f.seq = (SELECT max(g.seq) FROM feedback g
                               WHERE g.decision_id = f.decision_id AND g.tenant = f.tenant))
            WHERE true
            ON CONFLICT (experiment, arm) DO UPDATE SET
                decisions = decisions + excluded.decisions,
                cost_sum = cost_sum + excluded.cost_sum,
                cost_n = cost_n + excluded.cost_n,
                n = n + excluded.n,
                total = total + excluded.total,
                squares = squares + excluded.squares,
                ones = ones + excluded.ones,
                others = others + excluded.others,
                low = CASE WHEN excluded.low IS NULL THEN low WHEN low IS NULL THEN excluded.low
                           ELSE min(low, excluded.low) END,
                high = CASE WHEN excluded.high IS NULL THEN high
                            WHEN high IS NULL THEN excluded.high
                            ELSE max(high, excluded.high) END;
        END;
    """,
    # Experiments created at run time (see switchpoint.store.learning): one row each, in the
    # order they were made, holding the experiment as the config would write it; the only
    # change a row takes is its end (once), and the only rows deleted are ended ones past the
    # newest ENDED_KEPT of them, as another one ends.
    23: f"""
    CREATE TABLE IF NOT EXISTS runtime_experiments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        experiment TEXT NOT NULL,
        split REAL,
        ended REAL
    );
    CREATE TRIGGER IF NOT EXISTS runtime_experiments_no_update
        BEFORE UPDATE ON runtime_experiments
        WHEN OLD.ended IS NOT NULL OR NEW.ended IS NULL OR NEW.seq IS NOT OLD.seq
          OR NEW.name IS NOT OLD.name OR NEW.created IS NOT OLD.created
          OR NEW.experiment IS NOT OLD.experiment OR NEW.split IS NOT OLD.split
        BEGIN SELECT RAISE(ABORT, 'a run-time experiment only ends, once'); END;
    CREATE TRIGGER IF NOT EXISTS runtime_experiments_no_delete
        BEFORE DELETE ON runtime_experiments
        WHEN OLD.ended IS NULL OR (SELECT count(*) FROM runtime_experiments r
                                   WHERE r.ended IS NOT NULL AND r.seq > OLD.seq) < {ENDED_KEPT}
        BEGIN SELECT RAISE(ABORT, 'run-time experiments are kept'); END;
    CREATE TRIGGER IF NOT EXISTS runtime_experiments_kept
        AFTER UPDATE OF ended ON runtime_experiments
        BEGIN
            DELETE FROM runtime_experiments WHERE ended IS NOT NULL AND seq < (
                SELECT min(seq) FROM (SELECT seq FROM runtime_experiments
                                      WHERE ended IS NOT NULL
                                      ORDER BY seq DESC LIMIT {ENDED_KEPT}));
        END;
    """,
    # The hash of the prompt each decision still open to feedback routed on (NULL for one
    # kept before, or routed from an embedding alone), so that an outcome naming a decision
    # by its prompt finds one made before a restart or a reload: the newest row of a prompt,
    # of one tenant or of any, is read from an index, not by a scan.
    24: """
    ALTER TABLE pending ADD COLUMN prompt_hash TEXT;
    CREATE INDEX IF NOT EXISTS pending_prompt ON pending (prompt_hash, seq);
    CREATE INDEX IF NOT EXISTS pending_tenant_prompt ON pending (tenant, prompt_hash, seq);
    """,
    # Models registered at run time (see switchpoint.store.learning): one row each, in the
    # order they were registered, holding the model as the config's models: would write it;
    # a row never changes, and goes as its model is unregistered.
    25: """
    CREATE TABLE IF NOT EXISTS runtime_models (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        card TEXT NOT NULL
    );
    CREATE TRIGGER IF NOT EXISTS runtime_models_no_update BEFORE UPDATE ON runtime_models
        BEGIN SELECT RAISE(ABORT, 'a registered model is unregistered, never changed'); END;
    """,
}
# The tables retention prunes, oldest rows first.
LOG_TABLES = ("decisions", "requests")
# ... and the spend ledger, whose rows from LEDGER_KEEP_S before the month under way began are
# kept whatever the retention (migration 12's trigger holds the same bound).
LEDGER_TABLE = "spend"
LEDGER_KEEP_S = 7 * 86_400
# The newest rows of the prunes table a prune keeps; it also keeps the one with the latest
# cutoff, the only figure the triggers read (migration 14's trigger refuses deleting it).
PRUNES_KEPT = 64
