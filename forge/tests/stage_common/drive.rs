//! Drives an [`UpdateAgent`] against in-process [`FetchServer`]s over simulated links,
//! on a virtual clock, with real files under a temporary state root.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bauxite_forge::activate;
use bauxite_forge::agent::{AgentConfig, AgentEvent, Outcome, UpdateAgent, UpdatePlan, Work};
use bauxite_forge::chunk::{ChunkIndex, ChunkNo};
use bauxite_forge::crash::{CrashHook, NoCrash};
use bauxite_forge::fetch::{FetchServer, ServerConfig, TransferId};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, VirtualImage};
use bauxite_forge::layout::{Layout, Version};
use bauxite_forge::state::UpdateState;

use super::link::{Link, LinkParams, origin};

/// A temporary state root.
pub(crate) struct Root {
    pub(crate) _dir: Option<tempfile::TempDir>,
    pub(crate) layout: Layout,
}

impl Root {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path()).unwrap();
        Self {
            _dir: Some(dir),
            layout,
        }
    }

    /// A root whose directory the caller owns.
    pub(crate) fn at(layout: Layout) -> Self {
        Self { _dir: None, layout }
    }
}

/// An image and the plan that installs it.
#[derive(Clone)]
pub(crate) struct Release {
    pub(crate) image: VirtualImage,
    pub(crate) plan: UpdatePlan,
}

impl Release {
    pub(crate) fn new(version: &str, seed: u64, len: u64) -> Self {
        let image = VirtualImage::new(seed, len).unwrap();
        let index = Arc::new(ChunkIndex::build(&image).unwrap());
        Self {
            image,
            plan: UpdatePlan {
                target: "robot-firmware.img".into(),
                version: Version::parse(version).unwrap(),
                index,
            },
        }
    }

    pub(crate) fn version(&self) -> &Version {
        &self.plan.version
    }
}

/// Small batches so that short images still cross many checkpoints.
pub(crate) fn cfg() -> AgentConfig {
    AgentConfig {
        flush_every_chunks: 4,
        flush_interval: Duration::from_millis(50),
        verify_batch: 3,
        ..AgentConfig::default()
    }
}

/// What one agent run produced.
pub(crate) struct Run {
    pub(crate) result: Result<Outcome, bauxite_forge::Error>,
    pub(crate) states: Vec<UpdateState>,
    pub(crate) events: Vec<AgentEvent<u32>>,
    /// Chunks named in requests that reached the server.
    pub(crate) requested: Vec<ChunkNo>,
    pub(crate) agent: Option<UpdateAgent<u32>>,
}

/// Runs a fresh agent for `rel` until it ends or fails (an injected crash is a failure).
pub(crate) fn run(
    root: &Root,
    rel: &Release,
    link: LinkParams,
    hook: Box<dyn CrashHook>,
    seed: u64,
) -> Run {
    let now = origin();
    let agent = UpdateAgent::new(
        &root.layout,
        rel.plan.clone(),
        vec![1u32],
        cfg(),
        hook,
        now,
        1_790_000_000_000,
    );
    let mut agent = match agent {
        Ok(a) => a,
        Err(e) => {
            return Run {
                result: Err(e),
                states: Vec::new(),
                events: Vec::new(),
                requested: Vec::new(),
                agent: None,
            };
        }
    };
    let mut server = FetchServer::new(ServerConfig::default());
    server.add_image(TransferId::from(rel.plan.index.digest()), rel.image);
    let mut up = Link::new(link, seed);
    let mut down = Link::new(link, seed + 1);
    let mut buf = vec![0u8; 1500];
    let mut now = now;
    let mut events = Vec::new();
    let mut requested = Vec::new();
    let result = (|| {
        for _ in 0..2_000_000 {
            while let Some(t) = agent.poll_transmit(now, &mut buf) {
                if let Ok(bauxite_forge::fetch::wire::Datagram::Request(r)) =
                    bauxite_forge::fetch::wire::parse(&buf[..t.len])
                {
                    requested.extend(r.entries().map(|e| e.chunk));
                }
                up.send(now, &buf[..t.len]);
            }
            while down.has_room(now) {
                let Some(t) = server.poll_transmit(now, &mut buf) else {
                    break;
                };
                down.send(now, &buf[..t.len]);
            }
            while let Some(e) = agent.poll_event() {
                events.push(e);
            }
            match agent.poll_work(now)? {
                Work::Busy => continue,
                Work::Done(o) => {
                    while let Some(e) = agent.poll_event() {
                        events.push(e);
                    }
                    return Ok(o);
                }
                Work::Idle => {}
            }
            let mut next: Vec<Instant> = agent.poll_timeout().into_iter().collect();
            next.extend(up.next_delivery());
            next.extend(down.next_delivery());
            if server.jobs() > 0 {
                next.extend(down.room_at());
            }
            let t = next
                .into_iter()
                .min()
                .expect("agent idle with nothing pending");
            now = now.max(t);
            while let Some(d) = up.pop_due(now) {
                server.handle_datagram(now, 0, &d);
            }
            while let Some(d) = down.pop_due(now) {
                agent.handle_datagram(now, &1, &d)?;
            }
            if agent.poll_timeout().is_some_and(|t| t <= now) {
                agent.handle_timeout(now);
            }
        }
        panic!("agent did not finish");
    })();
    while let Some(e) = agent.poll_event() {
        events.push(e);
    }
    let states = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::State(s) => Some(s.state),
            _ => None,
        })
        .collect();
    Run {
        result,
        states,
        events,
        requested,
        agent: Some(agent),
    }
}

/// Installs `rel` as the active version on an empty root.
pub(crate) fn install(root: &Root, rel: &Release) {
    let r = run(root, rel, LinkParams::clean(), Box::new(NoCrash), 1);
    assert!(
        matches!(r.result, Ok(Outcome::Activated(_))),
        "{:?}",
        r.result
    );
}

/// The state after any crash and recovery: exactly one version active, whose image
/// verifies whole against its own index; no temp file left.
pub(crate) fn assert_one_verified_active(root: &Root, releases: &[&Release]) -> Version {
    let current = root.layout.current().unwrap().expect("a version is active");
    let rel = releases
        .iter()
        .find(|r| *r.version() == current)
        .unwrap_or_else(|| panic!("current {current} is none of the releases"));
    let path = root.layout.image_path(&current);
    let file = bauxite_forge::image::FileImage::open_expecting(&path, rel.image.len()).unwrap();
    let mut buf = vec![0u8; CHUNK_SIZE];
    for i in 0..rel.plan.index.chunk_count() {
        let n = file.read_chunk(ChunkNo(i), &mut buf).unwrap();
        assert!(
            rel.plan.index.verify(ChunkNo(i), &buf[..n]),
            "chunk {i} of {current}"
        );
    }
    assert!(!root.layout.checkpoint_path(&current).exists());
    for p in [
        root.layout.root().join("current.tmp"),
        root.layout.root().join("rollback.marker.tmp"),
    ] {
        assert!(!p.exists(), "{p:?} left behind");
    }
    if let Some(m) = activate::read_marker(&root.layout).unwrap() {
        assert_ne!(m.state, activate::MarkerState::RollingBack);
    }
    current
}

/// A link on which the virtual clock advances fast enough for small images.
pub(crate) fn fast_link() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(1),
        rate: 100_000_000,
        ..LinkParams::clean()
    }
}
