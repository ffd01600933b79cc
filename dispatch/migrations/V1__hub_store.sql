-- The hub's store on PostgreSQL (dispatch/src/store/postgres.rs): the same records as the
-- redb file, postcard-encoded, keyed by the same bytes, so both backends list in the same
-- order (bytea compares bytewise).

-- Small records by name: policy, topology_version, hub_node.
CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL);

-- The end of the audit chain: exactly one row, locked FOR UPDATE by every commit, which
-- serialises all writers of all replicas and keeps the hash chain from forking.
CREATE TABLE audit_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    len bigint NOT NULL CHECK (len >= 0),
    hash bytea NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO audit_head (id, len, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE audit (idx bigint PRIMARY KEY CHECK (idx >= 0), entry bytea NOT NULL);
CREATE TABLE tokens (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE nodes (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE pending (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE packages (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE assignments (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE update_reports (id bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE operator_signatures (id bytea PRIMARY KEY, value bytea NOT NULL);
