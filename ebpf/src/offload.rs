//! The daemon's choice: the kernel classifier when it loads, else userspace only.

use std::os::fd::BorrowedFd;

use bauxite_conduit::offload::{DataPlaneOffload, LaneCount, OffloadKind, UserspaceOnly};

use crate::{AttachOptions, Error, LaneClassifier};

/// The kernel classifier as conduit's [`DataPlaneOffload`].
#[derive(Debug)]
pub struct KernelOffload {
    classifier: LaneClassifier,
    detail: String,
}

impl KernelOffload {
    /// Wraps an attached classifier.
    pub fn new(classifier: LaneClassifier) -> Self {
        let detail = format!(
            "{} egress via {:?}",
            classifier.interface(),
            classifier.mode()
        );
        Self { classifier, detail }
    }

    /// The classifier, to change its rules.
    pub fn classifier_mut(&mut self) -> &mut LaneClassifier {
        &mut self.classifier
    }
}

impl DataPlaneOffload for KernelOffload {
    fn kind(&self) -> OffloadKind {
        OffloadKind::Kernel
    }

    fn detail(&self) -> &str {
        &self.detail
    }

    fn lane_counts(&self) -> Option<[LaneCount; 3]> {
        match self.classifier.counts() {
            Ok(counts) => Some(counts),
            Err(error) => {
                tracing::debug!(%error, "lane counters unreadable");
                None
            }
        }
    }
}

/// What [`attach_or_fallback`] started.
pub struct Started {
    /// The kernel classifier, or the userspace-only fallback.
    pub offload: Box<dyn DataPlaneOffload>,
    /// Whether the TUN steering program is attached (Critical packets have queue 0).
    pub steered: bool,
}

/// Attaches the kernel classifier to `interface` when permitted and supported; otherwise
/// logs one line saying why and returns the userspace-only fallback. With `steering` (a
/// queue of the multi-queue TUN device `interface`), also attaches the TUN steering
/// program so Critical packets get their own queue; if that fails the classifier still
/// runs, one log line says why, and the detail in `status` says "one TUN queue".
pub fn attach_or_fallback(
    interface: &str,
    options: &AttachOptions,
    steering: Option<BorrowedFd<'_>>,
) -> Started {
    match LaneClassifier::attach(interface, options) {
        Ok(mut classifier) => {
            let steered = match steering {
                Some(queue) => match classifier.steer_tun(queue) {
                    Ok(()) => Ok("Critical TUN queue"),
                    Err(error) => {
                        tracing::warn!(%interface, %error, "TUN steering off");
                        Err("one TUN queue: steering refused")
                    }
                },
                None => Err("one TUN queue"),
            };
            let mut offload = KernelOffload::new(classifier);
            offload.detail = format!("{}, {}", offload.detail, steered.unwrap_or_else(|e| e));
            tracing::info!(detail = offload.detail(), "kernel lane classifier attached");
            Started {
                offload: Box::new(offload),
                steered: steered.is_ok(),
            }
        }
        Err(error) => {
            let reason = fallback_reason(&error);
            tracing::warn!(%interface, %error, "kernel lane classifier off, userspace classifier only");
            Started {
                offload: Box::new(UserspaceOnly::new(reason)),
                steered: false,
            }
        }
    }
}

/// A short reason for status output.
fn fallback_reason(error: &Error) -> String {
    match error {
        Error::Load { .. } => {
            "the kernel refused to load the program (no CAP_BPF/CAP_NET_ADMIN or no BPF support)"
                .into()
        }
        other => other.to_string(),
    }
}
