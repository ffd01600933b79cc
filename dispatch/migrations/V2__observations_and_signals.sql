-- Shared between replicas (issue 13): what nodes report about themselves (candidate
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
