//! One MCAP recording of the whole demonstration: every message of the agent's own
//! recordings (one per update attempt, a cut one readable up to its last flush), in time
//! order, plus `/demo/event` (trial, phase, what the orchestrator did or saw), so
//! `foxglove_layout.json` shows the three phases of every trial on one timeline.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::json;

/// A demonstration event for `/demo/event`.
#[derive(Debug, Clone)]
pub(crate) struct DemoEvent {
    pub(crate) unix_ms: u64,
    pub(crate) trial: u32,
    pub(crate) phase: &'static str,
    pub(crate) event: String,
}

/// Topic, message encoding, schema name, schema encoding, schema bytes.
type ChannelKey = (String, String, String, String, Vec<u8>);

struct Msg {
    log_time: u64,
    channel: ChannelKey,
    data: Vec<u8>,
}

/// Reads every message of `path` up to its end or its first unreadable record.
fn read_messages(path: &Path, into: &mut Vec<Msg>) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Ok(stream) = mcap::MessageStream::new(&bytes) else {
        return Ok(());
    };
    for m in stream {
        let Ok(m) = m else { break };
        let (schema_name, schema_enc, schema_data) = match &m.channel.schema {
            Some(s) => (s.name.clone(), s.encoding.clone(), s.data.to_vec()),
            None => (String::new(), String::new(), Vec::new()),
        };
        into.push(Msg {
            log_time: m.log_time,
            channel: (
                m.channel.topic.clone(),
                m.channel.message_encoding.clone(),
                schema_name,
                schema_enc,
                schema_data,
            ),
            data: m.data.into_owned(),
        });
    }
    Ok(())
}

fn event_schema() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "title": "bauxite.DemoEvent",
        "type": "object",
        "properties": {
            "trial": {"type": "integer"},
            "phase": {"type": "string"},
            "event": {"type": "string"}
        }
    }))
    .unwrap_or_default()
}

/// Writes `out` from the agent's recordings and the demonstration's events.
pub(crate) fn merge(recordings: &[PathBuf], events: &[DemoEvent], out: &Path) -> Result<usize> {
    let mut msgs = Vec::new();
    for r in recordings {
        read_messages(r, &mut msgs)?;
    }
    let schema = event_schema();
    for e in events {
        msgs.push(Msg {
            log_time: e.unix_ms * 1_000_000,
            channel: (
                "/demo/event".into(),
                "json".into(),
                "bauxite.DemoEvent".into(),
                "jsonschema".into(),
                schema.clone(),
            ),
            data: serde_json::to_vec(&json!({
                "trial": e.trial, "phase": e.phase, "event": e.event
            }))?,
        });
    }
    msgs.sort_by_key(|m| m.log_time);

    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = mcap::WriteOptions::new()
        .compression(None)
        .profile("")
        .create(BufWriter::new(file))?;
    let mut channels: BTreeMap<ChannelKey, u16> = BTreeMap::new();
    for (seq, m) in msgs.iter().enumerate() {
        let id = match channels.get(&m.channel) {
            Some(id) => *id,
            None => {
                let (topic, enc, sname, senc, sdata) = &m.channel;
                let schema_id = if sname.is_empty() {
                    0
                } else {
                    w.add_schema(sname, senc, sdata)?
                };
                let id = w.add_channel(schema_id, topic, enc, &BTreeMap::new())?;
                channels.insert(m.channel.clone(), id);
                id
            }
        };
        w.write_to_known_channel(
            &mcap::records::MessageHeader {
                channel_id: id,
                sequence: seq as u32,
                log_time: m.log_time,
                publish_time: m.log_time,
            },
            &m.data,
        )?;
    }
    w.finish()?;
    Ok(msgs.len())
}
