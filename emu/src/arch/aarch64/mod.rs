//! arm64 on QEMU's `virt` board: the GICv2 ([`gic`]), PSCI firmware calls
//! ([`psci`]), exception entry by the host ([`exception`]), the VMSAv8-64 walk
//! ([`mmu`]), the system registers the host models ([`regs`]), WFE and SEV
//! ([`wfe`]), and the few instruction decodings the host needs ([`insn`]).

use std::cell::RefCell;

use unicorn_engine::{Arm64CpuModel, Mode, RegisterARM64, Unicorn};

use crate::arch::{Arch, CoreHooks};
use crate::board::{Board, BoardKind};
use crate::cpu::{Core, Hooks, KeepAlive};
use crate::cpu::{CpuState, TakenException};
use crate::error::{uc_err, EmuError};
use crate::hardware::{Hardware, RunEnd};
use crate::kernel::KernelImage;
use crate::memory::read_insn;
use crate::memory::GuestMemory;
use crate::slice_counter::{IrqStop, SliceCounter};
use crate::unwind;
use core_regs::{read_xreg, translation_regs, SCTLR_EL1};
use exception::{Kind, Synchronous, PSTATE_EL1H_MASKED, PSTATE_I};
use mmu::Access;

pub(crate) mod abi;
pub(crate) mod board;
pub(crate) mod core_regs;
pub(crate) mod debug_state;
pub(crate) mod exception;
pub(crate) mod gic;
pub(crate) mod insn;
pub(crate) mod mmu;
pub(crate) mod psci;
pub(crate) mod regs;
pub(crate) mod simmu;
pub(crate) mod step;
pub(crate) mod syshook;
pub(crate) mod wfe;

/// ARMv8-A AArch64 (Unicorn's cortex-a72, as QEMU's cross-check runs).
pub(crate) struct Aarch64;

impl Arch for Aarch64 {
    fn abi(&self) -> &'static dyn crate::record::abi::IsaAbi {
        &abi::Aarch64Abi
    }

    fn mmu(&self) -> &'static dyn crate::simmu::IsaMmuHooks {
        &simmu::Aarch64Mmu
    }

    fn ram_base(&self) -> u64 {
        crate::memory::RAM_BASE
    }

    fn board(&self) -> &'static BoardKind {
        &board::VIRT
    }

    fn new_engine(&self) -> Result<Unicorn<'static, ()>, EmuError> {
        let mut uc = Unicorn::new(unicorn_engine::Arch::ARM64, Mode::ARM)
            .map_err(uc_err("creating a core"))?;
        // QEMU's cross-check runs on cortex-a72: same instruction set here.
        uc.ctl_set_cpu_model(Arm64CpuModel::A72 as i32)
            .map_err(uc_err("selecting the CPU model"))?;
        regs::declare_lower_els_aarch64(&mut uc)?;
        Ok(uc)
    }

    fn install_core_hooks(&self, core: &mut CoreHooks<'_>) -> Result<Vec<KeepAlive>, EmuError> {
        if core.hooks != Hooks::Full {
            return Ok(Vec::new());
        }
        let hooks = regs::install_sysreg_hooks(
            core.uc,
            core.cpu,
            core.board,
            core.counter,
            core.mmu.clone(),
        )?;
        Ok(hooks
            .into_iter()
            .map(|hook| Box::new(hook) as KeepAlive)
            .collect())
    }

    fn install_kernel_hooks(&self, cores: &[Core], kernel: &KernelImage) {
        let sites = std::rc::Rc::new(wfe::EventSites::of(kernel));
        for core in cores {
            for &site in sites.all() {
                core.counter.block_starts.watch(site);
            }
            let _ = core.counter.event_sites.set(sites.clone());
        }
    }

    fn boot(&self, hw: &mut Hardware, entry: u64, dtb: u64) -> Result<(), EmuError> {
        power_on(hw, 0, entry, dtb)
    }

    fn irq_pending(&self, board: &Board, _core: &Core, cpu: usize) -> bool {
        board.gic.irq_line(cpu)
    }

    fn deliver_irq(&self, hw: &mut Hardware, cpu: usize) -> Result<(), RunEnd> {
        deliver_gic_irq(hw, cpu)
    }

    fn is_wfi(&self, word: u32) -> bool {
        insn::is_wfi(word)
    }

    fn step_to(&self, core: &mut Core, until: u64) -> Option<Result<(), unicorn_engine::uc_error>> {
        Some(step::step_to(core, until))
    }

    fn exception(&self, hw: &mut Hardware, cpu: usize, cause: u32) -> Option<RunEnd> {
        match classify(hw, cpu, cause) {
            Ok(Some(exc)) => enter_synchronous(hw, cpu, exc),
            Ok(None) => psci_call(hw, cpu),
            Err(what) => Some(RunEnd::Fault {
                cpu,
                pc: hw.cores[cpu].pc,
                what,
            }),
        }
    }

    fn abort(&self, hw: &mut Hardware, cpu: usize, exc: Synchronous) -> Option<RunEnd> {
        enter_synchronous(hw, cpu, exc)
    }

    fn exclusive_monitor(&self, hw: &Hardware, cpu: usize) -> Option<wfe::Monitor> {
        exclusive_monitor(hw, cpu)
    }

    fn backtrace(&self, uc: &mut Unicorn<'static, ()>) -> Vec<u64> {
        let fp = uc.reg_read(RegisterARM64::X29).unwrap_or(0);
        unwind::frame_pointer_chain(&unwind::CoreView::new(uc), fp)
    }

    /// Stops before the block when an IRQ is pending and PSTATE.I is clear: in
    /// QEMU every instruction that can clear PSTATE.I (`msr daif, xN`,
    /// `msr daifclr, #imm`, `eret`) ends its translation block, so this is right
    /// after the one that unmasked, or at the first block boundary after a GIC
    /// access raised the line. Stops inside the block, before the instruction the
    /// core's timer deadline falls on, when IRQs are unmasked (nothing before a
    /// block's last instruction changes PSTATE.I). Raises the timer's PPI once
    /// its deadline has passed.
    fn irq_stop(
        &self,
        uc: &Unicorn<'_, ()>,
        cpu: usize,
        board: &RefCell<Board>,
        c: &SliceCounter,
        addr: u64,
        insns: u64,
    ) -> Option<IrqStop> {
        if c.take_timer_deadline() {
            let mut b = board.borrow_mut();
            let now = b.clock.now_during_slice(c.executed.get(), b.running);
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
        c.timer_deadline_within(addr, insns).filter(|_| unmasked())
    }
}

/// Starts `cpu` at `entry` (EL1h, DAIF masked, MMU off) with `x0` = `context`.
fn power_on(hw: &mut Hardware, cpu: usize, entry: u64, context: u64) -> Result<(), EmuError> {
    let core = &mut hw.cores[cpu];
    let uc = &mut core.uc;
    let err = uc_err("starting a core");
    uc.reg_write(RegisterARM64::PSTATE, PSTATE_EL1H_MASKED)
        .map_err(&err)?;
    let mut sctlr = SCTLR_EL1;
    uc.reg_read_arm64_coproc(&mut sctlr).map_err(&err)?;
    // MMU, data and instruction caches off, as after reset (also rebuilds hflags).
    uc.reg_write_arm64_coproc(&sctlr.val(sctlr.val & !0b1_0000_0000_0101))
        .map_err(&err)?;
    uc.reg_write(RegisterARM64::X0, context).map_err(&err)?;
    uc.reg_write(RegisterARM64::PC, entry).map_err(&err)?;
    uc.ctl_flush_tlb().map_err(&err)?;
    if let Some(mmu) = &core.mmu {
        mmu.regs_changed();
    }
    core.pc = entry;
    core.state = CpuState::Running;
    Ok(())
}

/// The exclusive monitor `cpu` set just before the WFE it stopped at, if any
/// (see [`wfe::Monitor`]).
fn exclusive_monitor(hw: &Hardware, cpu: usize) -> Option<wfe::Monitor> {
    let core = &hw.cores[cpu];
    let regs = translation_regs(&core.uc);
    wfe::Monitor::before_wfe(
        &hw.kernel,
        core.pc,
        |reg| read_xreg(&core.uc, reg),
        |va| {
            if !regs.mmu_on() {
                return Some(va);
            }
            let t = mmu::walk_any(&hw.ram, &regs, va).ok()?;
            Some(t.pa | (va & 0xfff))
        },
        |pa, size| hw.ram.read_le(pa, size),
    )
}

/// Turns Unicorn's exception number into the exception to enter, or `None` for a
/// PSCI call (HVC, which Unicorn reports like an undefined instruction).
fn classify(hw: &mut Hardware, cpu: usize, intno: u32) -> Result<Option<Synchronous>, String> {
    const EXCP_UDEF: u32 = 1;
    const EXCP_SWI: u32 = 2;
    const EXCP_PREFETCH_ABORT: u32 = 3;
    const EXCP_DATA_ABORT: u32 = 4;
    const EXCP_BKPT: u32 = 7;
    let core = &mut hw.cores[cpu];
    let pc = core.pc;
    let word_at = |uc: &mut Unicorn<'static, ()>, addr| read_insn(uc, addr).unwrap_or(0);
    if intno == EXCP_UDEF && insn::is_hvc(word_at(&mut core.uc, pc)) {
        return Ok(None);
    }
    Ok(Some(match intno {
        EXCP_UDEF => Synchronous::Undefined,
        EXCP_SWI => Synchronous::Svc {
            imm: insn::imm16(word_at(&mut core.uc, pc - 4)),
        },
        EXCP_BKPT => Synchronous::Brk {
            imm: insn::imm16(word_at(&mut core.uc, pc)),
        },
        EXCP_PREFETCH_ABORT => {
            let el0 = at_el0(&core.uc);
            let regs = translation_regs(&core.uc);
            let status = mmu::fault_status(&hw.ram, &regs, pc, Access::Fetch, el0);
            // No fault in the tables: call it a level 3 translation fault.
            Synchronous::InstructionAbort {
                far: pc,
                status: status.unwrap_or(0b00_0111),
            }
        }
        EXCP_DATA_ABORT => {
            let word = word_at(&mut core.uc, pc);
            let access = insn::decode_mem_access(word);
            let uc = &core.uc;
            let far = access.map_or(0, |a| a.address(|r| read_xreg(uc, r)));
            let is_write = access.is_some_and(|a| a.is_write);
            let kind = if is_write {
                Access::Write
            } else {
                Access::Read
            };
            // An `ldtr`/`sttr` at EL1 has EL0's permissions.
            let el0 = at_el0(uc) || insn::is_unprivileged(word);
            // The tables allow the access: what is left is an alignment fault.
            let status = mmu::fault_status(&hw.ram, &translation_regs(uc), far, kind, el0)
                .unwrap_or(mmu::ALIGNMENT_FAULT);
            Synchronous::DataAbort {
                far,
                is_write,
                status,
            }
        }
        other => return Err(format!("unexpected exception number {other}")),
    }))
}

/// Carries out the PSCI call of the HVC at `cpu`'s PC.
fn psci_call(hw: &mut Hardware, cpu: usize) -> Option<RunEnd> {
    let reg = |hw: &Hardware, r| hw.cores[cpu].uc.reg_read(r).unwrap_or(0);
    let function = reg(hw, RegisterARM64::X0) as u32;
    let (x1, x2, x3) = (
        reg(hw, RegisterARM64::X1),
        reg(hw, RegisterARM64::X2),
        reg(hw, RegisterARM64::X3),
    );
    // The HVC itself retires; the caller continues after it.
    let core = &mut hw.cores[cpu];
    core.insns += 1;
    hw.total_insns += 1;
    core.pc += 4;
    let result: u64 = match function {
        psci::PSCI_VERSION => psci::VERSION_0_2,
        psci::MIGRATE_INFO_TYPE => psci::TOS_NOT_PRESENT,
        psci::SYSTEM_OFF => return Some(RunEnd::PoweredOff { cpu, status: x1 }),
        psci::SYSTEM_RESET => return Some(RunEnd::Reset { cpu, status: x1 }),
        psci::CPU_OFF => {
            hw.cores[cpu].state = CpuState::Off;
            return None;
        }
        psci::AFFINITY_INFO => match psci::cpu_of_mpidr(x1, hw.cores.len()) {
            // Only level 0 (a single CPU) is meaningful on this board.
            Some(target) if x2 == 0 => match hw.cores[target].state {
                CpuState::Off => psci::AFFINITY_OFF,
                _ => psci::AFFINITY_ON,
            },
            _ => psci::INVALID_PARAMETERS as u64,
        },
        psci::CPU_ON => match psci::cpu_of_mpidr(x1, hw.cores.len()) {
            None => psci::INVALID_PARAMETERS as u64,
            Some(target) if hw.cores[target].state != CpuState::Off => psci::ALREADY_ON as u64,
            Some(target) => match power_on(hw, target, x2, x3) {
                Ok(()) => psci::SUCCESS as u64,
                Err(e) => {
                    return Some(RunEnd::Fault {
                        cpu: target,
                        pc: x2,
                        what: format!("CPU_ON failed: {e}"),
                    })
                }
            },
        },
        _ => psci::NOT_SUPPORTED as u64,
    };
    let core = &mut hw.cores[cpu];
    core.uc
        .reg_write(RegisterARM64::X0, result)
        .expect("x0 write");
    None
}

/// Enters the synchronous exception `exc` on `cpu`, at its PC (SVC's preferred
/// return address is the next instruction: Unicorn's PC is already past it;
/// for the others, the instruction itself).
fn enter_synchronous(hw: &mut Hardware, cpu: usize, exc: Synchronous) -> Option<RunEnd> {
    let core = &mut hw.cores[cpu];
    let pc = core.pc;
    match exception::enter(&mut core.uc, Kind::Sync(exc), pc) {
        Ok(vector) => {
            for observer in &hw.observers {
                observer.exception_entered(&core.uc, cpu, None, pc, hw.total_insns);
            }
            core.pc = vector;
            core.last_exception = Some(TakenException {
                kind: exc.name(),
                esr: core.uc.reg_read(RegisterARM64::ESR_EL1).unwrap_or(0),
                far: exc.far(),
                elr: pc,
            });
            None
        }
        Err(_) => Some(RunEnd::Fault {
            cpu,
            pc,
            what: format!("{} with no vector table (VBAR_EL1 = 0)", exc.name()),
        }),
    }
}

/// Takes a pending IRQ on `cpu` if its PSTATE.I allows: at the start of its slice
/// (one that became pending while other CPUs ran) and where its block hook
/// ended the slice for one.
fn deliver_gic_irq(hw: &mut Hardware, cpu: usize) -> Result<(), RunEnd> {
    if !hw.board.borrow().gic.irq_line(cpu) {
        return Ok(());
    }
    let core = &mut hw.cores[cpu];
    let pstate = core.uc.reg_read(RegisterARM64::PSTATE).unwrap_or(PSTATE_I);
    if pstate & PSTATE_I != 0 {
        return Ok(());
    }
    let return_pc = core.pc;
    match exception::enter(&mut core.uc, Kind::Irq, core.pc) {
        Ok(pc) => {
            if !hw.observers.is_empty() {
                // What the handler's GICC_IAR read will return (1023: spurious).
                let intid = hw.board.borrow().gic.pending_intid(cpu);
                for observer in &hw.observers {
                    observer.exception_entered(
                        &core.uc,
                        cpu,
                        Some(intid.unwrap_or(1023)),
                        return_pc,
                        hw.total_insns,
                    );
                }
            }
            core.pc = pc;
            core.irqs += 1;
            Ok(())
        }
        Err(_) => Err(RunEnd::Fault {
            cpu,
            pc: core.pc,
            what: "IRQ with no vector table (VBAR_EL1 = 0)".into(),
        }),
    }
}

/// Whether the core runs at EL0 (PSTATE.EL).
fn at_el0(uc: &Unicorn<'static, ()>) -> bool {
    uc.reg_read(RegisterARM64::PSTATE)
        .is_ok_and(|pstate| pstate & 0b1100 == 0)
}
