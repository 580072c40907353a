//! Machine snapshots: the complete state of a machine between slices, saved and
//! restored on the same machine (the same Unicorn instances), so that another run
//! from that point builds nothing and finds its code already translated.
//!
//! Saved: every core's registers (a Unicorn context: the whole CPU state, system
//! registers included) and run state; the guest RAM pages that are not all zero;
//! the devices and virtual time; the scheduler; the instruction and slice counts,
//! the watchdog and how the run ended; the simulated MMU's TLB model. Restoring
//! gives every RAM page back to the host kernel (it reads as zero again) and writes
//! the saved ones, and flushes each core's soft TLB; translated code is kept (it is
//! keyed by physical address, and the kernel's code does not change).
//!
//! A snapshot holds no recorder state. A recording machine is snapshotted as any
//! other; it is put back with [`Machine::restore_recording`], which restarts the
//! recording into a new sink as if the recorder were attached at the snapshot (its
//! hooks stay, so the code translated with them stays too: an exploration restores
//! its power-on snapshot for every schedule). Call probes keep counts in their hooks
//! that a snapshot does not hold: a machine with probes is refused.

use unicorn_engine::unicorn_const::uc_error;
use unicorn_engine::Context;

use super::{CpuState, EmuError, Machine, RunEnd, TakenException};
use crate::board::Board;
use crate::error::uc_err;
use crate::sched::Scheduler;
use crate::tlb::MmuModel;

/// What one core was doing.
struct CoreState {
    registers: Context,
    state: CpuState,
    pc: u64,
    insns: u64,
    irqs: u64,
    last_exception: Option<TakenException>,
    monitor: Option<crate::arch::aarch64::wfe::Monitor>,
    /// RISC-V: whether the host had raised `mip.STIP` (the register itself is in
    /// `registers`).
    timer_pending: bool,
}

/// A machine's complete state between slices, from [`crate::Machine::snapshot`],
/// for [`crate::Machine::restore`] on the same machine.
pub struct Snapshot {
    cores: Vec<CoreState>,
    ram: Vec<(usize, Box<[u8]>)>,
    board: Board,
    scheduler: Box<dyn Scheduler>,
    total_insns: u64,
    slices: u64,
    max_insns: u64,
    sbi_remote_fences: u64,
    end: Option<RunEnd>,
    mmu: Option<MmuModel>,
}

impl Snapshot {
    /// Bytes of guest RAM it holds (its pages that are not all zero).
    pub fn ram_bytes(&self) -> usize {
        self.ram.iter().map(|(_, page)| page.len()).sum()
    }
}

impl Machine {
    fn refuse_probes(&self, what: &str) -> Result<(), EmuError> {
        if !self.probes.is_empty() {
            return Err(EmuError::Config(format!(
                "cannot {what} a machine with call probes: attach them after restoring"
            )));
        }
        Ok(())
    }

    /// Saves the machine's complete state (between runs: [`Machine::run`] has
    /// returned, e.g. at its watchdog, or not started).
    pub fn snapshot(&self) -> Result<Snapshot, EmuError> {
        self.refuse_probes("snapshot")?;
        let cores = self
            .hw
            .cores
            .iter()
            .map(|core| {
                let mut registers = core.uc.context_alloc().map_err(uc_err("saving a core"))?;
                core.uc
                    .context_save(&mut registers)
                    .map_err(uc_err("saving a core"))?;
                Ok(CoreState {
                    registers,
                    state: core.state,
                    pc: core.pc,
                    insns: core.insns,
                    irqs: core.irqs,
                    last_exception: core.last_exception.clone(),
                    monitor: core.monitor,
                    timer_pending: core.timer_pending,
                })
            })
            .collect::<Result<Vec<_>, EmuError>>()?;
        Ok(Snapshot {
            cores,
            ram: self.hw.ram.nonzero_pages(),
            board: self.hw.board.borrow().clone(),
            scheduler: self.scheduler.borrow().boxed_clone(),
            total_insns: self.hw.total_insns,
            slices: self.slices,
            max_insns: self.config.max_insns,
            sbi_remote_fences: self.hw.sbi_remote_fences,
            end: self.end.clone(),
            mmu: self.hw.mmu.as_ref().map(|m| m.model()),
        })
    }

    /// Puts the machine back in the state `snapshot` saved (a snapshot of this
    /// machine). The next [`Machine::run`] continues from there.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), EmuError> {
        if self.recorder.is_some() {
            return Err(EmuError::Config(
                "a machine that records events is restored with restore_recording \
                 (its recording needs a new sink)"
                    .into(),
            ));
        }
        self.put_back(snapshot)
    }

    /// Puts the machine back in the state `snapshot` saved and records from there
    /// into `sink`, as a recorder attached at the snapshot would (see the module
    /// doc). The machine must be recording.
    pub fn restore_recording(
        &mut self,
        snapshot: &Snapshot,
        sink: crate::EventSink,
    ) -> Result<(), EmuError> {
        let Some(recorder) = self.recorder.clone() else {
            return Err(EmuError::Config(
                "restore_recording needs a machine that records events".into(),
            ));
        };
        self.put_back(snapshot)?;
        recorder.restart(sink);
        // A snapshot taken before recording started has the MMU model not
        // recording its events.
        for core in &self.hw.cores {
            if let Some(mmu) = &core.mmu {
                mmu.start_recording(recorder.clone());
            }
        }
        Ok(())
    }

    fn put_back(&mut self, snapshot: &Snapshot) -> Result<(), EmuError> {
        self.refuse_probes("restore")?;
        if snapshot.cores.len() != self.hw.cores.len() {
            return Err(EmuError::Config(format!(
                "a snapshot of {} cores does not fit a machine of {}",
                snapshot.cores.len(),
                self.hw.cores.len()
            )));
        }
        self.hw.ram.reset_to(&snapshot.ram);
        for (core, saved) in self.hw.cores.iter_mut().zip(&snapshot.cores) {
            let failed = |e: uc_error| uc_err("restoring a core")(e);
            core.uc.context_restore(&saved.registers).map_err(failed)?;
            // The soft TLB holds translations of the tables as they were; the
            // model's and the machine's own view start afresh too.
            core.uc.ctl_flush_tlb().map_err(failed)?;
            core.state = saved.state;
            core.pc = saved.pc;
            core.insns = saved.insns;
            core.irqs = saved.irqs;
            core.last_exception = saved.last_exception.clone();
            core.monitor = saved.monitor;
            core.timer_pending = saved.timer_pending;
            if let Some(mmu) = &core.mmu {
                mmu.forget();
            }
        }
        *self.hw.board.borrow_mut() = snapshot.board.clone();
        *self.scheduler.borrow_mut() = snapshot.scheduler.boxed_clone();
        self.hw.total_insns = snapshot.total_insns;
        self.slices = snapshot.slices;
        self.config.max_insns = snapshot.max_insns;
        self.hw.sbi_remote_fences = snapshot.sbi_remote_fences;
        self.end = snapshot.end.clone();
        self.stop.0.borrow_mut().take();
        if let (Some(mmu), Some(model)) = (&self.hw.mmu, &snapshot.mmu) {
            mmu.set_model(model.clone());
        }
        Ok(())
    }
}
