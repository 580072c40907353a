//! A new core: its engine from the ISA ([`crate::arch::Arch`]), guest RAM mapped,
//! and the machine's own hooks on it: the block hook that counts instructions and
//! stops the slice where an interrupt is due, the exception hook, and the device
//! windows of the board.

use std::cell::RefCell;
use std::rc::Rc;

use unicorn_engine::{Prot, Unicorn};

use crate::arch::{Arch, CoreHooks};
use crate::block_hook::BlockHook;
use crate::board::{Board, MmioAccess};
use crate::cpu::{Core, Hooks, KeepAlive};
use crate::error::{uc_err, EmuError};
use crate::memory::GuestRam;
use crate::simmu;
use crate::slice_counter::{IrqStop, SliceCounter};

impl Core {
    pub(crate) fn new(
        cpu: usize,
        ram: &GuestRam,
        board: &Rc<RefCell<Board>>,
        hooks: Hooks,
        sim_mmu: Option<&Rc<crate::core_mmu::Shared>>,
    ) -> Result<Self, EmuError> {
        let isa = board.borrow().isa;
        let arch = isa.arch();
        let mut uc = arch.new_engine()?;
        // SAFETY: `ram` outlives every core (see `Machine`'s field order) and is only
        // accessed by the host between slices.
        unsafe { uc.mem_map_ptr(ram.base(), ram.size(), Prot::ALL, ram.host_ptr().cast()) }
            .map_err(uc_err("mapping guest RAM"))?;
        let counter = Rc::new(SliceCounter::default());
        let block_hook = install_counting_hooks(&mut uc, cpu, &counter, board, arch, hooks)?;
        install_devices(&mut uc, cpu, board, &counter)?;
        let mmu = match sim_mmu {
            Some(shared) => Some(simmu::install_core(&mut uc, cpu, shared, &counter, isa)?),
            None => None,
        };
        let mut keep_alive = arch.install_core_hooks(&mut CoreHooks {
            uc: &mut uc,
            cpu,
            board,
            counter: &counter,
            mmu: mmu.clone(),
            hooks,
        })?;
        keep_alive.extend(block_hook.map(|hook| Box::new(hook) as KeepAlive));
        Ok(Self::with_engine(uc, counter, mmu, keep_alive))
    }
}

pub(crate) fn install_counting_hooks(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    counter: &Rc<SliceCounter>,
    board: &Rc<RefCell<Board>>,
    arch: &'static dyn Arch,
    hooks: Hooks,
) -> Result<Option<BlockHook>, EmuError> {
    let block_hook = (hooks != Hooks::Uncounted)
        .then(|| install_block_hook(uc, cpu, counter, board, arch))
        .transpose()?;
    let (c, b) = (counter.clone(), board.clone());
    uc.add_intr_hook(move |uc, intno| {
        if arch.emulates_in_place(uc, intno, &b, &c) {
            return;
        }
        c.exception.set(Some(intno));
        c.stop_requested.set(true);
        let _ = uc.emu_stop();
    })
    .map_err(uc_err("adding the exception hook"))?;
    Ok(block_hook)
}

/// The one block hook of a core: counts instructions, stops the slice at its
/// budget or where an interrupt is due, and runs the sites at block starts.
fn install_block_hook(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    counter: &Rc<SliceCounter>,
    board: &Rc<RefCell<Board>>,
    arch: &'static dyn Arch,
) -> Result<BlockHook, EmuError> {
    let (c, b) = (counter.clone(), board.clone());
    // Counting per block is nearly free; a per-instruction count hook is not. A stop
    // requested here takes effect before the block runs (measured), so the budget
    // is checked on entry to each block and a block is counted only when it runs.
    crate::block_hook::add(uc, move |uc, addr, size| {
        let insns = size as u64 / 4;
        // Most blocks: nothing due, nothing to look at, nothing to stop for. They
        // only count, in a few instructions; the rest is out of line.
        let plain = c.stepping.get().is_none()
            && c.executed.get() < c.budget.get()
            && !c.irq_due_by(insns)
            && !c.wfe_wait.get()
            && !c.block_starts.needs_look(addr, size)
            && addr != c.trap_vector.get()
            && c.churn_every.get() == 0;
        if plain {
            c.block_start.set(addr);
            c.block_size.set(size);
            c.executed.set(c.executed.get() + insns);
        } else {
            eventful_block(uc, cpu, &c, &b, arch, addr, size);
        }
    })
    .map_err(uc_err("adding the block hook"))
}

/// The block hook for a block that is not plain (a stop, a look, a count of
/// interrupts taken or of blocks): every step, as for any block before.
#[inline(never)]
fn eventful_block(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    c: &SliceCounter,
    b: &RefCell<Board>,
    arch: &'static dyn Arch,
    addr: u64,
    size: u32,
) {
    let insns = size as u64 / 4;
    if c.stepping.get().is_none() {
        let over_budget = c.executed.get() >= c.budget.get();
        // Past the budget only a stop that runs nothing more is wanted.
        let irq = c
            .irq_due_by(insns)
            .then(|| arch.irq_stop(uc, cpu, b, c, addr, insns))
            .flatten()
            .filter(|&stop| !over_budget || stop == IrqStop::BlockStart);
        if over_budget || irq.is_some() {
            c.irq_stop.set(irq);
            if !c.stop_requested.replace(true) {
                let _ = uc.emu_stop();
            }
            return;
        }
    }
    if c.wfe_wait.get() {
        // The previous block ended in a WFE with no event: wait from here.
        if !c.stop_requested.replace(true) {
            let _ = uc.emu_stop();
        }
        return;
    }
    // Most blocks hold no WFE/SEV and start at no hook: one bit test says so.
    let look = c.block_starts.needs_look(addr, size);
    if let Some(sites) = c
        .event_sites
        .get()
        .filter(|s| look && s.holds_any(addr, size))
    {
        c.wfe_wait
            .set(sites.block_runs(&mut b.borrow_mut().events, cpu, addr, size));
    }
    if addr == c.trap_vector.get() && arch.interrupt_entered(uc) {
        c.interrupts_taken.set(c.interrupts_taken.get() + 1);
    }
    c.block_start.set(addr);
    c.block_size.set(size);
    c.executed.set(c.executed.get() + insns);
    let every = c.churn_every.get();
    if every != 0 {
        let blocks = c.blocks.get() + 1;
        c.blocks.set(blocks);
        if blocks.is_multiple_of(every) {
            let _ = uc.ctl_flush_tlb();
        }
    }
    // Last: the block runs, as a code hook on its first instruction would see.
    if look {
        c.block_starts.run(uc, c, addr);
    }
}

/// Spares each translation of kernel code a scan of the core's whole soft TLB.
///
/// After translating a block, Unicorn resets the translated page's write state in
/// every soft-TLB entry of every MMU mode (`tlb_reset_dirty_by_vaddr`, a few
/// microseconds: 6% of a bare storm run), unless a memory hook covers the block's
/// address. An unmapped-fetch hook over `code` (link addresses) is such a hook at no
/// cost: the kernel's code is RAM, so the hook never fires there, and it declines if
/// it did. What the scan guards, a store through an entry already marked written to
/// a page that later gets code, does not arise on kernel code: stores through
/// executable entries always take the self-modifying-code check (lib.rs), and a
/// store through another alias was never covered by a scan of the block's own
/// virtual page. Where link and physical addresses coincide, Unicorn also never
/// marks these physical pages written (`notdirty_write` honours the same hook):
/// stores to them keep taking the check, which is only safer.
pub(crate) fn skip_translation_rescans(
    uc: &mut Unicorn<'static, ()>,
    code: &[std::ops::Range<u64>],
) -> Result<(), EmuError> {
    for range in code.iter().filter(|r| !r.is_empty()) {
        uc.add_mem_hook(
            unicorn_engine::HookType::MEM_FETCH_UNMAPPED,
            range.start,
            range.end - 1,
            |_, _, _, _, _| false,
        )
        .map_err(uc_err("adding the code-range hook"))?;
    }
    Ok(())
}

/// Maps the windows of the board's devices on this core: its loads and stores
/// there reach the device's state on the shared board.
fn install_devices(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    board: &Rc<RefCell<Board>>,
    counter: &Rc<SliceCounter>,
) -> Result<(), EmuError> {
    let devices = board.borrow().kind().devices;
    for &device in devices {
        for (window, range) in device.windows().iter().enumerate() {
            let access = move |offset, size| MmioAccess {
                cpu,
                window,
                offset,
                size,
            };
            let (b1, b2, c) = (board.clone(), board.clone(), counter.clone());
            uc.mmio_map(
                range.base,
                range.size,
                Some(move |_: &mut Unicorn<'_, ()>, offset, size| {
                    device.read(&mut b1.borrow_mut(), access(offset, size))
                }),
                Some(move |_: &mut Unicorn<'_, ()>, offset, size, value| {
                    let line = device.write(&mut b2.borrow_mut(), access(offset, size), value);
                    if let Some(high) = line {
                        c.irq_line_may_have_risen(high);
                    }
                }),
            )
            .map_err(uc_err(range.mapping))?;
        }
    }
    Ok(())
}
