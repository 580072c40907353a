//! How the simulated MMU ([`crate::simmu`]) sees RISC-V: Sv39 tables selected by
//! `satp` (read at every use: no hook sees a `csrw satp`), U-mode accesses, and
//! code hooks on the kernel's `sfence.vma`s and `satp` writes.

use unicorn_engine::{RegisterRISCV, Unicorn};

use super::hart;
use crate::arch::aarch64::mmu::{Access, TranslationRegs, PAGE_SIZE};
use crate::core_mmu::IsaMmu;
use crate::cpu::Core;
use crate::error::EmuError;
use crate::kernel::KernelImage;
use crate::simmu::{IsaMmuHooks, SimMmu};
use crate::tlb::Invalidation;

/// RISC-V's [`IsaMmu`].
pub(crate) struct Riscv64Mmu;

impl IsaMmu for Riscv64Mmu {
    fn format(&self) -> traces::riscv64::PageTableFormat {
        traces::riscv64::PageTableFormat::Sv39
    }

    fn translation_regs(&self, uc: &Unicorn<'_, ()>) -> TranslationRegs {
        let satp = uc.reg_read(RegisterRISCV::SATP).unwrap_or(0);
        TranslationRegs::Sv39 { satp }
    }

    fn regs_writes_seen(&self) -> bool {
        false
    }

    fn access_is_el0(&self, uc: &Unicorn<'_, ()>, _unprivileged: bool, _access: Access) -> bool {
        uc.reg_read(RegisterRISCV::PRIV).is_ok_and(|p| p == 0)
    }

    fn data_access_address(&self, uc: &Unicorn<'_, ()>, word: u32) -> Option<u64> {
        hart::access_address(uc, word)
    }
}

impl IsaMmuHooks for Riscv64Mmu {
    /// Unicorn's soft TLB is flushed at every CSR instruction on `satp`. QEMU
    /// keeps it across a change of mode, so the fetches between turning
    /// translation on and the `sfence.vma` after it would reach the model only
    /// when host timing has refilled the soft TLB meanwhile (DESIGN.md): flushed
    /// here, they always do.
    fn install_translation_hooks(
        &self,
        cores: &mut [Core],
        words: &[(u64, u32)],
    ) -> Result<(), EmuError> {
        const SATP: u32 = 0x180;
        let sites: Vec<u64> = words
            .iter()
            .filter(|&&(_, w)| w & 0x7f == 0x73 && (w >> 12) & 7 != 0 && (w >> 12) & 7 != 4)
            .filter(|&&(_, w)| w >> 20 == SATP)
            .map(|&(addr, _)| addr)
            .collect();
        for core in cores.iter_mut() {
            for &addr in &sites {
                core.code_sites.add(addr, |uc, _| {
                    let _ = uc.ctl_flush_tlb();
                });
            }
        }
        Ok(())
    }

    /// Code hooks on every `sfence.vma` of the kernel (no CSR or system
    /// instruction hook exists here): a local invalidation by meaning.
    fn install_maintenance_hooks(
        &self,
        _mmu: &SimMmu,
        cores: &mut [Core],
        _kernel: &KernelImage,
        words: &[(u64, u32)],
    ) -> Result<(), EmuError> {
        let sites: Vec<(u64, u32, u32)> = words
            .iter()
            .filter(|&&(_, word)| word & 0xfe00_7fff == 0x1200_0073)
            .map(|&(addr, word)| (addr, (word >> 15) & 31, (word >> 20) & 31))
            .collect();
        for core in cores.iter_mut() {
            let Some(mmu) = core.mmu.clone() else {
                continue;
            };
            for &(addr, rs1, rs2) in &sites {
                let m = mmu.clone();
                core.code_sites.add(addr, move |uc, pc| {
                    // rs1 = x0: every address; rs2 = x0: every ASID.
                    let (start, len) = match rs1 {
                        0 => (0, 0),
                        _ => (hart::xreg(uc, rs1) & !(PAGE_SIZE - 1), PAGE_SIZE),
                    };
                    let asid = (rs2 != 0).then(|| hart::xreg(uc, rs2) as u16);
                    let inv = Invalidation {
                        cpus: 1 << m.cpu(),
                        start,
                        len,
                        asid,
                    };
                    let name = if rs1 == 0 {
                        "sfence.vma"
                    } else {
                        "sfence.vma va"
                    };
                    let at = m.at(pc);
                    m.model_for(uc).invalidate_on(m.ram(), inv, name, at);
                    m.hand_over(Some(uc));
                });
            }
        }
        Ok(())
    }
}
