//! The one way the agent works in the background (the tracers' drains and polls, the SMART
//! scheduler): a named thread that runs a closure now and then every interval, until the
//! [`Worker`] is dropped. A [`Trigger`] lets a scrape ask for a tick at once and wait, bounded,
//! for it: the eBPF drain runs when somebody reads its result, not every second for nobody.
//!
//! A thread that cannot be spawned is the caller's error to report (`Worker::every` returns it):
//! the caller then says so in one log line and serves without it.
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A periodic background thread; dropping it stops the thread.
pub struct Worker {
    /// Told to stop on drop; the thread sees it at its next wait and returns.
    wake: mpsc::Sender<Wake>,
    /// Not joined on drop: a tick blocked in the kernel (sysfs of a controller in error
    /// recovery) must not hold up whoever drops the handle; it ends after that tick.
    _thread: JoinHandle<()>,
}

enum Wake {
    /// A [`Trigger`] wants a tick now.
    Tick,
    Stop,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
    }
}

impl Worker {
    /// Spawns thread `name` that runs `tick` at once and then every `interval` (measured from one
    /// tick's start to the next: a tick longer than the interval is followed at once by the next).
    pub fn every(
        name: &str,
        interval: Duration,
        tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Worker> {
        Worker::triggered(name, interval, &Trigger::default(), tick)
    }

    /// [`Worker::every`], and also whenever `trigger` asks: the interval then counts from that
    /// tick, so a worker that is asked more often than `interval` never ticks on its own.
    pub fn triggered(
        name: &str,
        interval: Duration,
        trigger: &Trigger,
        mut tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Worker> {
        let (wake, woken) = mpsc::channel::<Wake>();
        let thread_name = name.to_owned();
        let ticks = trigger.0.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                loop {
                    let started = Instant::now();
                    {
                        let mut st = lock(&ticks.state);
                        st.started += 1;
                        st.running_since = Some(started);
                    }
                    tick();
                    {
                        let mut st = lock(&ticks.state);
                        st.running_since = None;
                        st.done += 1;
                    }
                    ticks.ticked.notify_all();
                    match woken.recv_timeout(interval.saturating_sub(started.elapsed())) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(Wake::Tick) => {
                            // Asks that came while this one waited are answered by one tick.
                            if woken.try_iter().any(|w| matches!(w, Wake::Stop)) {
                                break;
                            }
                        }
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                // The closure (and what it owns: a loaded object, which detaches) goes with it.
                log::debug!("{thread_name}: stopped");
            })?;
        *lock(&trigger.0.wake) = Some(wake.clone());
        Ok(Worker {
            wake,
            _thread: thread,
        })
    }
}

/// How a scrape asks a worker for a tick now (see [`Worker::triggered`]). Cloned freely; one
/// without a worker (or whose worker stopped) answers at once.
#[derive(Clone, Default)]
pub struct Trigger(Arc<Ticks>);

#[derive(Default)]
struct Ticks {
    wake: Mutex<Option<mpsc::Sender<Wake>>>,
    state: Mutex<TickState>,
    ticked: Condvar,
}

#[derive(Default)]
struct TickState {
    /// Ticks started since the worker started.
    started: u64,
    /// Ticks finished (they run one after another: tick `n` finished when `done >= n`).
    done: u64,
    /// When the tick under way started.
    running_since: Option<Instant>,
}

/// What [`Trigger::tick_within`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticked {
    /// A tick that started after the ask has finished.
    Fresh,
    /// None finished in the time given, or the tick under way has run longer than that (it is
    /// stuck in the kernel, and waiting for it at every scrape would only slow every scrape).
    Late,
    /// No worker to ask: what was published is all there is.
    NoWorker,
}

impl Trigger {
    /// Asks for a tick now and waits at most `within` for one to finish.
    pub fn tick_within(&self, within: Duration) -> Ticked {
        let Some(wake) = lock(&self.0.wake).clone() else {
            return Ticked::NoWorker;
        };
        let asked = Instant::now();
        let mut st = lock(&self.0.state);
        if st.running_since.is_some_and(|t| t.elapsed() > within) {
            return Ticked::Late;
        }
        // The next tick to start: one under way may have read the kernel before the ask.
        let wanted = st.started + 1;
        if wake.send(Wake::Tick).is_err() {
            return Ticked::NoWorker;
        }
        while st.done < wanted {
            let left = within.saturating_sub(asked.elapsed());
            if left.is_zero() {
                return Ticked::Late;
            }
            st = self
                .0
                .ticked
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ticked::Fresh
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A trigger runs the tick at once, and the interval then counts from it: asked every
    /// 20 ms with an interval of an hour, the worker ticks on each ask and never on its own.
    #[test]
    fn a_trigger_ticks_at_once_and_waits_for_it() {
        let ticks = Arc::new(AtomicU32::new(0));
        let counted = ticks.clone();
        let trigger = Trigger::default();
        let w = Worker::triggered(
            "test-trigger",
            Duration::from_secs(3600),
            &trigger,
            move || {
                std::thread::sleep(Duration::from_millis(5));
                counted.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        for asked in 1..=5 {
            let before = ticks.load(Ordering::SeqCst);
            assert_eq!(trigger.tick_within(Duration::from_secs(10)), Ticked::Fresh);
            // Each ask is answered by a tick that started after it (the first one may be the
            // start's own tick, if the thread had not begun it yet).
            assert!(ticks.load(Ordering::SeqCst) > before, "{asked}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = ticks.load(Ordering::SeqCst);
        assert!((5..=7).contains(&n), "{n} ticks for 5 asks and the first");
        drop(w);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            trigger.tick_within(Duration::from_secs(1)),
            Ticked::NoWorker
        );
    }

    /// A tick stuck in the kernel: the ask that meets it waits its time and says late; the next
    /// ones do not wait at all. Asks without a worker answer at once.
    #[test]
    fn a_stuck_tick_is_late_and_then_not_waited_for() {
        assert_eq!(
            Trigger::default().tick_within(Duration::from_secs(10)),
            Ticked::NoWorker
        );
        let trigger = Trigger::default();
        let (release, released) = mpsc::channel::<()>();
        let mut first = true;
        let _w = Worker::triggered(
            "test-stuck",
            Duration::from_secs(3600),
            &trigger,
            move || {
                if !std::mem::take(&mut first) {
                    let _ = released.recv_timeout(Duration::from_secs(10));
                }
            },
        )
        .unwrap();
        // Let the start tick pass, then the asked one blocks.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        assert_eq!(
            trigger.tick_within(Duration::from_millis(100)),
            Ticked::Late
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        assert_eq!(
            trigger.tick_within(Duration::from_millis(100)),
            Ticked::Late
        );
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        release.send(()).unwrap();
    }
}
