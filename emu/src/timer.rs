//! Virtual time and the generic virtual timer. Time advances with guest instructions
//! (about one tick per instruction per core), never with host time.

/// `CNTFRQ_EL0`, as QEMU reports it.
pub const CNTFRQ_HZ: u64 = 62_500_000;
/// The virtual timer's PPI (INTID 27).
pub const VTIMER_INTID: u32 = 27;

/// The machine's clock. Each slice advances it by the instructions it ran divided by
/// the number of cores that were running, so that N cores running Q instructions
/// each in turn advance it by about Q, as parallel cores would.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    now: u64,
    /// Instructions not yet turned into a whole tick.
    remainder: u64,
}

impl VirtualClock {
    /// The time, in ticks.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The time seen by a core `executed` instructions into a slice that started now.
    pub fn now_during_slice(&self, executed: u64, running: u64) -> u64 {
        self.now + (self.remainder + executed) / running.max(1)
    }

    /// How many instructions a slice that starts now runs before the clock reaches
    /// `t` (0 if it already has): the inverse of [`Self::now_during_slice`].
    pub fn insns_until(&self, t: u64, running: u64) -> u64 {
        (t.saturating_sub(self.now) * running.max(1)).saturating_sub(self.remainder)
    }

    /// A slice that ran `insns` instructions while `running` cores were running.
    pub fn advance(&mut self, insns: u64, running: u64) {
        let running = running.max(1);
        let total = self.remainder + insns;
        self.now += total / running;
        self.remainder = total % running;
    }

    /// Idle cores skip ahead to `t` (never backwards).
    pub fn skip_to(&mut self, t: u64) {
        if t > self.now {
            self.now = t;
            self.remainder = 0;
        }
    }
}

const CTL_ENABLE: u64 = 1;
const CTL_IMASK: u64 = 2;
const CTL_ISTATUS: u64 = 4;

/// One core's virtual timer (`CNTV_CTL_EL0`, `CNTV_CVAL_EL0`).
#[derive(Debug, Clone, Default)]
pub struct VirtualTimer {
    ctl: u64,
    cval: u64,
}

impl VirtualTimer {
    /// `CNTV_CTL_EL0` at time `now` (ISTATUS as the compare makes it).
    pub fn ctl(&self, now: u64) -> u64 {
        self.ctl | if self.condition(now) { CTL_ISTATUS } else { 0 }
    }
    /// A write of `CNTV_CTL_EL0` (ENABLE and IMASK are kept).
    pub fn set_ctl(&mut self, value: u64) {
        self.ctl = value & (CTL_ENABLE | CTL_IMASK);
    }
    /// `CNTV_CVAL_EL0`.
    pub fn cval(&self) -> u64 {
        self.cval
    }
    /// A write of `CNTV_CVAL_EL0`.
    pub fn set_cval(&mut self, value: u64) {
        self.cval = value;
    }
    /// `CNTV_TVAL_EL0`: the signed 32-bit distance to the compare value.
    pub fn tval(&self, now: u64) -> u64 {
        self.cval.wrapping_sub(now) as u32 as i32 as i64 as u64
    }
    /// A write of `CNTV_TVAL_EL0` at time `now`: the compare value becomes `now`
    /// plus its signed 32 bits.
    pub fn set_tval(&mut self, now: u64, value: u64) {
        self.cval = now.wrapping_add(value as u32 as i32 as i64 as u64);
    }

    fn condition(&self, now: u64) -> bool {
        self.ctl & CTL_ENABLE != 0 && now >= self.cval
    }

    /// The level of the timer's interrupt output.
    pub fn irq_level(&self, now: u64) -> bool {
        self.condition(now) && self.ctl & CTL_IMASK == 0
    }

    /// When the output will rise, if it is armed and not yet high.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        (self.ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE && self.cval > now).then_some(self.cval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_divides_work_among_running_cores() {
        let mut c = VirtualClock::default();
        c.advance(10, 4);
        assert_eq!(c.now(), 2);
        c.advance(2, 4);
        assert_eq!(c.now(), 3);
        assert_eq!(c.now_during_slice(4, 1), 3 + 4);
        // Two instructions in the remainder: two more reach the next tick.
        let mut r = VirtualClock::default();
        r.advance(6, 4);
        assert_eq!(
            (r.now(), r.insns_until(2, 4), r.insns_until(3, 4)),
            (1, 2, 6)
        );
        assert_eq!((r.now_during_slice(1, 4), r.now_during_slice(2, 4)), (1, 2));
        assert_eq!(r.insns_until(1, 4), 0);
        c.skip_to(100);
        c.skip_to(50);
        assert_eq!(c.now(), 100);
    }

    #[test]
    fn timer_fires_at_its_compare_value_unless_masked() {
        let mut t = VirtualTimer::default();
        t.set_tval(1000, 500);
        t.set_ctl(CTL_ENABLE);
        assert_eq!(t.deadline(1000), Some(1500));
        assert!(!t.irq_level(1499) && t.irq_level(1500));
        assert_eq!(t.ctl(1500), CTL_ENABLE | CTL_ISTATUS);
        assert_eq!(t.tval(1600) as i64, -100);
        t.set_ctl(CTL_ENABLE | CTL_IMASK);
        assert!(!t.irq_level(1600) && t.deadline(0).is_none());
    }
}
