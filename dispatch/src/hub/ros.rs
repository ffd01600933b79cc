//! The ROS 2 discovery-server role in topology: a node whose `ReportMetrics` carry
//! `ros_discovery_port` with `ros_discovery_status` 1 (running) or 2 (restarting) is
//! published with that port and `ros_discovery_server_id`, so every robot's
//! `bauxite ros env` finds the fleet's servers with no address configured.
//!
//! Invariant: the role lives in memory (a restarted hub relearns it from the next
//! report; a store shared by replicas keeps it too, for the other replicas), only a change of it bumps the topology version, and it is never audited —
//! it is an observation, like a node's candidate addresses.

use bauxite_conduit::PeerId;

use super::Hub;
use crate::error::{Error, Result};
use crate::store::Change;

/// A node's running discovery server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RosDiscovery {
    /// Its UDP port.
    pub port: u16,
    /// Its server ID.
    pub server_id: u8,
}

impl RosDiscovery {
    /// The role a metrics report announces, if any; values out of range announce none.
    pub fn from_report(report: &[(String, f64)]) -> Option<Self> {
        let get = |name: &str| report.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let status = get("ros_discovery_status")?;
        if status != 1.0 && status != 2.0 {
            return None;
        }
        let whole = |v: f64, max: f64| (v.fract() == 0.0 && (0.0..=max).contains(&v)).then_some(v);
        let port = whole(get("ros_discovery_port")?, 65535.0).filter(|p| *p > 0.0)?;
        let id = whole(get("ros_discovery_server_id").unwrap_or(0.0), 255.0)?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
        Some(Self {
            port: port as u16,
            server_id: id as u8,
        })
    }
}

impl Hub {
    /// Records `node`'s discovery-server role (`None`: it runs none) and publishes a new
    /// topology when it changed.
    pub fn set_ros_discovery(&self, node: PeerId, role: Option<RosDiscovery>) -> Result<()> {
        let mut state = self.write()?;
        if !state.nodes.contains_key(&node) {
            return Err(Error::UnknownNode(node.to_string()));
        }
        if state.ros_discovery.get(&node).copied() == role {
            return Ok(());
        }
        let version = state.topology_version + 1;
        let mut observed = state.observed(node);
        observed.ros_discovery = role.map(|r| (r.port, r.server_id));
        self.store.commit(&Change {
            topology_version: Some(version),
            observed: vec![(node, observed)],
            ..Change::default()
        })?;
        match role {
            Some(role) => state.ros_discovery.insert(node, role),
            None => state.ros_discovery.remove(&node),
        };
        state.touched.insert(node);
        state.topology_version = version;
        self.publish_topology(&mut state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(n, v)| ((*n).to_string(), *v)).collect()
    }

    #[test]
    fn a_running_or_restarting_server_is_a_role() {
        let r = report(&[
            ("tx_packets", 5.0),
            ("ros_discovery_port", 11811.0),
            ("ros_discovery_status", 1.0),
            ("ros_discovery_server_id", 2.0),
        ]);
        assert_eq!(
            RosDiscovery::from_report(&r),
            Some(RosDiscovery {
                port: 11811,
                server_id: 2
            })
        );
        let restarting = report(&[
            ("ros_discovery_port", 11811.0),
            ("ros_discovery_status", 2.0),
        ]);
        assert_eq!(RosDiscovery::from_report(&restarting).unwrap().server_id, 0);
    }

    proptest::proptest! {
        /// A node's report is untrusted: any values give a role in range or none.
        #[test]
        fn any_report_gives_a_valid_role_or_none(
            port in proptest::num::f64::ANY,
            status in proptest::num::f64::ANY,
            id in proptest::num::f64::ANY,
        ) {
            let r = report(&[
                ("ros_discovery_port", port),
                ("ros_discovery_status", status),
                ("ros_discovery_server_id", id),
            ]);
            if let Some(role) = RosDiscovery::from_report(&r) {
                proptest::prop_assert!(role.port > 0);
                proptest::prop_assert_eq!(f64::from(role.port), port);
                proptest::prop_assert_eq!(f64::from(role.server_id), id);
            }
        }
    }

    #[test]
    fn failed_stopped_absent_or_nonsense_is_no_role() {
        for r in [
            report(&[
                ("ros_discovery_port", 11811.0),
                ("ros_discovery_status", 3.0),
            ]),
            report(&[
                ("ros_discovery_port", 11811.0),
                ("ros_discovery_status", 0.0),
            ]),
            report(&[("tx_packets", 1.0)]),
            report(&[
                ("ros_discovery_port", 70000.0),
                ("ros_discovery_status", 1.0),
            ]),
            report(&[("ros_discovery_port", 0.0), ("ros_discovery_status", 1.0)]),
            report(&[
                ("ros_discovery_port", 11811.5),
                ("ros_discovery_status", 1.0),
            ]),
            report(&[
                ("ros_discovery_port", 11811.0),
                ("ros_discovery_status", 1.0),
                ("ros_discovery_server_id", 300.0),
            ]),
        ] {
            assert_eq!(RosDiscovery::from_report(&r), None, "{r:?}");
        }
    }
}
