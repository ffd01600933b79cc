//! An update recorded to MCAP and read back with the `mcap` crate: topics, schemas,
//! message counts and content.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stage_common;

use std::collections::BTreeMap;

use bauxite_forge::agent::{AgentEvent, Outcome};
use bauxite_forge::crash::NoCrash;
use bauxite_forge::image::CHUNK_SIZE;
use bauxite_forge::telemetry::{CONTROL_LOOP_TOPIC, PROGRESS_TOPIC, Recorder, STATE_TOPIC};
use stage_common::drive::{Release, Root, fast_link, install, run};

#[test]
fn an_update_recorded_to_mcap_reads_back_with_every_topic() {
    let root = Root::new();
    let (a, b) = (
        Release::new("1.0.0", 1, 3 * CHUNK_SIZE as u64),
        Release::new("2.0.0", 2, 20 * CHUNK_SIZE as u64 - 3),
    );
    install(&root, &a);
    let r = run(&root, &b, fast_link(), Box::new(NoCrash), 2);
    assert!(matches!(r.result, Ok(Outcome::Activated(_))));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("update.mcap");
    let mut rec = Recorder::create(&path).unwrap();
    let t0 = 1_790_000_000_000_000_000u64;
    let (mut states, mut progress) = (Vec::new(), 0);
    for (i, e) in r.events.iter().enumerate() {
        let t = t0 + i as u64 * 1_000_000;
        match e {
            AgentEvent::State(s) => {
                rec.record_state(t, s).unwrap();
                states.push(s.state.name());
            }
            AgentEvent::Checkpointed { progress: p, .. } => {
                rec.record_progress(t, p).unwrap();
                progress += 1;
            }
            _ => {}
        }
    }
    for i in 0..100u64 {
        rec.record_series(t0 + i * 1_000_000, CONTROL_LOOP_TOPIC, 40.0 + i as f64)
            .unwrap();
    }
    rec.finish().unwrap();
    assert_eq!(states, ["PENDING_VALIDATION", "VALID", "ACTIVATED"]);
    assert_eq!(progress, 5);

    let bytes = std::fs::read(&path).unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut read_states = Vec::new();
    let mut last_percent = 0.0;
    let mut series_sum = 0.0;
    for m in mcap::MessageStream::new(&bytes).unwrap() {
        let m = m.unwrap();
        let schema = m.channel.schema.as_ref().unwrap();
        assert_eq!(schema.encoding, "jsonschema");
        assert_eq!(m.channel.message_encoding, "json");
        let schema_json: serde_json::Value = serde_json::from_slice(&schema.data).unwrap();
        assert_eq!(schema_json["type"], "object");
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        *counts.entry(m.channel.topic.clone()).or_default() += 1;
        match m.channel.topic.as_str() {
            STATE_TOPIC => read_states.push(v["state"].as_str().unwrap().to_owned()),
            PROGRESS_TOPIC => last_percent = v["percent"].as_f64().unwrap(),
            CONTROL_LOOP_TOPIC => series_sum += v["value"].as_f64().unwrap(),
            other => panic!("unexpected topic {other}"),
        }
    }
    assert_eq!(counts[STATE_TOPIC], 3);
    assert_eq!(counts[PROGRESS_TOPIC], 5);
    assert_eq!(counts[CONTROL_LOOP_TOPIC], 100);
    assert_eq!(read_states, states);
    assert_eq!(last_percent, 100.0);
    assert_eq!(series_sum, 100.0 * 40.0 + 4950.0);
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    assert_eq!(summary.stats.unwrap().message_count, 108);
}

#[test]
fn the_foxglove_layout_names_the_recorded_topics() {
    let layout = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/demos/ota_resilient/foxglove_layout.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&layout).unwrap();
    let panels = v["configById"].as_object().unwrap();
    let text = serde_json::to_string(panels).unwrap();
    for path in [
        "/forge/state.state",
        "/forge/progress.percent",
        "/forge/progress.bytes_retransferred",
        "/forge/progress.verified_bytes_refetched",
        "/control_loop/latency_us.value",
    ] {
        assert!(text.contains(path), "{path} not in the layout");
    }
    // Every panel the layout tree names is configured.
    fn leaves(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Object(o) => {
                for k in ["first", "second"] {
                    if let Some(x) = o.get(k) {
                        leaves(x, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut ids = Vec::new();
    leaves(&v["layout"], &mut ids);
    assert!(ids.len() >= 4);
    for id in ids {
        assert!(panels.contains_key(&id), "{id}");
    }
}
