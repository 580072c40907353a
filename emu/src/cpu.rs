//! One core: its Unicorn instance over the shared RAM, the hooks that count its
//! instructions, catch its exceptions and model its system registers, and the board
//! state (devices, time) those hooks share.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use unicorn_engine::{
    Arch, Arm64CpuModel, Arm64Insn, Mode, Prot, RegisterARM64, RegisterARM64CP, Unicorn,
};

use crate::exception::PSTATE_I;
use crate::gic::{self, Gic};
use crate::machine::{CpuState, EmuError, TakenException};
use crate::memory::GuestRam;
use crate::mmu::TranslationRegs;
use crate::psci;
use crate::simmu::{self, CoreMmu};
use crate::syshook::{self, SysHook};
use crate::timer::{VirtualClock, VirtualTimer, CNTFRQ_HZ, VTIMER_INTID};
use crate::uart::{Uart, UART_BASE, UART_SIZE};

pub(crate) fn uc_err(during: &'static str) -> impl Fn(unicorn_engine::uc_error) -> EmuError {
    move |e| EmuError::Unicorn {
        during,
        error: format!("{e:?}"),
    }
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
    /// The guest issued an inner-shareable TLBI: other cores must flush their TLBs.
    pub(crate) tlb_broadcast: Cell<bool>,
    /// The guest invalidated the instruction cache: other cores drop translated code.
    pub(crate) code_broadcast: Cell<bool>,
    /// Test aid ([`crate::MachineConfig::churn_soft_tlb`]): flush Unicorn's soft TLB
    /// every this many blocks (0: never).
    pub(crate) churn_every: Cell<u64>,
    blocks: Cell<u64>,
}

impl SliceCounter {
    pub(crate) fn start(&self, budget: u64, retired_earlier: u64) {
        self.executed.set(0);
        self.retired_earlier.set(retired_earlier);
        self.budget.set(budget.max(1));
        self.stop_requested.set(false);
        self.block_start.set(u64::MAX);
        self.block_size.set(0);
        self.exception.set(None);
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

    /// Shortens the slice so that it ends about `insns` instructions from now.
    pub(crate) fn shorten_to(&self, insns: u64) {
        self.budget
            .set(self.budget.get().min(self.executed.get() + insns.max(1)));
    }
}

/// Devices and time, shared by every core's hooks.
pub(crate) struct Board {
    pub(crate) gic: Gic,
    pub(crate) uart: Uart,
    pub(crate) timers: Vec<VirtualTimer>,
    pub(crate) clock: VirtualClock,
    /// Cores running during the current slice (the clock's divisor).
    pub(crate) running: u64,
}

impl Board {
    /// The time seen by the instruction at `pc` of the running slice.
    pub(crate) fn now_at(&self, counter: &SliceCounter, pc: u64) -> u64 {
        self.clock
            .now_during_slice(counter.retired_before(pc), self.running)
    }

    pub(crate) fn update_timer_lines(&mut self) {
        let now = self.clock.now();
        for (cpu, t) in self.timers.iter().enumerate() {
            self.gic.set_ppi_level(cpu, VTIMER_INTID, t.irq_level(now));
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let now = self.clock.now();
        self.timers.iter().filter_map(|t| t.deadline(now)).min()
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
        let mut uc = Unicorn::new(Arch::ARM64, Mode::ARM).map_err(uc_err("creating a core"))?;
        // QEMU's cross-check runs on cortex-a72: same instruction set here.
        uc.ctl_set_cpu_model(Arm64CpuModel::A72 as i32)
            .map_err(uc_err("selecting the CPU model"))?;
        // SAFETY: `ram` outlives every core (see `Machine`'s field order) and is only
        // accessed by the host between slices.
        unsafe { uc.mem_map_ptr(ram.base(), ram.size(), Prot::ALL, ram.host_ptr().cast()) }
            .map_err(uc_err("mapping guest RAM"))?;
        declare_lower_els_aarch64(&mut uc)?;
        let counter = Rc::new(SliceCounter::default());
        install_counting_hooks(&mut uc, &counter)?;
        install_devices(&mut uc, cpu, board)?;
        let mmu = match sim_mmu {
            Some(shared) => Some(simmu::install_core(&mut uc, cpu, shared, &counter)?),
            None => None,
        };
        let sys_hooks = match hooks {
            Hooks::Full => install_sysreg_hooks(&mut uc, cpu, board, &counter, mmu.clone())?,
            Hooks::CountOnly => Vec::new(),
        };
        Ok(Self {
            uc,
            state: CpuState::Off,
            pc: 0,
            insns: 0,
            irqs: 0,
            last_exception: None,
            counter,
            mmu,
            _sys_hooks: sys_hooks,
        })
    }
}

// System register encodings (op0, op1, CRn, CRm, op2).
pub(crate) type SysReg = (u32, u32, u32, u32, u32);
pub(crate) const MPIDR_EL1: SysReg = (3, 0, 0, 0, 5);
pub(crate) const DAIF: SysReg = (3, 3, 4, 2, 1);
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
    TranslationRegs {
        sctlr: cp(SCTLR_EL1),
        tcr: cp(TCR_EL1),
        ttbr0: uc.reg_read(RegisterARM64::TTBR0_EL1).unwrap_or(0),
        ttbr1: uc.reg_read(RegisterARM64::TTBR1_EL1).unwrap_or(0),
    }
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
    counter: &Rc<SliceCounter>,
) -> Result<(), EmuError> {
    let c = counter.clone();
    // Counting per block is nearly free; a per-instruction count hook is not. A stop
    // requested here takes effect before the block runs (measured), so the budget
    // is checked on entry to each block and a block is counted only when it runs.
    uc.add_block_hook(1, 0, move |uc, addr, size| {
        if c.executed.get() >= c.budget.get() {
            if !c.stop_requested.replace(true) {
                let _ = uc.emu_stop();
            }
            return;
        }
        c.block_start.set(addr);
        c.block_size.set(size);
        c.executed.set(c.executed.get() + size as u64 / 4);
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
    let c = counter.clone();
    uc.add_intr_hook(move |uc, intno| {
        c.exception.set(Some(intno));
        c.stop_requested.set(true);
        let _ = uc.emu_stop();
    })
    .map_err(uc_err("adding the exception hook"))?;
    Ok(())
}

pub(crate) fn install_devices(
    uc: &mut Unicorn<'static, ()>,
    cpu: usize,
    board: &Rc<RefCell<Board>>,
) -> Result<(), EmuError> {
    let (b1, b2) = (board.clone(), board.clone());
    uc.mmio_map(
        gic::DIST_BASE,
        gic::REGION_SIZE,
        Some(move |_: &mut Unicorn<'_, ()>, off, size| b1.borrow().gic.dist_read(cpu, off, size)),
        Some(move |_: &mut Unicorn<'_, ()>, off, size, value| {
            b2.borrow_mut().gic.dist_write(cpu, off, size, value)
        }),
    )
    .map_err(uc_err("mapping the GIC distributor"))?;
    let (b1, b2) = (board.clone(), board.clone());
    uc.mmio_map(
        gic::CPU_IF_BASE,
        gic::REGION_SIZE,
        Some(move |_: &mut Unicorn<'_, ()>, off, _| b1.borrow_mut().gic.cpu_read(cpu, off)),
        Some(move |_: &mut Unicorn<'_, ()>, off, _, value| {
            b2.borrow_mut().gic.cpu_write(cpu, off, value)
        }),
    )
    .map_err(uc_err("mapping the GIC CPU interface"))?;
    let (b1, b2) = (board.clone(), board.clone());
    uc.mmio_map(
        UART_BASE,
        UART_SIZE,
        Some(move |_: &mut Unicorn<'_, ()>, off, _| b1.borrow().uart.read(off)),
        Some(move |_: &mut Unicorn<'_, ()>, off, _, value| {
            b2.borrow_mut().uart.write(cpu, off, value)
        }),
    )
    .map_err(uc_err("mapping the UART"))?;
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
        let now = || board.now_at(&c, access.pc());
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
        let cp = access.cp;
        let mut board = b.borrow_mut();
        if sysreg(cp) == DAIF {
            // Unmasking with an IRQ pending: end the slice so it is taken promptly.
            if cp.val & PSTATE_I == 0 && board.gic.irq_line(cpu) {
                c.shorten_to(1);
            }
            return false;
        }
        let now = board.now_at(&c, access.pc());
        let timer = &mut board.timers[cpu];
        match sysreg(cp) {
            CNTV_CTL_EL0 => timer.set_ctl(cp.val),
            CNTV_CVAL_EL0 => timer.set_cval(cp.val),
            CNTV_TVAL_EL0 => timer.set_tval(now, cp.val),
            _ => return false,
        }
        // The timer's output is a level: reprogramming it lowers (or raises) the PPI
        // now, not at the next slice, or the guest would take the old tick again.
        let level = board.timers[cpu].irq_level(now);
        board.gic.set_ppi_level(cpu, VTIMER_INTID, level);
        // End the slice by the deadline so the interrupt is not late by a whole quantum.
        if let Some(deadline) = board.timers[cpu].deadline(now) {
            c.shorten_to((deadline - now) * board.running);
        } else if board.timers[cpu].irq_level(now) {
            c.shorten_to(1);
        }
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
