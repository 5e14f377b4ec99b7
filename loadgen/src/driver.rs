//! One driver thread: an event loop over a slice of the connections.
//!
//! The loop reads like a dispatch table: pop due wakes from the timeline (sends, reconnects,
//! connect timeouts), flush the connections that have bytes to write, sleep in `epoll_wait`
//! until the timerfd fires at the next wake or a socket is ready, handle socket events.
//! Open loop: each (connection, lane) has a constant-rate [`Schedule`]; closed loop: each
//! connection keeps `depth` requests in flight. The thread never blocks outside `poll`,
//! and logs only on connection state changes.
//!
//! Threads connect first, then meet at a barrier where one of them picks the common time
//! zero, so every thread's schedules, warm-up and interval log share one clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Poll, Token};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::Error;
use crate::config::{Mode, RunConfig, Spin};
use crate::conn::{Conn, Outcome, Shared};
use crate::live::{LiveSnapshot, LiveStats, Phase};
use crate::recorder::Recorder;
use crate::remote::Rotation;
use crate::schedule::{Mix, Schedule, Timeline, Wake};

/// Poll token of the timerfd; connection `i` uses `Token(i + 1)`.
const TIMER: Token = Token(0);

/// How often live counters are published: smooth for a progress bar, negligible cost.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Upper bound of the learned wake-up latency the driver compensates by waking early and
/// spinning: beyond this the machine is too loaded for spinning to help, and a larger value
/// would burn CPU the server needs.
const MAX_WAKE_EARLY: Duration = Duration::from_micros(200);

/// Events taken per `poll`: one per connection is typical; more only costs memory.
const EVENTS_CAPACITY: usize = 1024;

/// Start-line shared by all driver threads of a run.
#[derive(Debug)]
pub(crate) struct StartLine {
    barrier: Barrier,
    /// Wall-clock time zero asked for (`--start-at`).
    start_at: Option<SystemTime>,
    /// Time zero, monotonic and wall clock, set by the barrier's leader.
    zero: Mutex<Option<(Instant, SystemTime)>>,
    /// Set by a thread that hit a fatal error, so the others stop.
    abort: AtomicBool,
}

impl StartLine {
    pub(crate) fn new(threads: usize, start_at: Option<SystemTime>) -> StartLine {
        StartLine {
            barrier: Barrier::new(threads),
            start_at,
            zero: Mutex::new(None),
            abort: AtomicBool::new(false),
        }
    }

    /// Set when a thread hit a fatal error, so the others stop.
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Waits for every thread, then returns the common time zero: now, or the `--start-at`
    /// time if that is still ahead.
    pub(crate) fn meet(&self) -> Instant {
        if self.barrier.wait().is_leader() {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let zero = match self.start_at.map(|at| at.duration_since(wall)) {
                Some(Ok(ahead)) => (now + ahead, wall + ahead),
                Some(Err(e)) => {
                    tracing::warn!(late = ?e.duration(), "--start-at has passed; starting now");
                    (now, wall)
                }
                None => (now, wall),
            };
            *self.zero.lock().unwrap_or_else(|e| e.into_inner()) = Some(zero);
        }
        self.barrier.wait();
        self.zero().0
    }

    /// Time zero (monotonic, wall clock) once met; now before that.
    pub(crate) fn zero(&self) -> (Instant, SystemTime) {
        let zero = *self.zero.lock().unwrap_or_else(|e| e.into_inner());
        zero.unwrap_or_else(|| (Instant::now(), SystemTime::now()))
    }
}

/// The run's clock, fixed at time zero.
#[derive(Debug, Clone, Copy)]
struct Clock {
    measure_start: Instant,
    end: Instant,
}

/// One driver thread's state.
#[derive(Debug)]
pub(crate) struct Driver<'a> {
    cfg: &'a RunConfig,
    sh: &'a Shared,
    /// Per-lane total rates (requests/s across all connections).
    rates: &'a [f64],
    poll: Poll,
    timer: crate::timer::Timer,
    conns: Vec<Conn>,
    /// Global index of each local connection (staggers schedules across threads).
    global: Vec<usize>,
    /// `schedules[conn][lane]` (open loop only).
    schedules: Vec<Vec<Schedule>>,
    /// Lane mix per connection (closed loop only).
    mixes: Vec<Mix>,
    timeline: Timeline,
    rec: Recorder,
    live: &'a LiveStats,
    published: LiveSnapshot,
    next_publish: Instant,
    /// Connections with bytes to write this turn.
    dirty: Vec<usize>,
    /// Learned timer wake-up latency (EWMA, at most `MAX_WAKE_EARLY`): the timer is armed
    /// this much before a deadline and the rest is spun.
    wake_early: Duration,
    /// Reused poll event buffer.
    events: Events,
}

impl<'a> Driver<'a> {
    /// A driver for the connections with global indices `global`.
    pub(crate) fn new(
        cfg: &'a RunConfig,
        sh: &'a Shared,
        rates: &'a [f64],
        global: Vec<usize>,
        live: &'a LiveStats,
    ) -> Result<Driver<'a>, Error> {
        let poll = Poll::new().map_err(Error::io("create poll"))?;
        let timer = crate::timer::Timer::new(poll.registry(), TIMER)
            .map_err(Error::io("create timerfd"))?;
        let mut rng = match cfg.seed {
            Some(seed) => StdRng::seed_from_u64(seed ^ global[0] as u64),
            None => StdRng::from_os_rng(),
        };
        let rotation = |rng: &mut StdRng| match cfg.shuffle_remotes {
            true => Rotation::shuffled(sh.remotes.len(), cfg.backoff, rng),
            false => Rotation::in_order((0..sh.remotes.len()).collect(), cfg.backoff),
        };
        let conns = (0..global.len())
            .map(|i| Conn::new(Token(i + 1), rotation(&mut rng), sh.protocol))
            .collect();
        let now = Instant::now();
        let shares: Vec<f64> = cfg.lanes.iter().map(|l| l.share).collect();
        Ok(Driver {
            cfg,
            sh,
            rates,
            poll,
            timer,
            conns,
            mixes: global.iter().map(|_| Mix::new(&shares)).collect(),
            global,
            schedules: Vec::new(),
            timeline: Timeline::default(),
            rec: Recorder::new(cfg.lanes.len(), sh.remotes.len(), now, cfg.interval),
            live,
            published: LiveSnapshot {
                phase: Phase::Connecting,
                sent: 0,
                replies: 0,
                bad: 0,
                reconnects: 0,
            },
            next_publish: now,
            dirty: Vec::new(),
            wake_early: Duration::ZERO,
            events: Events::with_capacity(EVENTS_CAPACITY),
        })
    }

    /// Connects, meets the other threads, runs the workload, drains; returns the measurements.
    pub(crate) fn run(mut self, start: &StartLine) -> Result<Recorder, Error> {
        crate::timer::tighten_slack();
        let connected = self.connect_phase(start);
        let zero = start.meet();
        connected?;
        if start.abort.load(Ordering::Relaxed) {
            return Ok(self.rec);
        }
        let measure_start = zero + self.cfg.warmup;
        let clock = Clock { measure_start, end: measure_start + self.cfg.duration };
        self.rec.start_clock(measure_start);
        self.plan_schedules(zero);
        self.main_loop(clock, start).inspect_err(|_| start.abort.store(true, Ordering::Relaxed))?;
        for conn in &mut self.conns {
            conn.finish(&mut self.rec);
        }
        // Sends still due when the drain ran out were never made: count them, never drop them.
        for lanes in &mut self.schedules {
            for (lane, schedule) in lanes.iter_mut().enumerate() {
                while schedule.pop_due(clock.end).is_some() {
                    self.rec.counts(lane).unsent += 1;
                }
            }
        }
        self.rec.finish_intervals(clock.end);
        self.publish(Instant::now(), true);
        Ok(self.rec)
    }

    /// Opens every connection and waits until all have a session or the connect timeout.
    fn connect_phase(&mut self, start: &StartLine) -> Result<(), Error> {
        let now = Instant::now();
        for c in 0..self.conns.len() {
            self.try_connect(c, now);
        }
        let deadline = now + self.cfg.connect_timeout;
        loop {
            let now = Instant::now();
            if self.conns.iter().all(Conn::is_ready)
                || now >= deadline
                || start.abort.load(Ordering::Relaxed)
            {
                return Ok(());
            }
            self.turn(now, deadline).inspect_err(|_| start.abort.store(true, Ordering::Relaxed))?;
        }
    }

    /// Builds the open-loop schedules from time zero and queues their first wakes.
    fn plan_schedules(&mut self, zero: Instant) {
        let Mode::Open = self.cfg.mode else { return };
        let total = self.cfg.connections as f64;
        let length = self.cfg.warmup + self.cfg.duration;
        for (c, &g) in self.global.iter().enumerate() {
            let lanes: Vec<Schedule> = self
                .rates
                .iter()
                .map(|&rate| {
                    Schedule::new(
                        zero,
                        rate / total,
                        Duration::from_secs_f64(g as f64 / rate),
                        length,
                    )
                })
                .collect();
            for (lane, schedule) in lanes.iter().enumerate() {
                if let Some(at) = schedule.peek() {
                    self.timeline.push(at, Wake::Send { conn: c, lane });
                }
            }
            self.schedules.push(lanes);
        }
    }

    /// Runs until the drain is over.
    fn main_loop(&mut self, clock: Clock, start: &StartLine) -> Result<(), Error> {
        let mut drain_until = None;
        self.fill_all(Instant::now(), clock);
        loop {
            let now = Instant::now();
            if start.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.live.set_phase(if now < clock.measure_start {
                Phase::Warmup
            } else {
                Phase::Measuring
            });
            if now >= clock.end {
                self.live.set_phase(Phase::Draining);
                let until = *drain_until.get_or_insert(now + self.cfg.drain);
                if now >= until || self.settled() {
                    return Ok(());
                }
            }
            self.rec.tick(now.min(clock.end));
            let mut deadline = drain_until.unwrap_or(clock.end).min(self.next_publish);
            if now < clock.end {
                deadline = deadline.min(self.rec.next_interval_at());
            }
            self.turn_with(now, deadline, Some(clock))?;
        }
    }

    /// Nothing is in flight or waiting to be sent anywhere. A schedule entry intended just
    /// before the end counts as waiting: without the early-wake spin the driver may wake
    /// after the end with that send still due.
    fn settled(&self) -> bool {
        self.conns.iter().all(|c| c.outstanding() == 0 && c.backlog() == 0)
            && self.schedules.iter().flatten().all(|s| s.peek().is_none())
    }

    /// One loop turn during the connect phase.
    fn turn(&mut self, now: Instant, deadline: Instant) -> Result<(), Error> {
        self.turn_with(now, deadline, None)
    }

    /// One loop turn: due wakes, flush, sleep until `deadline` or an event, handle events.
    fn turn_with(
        &mut self,
        mut now: Instant,
        deadline: Instant,
        clock: Option<Clock>,
    ) -> Result<(), Error> {
        now = self.spin_until_due(now);
        while let Some(wake) = self.timeline.pop_due(now) {
            self.on_wake(wake, now);
        }
        self.flush_dirty(now);
        self.publish(now, false);
        let deadline = self.timeline.next_at().map_or(deadline, |at| at.min(deadline));
        let wake_at = deadline.checked_sub(self.wake_early).unwrap_or(deadline);
        let timeout = if wake_at <= now {
            Some(Duration::ZERO)
        } else {
            self.timer.arm(wake_at, now).map_err(Error::io("arm timerfd"))?;
            None
        };
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, timeout);
        let now = Instant::now();
        let mut result = match polled {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => Err(Error::io("poll")(e)),
            _ => Ok(()),
        };
        for event in &events {
            match event.token() {
                TIMER => self.learn_wake_latency(now),
                Token(t) if result.is_ok() => result = self.on_socket(t - 1, now, clock),
                Token(_) => {}
            }
        }
        self.events = events;
        result
    }

    /// Updates the learned wake-up latency from a timer expiry (EWMA with weight 1/8).
    /// With the spin off it stays zero: the timer is armed at the deadline itself.
    fn learn_wake_latency(&mut self, now: Instant) {
        if let Some(late) = self.timer.clear(now)
            && self.cfg.spin != Spin::Off
        {
            let sample = late.min(MAX_WAKE_EARLY);
            self.wake_early = (self.wake_early * 7 + sample) / 8;
        }
    }

    /// If the next wake is due within the learned wake-up latency, spins until it.
    fn spin_until_due(&self, mut now: Instant) -> Instant {
        let Some(next) = self.timeline.next_at() else { return now };
        if next <= now || next - now > self.wake_early {
            return now;
        }
        while now < next {
            std::hint::spin_loop();
            now = Instant::now();
        }
        now
    }

    /// Handles a due wake.
    fn on_wake(&mut self, wake: Wake, now: Instant) {
        match wake {
            Wake::Send { conn, lane } => self.send_due(conn, lane, now),
            Wake::Reconnect { conn, epoch }
                if self.conns[conn].epoch == epoch && self.conns[conn].is_down() =>
            {
                self.try_connect(conn, now);
            }
            Wake::ConnectTimeout { conn, epoch }
                if self.conns[conn].epoch == epoch && self.conns[conn].is_connecting() =>
            {
                self.conn_down(conn, now, "connect timed out".into());
            }
            Wake::Reconnect { .. } | Wake::ConnectTimeout { .. } => {}
        }
    }

    /// Submits every request of a (connection, lane) schedule that is due (catch-up).
    fn send_due(&mut self, c: usize, lane: usize, now: Instant) {
        let schedule = &mut self.schedules[c][lane];
        let conn = &mut self.conns[c];
        while let Some(intended) = schedule.pop_due(now) {
            conn.submit(self.sh, &mut self.rec, lane, intended, now);
        }
        if let Some(at) = schedule.peek() {
            self.timeline.push(at, Wake::Send { conn: c, lane });
        }
        self.dirty.push(c);
    }

    /// Closed loop: tops every ready connection up to `depth` until the end.
    fn fill_all(&mut self, now: Instant, clock: Clock) {
        for c in 0..self.conns.len() {
            self.fill(c, now, clock);
        }
    }

    /// Closed loop: tops connection `c` up to `depth` requests in flight.
    fn fill(&mut self, c: usize, now: Instant, clock: Clock) {
        let Mode::Closed { depth } = self.cfg.mode else { return };
        let conn = &mut self.conns[c];
        if now >= clock.end || !conn.is_ready() {
            return;
        }
        while conn.outstanding() < depth {
            let lane = self.mixes[c].next_lane();
            conn.submit(self.sh, &mut self.rec, lane, now, now);
        }
        self.dirty.push(c);
    }

    /// Handles readiness on connection `c`.
    fn on_socket(&mut self, c: usize, now: Instant, clock: Option<Clock>) -> Result<(), Error> {
        match self.conns[c].on_event(self.sh, &mut self.rec, now) {
            Outcome::Idle => {}
            Outcome::Up => {
                self.conns[c].count_session(self.sh, &mut self.rec, now);
                self.dirty.push(c);
            }
            Outcome::Down(why) => self.conn_down(c, now, why),
            Outcome::Fatal(why) => {
                let remote = self.sh.remotes[self.conns[c].remote()].to_string();
                self.rec.verify.protocol_errors += 1;
                return Err(Error::Handshake { remote, why });
            }
        }
        if let Some(clock) = clock {
            self.fill(c, now, clock);
        }
        Ok(())
    }

    /// Connection `c` failed or dropped: fail its in-flight requests and plan the next try.
    fn conn_down(&mut self, c: usize, now: Instant, why: String) {
        let remote = self.sh.remotes[self.conns[c].remote()].to_string();
        let up_for = self.conns[c].go_down(self.poll.registry(), &mut self.rec);
        if up_for.is_some() {
            tracing::warn!(conn = c, %remote, %why, "session lost");
        } else {
            tracing::debug!(conn = c, %remote, %why, "connect failed");
        }
        let delay = self.conns[c].rotation.on_failure(up_for);
        if delay.is_zero() {
            self.try_connect(c, now);
        } else {
            let epoch = self.conns[c].epoch;
            self.timeline.push(now + delay, Wake::Reconnect { conn: c, epoch });
        }
    }

    /// Starts a connect attempt; an immediate failure moves on like any other.
    fn try_connect(&mut self, c: usize, now: Instant) {
        match self.conns[c].start_connect(self.sh, self.poll.registry(), &mut self.rec) {
            Outcome::Down(why) => self.conn_down(c, now, why),
            _ => {
                let epoch = self.conns[c].epoch;
                self.timeline
                    .push(now + self.cfg.connect_timeout, Wake::ConnectTimeout { conn: c, epoch });
            }
        }
    }

    /// Writes pending bytes of the connections touched this turn.
    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &c in &dirty {
            if let Err(e) = self.conns[c].flush() {
                self.conn_down(c, now, format!("write: {e}"));
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Adds this thread's progress since the last call to the live counters.
    fn publish(&mut self, now: Instant, force: bool) {
        if !force && now < self.next_publish {
            return;
        }
        self.next_publish = now + PUBLISH_EVERY;
        let mut total =
            LiveSnapshot { phase: Phase::Done, sent: 0, replies: 0, bad: 0, reconnects: 0 };
        for lane in &self.rec.lanes {
            total.sent += lane.counts.sent;
            total.replies += lane.counts.ok + lane.counts.errors;
            total.bad += lane.counts.bad();
        }
        total.bad += self.rec.verify.violations();
        total.reconnects = self.rec.remotes.iter().map(|r| r.disconnects).sum();
        let p = self.published;
        self.live.add(LiveSnapshot {
            phase: Phase::Done,
            sent: total.sent - p.sent,
            replies: total.replies - p.replies,
            bad: total.bad.saturating_sub(p.bad),
            reconnects: total.reconnects - p.reconnects,
        });
        self.published = total;
    }
}
