//! One core's hooks on single instructions, registered by any part of the
//! machine (the recorder's probes, the simulated MMU's barriers, call probes) and
//! installed as one Unicorn code hook per run of adjacent sites.
//!
//! Unicorn calls every code hook through one helper that walks the engine's whole
//! list of code hooks at each hooked instruction (`helper_uc_tracecode`, about 20
//! host instructions per hook in the list). A barrier right after a probed store,
//! or a DSB followed by an ISB, is one hook here instead of two, so every hit
//! anywhere walks a shorter list.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use unicorn_engine::{uc_error, UcHookId, Unicorn};

/// A hook run before the instruction at its address, given that address.
pub(crate) type CodeSiteFn = Rc<dyn Fn(&mut Unicorn<'_, ()>, u64)>;

/// Sites at most this many bytes apart share one engine hook: the next
/// instruction on arm64. On RISC-V a compressed instruction between two sites
/// 4 bytes apart is hooked too and finds nothing to run.
const ADJACENT: u64 = 4;

/// One core's code sites and the engine hooks that run them.
#[derive(Default)]
pub(crate) struct CodeSites {
    /// Hooks by address, each address's in the order they were added.
    sites: BTreeMap<u64, Vec<CodeSiteFn>>,
    engine_hooks: Vec<UcHookId>,
}

impl CodeSites {
    /// Runs `hook` before each execution of the instruction at `addr`, once
    /// [`Self::install`] has run; after the hooks added there before it.
    pub(crate) fn add(&mut self, addr: u64, hook: impl Fn(&mut Unicorn<'_, ()>, u64) + 'static) {
        self.sites.entry(addr).or_default().push(Rc::new(hook));
    }

    /// Replaces the engine's hooks by one per run of adjacent sites. Code the
    /// engine translated before does not call the new ones: the caller flushes it.
    pub(crate) fn install(&mut self, uc: &mut Unicorn<'static, ()>) -> Result<(), uc_error> {
        for hook in self.engine_hooks.drain(..) {
            uc.remove_hook(hook)?;
        }
        for run in runs(&self.sites) {
            let (first, last) = (run[0].0, run[run.len() - 1].0);
            let id = uc.add_code_hook(first, last, move |uc, pc, _| {
                if let Some((_, hooks)) = run.iter().find(|(addr, _)| *addr == pc) {
                    for hook in hooks {
                        hook(uc, pc);
                    }
                }
            })?;
            self.engine_hooks.push(id);
        }
        Ok(())
    }

    /// How many engine hooks [`Self::install`] made.
    #[cfg(test)]
    fn engine_hook_count(&self) -> usize {
        self.engine_hooks.len()
    }
}

/// A hook run from an instruction hook, given the core's slice counter `C` (which
/// holds the hooks: a hook that kept its own reference would keep it alive).
pub(crate) type InsnSiteFn<C> = Box<dyn Fn(&mut Unicorn<'_, ()>, &C, u64)>;

/// Hooks run from an instruction hook the engine calls anyway, by the
/// instruction's address: arm64's MSR hook runs those of `msr daif, Xt` sites,
/// which then need no code hook (nor a place in the list every code hook's hit
/// walks).
pub(crate) struct InsnSites<C> {
    sites: RefCell<BTreeMap<u64, Vec<InsnSiteFn<C>>>>,
}

impl<C> Default for InsnSites<C> {
    fn default() -> Self {
        Self {
            sites: RefCell::default(),
        }
    }
}

impl<C> InsnSites<C> {
    /// Runs `hook` when the instruction hook fires at `addr`, after the hooks
    /// added there before it.
    pub(crate) fn add(&self, addr: u64, hook: impl Fn(&mut Unicorn<'_, ()>, &C, u64) + 'static) {
        self.sites
            .borrow_mut()
            .entry(addr)
            .or_default()
            .push(Box::new(hook));
    }

    /// No site at all: the instruction hook need not even read its PC.
    pub(crate) fn is_empty(&self) -> bool {
        self.sites.borrow().is_empty()
    }

    /// Whether any hook is at `addr`.
    pub(crate) fn holds(&self, addr: u64) -> bool {
        self.sites.borrow().contains_key(&addr)
    }

    /// Runs the hooks at `pc`. They must not add sites.
    pub(crate) fn run(&self, uc: &mut Unicorn<'_, ()>, counter: &C, pc: u64) {
        if let Some(hooks) = self.sites.borrow().get(&pc) {
            for hook in hooks {
                hook(uc, counter, pc);
            }
        }
    }
}

impl<C> fmt::Debug for InsnSites<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<u64> = self.sites.borrow().keys().copied().collect();
        f.debug_struct("InsnSites").field("addrs", &addrs).finish()
    }
}

/// The sites split where the next is more than [`ADJACENT`] bytes on.
fn runs(sites: &BTreeMap<u64, Vec<CodeSiteFn>>) -> Vec<Vec<(u64, Vec<CodeSiteFn>)>> {
    let mut runs: Vec<Vec<(u64, Vec<CodeSiteFn>)>> = Vec::new();
    for (&addr, hooks) in sites {
        let entry = (addr, hooks.clone());
        match runs.last_mut() {
            Some(run) if addr - run[run.len() - 1].0 <= ADJACENT => run.push(entry),
            _ => runs.push(vec![entry]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use unicorn_engine::{Arch, Mode, Prot, RegisterARM64};

    use super::*;

    const BASE: u64 = 0x1000;
    const NOP: [u8; 4] = [0x1f, 0x20, 0x03, 0xd5];

    #[test]
    fn each_site_runs_its_own_hooks_in_order_whatever_shares_its_engine_hook() {
        let mut uc = Unicorn::new(Arch::ARM64, Mode::ARM).unwrap();
        uc.mem_map(BASE, 0x1000, Prot::ALL).unwrap();
        uc.mem_write(BASE, &NOP.repeat(16)).unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut sites = CodeSites::default();
        // Two adjacent sites, one of them with two hooks, a lone site, and a
        // site past a gap of one instruction (not adjacent).
        for (addr, tag) in [
            (0x10, 'a'),
            (0x14, 'b'),
            (0x10, 'c'),
            (0x24, 'd'),
            (0x2c, 'e'),
        ] {
            let seen = seen.clone();
            sites.add(BASE + addr, move |_, pc| {
                seen.borrow_mut().push((pc - BASE, tag))
            });
        }
        sites.install(&mut uc).unwrap();
        assert_eq!(sites.engine_hook_count(), 3);
        uc.emu_start(BASE, BASE + 0x30, 0, 0).unwrap();
        let expected = [
            (0x10, 'a'),
            (0x10, 'c'),
            (0x14, 'b'),
            (0x24, 'd'),
            (0x2c, 'e'),
        ];
        assert_eq!(*seen.borrow(), expected);

        // Installing again after another site replaces the engine's hooks.
        let extra = seen.clone();
        sites.add(BASE + 0x28, move |_, pc| {
            extra.borrow_mut().push((pc - BASE, 'f'))
        });
        sites.install(&mut uc).unwrap();
        assert_eq!(sites.engine_hook_count(), 2);
        uc.ctl_flush_tb().unwrap();
        seen.borrow_mut().clear();
        uc.reg_write(RegisterARM64::PC, BASE).unwrap();
        uc.emu_start(BASE, BASE + 0x30, 0, 0).unwrap();
        let mut expected = expected.to_vec();
        expected.insert(4, (0x28, 'f'));
        assert_eq!(*seen.borrow(), expected);
    }

    #[test]
    fn an_instruction_hook_runs_only_the_hooks_at_its_address_in_order() {
        let mut uc = Unicorn::new(Arch::ARM64, Mode::ARM).unwrap();
        let sites = InsnSites::<u32>::default();
        assert!(sites.is_empty());
        let seen = Rc::new(RefCell::new(Vec::new()));
        for (addr, tag) in [(0x10, 'a'), (0x20, 'b'), (0x10, 'c')] {
            let seen = seen.clone();
            sites.add(addr, move |_, &counter, pc| {
                seen.borrow_mut().push((pc, tag, counter))
            });
        }
        assert!(!sites.is_empty() && sites.holds(0x10) && !sites.holds(0x14));
        sites.run(&mut uc, &7, 0x10);
        sites.run(&mut uc, &7, 0x14);
        assert_eq!(*seen.borrow(), [(0x10, 'a', 7), (0x10, 'c', 7)]);
    }
}
