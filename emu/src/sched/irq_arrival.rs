//! `--irq-points`: interrupt arrival as a scheduling decision, on top of any
//! strategy.
//!
//! Where a timer tick lands relative to a CPU's own code decides IRQ-context bugs
//! (a handler that takes a lock the interrupted code holds). With the tick left to
//! the clock alone, it lands in a given critical section only by luck. Here the
//! schedule says where: at each given point number `p` (1-based, counting every
//! scheduling point, as PCT's change points do) an arrival is armed, and at the
//! first acquisition of a plain spinlock (`spin_lock`, which leaves IRQs as they
//! are) from then on the acquiring CPU's slice ends and its timer fires at once:
//! the machine moves virtual time forward to that timer's deadline (never
//! backwards, at most one timer period), so the CPU takes the tick before its next
//! instruction if its IRQs are unmasked, or when it unmasks them. That is the one
//! place an interrupt can meet a lock its own CPU holds (lockdep's
//! `HARDIRQ-ON-W`): the `_irq`/`_irqsave` forms mask IRQs, a handler takes no
//! mutex, and elsewhere an interrupt holds no lock against the code it
//! interrupted.

use super::{SchedPoint, SchedView, Scheduler, Slice};
use traces::{EventKind, LockFlavor};

/// A strategy with timer arrivals at chosen scheduling points.
pub struct IrqArrivals {
    inner: Box<dyn Scheduler>,
    /// Point numbers at which an arrival is armed, ascending.
    arrivals: Vec<u64>,
    /// Arrivals armed so far (an index into `arrivals`).
    armed_up_to: usize,
    /// Armed arrivals not yet landed.
    armed: usize,
    points: u64,
    request: Option<usize>,
}

impl Clone for IrqArrivals {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.boxed_clone(),
            arrivals: self.arrivals.clone(),
            armed_up_to: self.armed_up_to,
            armed: self.armed,
            points: self.points,
            request: self.request,
        }
    }
}

impl IrqArrivals {
    /// `inner`, with a timer arrival armed at each of `arrivals` (point numbers).
    pub fn new(inner: Box<dyn Scheduler>, mut arrivals: Vec<u64>) -> Self {
        arrivals.sort_unstable();
        Self {
            inner,
            arrivals,
            armed_up_to: 0,
            armed: 0,
            points: 0,
            request: None,
        }
    }
}

impl Scheduler for IrqArrivals {
    fn next(&mut self, view: &SchedView<'_>) -> Slice {
        self.inner.next(view)
    }

    fn at_point(&mut self, point: &SchedPoint<'_>) -> bool {
        self.points += 1;
        let end = self.inner.at_point(point);
        while self
            .arrivals
            .get(self.armed_up_to)
            .is_some_and(|&p| p <= self.points)
        {
            self.armed_up_to += 1;
            self.armed += 1;
        }
        let plain_spin = matches!(
            point.kind,
            EventKind::LockAcquired {
                flavor: LockFlavor::Spin,
                ..
            }
        );
        if self.armed > 0 && plain_spin {
            self.armed -= 1;
            self.request = Some(point.cpu);
            return true;
        }
        end
    }

    fn points(&self) -> u64 {
        self.inner.points()
    }

    fn take_timer_request(&mut self) -> Option<usize> {
        self.request.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::RoundRobin;
    use traces::{LockRef, StrId};

    const LOCK: LockRef = LockRef {
        addr: 0x1000,
        class: StrId(1),
    };

    fn acquired() -> EventKind {
        EventKind::LockAcquired {
            lock: LOCK,
            flavor: LockFlavor::Spin,
        }
    }

    /// An arrival at point `p` lands at point `p` itself when that point is a
    /// plain acquisition, and arrivals given in any order land in point order.
    #[test]
    fn an_arrival_lands_at_its_own_point_and_in_point_order() {
        let mut s = IrqArrivals::new(Box::new(RoundRobin::new(100)), vec![4, 2]);
        let release = EventKind::LockRelease {
            lock: LOCK,
            flavor: LockFlavor::Spin,
        };
        let mut at = |cpu, kind: &EventKind| {
            let end = s.at_point(&SchedPoint { cpu, kind });
            (end, s.take_timer_request())
        };
        assert_eq!(at(0, &release), (false, None));
        assert_eq!(at(1, &acquired()), (true, Some(1)), "point 2");
        assert_eq!(at(2, &acquired()), (false, None), "point 3");
        assert_eq!(at(3, &acquired()), (true, Some(3)), "point 4");
        assert_eq!(at(0, &acquired()), (false, None), "point 5");
    }

    /// The scheduling points an exploration counts are the wrapped strategy's
    /// (`explore` counts the base run's points through the wrapper).
    #[test]
    fn arrivals_count_the_points_of_the_strategy_they_wrap() {
        let delayed = Box::new(crate::sched::DelayBounded::new(100, vec![]));
        let mut s = IrqArrivals::new(delayed, vec![2]);
        for cpu in [0, 1, 0] {
            s.at_point(&SchedPoint {
                cpu,
                kind: &acquired(),
            });
        }
        assert_eq!(s.points(), 3);
    }

    #[test]
    fn an_arrival_lands_at_the_first_acquisition_from_its_point_on() {
        let mut s = IrqArrivals::new(Box::new(RoundRobin::new(100)), vec![3, 2]);
        let release = EventKind::LockRelease {
            lock: LOCK,
            flavor: LockFlavor::Spin,
        };
        let at = |s: &mut IrqArrivals, cpu, kind: &EventKind| {
            let end = s.at_point(&SchedPoint { cpu, kind });
            (end, s.take_timer_request())
        };
        // Point 1: nothing armed yet, even at an acquisition.
        assert_eq!(at(&mut s, 0, &acquired()), (false, None));
        // Points 2 and 3 arm two arrivals; a release is not where they land.
        assert_eq!(at(&mut s, 1, &release), (false, None));
        assert_eq!(at(&mut s, 1, &release), (false, None));
        // Nor an acquisition that masks IRQs.
        let irqsave = EventKind::LockAcquired {
            lock: LOCK,
            flavor: LockFlavor::SpinIrqSave,
        };
        assert_eq!(at(&mut s, 1, &irqsave), (false, None));
        // They land one per plain acquisition, on the acquiring CPU.
        assert_eq!(at(&mut s, 2, &acquired()), (true, Some(2)));
        assert_eq!(at(&mut s, 3, &acquired()), (true, Some(3)));
        assert_eq!(at(&mut s, 3, &acquired()), (false, None));
    }
}
