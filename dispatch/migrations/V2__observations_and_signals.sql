-- Shared between replicas (issue 13): every committed change, so a replica applies what
-- the others committed instead of re-reading every table (dispatch/src/hub/replica.rs);
-- what nodes report about themselves (candidate
-- addresses, ROS discovery role), so a node's peers on another replica see it, and the
-- signaling messages waiting for a node that is not connected to the replica that
-- received them (dispatch/src/store/postgres/signals.rs).

-- One row per node: a postcard `ObservedRecord`. Observations, not operator changes:
-- never audited, rewritten whenever the node reports again.
CREATE TABLE observations (id bytea PRIMARY KEY, value bytea NOT NULL);

-- Signals in arrival order for a destination node; taken (deleted) by the replica that
-- delivers them, at most 64 kept per destination (older ones are trimmed on insert).
CREATE TABLE signals (
    seq bigserial PRIMARY KEY,
    to_node bytea NOT NULL,
    message bytea NOT NULL
);
CREATE INDEX signals_to_node ON signals (to_node, seq);

-- The change log: one postcard `Change` per commit, numbered in commit order (every commit
-- holds the audit_head row lock when it takes its number). Old entries are pruned; a
-- replica that fell further behind than meta 'changes_pruned_below' re-reads everything.
CREATE TABLE changes (seq bigserial PRIMARY KEY, change bytea NOT NULL);
