-- Which replica holds each node's hub relay stream (docs/hub.md, "The relay across
-- replicas"): two nodes that both need the relay meet on the replica of the lower peer ID.
-- A row belongs to the database session of the replica that wrote it (`pid` and
-- `backend_start` name that session, so a reused pid is not mistaken for it): once that
-- session is gone (the replica was killed, or lost its connection) the row is dead, and
-- readers ignore it until a live replica removes it (or the owner writes it again).
CREATE TABLE relay_presence (
    node bytea PRIMARY KEY,
    replica text NOT NULL,
    pid integer NOT NULL,
    backend_start timestamptz NOT NULL
);
