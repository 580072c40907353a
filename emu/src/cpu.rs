//! One core: its Unicorn instance over the shared RAM, the hooks that count its
//! instructions, catch its exceptions and model its system registers, and the board
//! state (devices, time) those hooks share.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use unicorn_engine::{
    Arch, Arm64CpuModel, Arm64Insn, Mode, Prot, RegisterARM64, RegisterARM64CP, Unicorn,
};

use crate::board::{Board, IrqWatch, MmioAccess};
use crate::error::{uc_err, EmuError};
use crate::exception::PSTATE_I;
use crate::memory::GuestRam;
use crate::mmu::TranslationRegs;
use crate::psci;
use crate::simmu::{self, CoreMmu};
use crate::syshook::{self, SysHook};
use crate::timer::CNTFRQ_HZ;
use crate::{riscv, Isa};

/// What a core is doing between slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuState {
    /// Not started yet, or stopped with PSCI CPU_OFF.
    Off,
    Running,
    /// In WFI until an interrupt is pending for it.
    WaitingForInterrupt,
    /// After a WFE, until an event (another CPU's SEV) or an interrupt arrives.
    WaitingForEvent,
}

/// A synchronous exception the host entered on a CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenException {
    /// "SVC", "BRK", "undefined instruction", "data abort", "instruction abort".
    pub kind: &'static str,
    pub esr: u64,
    pub far: Option<u64>,
    /// Preferred return address (ELR_EL1).
    pub elr: u64,
}

/// Which hooks a core gets: all of them, or only what counting and stopping need
/// (to measure Unicorn's own speed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hooks {
    Full,
    CountOnly,
}

/// Per-core state written by the hooks during a slice (`Cell`s: hooks run inside
/// `emu_start`, while the machine is borrowed by the run loop).
#[derive(Debug, Default)]
pub(crate) struct SliceCounter {
    /// Instructions of the blocks run this slice, each counted whole as it starts.
    pub(crate) executed: Cell<u64>,
    /// The core's instructions before this slice.
    pub(crate) retired_earlier: Cell<u64>,
    pub(crate) budget: Cell<u64>,
    pub(crate) stop_requested: Cell<bool>,
    pub(crate) block_start: Cell<u64>,
    pub(crate) block_size: Cell<u32>,
    /// Exception number from the INTR hook.
    pub(crate) exception: Cell<Option<u32>>,
    /// The last block run ends in a WFE that waits (events.rs).
    pub(crate) wfe_wait: Cell<bool>,
    /// The kernel's WFE/SEV sites (set once the kernel is known).
    pub(crate) event_sites: OnceCell<Rc<crate::events::EventSites>>,
    /// The guest issued an inner-shareable TLBI: other cores must flush their TLBs.
    pub(crate) tlb_broadcast: Cell<bool>,
    /// The guest invalidated the instruction cache: other cores drop translated code.
    pub(crate) code_broadcast: Cell<bool>,
    /// Test aid ([`crate::MachineConfig::churn_soft_tlb`]): flush Unicorn's soft TLB
    /// every this many blocks (0: never).
    pub(crate) churn_every: Cell<u64>,
    blocks: Cell<u64>,
    /// Instructions into the slice after which this core's virtual timer output
    /// rises (`u64::MAX`: it does not).
    pub(crate) timer_fires_after: Cell<u64>,
    /// This core's IRQ line may be asserted: block starts check whether the IRQ can
    /// be taken there.
    pub(crate) irq_maybe_pending: Cell<bool>,
    /// Where the block hook stopped the slice for an IRQ, if it did.
    pub(crate) irq_stop: Cell<Option<IrqStop>>,
    /// RISC-V: the trap vector (`stvec`) as the slice started; QEMU enters it for
    /// the interrupts it takes, which the block hook counts there.
    pub(crate) trap_vector: Cell<u64>,
    /// RISC-V: interrupts QEMU took during the slice.
    pub(crate) interrupts_taken: Cell<u64>,
}

/// Where a slice stops so that an IRQ is taken at its instruction boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IrqStop {
    /// Before the block that was about to start.
    BlockStart,
    /// Before the instruction at this address, inside the block that was about to
    /// start, where the core's timer fires: the machine runs the block up to there.
    Within(u64),
}

impl SliceCounter {
    /// Resets the counter for a slice of `budget` instructions; `irqs` says what
    /// the block hook watches for.
    pub(crate) fn start(&self, budget: u64, retired_earlier: u64, irqs: IrqWatch) {
        self.executed.set(0);
        self.retired_earlier.set(retired_earlier);
        self.budget.set(budget.max(1));
        self.stop_requested.set(false);
        self.block_start.set(u64::MAX);
        self.block_size.set(0);
        self.exception.set(None);
        self.wfe_wait.set(false);
        self.timer_fires_after
            .set(irqs.timer_fires_after.unwrap_or(u64::MAX));
        self.irq_maybe_pending.set(irqs.line_high);
        self.irq_stop.set(None);
        self.interrupts_taken.set(0);
    }

    /// Notes that something may have asserted the core's IRQ line (`high`: a GIC
    /// access left it asserted, or the timer output is high).
    pub(crate) fn irq_line_may_have_risen(&self, high: bool) {
        if high {
            self.irq_maybe_pending.set(true);
        }
    }

    /// Whether the block of `insns` instructions about to start needs a look for an
    /// IRQ ([`irq_stop`]): one may be pending, or the timer fires by its end. The
    /// common answer, no, costs two comparisons.
    fn irq_due_by(&self, insns: u64) -> bool {
        let before_timer = self
            .timer_fires_after
            .get()
            .saturating_sub(self.executed.get());
        self.irq_maybe_pending.get() || before_timer < insns
    }

    /// Instructions retired when the slice stopped at `pc` in the middle of (or at the
    /// end of) the last block entered; `pc` itself not counted.
    pub(crate) fn retired_before(&self, pc: u64) -> u64 {
        let (start, size) = (self.block_start.get(), self.block_size.get() as u64);
        if start != u64::MAX && pc >= start && pc <= start + size {
            self.executed.get() - size / 4 + (pc - start) / 4
        } else {
            self.executed.get()
        }
    }

    /// The core's instructions since power-on, up to (not including) `pc` in this slice.
    pub(crate) fn retired_total_before(&self, pc: u64) -> u64 {
        self.retired_earlier.get() + self.retired_before(pc)
    }

    /// Shortens the slice so that it ends at the first block boundary at least `insns`
    /// instructions from now.
    pub(crate) fn shorten_to(&self, insns: u64) {
        self.budget
            .set(self.budget.get().min(self.executed.get() + insns.max(1)));
    }
}

pub(crate) struct Core {
    pub(crate) uc: Unicorn<'static, ()>,
    pub(crate) state: CpuState,
    pub(crate) pc: u64,
    pub(crate) insns: u64,
    pub(crate) irqs: u64,
    pub(crate) last_exception: Option<TakenException>,
    pub(crate) counter: Rc<SliceCounter>,
    /// The simulated MMU's hooks on this core (`None`: Unicorn's built-in MMU).
    pub(crate) mmu: Option<Rc<CoreMmu>>,
    /// While waiting in WFE: the exclusive monitor a store may clear.
    pub(crate) monitor: Option<crate::events::Monitor>,
    /// RISC-V: the host has raised `mip.STIP` (the timer's deadline passed).
    pub(crate) timer_pending: bool,
    /// Declared after `uc`: the engine refers to these until it is dropped.
    _sys_hooks: Vec<SysHook>,
}

impl Core {
    pub(crate) fn new(
        cpu: usize,
        ram: &GuestRam,
        board: &Rc<RefCell<Board>>,
        hooks: Hooks,
        sim_mmu: Option<&Rc<simmu::Shared>>,
    ) -> Result<Self, EmuError> {
        let isa = board.borrow().isa;
        let mut uc = match isa {
            Isa::Aarch64 => {
                let mut uc =
                    Unicorn::new(Arch::ARM64, Mode::ARM).map_err(uc_err("creating a core"))?;
                // QEMU's cross-check runs on cortex-a72: same instruction set here.
                uc.ctl_set_cpu_model(Arm64CpuModel::A72 as i32)
                    .map_err(uc_err("selecting the CPU model"))?;
                uc
            }
            Isa::Riscv64 => riscv::new_engine()?,
        };
        // SAFETY: `ram` outlives every core (see `Machine`'s field order) and is only
        // accessed by the host between slices.
        unsafe { uc.mem_map_ptr(ram.base(), ram.size(), Prot::ALL, ram.host_ptr().cast()) }
            .map_err(uc_err("mapping guest RAM"))?;
        let counter = Rc::new(SliceCounter::default());
        install_counting_hooks(&mut uc, cpu, &counter, board)?;
        if isa == Isa::Aarch64 {
            declare_lower_els_aarch64(&mut uc)?;
        }
        install_devices(&mut uc, cpu, board, &counter)?;
        let mmu = match sim_mmu {
            Some(shared) => Some(simmu::install_core(&mut uc, cpu, shared, &counter, isa)?),
            None => None,
        };
        if isa == Isa::Riscv64 {
            return Ok(Self::with_engine(uc, counter, mmu, Vec::new()));
        }
        let sys_hooks = match hooks {
            Hooks::Full => install_sysreg_hooks(&mut uc, cpu, board, &counter, mmu.clone())?,
            Hooks::CountOnly => Vec::new(),
        };
        Ok(Self::with_engine(uc, counter, mmu, sys_hooks))
    }

    fn with_engine(
        uc: Unicorn<'static, ()>,
        counter: Rc<SliceCounter>,
        mmu: Option<Rc<CoreMmu>>,
        sys_hooks: Vec<SysHook>,
    ) -> Self {
        Self {
            uc,
            state: CpuState::Off,
            pc: 0,
            insns: 0,
            irqs: 0,
            last_exception: None,
            monitor: None,
            timer_pending: false,
            counter,
            mmu,
            _sys_hooks: sys_hooks,
        }
    }
}

// System register encodings (op0, op1, CRn, CRm, op2).
pub(crate) type SysReg = (u32, u32, u32, u32, u32);
pub(crate) const MPIDR_EL1: SysReg = (3, 0, 0, 0, 5);
pub(crate) const CNTFRQ_EL0: SysReg = (3, 3, 14, 0, 0);
pub(crate) const CNTPCT_EL0: SysReg = (3, 3, 14, 0, 1);
pub(crate) const CNTVCT_EL0: SysReg = (3, 3, 14, 0, 2);
pub(crate) const CNTV_TVAL_EL0: SysReg = (3, 3, 14, 3, 0);
pub(crate) const CNTV_CTL_EL0: SysReg = (3, 3, 14, 3, 1);
pub(crate) const CNTV_CVAL_EL0: SysReg = (3, 3, 14, 3, 2);
pub(crate) const SCTLR_EL1: RegisterARM64CP =
    RegisterARM64CP::new().op0(3).op1(0).crn(1).crm(0).op2(0);
pub(crate) const TCR_EL1: RegisterARM64CP =
    RegisterARM64CP::new().op0(3).op1(0).crn(2).crm(0).op2(2);

pub(crate) fn sysreg(cp: &RegisterARM64CP) -> SysReg {
    (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
}

/// Unicorn's cortex-a72 has EL2 and EL3 whose SCR_EL3.RW and HCR_EL2.RW reset to 0,
/// which declares EL1 AArch32: every ERET to EL1 was then an illegal return that set
/// PSTATE.IL. Firmware would set both bits before entering the kernel; so do we.
pub(crate) fn declare_lower_els_aarch64(uc: &mut Unicorn<'static, ()>) -> Result<(), EmuError> {
    const SCR_EL3: RegisterARM64CP = RegisterARM64CP::new().op0(3).op1(6).crn(1).crm(1).op2(0);
    const HCR_EL2: RegisterARM64CP = RegisterARM64CP::new().op0(3).op1(4).crn(1).crm(1).op2(0);
    for (reg, rw_bit) in [(SCR_EL3, 1u64 << 10), (HCR_EL2, 1u64 << 31)] {
        let mut current = reg;
        uc.reg_read_arm64_coproc(&mut current)
            .map_err(uc_err("reading SCR_EL3/HCR_EL2"))?;
        uc.reg_write_arm64_coproc(&reg.val(current.val | rw_bit))
            .map_err(uc_err("setting SCR_EL3/HCR_EL2.RW"))?;
    }
    Ok(())
}

/// Reads the instruction word at virtual address `pc` through the core's MMU.
pub(crate) fn read_insn<D>(uc: &mut Unicorn<'_, D>, pc: u64) -> Option<u32> {
    let mut word = [0; 4];
    uc.vmem_read(pc, Prot::EXEC, &mut word).ok()?;
    Some(u32::from_le_bytes(word))
}

pub(crate) fn translation_regs<D>(uc: &Unicorn<'_, D>) -> TranslationRegs {
    let cp = |reg: RegisterARM64CP| {
        let mut reg = reg;
        uc.reg_read_arm64_coproc(&mut reg).map_or(0, |()| reg.val)
    };
    crate::mmu::VmsaRegs {
        sctlr: cp(SCTLR_EL1),
        tcr: cp(TCR_EL1),
        ttbr0: uc.reg_read(RegisterARM64::TTBR0_EL1).unwrap_or(0),
        ttbr1: uc.reg_read(RegisterARM64::TTBR1_EL1).unwrap_or(0),
    }
    .into()
}

/// General register `n` (31 = SP, as a load/store base).
pub(crate) fn read_xreg<D>(uc: &Unicorn<'_, D>, n: u32) -> u64 {
    let reg = match n {
        0..=28 => RegisterARM64::X0 as i32 + n as i32,
        29 => RegisterARM64::X29 as i32,
        30 => RegisterARM64::X30 as i32,
        _ => RegisterARM64::SP as i32,
    };
    uc.reg_read(reg).unwrap_or(0)
}

pub(crate) fn install_counting_hooks(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    counter: &Rc<SliceCounter>,
    board: &Rc<RefCell<Board>>,
) -> Result<(), EmuError> {
    let (c, b) = (counter.clone(), board.clone());
    // Counting per block is nearly free; a per-instruction count hook is not. A stop
    // requested here takes effect before the block runs (measured), so the budget
    // is checked on entry to each block and a block is counted only when it runs.
    uc.add_block_hook(1, 0, move |uc, addr, size| {
        let insns = size as u64 / 4;
        let over_budget = c.executed.get() >= c.budget.get();
        // Past the budget only a stop that runs nothing more is wanted.
        let irq = c
            .irq_due_by(insns)
            .then(|| irq_stop(uc, cpu, &b, &c, addr, insns))
            .flatten()
            .filter(|&stop| !over_budget || stop == IrqStop::BlockStart);
        if over_budget || irq.is_some() {
            c.irq_stop.set(irq);
            if !c.stop_requested.replace(true) {
                let _ = uc.emu_stop();
            }
            return;
        }
        if c.wfe_wait.get() {
            // The previous block ended in a WFE with no event: wait from here.
            if !c.stop_requested.replace(true) {
                let _ = uc.emu_stop();
            }
            return;
        }
        if let Some(sites) = c.event_sites.get().filter(|s| s.holds_any(addr, size)) {
            c.wfe_wait
                .set(sites.block_runs(&mut b.borrow_mut().events, cpu, addr, size));
        }
        if addr == c.trap_vector.get() && riscv::interrupt_entered(uc) {
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
    })
    .map_err(uc_err("adding the block hook"))?;
    let (c, b) = (counter.clone(), board.clone());
    let isa = board.borrow().isa;
    uc.add_intr_hook(move |uc, intno| {
        if isa == Isa::Riscv64 && intno == 2 && emulate_rdtime(uc, &b, &c) {
            return;
        }
        c.exception.set(Some(intno));
        c.stop_requested.set(true);
        let _ = uc.emu_stop();
    })
    .map_err(uc_err("adding the exception hook"))?;
    Ok(())
}

/// RISC-V has no `time` CSR in Unicorn: a `rdtime` traps as an illegal
/// instruction, with the PC past it. Gives its register the board's time there
/// and lets the slice go on after it; the instructions of its block after it,
/// counted when the block started, are taken back (the rest runs as a new
/// block). Returns false for any other illegal instruction.
fn emulate_rdtime(uc: &mut Unicorn<'_, ()>, board: &RefCell<Board>, c: &SliceCounter) -> bool {
    let Ok(pc) = uc.pc_read() else {
        return false;
    };
    let at = pc.wrapping_sub(4);
    let Some(rd) = read_insn(uc, at).and_then(riscv::rdtime_destination) else {
        return false;
    };
    let time = riscv::time_at(board.borrow().now_at(c.retired_before(at)));
    riscv::set_xreg(uc, rd, time);
    c.executed.set(c.retired_before(pc));
    c.block_start.set(u64::MAX);
    true
}

/// Decides, at the start of a block of `insns` instructions at `addr`, whether the
/// slice must stop in or before it so that an IRQ is taken at its architectural
/// instruction boundary:
/// - before the block, when an IRQ is pending and PSTATE.I is clear. In QEMU every
///   instruction that can clear PSTATE.I (`msr daif, xN`, `msr daifclr, #imm`,
///   `eret`) ends its translation block, so this is right after the one that
///   unmasked, or at the first block boundary after a GIC access raised the line;
/// - inside the block, before the instruction the core's timer deadline falls on,
///   when IRQs are unmasked (nothing before a block's last instruction changes
///   PSTATE.I).
///
/// Raises the timer's PPI once its deadline has passed. Called only when
/// [`SliceCounter::irq_due_by`] says so.
#[cold]
fn irq_stop(
    uc: &Unicorn<'_, ()>,
    cpu: usize,
    board: &RefCell<Board>,
    c: &SliceCounter,
    addr: u64,
    insns: u64,
) -> Option<IrqStop> {
    let executed = c.executed.get();
    let fires_after = c.timer_fires_after.get();
    if board.borrow().isa == Isa::Riscv64 {
        // QEMU takes the interrupt once the host raises mip.STIP: stop exactly
        // where the deadline falls, masked or not (the guest may read sip).
        if executed >= fires_after {
            c.timer_fires_after.set(u64::MAX);
            return Some(IrqStop::BlockStart);
        }
        return (fires_after - executed < insns)
            .then(|| IrqStop::Within(addr + 4 * (fires_after - executed)));
    }
    if executed >= fires_after {
        c.timer_fires_after.set(u64::MAX);
        let mut b = board.borrow_mut();
        let now = b.clock.now_during_slice(executed, b.running);
        c.irq_line_may_have_risen(b.update_timer_line(cpu, now));
    }
    let unmasked = || {
        uc.reg_read(RegisterARM64::PSTATE)
            .is_ok_and(|p| p & PSTATE_I == 0)
    };
    if c.irq_maybe_pending.get() && unmasked() {
        if board.borrow().gic.irq_line(cpu) {
            return Some(IrqStop::BlockStart);
        }
        // Nothing deliverable: the next GIC access or timer change looks again.
        c.irq_maybe_pending.set(false);
    }
    let fires_inside = fires_after > executed && fires_after - executed < insns;
    (fires_inside && unmasked()).then(|| IrqStop::Within(addr + 4 * (fires_after - executed)))
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

/// MRS/MSR hooks for the registers the host models (the timer, MPIDR), and the SYS hook
/// that turns broadcast TLB and I-cache maintenance into flushes of every core.
pub(crate) fn install_sysreg_hooks(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    board: &Rc<RefCell<Board>>,
    counter: &Rc<SliceCounter>,
    mmu: Option<Rc<CoreMmu>>,
) -> Result<Vec<SysHook>, EmuError> {
    let (b, c) = (board.clone(), counter.clone());
    let mrs = syshook::add(uc, Arm64Insn::UC_ARM64_INS_MRS, move |access| {
        let board = b.borrow();
        let now = || board.now_at(c.retired_before(access.pc()));
        let value = match sysreg(access.cp) {
            MPIDR_EL1 => psci::mpidr_register(cpu),
            CNTFRQ_EL0 => CNTFRQ_HZ,
            CNTVCT_EL0 | CNTPCT_EL0 => now(),
            CNTV_CTL_EL0 => board.timers[cpu].ctl(now()),
            CNTV_CVAL_EL0 => board.timers[cpu].cval(),
            CNTV_TVAL_EL0 => board.timers[cpu].tval(now()),
            _ => return false,
        };
        access.set_result(value);
        true
    })
    .map_err(uc_err("adding the MRS hook"))?;
    let (b, c, m) = (board.clone(), counter.clone(), mmu.clone());
    let msr = syshook::add(uc, Arm64Insn::UC_ARM64_INS_MSR, move |access| {
        if let Some(m) = &m {
            m.on_msr(access);
        }
        // A DAIF write is left to Unicorn: it ends its block, whose successor's block
        // hook takes a pending IRQ if the write unmasked it.
        let cp = access.cp;
        let mut board = b.borrow_mut();
        let now = board.now_at(c.retired_before(access.pc()));
        let timer = &mut board.timers[cpu];
        match sysreg(cp) {
            CNTV_CTL_EL0 => timer.set_ctl(cp.val),
            CNTV_CVAL_EL0 => timer.set_cval(cp.val),
            CNTV_TVAL_EL0 => timer.set_tval(now, cp.val),
            _ => return false,
        }
        // The timer's output is a level: reprogramming it lowers (or raises) the PPI
        // now, not at the next slice, or the guest would take the old tick again.
        c.irq_line_may_have_risen(board.update_timer_line(cpu, now));
        // The new deadline, counted from the slice's start like the old one.
        let fires_after = board.timers[cpu]
            .deadline(now)
            .map_or(u64::MAX, |t| board.clock.insns_until(t, board.running));
        c.timer_fires_after.set(fires_after);
        true
    })
    .map_err(uc_err("adding the MSR hook"))?;
    let c = counter.clone();
    let sys = syshook::add(uc, Arm64Insn::UC_ARM64_INS_SYS, move |access| {
        if let Some(m) = &mmu {
            m.on_sys(access);
        }
        let cp = access.cp;
        match (cp.op1, cp.crn, cp.crm, cp.op2) {
            // TLBI …IS / …OS (EL1): CRm 1, 2 (ranges) and 3.
            (0, 8, 1..=3, _) => c.tlb_broadcast.set(true),
            // IC IALLUIS, IC IVAU.
            (0, 7, 1, 0) | (3, 7, 5, 1) => c.code_broadcast.set(true),
            _ => {}
        }
        false // the instruction still does its local part
    })
    .map_err(uc_err("adding the SYS hook"))?;
    Ok(vec![mrs, msr, sys])
}
