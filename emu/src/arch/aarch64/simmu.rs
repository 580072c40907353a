//! How the simulated MMU ([`crate::simmu`]) sees arm64: VMSAv8-64 tables selected
//! by TTBR0/1_EL1 and TCR_EL1 (read again after an MSR to them), EL0 accesses
//! (PSTATE.EL, or a kernel `ldtr`/`sttr`), TLBIs from the SYS hook, and code hooks
//! on the kernel's DSBs and the ISBs right after maintenance.

use traces::aarch64::TlbiScope;
use traces::{BarrierOption, EventKind};
use unicorn_engine::{RegisterARM64, Unicorn};

use super::core_regs::{read_xreg, translation_regs};
use super::insn;
use super::mmu::{Access, TranslationRegs};
use super::syshook::SysAccess;
use crate::core_mmu::{CoreMmu, IsaMmu};
use crate::cpu::Core;
use crate::error::EmuError;
use crate::kernel::KernelImage;
use crate::simmu::{IsaMmuHooks, SimMmu};
use crate::tlb::{Barrier, SoftTlbEntry};

/// arm64's [`IsaMmu`].
pub(crate) struct Aarch64Mmu;

impl IsaMmu for Aarch64Mmu {
    fn format(&self) -> traces::riscv64::PageTableFormat {
        traces::riscv64::PageTableFormat::Vmsa
    }

    fn translation_regs(&self, uc: &Unicorn<'_, ()>) -> TranslationRegs {
        translation_regs(uc)
    }

    /// Every write reaches the MSR hook ([`on_msr`]).
    fn regs_writes_seen(&self) -> bool {
        true
    }

    fn access_is_el0(&self, uc: &Unicorn<'_, ()>, unprivileged: bool, access: Access) -> bool {
        let pstate = uc.reg_read(RegisterARM64::PSTATE).unwrap_or(0b0100);
        pstate & 0b1100 == 0 || (access != Access::Fetch && unprivileged)
    }

    fn data_access_address(&self, uc: &Unicorn<'_, ()>, word: u32) -> Option<u64> {
        insn::decode_mem_access(word).map(|a| a.address(|r| read_xreg(uc, r)))
    }

    /// The kernel's `ldtr`/`sttr` (Linux's uaccess): at EL1 they access memory
    /// with EL0's permissions.
    fn unprivileged_sites(&self, words: &[(u64, u32)]) -> Vec<u64> {
        words
            .iter()
            .filter(|&&(_, word)| insn::is_unprivileged(word))
            .map(|&(addr, _)| addr)
            .collect()
    }
}

impl IsaMmuHooks for Aarch64Mmu {
    /// Code hooks on every DSB and the ISBs near maintenance, at the kernel's
    /// link address and where it runs before the MMU is on (a boot-protocol
    /// kernel's physical alias). TLBIs come from the SYS hook ([`on_sys`]).
    fn install_maintenance_hooks(
        &self,
        _mmu: &SimMmu,
        cores: &mut [Core],
        kernel: &KernelImage,
        words: &[(u64, u32)],
    ) -> Result<(), EmuError> {
        let mut barriers = barrier_sites(words);
        let aliases: Vec<_> = barriers
            .iter()
            .filter_map(|&(addr, barrier)| Some((kernel.physical_alias(addr)?, barrier)))
            .collect();
        barriers.extend(aliases);
        for core in cores.iter_mut() {
            let Some(mmu) = core.mmu.clone() else {
                continue;
            };
            for &(addr, barrier) in &barriers {
                let m = mmu.clone();
                core.code_sites.add(addr, move |uc, pc| {
                    let at = m.at(pc);
                    m.model_for(uc).barrier(m.ram(), m.cpu());
                    let kind = match barrier {
                        Barrier::Dsb(crm) => EventKind::Dsb {
                            option: BarrierOption(crm as u8),
                        },
                        Barrier::Isb => EventKind::Isb,
                    };
                    m.record(uc, at, kind);
                });
            }
        }
        Ok(())
    }
}

/// From the MSR hook: a write to a translation register invalidates the cached
/// registers.
pub(crate) fn on_msr(mmu: &CoreMmu, access: &SysAccess<'_>) {
    let cp = access.cp;
    // SCTLR_EL1, TTBR0/1_EL1, TCR_EL1 (op0 3, op1 0, CRn 1 or 2, CRm 0).
    if cp.op0 == 3 && cp.op1 == 0 && cp.crm == 0 && (cp.crn == 1 || cp.crn == 2) {
        mmu.regs_changed();
    }
}

/// From the SYS hook: TLB maintenance reaches the model before it runs.
pub(crate) fn on_sys(mmu: &CoreMmu, access: &SysAccess<'_>) {
    let cp = access.cp;
    if cp.op1 != 0 || cp.crn != 8 {
        return;
    }
    let (op, broadcast) = trace_tlbi(cp.op1, cp.crm, cp.op2);
    let at = mmu.at(access.pc());
    let Some(mut uc) = access.engine() else {
        return;
    };
    if let Some(scope) = TlbiScope::of(op, cp.val) {
        let name = op.mnemonic(broadcast);
        let removed = mmu
            .model_for(&uc)
            .tlbi(mmu.ram(), scope, broadcast, name, at);
        // Unicorn's target pages are 1 KiB, and its TLBI by VA drops only the first
        // of a 4 KiB page's four: the other three would go on translating with no
        // fill, past the model (and, the page unmapped, past the tables).
        if removed
            .iter()
            .any(|&va| mmu.may_hold(SoftTlbEntry::Page(va)))
        {
            mmu.flush_soft_tlb(&mut uc);
        }
    }
    let kind = EventKind::Tlbi {
        op,
        broadcast,
        operand: cp.val,
    };
    mmu.record(&uc, at, kind);
}

/// A TLBI (SYS with op1 0, CRn 8) as the trace names it, and whether it is broadcast
/// (…OS, range …IS/…OS, …IS: CRm 1, 2, 3, 5). The ops the model decodes get their
/// kind; the others are `Other(op1:CRm:op2)`.
fn trace_tlbi(op1: u32, crm: u32, op2: u32) -> (traces::TlbiOp, bool) {
    use traces::TlbiOp as T;
    let op = match (crm, op2) {
        (1 | 3 | 7, 0) => T::Vmalle1,
        (1 | 3 | 7, 1) => T::Vae1,
        (1 | 3 | 7, 2) => T::Aside1,
        (1 | 3 | 7, 3) => T::Vaae1,
        (1 | 3 | 7, 5) => T::Vale1,
        (1 | 3 | 7, 7) => T::Vaale1,
        _ => T::Other(((op1 << 7) | (crm << 3) | op2) as u16),
    };
    (op, matches!(crm, 1 | 2 | 3 | 5))
}

/// Whether `word` is a TLBI (SYS with CRn = 8).
fn is_tlbi(word: u32) -> bool {
    word & 0xfff8_f000 == 0xd508_8000
}

/// The barriers to hook: every DSB, and the ISBs that follow TLB maintenance or a DSB
/// closely (within 4 instructions). ISBs elsewhere, such as in spin-wait loops, are
/// left alone: they are hot and cannot complete a TLBI.
fn barrier_sites(words: &[(u64, u32)]) -> Vec<(u64, Barrier)> {
    let mut sites = Vec::new();
    for (i, &(addr, word)) in words.iter().enumerate() {
        match Barrier::decode(word) {
            Some(Barrier::Isb) => {
                let recent = &words[i.saturating_sub(4)..i];
                let after_maintenance = recent.iter().any(|&(a, w)| {
                    a + 16 >= addr
                        && (is_tlbi(w) || matches!(Barrier::decode(w), Some(Barrier::Dsb(_))))
                });
                if after_maintenance {
                    sites.push((addr, Barrier::Isb));
                }
            }
            Some(b) => sites.push((addr, b)),
            None => {}
        }
    }
    sites
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlbis_keep_their_kind_in_the_trace() {
        use traces::TlbiOp as T;
        let ops = [
            T::Vmalle1,
            T::Vae1,
            T::Aside1,
            T::Vaae1,
            T::Vale1,
            T::Vaale1,
        ];
        for (crm, broadcast) in [(1, true), (3, true), (7, false)] {
            for (op2, op) in [0, 1, 2, 3, 5, 7].into_iter().zip(ops) {
                assert_eq!(
                    trace_tlbi(0, crm, op2),
                    (op, broadcast),
                    "crm {crm} op2 {op2}"
                );
            }
        }
        assert_eq!(trace_tlbi(0, 3, 3).0.mnemonic(true), "vaae1is");
        // tlbi rvae1is (a range form the model does not decode): op1 0, CRm 2, op2 1.
        assert_eq!(trace_tlbi(0, 2, 1), (T::Other((2 << 3) | 1), true));
        assert_eq!(TlbiScope::of(trace_tlbi(0, 2, 1).0, 0), None);
        assert_eq!(trace_tlbi(0, 7, 3), (T::Vaae1, false));
    }

    #[test]
    fn hooks_dsbs_and_the_isbs_after_maintenance_only() {
        const DSB_ISH: u32 = 0xd503_3b9f;
        const DSB_ISHST: u32 = 0xd503_3a9f;
        const ISB: u32 = 0xd503_3fdf;
        const TLBI_VAAE1IS: u32 = 0xd508_8360;
        const NOP: u32 = 0xd503_201f;
        let code = [
            DSB_ISHST,
            TLBI_VAAE1IS,
            DSB_ISH,
            ISB,
            NOP,
            NOP,
            NOP,
            NOP,
            NOP,
            ISB,
            TLBI_VAAE1IS,
            ISB,
        ];
        let words: Vec<(u64, u32)> = code
            .iter()
            .enumerate()
            .map(|(i, &w)| (0x1000 + 4 * i as u64, w))
            .collect();
        assert!(is_tlbi(TLBI_VAAE1IS) && !is_tlbi(DSB_ISH) && !is_tlbi(NOP));
        assert_eq!(
            barrier_sites(&words),
            vec![
                (0x1000, Barrier::Dsb(0b1010)),
                (0x1008, Barrier::Dsb(0b1011)),
                (0x100c, Barrier::Isb),
                (0x102c, Barrier::Isb),
            ]
        );
    }
}
