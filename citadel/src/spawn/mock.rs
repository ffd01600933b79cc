//! [`MockSpawner`]: a scripted [`ProcessSpawner`] for tests of supervision logic, with no
//! process behind it. The test decides when a child crashes and whether a spawn fails,
//! and reads back every spec spawned and every signal sent.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::{ChildProcess, Exit, ProcessSpawner, Signal, SpawnSpec};
use crate::Error;

/// A scripted spawner; clones share one script.
#[derive(Clone, Debug, Default)]
pub struct MockSpawner {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    specs: Vec<SpawnSpec>,
    children: Vec<Slot>,
    fail_next: u32,
    ignore_terminate: bool,
}

#[derive(Debug, Default)]
struct Slot {
    exit: Option<oneshot::Sender<Exit>>,
    signals: Vec<Signal>,
}

/// A child of [`MockSpawner`]: it runs until the test ends it or a signal does.
#[derive(Debug)]
pub struct MockChild {
    index: usize,
    exit: oneshot::Receiver<Exit>,
    ended: Option<Exit>,
    inner: Arc<Mutex<Inner>>,
}

impl MockSpawner {
    /// A spawner whose children run until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next `n` spawns fail as if the program were missing.
    pub fn fail_next_spawns(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Makes children ignore `SIGTERM`/`SIGINT` (only `SIGKILL` ends them).
    pub fn ignore_terminate(&self) {
        self.lock().ignore_terminate = true;
    }

    /// The specs spawned so far (failed spawns included), in order.
    pub fn specs(&self) -> Vec<SpawnSpec> {
        self.lock().specs.clone()
    }

    /// Children started so far (failed spawns excluded).
    pub fn children(&self) -> usize {
        self.lock().children.len()
    }

    /// Ends child `index` (0 = first started) with `exit`; false if it already ended.
    pub fn end(&self, index: usize, exit: Exit) -> bool {
        let sender = self
            .lock()
            .children
            .get_mut(index)
            .and_then(|slot| slot.exit.take());
        sender.is_some_and(|tx| tx.send(exit).is_ok())
    }

    /// The signals child `index` received.
    pub fn signals(&self, index: usize) -> Vec<Signal> {
        self.lock()
            .children
            .get(index)
            .map(|slot| slot.signals.clone())
            .unwrap_or_default()
    }
}

impl ProcessSpawner for MockSpawner {
    type Child = MockChild;

    fn spawn(&self, spec: &SpawnSpec) -> Result<MockChild, Error> {
        let mut inner = self.lock();
        inner.specs.push(spec.clone());
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(Error::Spawn {
                program: spec.program.clone(),
                package: spec.package,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let (tx, rx) = oneshot::channel();
        inner.children.push(Slot {
            exit: Some(tx),
            signals: Vec::new(),
        });
        Ok(MockChild {
            index: inner.children.len() - 1,
            exit: rx,
            ended: None,
            inner: Arc::clone(&self.inner),
        })
    }
}

impl ChildProcess for MockChild {
    fn pid(&self) -> u32 {
        // Fake but unique and never 0 or 1.
        u32::try_from(self.index).map_or(u32::MAX, |i| 1000 + i)
    }

    async fn wait(&mut self) -> Result<Exit, Error> {
        if let Some(exit) = self.ended {
            return Ok(exit);
        }
        let exit = (&mut self.exit).await.unwrap_or(Exit::signal(9));
        self.ended = Some(exit);
        Ok(exit)
    }

    fn signal(&mut self, signal: Signal) -> Result<(), Error> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let ignore = inner.ignore_terminate;
        let Some(slot) = inner.children.get_mut(self.index) else {
            return Ok(());
        };
        slot.signals.push(signal);
        let exit = match signal {
            Signal::Kill => Some(Exit::signal(9)),
            Signal::Terminate if !ignore => Some(Exit::signal(15)),
            Signal::Interrupt if !ignore => Some(Exit::signal(2)),
            _ => None,
        };
        if let (Some(exit), Some(tx)) = (exit, exit.and_then(|_| slot.exit.take())) {
            let _ = tx.send(exit);
        }
        Ok(())
    }
}
