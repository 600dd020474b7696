//! The writer's answers handed to each HTTP worker thread in one message per batch.
//!
//! A request task waits on a one-shot channel for its answer. Sent from the writer thread, each
//! answer wakes a task of an HTTP worker, a single-thread runtime, from outside: the runtime
//! writes its eventfd so the worker's `epoll_wait` returns — one system call per delivery, on the
//! writer thread, under load (docs/BENCHMARKS.md §18). A worker thread that calls [`serve_here`]
//! when it starts runs a task that takes the answers of a whole batch for its requests in one
//! message (one wake-up) and sends each on from its own thread, where waking a task is a queue
//! push.
//!
//! Only threads that opt in use this, and only while the task runs: the hub belongs to the
//! runtime it was started on (an HTTP worker lives as long as its runtime), and a request on any
//! other thread gets its answer sent directly, as before.

use std::cell::RefCell;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};

use super::{IntakeOutcome, StoreError};

/// One request's answer and where it goes.
type Answer = (
    oneshot::Sender<Result<IntakeOutcome, StoreError>>,
    Result<IntakeOutcome, StoreError>,
);

/// Where the answers for one worker thread's requests are sent, a batch at a time.
#[derive(Clone, Debug)]
pub(crate) struct Hub(mpsc::UnboundedSender<Vec<Answer>>);

thread_local! {
    static HERE: RefCell<Option<Hub>> = const { RefCell::new(None) };
}

/// On a single-thread runtime's thread (an HTTP worker, at start): receive the answers to this
/// thread's requests here, a batch at a time. Elsewhere it does nothing.
pub fn serve_here() {
    let Ok(runtime) = Handle::try_current() else {
        return;
    };
    if runtime.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return;
    }
    let (hub, mut batches) = mpsc::unbounded_channel::<Vec<Answer>>();
    runtime.spawn(async move {
        while let Some(batch) = batches.recv().await {
            for (to, answer) in batch {
                // A requester that went away: its delivery is committed all the same.
                let _ = to.send(answer);
            }
        }
    });
    HERE.with(|here| *here.borrow_mut() = Some(Hub(hub)));
}

/// This thread's hub, if [`serve_here`] started one and it still runs.
pub(crate) fn here() -> Option<Hub> {
    HERE.with(|here| here.borrow().as_ref().filter(|h| !h.0.is_closed()).cloned())
}

/// The answers of one batch, gathered by hub and sent when dropped (or by [`Answers::send`]).
#[derive(Default)]
pub(crate) struct Answers {
    by_hub: Vec<(Hub, Vec<Answer>)>,
}

impl Answers {
    /// Answer a request: directly, or through `via` with the rest of the batch.
    pub(crate) fn answer(
        &mut self,
        via: Option<&Hub>,
        to: oneshot::Sender<Result<IntakeOutcome, StoreError>>,
        answer: Result<IntakeOutcome, StoreError>,
    ) {
        let Some(hub) = via else {
            let _ = to.send(answer);
            return;
        };
        match self
            .by_hub
            .iter_mut()
            .find(|(h, _)| h.0.same_channel(&hub.0))
        {
            Some((_, answers)) => answers.push((to, answer)),
            None => self.by_hub.push((hub.clone(), vec![(to, answer)])),
        }
    }

    /// Hand every hub its answers; those of a hub that stopped are sent directly.
    pub(crate) fn send(&mut self) {
        for (hub, answers) in self.by_hub.drain(..) {
            if let Err(mpsc::error::SendError(answers)) = hub.0.send(answers) {
                for (to, answer) in answers {
                    let _ = to.send(answer);
                }
            }
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(n: u8) -> Result<IntakeOutcome, StoreError> {
        Ok(IntakeOutcome::Accepted {
            delivery_id: format!("d{n}"),
        })
    }

    /// Answers through a hub arrive, each to its own requester; without a hub on the thread
    /// (a multi-thread runtime) they go directly; a stopped hub's answers go directly too.
    #[test]
    fn every_answer_reaches_its_requester_through_a_hub_or_directly() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let hub = runtime.block_on(async {
            serve_here();
            here().expect("a hub on a single-thread runtime")
        });
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..5).map(|_| oneshot::channel()).unzip();
        let writer = std::thread::spawn(move || {
            let mut answers = Answers::default();
            for (n, to) in senders.into_iter().enumerate() {
                let via = (n % 2 == 0).then_some(&hub);
                answers.answer(via, to, outcome(n as u8));
            }
            answers.send();
            hub
        });
        let got = runtime.block_on(async {
            let mut got = Vec::new();
            for rx in receivers {
                got.push(rx.await.expect("answered"));
            }
            got
        });
        for (n, answer) in got.into_iter().enumerate() {
            assert_eq!(answer.expect("ok").delivery_id(), format!("d{n}"));
        }
        let hub = writer.join().expect("writer");
        drop(runtime);
        assert!(hub.0.is_closed(), "the hub's task ends with its runtime");
        let (to, rx) = oneshot::channel();
        let mut answers = Answers::default();
        answers.answer(Some(&hub), to, outcome(9));
        drop(answers);
        assert_eq!(
            rx.blocking_recv()
                .expect("sent directly")
                .expect("ok")
                .delivery_id(),
            "d9"
        );
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        assert!(multi
            .block_on(async {
                serve_here();
                here()
            })
            .is_none());
    }
}
