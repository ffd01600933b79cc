//! The data plane's CPU priority: `bauxite run` asks for `SCHED_FIFO` for its own thread.
//!
//! The daemon is the robot's network stack. Kernel WireGuard runs in softirq context and
//! never waits behind application threads; a userspace data plane under the default
//! scheduler does: with a flood sender that never blocks on the same two cores, a control
//! packet waits milliseconds for the daemon to be scheduled (measured in
//! `docs/benchmarks.md`, "Critical packets under an unresponsive flood"). So the daemon
//! raises its one data-plane thread to `SCHED_FIFO` (priority `node.realtime_priority`,
//! default [`DEFAULT_PRIORITY`], `0` = off) whoever starts it, as the systemd unit does.
//!
//! Why this is safe: the daemon blocks whenever it has no packet to move and bounds each
//! wake-up's work; the kernel's RT throttling keeps 5 % of every CPU for other tasks; and
//! `SCHED_RESET_ON_FORK` keeps the priority to this thread: the blocking pool's threads
//! and the processes the daemon starts (the ROS 2 discovery server, an update's
//! activation) run at the default policy. A policy the operator already chose (the unit's
//! `CPUSchedulingPolicy=fifo`, `chrt`) is left as it is.
//!
//! `unsafe`: three libc calls rustix does not wrap, each on the calling thread with a
//! `sched_param` that lives on the stack for the call.
#![allow(unsafe_code)]

use std::fmt;

/// `node.realtime_priority` when the config does not say: low among real-time priorities
/// (1–99), so a robot's own control threads, usually at 50–90, still come first.
pub const DEFAULT_PRIORITY: u8 = 10;

/// What the daemon's thread runs at after [`raise`], for the log and `bauxite status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduling {
    /// `node.realtime_priority = 0`: the default policy, by the operator's choice.
    Off,
    /// The daemon raised itself to `SCHED_FIFO` at this priority.
    Raised {
        /// The `SCHED_FIFO` priority.
        priority: u8,
    },
    /// The thread already ran at a real-time policy (the unit, `chrt`): left alone.
    Kept {
        /// `SCHED_FIFO` or `SCHED_RR`.
        policy: &'static str,
        /// Its priority.
        priority: i32,
    },
    /// The kernel refused; the daemon runs at the default policy.
    Refused {
        /// What the kernel said, and what grants it.
        reason: String,
    },
}

impl Scheduling {
    /// Whether the data plane runs at a real-time policy.
    pub fn is_realtime(&self) -> bool {
        matches!(self, Self::Raised { .. } | Self::Kept { .. })
    }
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("default policy (node.realtime_priority = 0)"),
            Self::Raised { priority } => write!(f, "SCHED_FIFO {priority} (raised by the daemon)"),
            Self::Kept { policy, priority } => write!(f, "{policy} {priority} (set by the caller)"),
            Self::Refused { reason } => write!(f, "default policy: {reason}"),
        }
    }
}

/// Raises the calling thread to `SCHED_FIFO` at `priority` (with `SCHED_RESET_ON_FORK`),
/// unless `priority` is 0 or the thread already runs at a real-time policy. Call it on
/// the thread that will run the data plane, before that thread starts other threads.
pub fn raise(priority: u8) -> Scheduling {
    if priority == 0 {
        return Scheduling::Off;
    }
    // SAFETY: sched_getscheduler(0) only reads the calling thread's policy.
    let current = unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
    if current == libc::SCHED_FIFO || current == libc::SCHED_RR {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid, writable sched_param for the call's duration.
        unsafe { libc::sched_getparam(0, &mut param) };
        return Scheduling::Kept {
            policy: if current == libc::SCHED_FIFO {
                "SCHED_FIFO"
            } else {
                "SCHED_RR"
            },
            priority: param.sched_priority,
        };
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc == 0 {
        return Scheduling::Raised { priority };
    }
    let error = std::io::Error::last_os_error();
    let reason = if error.raw_os_error() == Some(libc::EPERM) {
        format!(
            "SCHED_FIFO {priority} not permitted ({error}); run as root, grant CAP_SYS_NICE, \
             or raise RLIMIT_RTPRIO (LimitRTPRIO=) to {priority}"
        )
    } else {
        format!("SCHED_FIFO {priority} refused: {error}")
    };
    Scheduling::Refused { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a fresh thread, so a policy change stays off the test harness's threads.
    fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("test thread")
    }

    fn policy_of_this_thread() -> (i32, i32) {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: reads the calling thread's policy into a valid sched_param.
        let policy = unsafe {
            libc::sched_getparam(0, &mut param);
            libc::sched_getscheduler(0)
        };
        (policy, param.sched_priority)
    }

    #[test]
    fn zero_leaves_the_default_policy() {
        let (result, policy) = on_own_thread(|| (raise(0), policy_of_this_thread()));
        assert_eq!(result, Scheduling::Off);
        assert_eq!(policy.0, libc::SCHED_OTHER);
    }

    #[test]
    fn raises_to_fifo_and_threads_it_starts_keep_the_default() {
        let (result, own, child) = on_own_thread(|| {
            let result = raise(7);
            let own = policy_of_this_thread();
            let child = std::thread::spawn(policy_of_this_thread)
                .join()
                .expect("child thread");
            (result, own, child)
        });
        match result {
            Scheduling::Raised { priority } => {
                assert_eq!(priority, 7);
                assert_eq!(own.0 & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
                assert_eq!(own.1, 7);
                assert_eq!(child, (libc::SCHED_OTHER, 0), "reset on fork");
            }
            // Without CAP_SYS_NICE (a non-root `cargo test`): the refusal names the fix.
            Scheduling::Refused { reason } => {
                assert!(reason.contains("CAP_SYS_NICE"), "{reason}");
                assert_eq!(own.0, libc::SCHED_OTHER);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_realtime_caller_is_left_alone() {
        let outcome = on_own_thread(|| {
            let param = libc::sched_param { sched_priority: 3 };
            // SAFETY: valid sched_param, calling thread.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } != 0 {
                return None; // not permitted here: nothing to check
            }
            Some((raise(10), policy_of_this_thread()))
        });
        if let Some((result, policy)) = outcome {
            assert_eq!(
                result,
                Scheduling::Kept {
                    policy: "SCHED_RR",
                    priority: 3
                }
            );
            assert_eq!(policy, (libc::SCHED_RR, 3));
        }
    }
}
