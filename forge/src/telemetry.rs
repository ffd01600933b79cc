//! Recording of an update to an MCAP file that Foxglove can replay.
//!
//! Invariant: every message is JSON described by a JSON schema registered on its
//! channel (message encoding `json`, schema encoding `jsonschema`), so Foxglove plots
//! any numeric field without a plugin; topics are the constants below, which
//! `docs/demos/ota_resilient/foxglove_layout.json` refers to.
//!
//! This is an IO shell: it writes a file. Times are given by the caller (nanoseconds
//! since the Unix epoch), so a recording is reproducible from its inputs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result, io};
use crate::state::{Progress, StateEvent, UpdateState};

/// Update state changes.
pub const STATE_TOPIC: &str = "/forge/state";
/// Progress samples.
pub const PROGRESS_TOPIC: &str = "/forge/progress";
/// The topic the shell feeds the control loop's latency into (microseconds).
pub const CONTROL_LOOP_TOPIC: &str = "/control_loop/latency_us";

#[derive(Serialize)]
struct StateMsg<'a> {
    state: &'static str,
    /// Position in [`UpdateState::ALL`], for plotting a state as a number.
    state_code: usize,
    version: &'a str,
    percent: f64,
    chunks_done: u32,
    chunk_count: u32,
    bytes_retransferred: u64,
    verified_bytes_refetched: u64,
    chunk: Option<u32>,
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct ProgressMsg {
    percent: f64,
    chunks_done: u32,
    chunks_durable: u32,
    chunk_count: u32,
    bytes_done: u64,
    bytes_transferred: u64,
    bytes_retransferred: u64,
    verified_bytes_refetched: u64,
    rate_mbytes_per_sec: f64,
}

#[derive(Serialize)]
struct SeriesMsg {
    value: f64,
}

fn state_schema() -> serde_json::Value {
    json!({
        "title": "bauxite.forge.State",
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": UpdateState::ALL.iter().map(|s| s.name()).collect::<Vec<_>>()},
            "state_code": {"type": "integer"},
            "version": {"type": "string"},
            "percent": {"type": "number"},
            "chunks_done": {"type": "integer"},
            "chunk_count": {"type": "integer"},
            "bytes_retransferred": {"type": "integer"},
            "verified_bytes_refetched": {"type": "integer"},
            "chunk": {"type": ["integer", "null"]},
            "detail": {"type": ["string", "null"]}
        },
        "required": ["state", "state_code", "version", "percent"]
    })
}

fn progress_schema() -> serde_json::Value {
    json!({
        "title": "bauxite.forge.Progress",
        "type": "object",
        "properties": {
            "percent": {"type": "number"},
            "chunks_done": {"type": "integer"},
            "chunks_durable": {"type": "integer"},
            "chunk_count": {"type": "integer"},
            "bytes_done": {"type": "integer"},
            "bytes_transferred": {"type": "integer"},
            "bytes_retransferred": {"type": "integer"},
            "verified_bytes_refetched": {"type": "integer"},
            "rate_mbytes_per_sec": {"type": "number"}
        },
        "required": ["percent", "chunks_done", "chunk_count"]
    })
}

fn series_schema() -> serde_json::Value {
    json!({
        "title": "bauxite.Series",
        "type": "object",
        "properties": {"value": {"type": "number"}},
        "required": ["value"]
    })
}

/// Writes an MCAP recording.
pub struct Recorder {
    path: PathBuf,
    writer: mcap::Writer<BufWriter<File>>,
    channels: BTreeMap<String, u16>,
    sequence: u32,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Creates (or truncates) the recording at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(io("create", path))?;
        let writer = mcap::WriteOptions::new()
            .compression(None)
            .profile("")
            .create(BufWriter::new(file))
            .map_err(|e| telemetry(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            channels: BTreeMap::new(),
            sequence: 0,
        })
    }

    fn channel(&mut self, topic: &str, schema: fn() -> serde_json::Value) -> Result<u16> {
        if let Some(id) = self.channels.get(topic) {
            return Ok(*id);
        }
        let s = schema();
        let name = s["title"].as_str().unwrap_or("bauxite.Message").to_owned();
        let bytes = serde_json::to_vec(&s).map_err(|e| telemetry(&self.path, e))?;
        let schema_id = self
            .writer
            .add_schema(&name, "jsonschema", &bytes)
            .map_err(|e| telemetry(&self.path, e))?;
        let id = self
            .writer
            .add_channel(schema_id, topic, "json", &BTreeMap::new())
            .map_err(|e| telemetry(&self.path, e))?;
        self.channels.insert(topic.to_owned(), id);
        Ok(id)
    }

    fn write(&mut self, channel_id: u16, log_time_ns: u64, msg: &impl Serialize) -> Result<()> {
        let data = serde_json::to_vec(msg).map_err(|e| telemetry(&self.path, e))?;
        self.sequence = self.sequence.wrapping_add(1);
        self.writer
            .write_to_known_channel(
                &mcap::records::MessageHeader {
                    channel_id,
                    sequence: self.sequence,
                    log_time: log_time_ns,
                    publish_time: log_time_ns,
                },
                &data,
            )
            .map_err(|e| telemetry(&self.path, e))
    }

    /// Records a state change on [`STATE_TOPIC`].
    pub fn record_state(&mut self, log_time_ns: u64, ev: &StateEvent) -> Result<()> {
        let id = self.channel(STATE_TOPIC, state_schema)?;
        let msg = StateMsg {
            state: ev.state.name(),
            state_code: UpdateState::ALL
                .iter()
                .position(|s| *s == ev.state)
                .unwrap_or(0),
            version: &ev.version,
            percent: ev.progress.percent(),
            chunks_done: ev.progress.chunks_done,
            chunk_count: ev.progress.chunk_count,
            bytes_retransferred: ev.progress.bytes_retransferred,
            verified_bytes_refetched: ev.progress.verified_bytes_refetched,
            chunk: ev.chunk,
            detail: ev.detail.as_deref(),
        };
        self.write(id, log_time_ns, &msg)
    }

    /// Records a progress sample on [`PROGRESS_TOPIC`].
    pub fn record_progress(&mut self, log_time_ns: u64, p: &Progress) -> Result<()> {
        let id = self.channel(PROGRESS_TOPIC, progress_schema)?;
        let msg = ProgressMsg {
            percent: p.percent(),
            chunks_done: p.chunks_done,
            chunks_durable: p.chunks_durable,
            chunk_count: p.chunk_count,
            bytes_done: p.bytes_done,
            bytes_transferred: p.bytes_transferred,
            bytes_retransferred: p.bytes_retransferred,
            verified_bytes_refetched: p.verified_bytes_refetched,
            rate_mbytes_per_sec: p.rate_bytes_per_sec / 1e6,
        };
        self.write(id, log_time_ns, &msg)
    }

    /// Records one value of any `f64` series (such as [`CONTROL_LOOP_TOPIC`]) on `topic`.
    pub fn record_series(&mut self, log_time_ns: u64, topic: &str, value: f64) -> Result<()> {
        let id = self.channel(topic, series_schema)?;
        self.write(id, log_time_ns, &SeriesMsg { value })
    }

    /// Ends the current chunk and hands everything recorded so far to the OS, so a
    /// process killed later (a power cut in the demonstration) leaves a file readable up
    /// to here, without its summary. Call it periodically (e.g. once a second).
    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(|e| telemetry(&self.path, e))
    }

    /// Writes the summary and closes the file.
    pub fn finish(mut self) -> Result<()> {
        self.writer.finish().map_err(|e| telemetry(&self.path, e))?;
        Ok(())
    }
}

fn telemetry(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Telemetry {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}
