//! Calls to a running supervisor: start, terminate and list its jobs (GenStage's
//! `start_child`, `terminate_child`, `which_children`, `count_children`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::CallError;

use super::super::handle::StageRef;
use super::super::{Context, HandleCall, ReplyTo};
use super::{ChildId, ConsumerSupervisor};

/// One job as [`which_children`](StageRef::which_children) reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// The job.
    pub id: ChildId,
    /// How many times it was restarted.
    pub restarts: usize,
}

/// GenStage's `count_children` map.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Always 1: the one job template.
    pub specs: usize,
    /// Jobs running or queued to run.
    pub active: usize,
    /// Jobs (all are workers).
    pub workers: usize,
    /// Always 0.
    pub supervisors: usize,
}

/// Why [`terminate_child`](StageRef::terminate_child) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TerminateChildError {
    /// No such job (it ended, or was terminated already).
    #[error("not found")]
    NotFound,
    /// The supervisor could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// `start_child`: run a job for `event` outside any subscription.
struct StartChild<T>(T);
/// `terminate_child`.
struct TerminateChild(ChildId);
/// `which_children`.
struct WhichChildren;
/// `count_children`.
struct CountChildren;

impl<T: Send + 'static> HandleCall<StartChild<T>> for ConsumerSupervisor<T> {
    type Reply = ChildId;
    fn handle_call(
        &mut self,
        r: StartChild<T>,
        _: &ReplyTo<ChildId>,
        _: &mut Context<'_, Self>,
    ) -> Option<ChildId> {
        Some(self.start_job(r.0, None))
    }
}

impl<T: Send + 'static> HandleCall<TerminateChild> for ConsumerSupervisor<T> {
    type Reply = bool;
    fn handle_call(
        &mut self,
        r: TerminateChild,
        _: &ReplyTo<bool>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<bool> {
        let Some(child) = self.children.remove(&r.0) else {
            return Some(false);
        };
        child.cancelled.store(true, Ordering::Relaxed);
        if let Some(tag) = child.producer {
            self.slots(tag, 0, 1, ctx);
        }
        Some(true)
    }
}

impl<T: Send + 'static> HandleCall<WhichChildren> for ConsumerSupervisor<T> {
    type Reply = Vec<ChildInfo>;
    fn handle_call(
        &mut self,
        _: WhichChildren,
        _: &ReplyTo<Vec<ChildInfo>>,
        _: &mut Context<'_, Self>,
    ) -> Option<Vec<ChildInfo>> {
        Some(
            self.children
                .iter()
                .map(|(id, c)| ChildInfo {
                    id: *id,
                    restarts: c.restarts,
                })
                .collect(),
        )
    }
}

impl<T: Send + 'static> HandleCall<CountChildren> for ConsumerSupervisor<T> {
    type Reply = ChildCounts;
    fn handle_call(
        &mut self,
        _: CountChildren,
        _: &ReplyTo<ChildCounts>,
        _: &mut Context<'_, Self>,
    ) -> Option<ChildCounts> {
        let n = self.children.len();
        Some(ChildCounts {
            specs: 1,
            active: n,
            workers: n,
            supervisors: 0,
        })
    }
}

/// GenStage calls the supervisor with timeout `:infinity`; an hour stands in for it.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(3600);

impl<T: Send + 'static> StageRef<ConsumerSupervisor<T>> {
    /// Runs a job for `event` outside any subscription: it holds no demand slot.
    pub fn start_child(&self, event: T) -> Result<ChildId, CallError> {
        self.call_timeout(StartChild(event), SUPERVISOR_TIMEOUT)
    }

    /// Terminates a job: it is asked to stop
    /// ([`JobContext::is_cancelled`](super::JobContext::is_cancelled)), is never
    /// restarted, and its slot is freed at once.
    pub fn terminate_child(&self, id: ChildId) -> Result<(), TerminateChildError> {
        match self.call_timeout(TerminateChild(id), SUPERVISOR_TIMEOUT)? {
            true => Ok(()),
            false => Err(TerminateChildError::NotFound),
        }
    }

    /// The jobs running (or about to run again), oldest first.
    pub fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        self.call_timeout(WhichChildren, SUPERVISOR_TIMEOUT)
    }

    /// GenStage's `count_children`.
    pub fn count_children(&self) -> Result<ChildCounts, CallError> {
        self.call_timeout(CountChildren, SUPERVISOR_TIMEOUT)
    }
}
