//! The one way the agent works in the background (the tracers' drains and polls, the SMART
//! scheduler): a named thread that runs a closure now and then every interval, until the
//! [`Worker`] is dropped.
//!
//! A thread that cannot be spawned is the caller's error to report (`Worker::every` returns it):
//! the caller then says so in one log line and serves without it.
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A periodic background thread; dropping it stops the thread.
pub struct Worker {
    /// Dropped first: the thread sees the channel close at its next wait and returns.
    _stop: mpsc::Sender<()>,
    /// Not joined on drop: a tick blocked in the kernel (sysfs of a controller in error
    /// recovery) must not hold up whoever drops the handle; it ends after that tick.
    _thread: JoinHandle<()>,
}

impl Worker {
    /// Spawns thread `name` that runs `tick` at once and then every `interval` (measured from one
    /// tick's start to the next: a tick longer than the interval is followed at once by the next).
    pub fn every(
        name: &str,
        interval: Duration,
        mut tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Worker> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                loop {
                    let started = Instant::now();
                    tick();
                    match stopped.recv_timeout(interval.saturating_sub(started.elapsed())) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                // The closure (and what it owns: a loaded object, which detaches) goes with it.
                log::debug!("{thread_name}: stopped");
            })?;
        Ok(Worker {
            _stop: stop,
            _thread: thread,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Ticks at once, then again on the interval; none after the handle is dropped (but the one
    /// under way when it is).
    #[test]
    fn ticks_until_dropped() {
        let ticks = Arc::new(AtomicU32::new(0));
        let counted = ticks.clone();
        let started = Instant::now();
        let w = Worker::every("test-worker", Duration::from_millis(10), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        while ticks.load(Ordering::SeqCst) < 3 {
            assert!(started.elapsed() < Duration::from_secs(10), "not ticking");
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = ticks.load(Ordering::SeqCst);
        drop(w);
        std::thread::sleep(Duration::from_millis(50));
        let after_drop = ticks.load(Ordering::SeqCst);
        assert!(after_drop <= before + 1, "{before} then {after_drop}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticks.load(Ordering::SeqCst), after_drop);
    }
}
