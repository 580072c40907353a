//! A core stopped in one of the recorder's probes, as the recorder reads it.

use std::cell::{Cell, OnceCell};
use std::ops::Deref;
use std::rc::Rc;

use unicorn_engine::{Prot, Unicorn};

use crate::arch::aarch64::mmu::PAGE_SIZE;
use crate::core_mmu::{CoreMmu, HostView};

/// A core stopped in a probe: its registers through the engine (this derefs to
/// it); its memory through [`ProbedCore::read`].
///
/// With the simulated MMU, a read goes through the model, never through
/// Unicorn's TLB: a read through the engine fills that TLB where it misses, and
/// the model would count the fill as the guest's own access at the probed
/// instruction (a backtrace or a lock's name read at a function's entry would
/// show up as a TLB fill there, and the guest's real first access to the page,
/// a few instructions on, would fill nothing).
///
/// Nothing changes while a core is stopped in a probe, so the translation
/// registers are read once, and the last page translated is kept.
pub(crate) struct ProbedCore<'a, 'u> {
    uc: &'a Unicorn<'u, ()>,
    mmu: Option<Rc<CoreMmu>>,
    view: OnceCell<HostView>,
    /// The last virtual page translated and its physical page.
    last_page: Cell<Option<(u64, u64)>>,
}

impl<'a, 'u> ProbedCore<'a, 'u> {
    pub(crate) fn new(uc: &'a Unicorn<'u, ()>, mmu: Option<Rc<CoreMmu>>) -> Self {
        Self {
            uc,
            mmu,
            view: OnceCell::new(),
            last_page: Cell::new(None),
        }
    }

    /// Guest memory at virtual `va` as the core translates it now; false where it
    /// could not read it.
    pub(crate) fn read(&self, va: u64, buf: &mut [u8]) -> bool {
        let Some(mmu) = &self.mmu else {
            // Unicorn's own MMU: no model to take the fill for the guest's.
            #[allow(clippy::disallowed_methods)]
            return self.uc.vmem_read(va, Prot::READ, buf).is_ok();
        };
        let mut done = 0;
        while done < buf.len() {
            let addr = va.wrapping_add(done as u64);
            let (page, offset) = (addr & !(PAGE_SIZE - 1), addr & (PAGE_SIZE - 1));
            let len = ((PAGE_SIZE - offset) as usize).min(buf.len() - done);
            let pa = match self.last_page.get() {
                Some((va_page, pa)) if va_page == page => pa,
                _ => {
                    let view = self.view.get_or_init(|| mmu.host_view(self.uc));
                    let Some(pa) = mmu.host_page(view, page) else {
                        return false;
                    };
                    self.last_page.set(Some((page, pa)));
                    pa
                }
            };
            if !mmu.read_ram(pa | offset, &mut buf[done..done + len]) {
                return false;
            }
            done += len;
        }
        true
    }

    /// The little-endian u64 at `va`.
    pub(crate) fn read_u64(&self, va: u64) -> Option<u64> {
        let mut buf = [0; 8];
        self.read(va, &mut buf).then(|| u64::from_le_bytes(buf))
    }

    /// The little-endian u32 at `va`.
    pub(crate) fn read_u32(&self, va: u64) -> Option<u32> {
        let mut buf = [0; 4];
        self.read(va, &mut buf).then(|| u32::from_le_bytes(buf))
    }
}

impl<'u> Deref for ProbedCore<'_, 'u> {
    type Target = Unicorn<'u, ()>;

    fn deref(&self) -> &Self::Target {
        self.uc
    }
}
