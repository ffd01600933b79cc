//! Which hub replica a node dials next: the rule `bauxite` nodes follow, shared with the
//! hub's load generator so that what it measures is what nodes do.

/// The hub replicas a node may use, sans IO: which one to dial next.
///
/// Invariant: [`fail_over`](Self::fail_over) walks the list once from the replica that
/// last served the node, then returns `None` (time to back off) and starts the next round
/// from the one after; a replica that served the node ([`Replicas::connected`]) starts a
/// new round, so one flapping replica never makes the node skip the backoff for ever.
///
/// The node starts on the first URL (the one it joined through), but walks the others
/// in an order rotated by its seed: when a replica dies, its nodes spread evenly over the
/// survivors instead of all landing on the next one in the list (at 10 000 nodes that
/// one survivor took 3 334 reconnections at once).
#[derive(Debug)]
pub struct Replicas {
    urls: Vec<String>,
    at: usize,
    tried: usize,
}

impl Replicas {
    /// The replicas, the first one first and the others rotated by `seed`; `first` when
    /// the list is empty.
    pub fn new(urls: Vec<String>, first: &str, seed: u64) -> Self {
        let mut urls = if urls.is_empty() {
            vec![first.to_owned()]
        } else {
            urls
        };
        if let Some(others) = urls.get_mut(1..).filter(|o| !o.is_empty()) {
            let turn = usize::try_from(seed % others.len() as u64).unwrap_or(0);
            others.rotate_left(turn);
        }
        Self {
            urls,
            at: 0,
            tried: 0,
        }
    }

    /// The replica to dial now.
    pub fn current(&self) -> &str {
        self.urls
            .get(self.at % self.urls.len().max(1))
            .map_or("", String::as_str)
    }

    /// The current replica failed: the next one to try at once, or `None` when every
    /// replica failed in this round (back off, then try the next one).
    pub fn fail_over(&mut self) -> Option<&str> {
        self.at = (self.at + 1) % self.urls.len().max(1);
        self.tried += 1;
        if self.tried >= self.urls.len() {
            self.tried = 0;
            return None;
        }
        Some(self.current())
    }

    /// The current replica served the node: a later failure starts a new round.
    pub fn connected(&mut self) {
        self.tried = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_walked_once_per_round_and_a_served_node_starts_a_new_round() {
        let urls = ["https://a:1", "https://b:1", "https://c:1"].map(String::from);
        // Seed 0: the others in the order given.
        let mut replicas = Replicas::new(urls.to_vec(), "https://a:1", 0);
        assert_eq!(replicas.current(), "https://a:1");
        assert_eq!(replicas.fail_over(), Some("https://b:1"));
        assert_eq!(replicas.fail_over(), Some("https://c:1"));
        // Every one failed: back off, then go on from the next one.
        assert_eq!(replicas.fail_over(), None);
        assert_eq!(replicas.current(), "https://a:1");
        // b serves the node, then dies: a fresh round, c and a are tried at once.
        assert_eq!(replicas.fail_over(), Some("https://b:1"));
        replicas.connected();
        assert_eq!(replicas.fail_over(), Some("https://c:1"));
        assert_eq!(replicas.fail_over(), Some("https://a:1"));
        assert_eq!(replicas.fail_over(), None);
        assert_eq!(replicas.current(), "https://b:1");
        // One URL: every failure backs off.
        let mut one = Replicas::new(Vec::new(), "https://only:1", 7);
        assert_eq!(one.current(), "https://only:1");
        assert_eq!(one.fail_over(), None);
        assert_eq!(one.current(), "https://only:1");
    }

    #[test]
    fn the_nodes_of_a_dead_replica_spread_evenly_over_the_others() {
        let urls = ["https://a:1", "https://b:1", "https://c:1", "https://d:1"].map(String::from);
        let mut landed = std::collections::BTreeMap::<String, usize>::new();
        for seed in 0..3000u64 {
            let mut replicas = Replicas::new(urls.to_vec(), "https://a:1", seed);
            // Every node starts where it joined.
            assert_eq!(replicas.current(), "https://a:1");
            let next = replicas.fail_over().unwrap().to_owned();
            *landed.entry(next).or_default() += 1;
            // Each node still tries every replica once before it backs off.
            let mut seen = vec!["https://a:1".to_owned(), replicas.current().to_owned()];
            while let Some(url) = replicas.fail_over() {
                seen.push(url.to_owned());
            }
            seen.sort();
            assert_eq!(seen, urls.to_vec(), "seed {seed}");
        }
        // a's 3000 nodes: 1000 on each of b, c and d.
        assert_eq!(
            landed.into_iter().collect::<Vec<_>>(),
            ["https://b:1", "https://c:1", "https://d:1"].map(|u| (u.to_owned(), 1000))
        );
    }
}
