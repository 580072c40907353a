//! The TLB check over event scripts: what the machine would record for each pattern.

use super::*;
use crate::aarch64::Access;
use crate::event::{
    BarrierOption, CpuId, Event, EventKind, Perms, TaskId, TlbFill, TlbiOp, WalkResult,
};
use crate::{Analysis, FindingKind, StringTable};

const L1: u64 = 0x4000_0000;
const L2: u64 = 0x4000_1000;
const L3: u64 = 0x4000_2000;
const VA: u64 = 0x8000_0000;
const PAGE_A: u64 = 0x4010_0000;
const PAGE_B: u64 = 0x4010_1000;
/// Valid page, AF, read-write.
const PAGE: u64 = 0x403;

/// Events fed to a check as they are written, each one instruction later.
struct Script {
    check: TlbCheck,
    time: u64,
}

impl Script {
    /// The three tables of VA are known page-table pages.
    fn new() -> Self {
        Self::with(TlbCheck::new())
    }

    /// [`Script::new`] feeding `check`.
    fn with(check: TlbCheck) -> Self {
        let mut s = Script { check, time: 0 };
        s.on(
            0,
            EventKind::PageTablePage {
                pa: L1,
                level: 1,
                va_base: 0,
            },
        );
        s.on(
            0,
            EventKind::PageTablePage {
                pa: L2,
                level: 2,
                va_base: VA & !((1 << 30) - 1),
            },
        );
        s.on(
            0,
            EventKind::PageTablePage {
                pa: L3,
                level: 3,
                va_base: VA & !((1 << 21) - 1),
            },
        );
        s
    }

    fn on(&mut self, cpu: u16, kind: EventKind) -> &mut Self {
        self.time += 1;
        let event = Event {
            time: self.time,
            cpu: CpuId(cpu),
            task: TaskId(0),
            pc: 0x1000 + self.time,
            caller: 0,
            kind,
        };
        self.check.event(&event, &StringTable::default());
        self
    }

    /// `cpu` walks VA (through L1[2], L2[0], L3[0]) to `pa`.
    fn fill_as(&mut self, cpu: u16, va: u64, asid: u16, global: bool) -> &mut Self {
        let index = (va >> 12) & 511;
        self.on(
            cpu,
            EventKind::TlbFill(TlbFill {
                va,
                pa: PAGE_A + (index << 12),
                level: 3,
                write: true,
                exec: true,
                user: Perms::NONE,
                global,
                asid,
                walk: [L1 + 16, L2, L3 + 8 * index, 0],
                walk_len: 3,
            }),
        )
    }

    fn fill(&mut self, cpu: u16) -> &mut Self {
        self.fill_as(cpu, VA, 0, true)
    }

    /// `cpu` stores `new` over `old` at `desc`.
    fn store_at(&mut self, cpu: u16, desc: u64, old: u64, new: u64) -> &mut Self {
        self.on(
            cpu,
            EventKind::PageTableWrite {
                desc_pa: desc,
                old,
                new,
            },
        )
    }

    fn store(&mut self, cpu: u16, old: u64, new: u64) -> &mut Self {
        self.store_at(cpu, L3, old, new)
    }

    fn tlbi(&mut self, cpu: u16, op: TlbiOp, broadcast: bool, operand: u64) -> &mut Self {
        self.on(
            cpu,
            EventKind::Tlbi {
                op,
                broadcast,
                operand,
            },
        )
    }

    /// `tlbi vaae1is` of `va`.
    fn tlbi_va(&mut self, cpu: u16, va: u64) -> &mut Self {
        self.tlbi(cpu, TlbiOp::Vaae1, true, va >> 12)
    }

    fn dsb(&mut self, cpu: u16, option: BarrierOption) -> &mut Self {
        self.on(cpu, EventKind::Dsb { option })
    }

    fn isb(&mut self, cpu: u16) -> &mut Self {
        self.on(cpu, EventKind::Isb)
    }

    fn stale_use(&mut self, cpu: u16) -> &mut Self {
        self.stale_use_now(cpu, WalkResult::Faults(7))
    }

    fn stale_use_now(&mut self, cpu: u16, now: WalkResult) -> &mut Self {
        self.on(
            cpu,
            EventKind::StaleTlbUse {
                va: VA,
                access: Access::Read,
                now,
                asid: None,
            },
        )
    }

    fn kinds(&self) -> Vec<FindingKind> {
        self.check.findings().iter().map(|f| f.kind).collect()
    }

    fn held(&self, cpu: usize) -> bool {
        self.check.held().get(cpu, VA, None).is_some()
    }

    fn stale(&self, cpu: usize) -> bool {
        self.check
            .held()
            .get(cpu, VA, None)
            .is_some_and(|e| e.stale.is_some())
    }
}

/// A break, ordered, broadcast-invalidated and completed: what the seed does.
fn clean_unmap(s: &mut Script, cpu: u16) {
    s.store(cpu, PAGE_A | PAGE, 0)
        .dsb(cpu, BarrierOption::ISHST)
        .tlbi_va(cpu, VA)
        .dsb(cpu, BarrierOption::ISH)
        .isb(cpu);
}

#[test]
fn a_clean_unmap_and_remap_has_no_finding() {
    let mut s = Script::new();
    s.fill(0).fill(1);
    clean_unmap(&mut s, 0);
    s.store(0, 0, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![]);
    assert!(!s.held(0) && !s.held(1));
}

#[test]
fn a_stale_use_is_reported_with_what_changed_the_entry() {
    let mut s = Script::new();
    s.fill(0).store(1, PAGE_A | PAGE, 0);
    assert!(s.stale(0));
    s.stale_use(0);
    assert_eq!(s.kinds(), vec![FindingKind::StaleTlb]);
    let finding = &s.check.findings()[0];
    assert_eq!(finding.cpu, Some(0));
    assert!(
        finding.details[1].contains("fault (status 0x7)"),
        "{finding:?}"
    );
    assert!(
        finding.details[2].starts_with("changed by cpu1"),
        "{finding:?}"
    );
    // A use through an entry that is not stale (or not held) is no finding.
    let mut s = Script::new();
    s.fill(0).stale_use(0).stale_use(1);
    assert_eq!(s.kinds(), vec![]);
}

/// A stale entry used for an access the tables still give the same page (a
/// permission it keeps, a block rebuilt from pages: Linux's fixmap and rodata
/// updates) is no finding; another page is.
#[test]
fn a_stale_use_that_reaches_the_page_the_tables_give_is_no_finding() {
    let mut s = Script::new();
    s.fill(0).store(1, PAGE_A | PAGE, PAGE_A | PAGE | 0x80);
    assert!(s.stale(0));
    s.stale_use_now(0, WalkResult::Maps(PAGE_A));
    assert_eq!(s.kinds(), vec![]);
    let mut s = Script::new();
    s.fill(0).store(1, PAGE_A | PAGE, PAGE_B | PAGE);
    s.stale_use_now(0, WalkResult::Maps(PAGE_B));
    assert!(
        s.kinds().contains(&FindingKind::StaleTlb),
        "{:?}",
        s.kinds()
    );
}

#[test]
fn a_local_tlbi_leaves_the_other_cores_entries() {
    let mut s = Script::new();
    s.fill(0).fill(1).store(0, PAGE_A | PAGE, 0);
    s.dsb(0, BarrierOption::ISHST)
        .tlbi(0, TlbiOp::Vaae1, false, VA >> 12)
        .dsb(0, BarrierOption::NSH); // enough for a local TLBI
    assert!(!s.held(0) && s.stale(1));
    // Mapping it again while CPU 1 holds the old translation.
    s.store(0, 0, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![FindingKind::MissingTlbFlush]);
    assert!(s.check.findings()[0].details[1].starts_with("cpu1 still holds"));
}

/// TLBI by VA with an ASID (VAE1) removes the entries of that ASID and global
/// ones, never another ASID's non-global entry; VAAE1 ignores ASIDs; ASIDE1 removes
/// only non-global entries of its ASID; VMALLE1 removes everything; a TLBI of
/// another page removes nothing.
#[test]
fn tlbi_scope_follows_asid_and_global_bit() {
    let with_asid = |asid: u64| (asid << 48) | (VA >> 12);
    let cases: [(bool, TlbiOp, u64, bool); 9] = [
        // (leaf global, TLBI, operand, entry survives)
        (false, TlbiOp::Vae1, with_asid(6), true),
        (false, TlbiOp::Vale1, with_asid(5), false),
        (true, TlbiOp::Vae1, with_asid(6), false),
        (false, TlbiOp::Vaae1, VA >> 12, false),
        (false, TlbiOp::Aside1, 6 << 48, true),
        (false, TlbiOp::Aside1, 5 << 48, false),
        (true, TlbiOp::Aside1, 5 << 48, true),
        (true, TlbiOp::Vmalle1, 0, false),
        (false, TlbiOp::Vaale1, (VA >> 12) + 1, true),
    ];
    for (global, op, operand, survives) in cases {
        for broadcast in [false, true] {
            let mut s = Script::new();
            s.fill_as(0, VA, 5, global).tlbi(0, op, broadcast, operand);
            assert_eq!(
                s.held(0),
                survives,
                "global {global}, {op:?} {operand:#x}, broadcast {broadcast}"
            );
        }
    }
}

/// A broadcast TLBI reaches every CPU's entries, a local one only its own CPU's.
#[test]
fn tlbi_reach_is_the_issuing_cpu_or_all() {
    for broadcast in [false, true] {
        let mut s = Script::new();
        s.fill(0).fill(1).fill(2);
        s.tlbi(1, TlbiOp::Vaae1, broadcast, VA >> 12);
        let held: Vec<bool> = (0..3).map(|cpu| s.held(cpu)).collect();
        let expected = if broadcast {
            vec![false, false, false]
        } else {
            vec![true, false, true]
        };
        assert_eq!(held, expected, "broadcast {broadcast}");
    }
}

/// A block is held page by page; a TLBI of any page of it removes every page.
#[test]
fn a_tlbi_inside_a_block_removes_the_whole_block() {
    let mut s = Script::new();
    for page in [0, 5] {
        s.on(
            0,
            EventKind::TlbFill(TlbFill {
                va: VA + page * 4096,
                pa: PAGE_A + page * 4096,
                level: 2,
                write: true,
                exec: false,
                user: Perms::NONE,
                global: true,
                asid: 0,
                walk: [L1 + 16, L2, 0, 0],
                walk_len: 2,
            }),
        );
    }
    s.tlbi_va(0, VA + 9 * 4096);
    assert!(s.check.held().entries().next().is_none());
}

/// Changing only the permissions of a live descriptor changes the translation:
/// held entries go stale. The access flag and software bits do not.
#[test]
fn permission_changes_make_held_entries_stale_but_access_flag_and_software_bits_do_not() {
    const READ_ONLY: u64 = 1 << 7; // AP[2]
    const EXECUTE_NEVER: u64 = 1 << 54; // UXN
    for (change, stale) in [
        (READ_ONLY, true),
        (EXECUTE_NEVER, true),
        (1 << 10, false),
        (1 << 55, false),
    ] {
        let mut s = Script::new();
        s.fill(0).store(1, PAGE_A | PAGE, (PAGE_A | PAGE) ^ change);
        assert_eq!(s.stale(0), stale, "bits {change:#x}");
    }
}

/// A change of a table descriptor above the leaf makes the entries walked through
/// it stale too.
#[test]
fn a_table_descriptor_change_makes_entries_below_it_stale() {
    let mut s = Script::new();
    s.fill(0).store_at(1, L2, L3 | 3, 0);
    assert!(s.stale(0));
}

/// A break (valid → invalid) is completed by a TLBI of its own VA, and only that:
/// making the descriptor valid again after a TLBI of another page is still a
/// break-before-make violation.
#[test]
fn a_break_is_completed_only_by_a_tlbi_of_its_address() {
    for (tlbi_va, complete) in [(VA, true), (VA + 4096, false), (VA + (1 << 21), false)] {
        let mut s = Script::new();
        s.store(0, PAGE_A | PAGE, 0)
            .dsb(0, BarrierOption::ISHST)
            .tlbi_va(0, tlbi_va)
            .dsb(0, BarrierOption::ISH)
            .store(0, 0, PAGE_B | PAGE);
        let expected = if complete {
            vec![]
        } else {
            vec![FindingKind::BreakBeforeMake]
        };
        assert_eq!(s.kinds(), expected, "TLBI of {tlbi_va:#x}");
    }
}

/// Linux's mprotect: a user PTE is cleared and set again with other permissions,
/// and the range is flushed only after. A TLB still holding the page (with the old
/// permissions) is what the architecture allows: no missing flush. Remapping to
/// another page while one holds the old one still is.
#[test]
fn a_permission_change_through_invalid_needs_no_flush_in_between() {
    const NG: u64 = 1 << 11;
    const RO: u64 = 0x80;
    let user = |pa| pa | PAGE | NG | 0x40;
    let mut s = Script::new();
    s.fill_as(1, VA, 5, false)
        .store(0, user(PAGE_A), 0)
        .store(0, 0, user(PAGE_A) | RO);
    assert_eq!(s.kinds(), vec![]);
    let mut s = Script::new();
    s.fill_as(1, VA, 5, false)
        .store(0, user(PAGE_A), 0)
        .store(0, 0, user(PAGE_B));
    assert_eq!(s.kinds(), vec![FindingKind::MissingTlbFlush]);
}

/// A user (non-global) page's break is completed by an invalidation of an ASID
/// (Linux tears an address space down and flushes it by ASID); a kernel (global)
/// page's is not.
#[test]
fn an_asid_invalidation_completes_the_break_of_a_user_page_only() {
    const NG: u64 = 1 << 11;
    for (ng, complete) in [(NG, true), (0, false)] {
        let mut s = Script::new();
        s.store(0, PAGE_A | PAGE | ng, 0)
            .dsb(0, BarrierOption::ISHST)
            .tlbi(0, TlbiOp::Aside1, true, 7 << 48)
            .dsb(0, BarrierOption::ISH)
            .store(0, 0, PAGE_B | PAGE | ng);
        let expected = if complete {
            vec![]
        } else {
            vec![FindingKind::BreakBeforeMake]
        };
        assert_eq!(s.kinds(), expected, "nG {ng:#x}");
    }
}

/// A user table's descriptor (TTBR0's half) cleared by Linux's free_pgtables is
/// completed by the address space's ASID flush; and a table page the model
/// announces again for another level (freed, then reused by the next process)
/// leaves the breaks of its old role behind.
#[test]
fn table_breaks_end_with_an_asid_flush_or_the_page_s_new_role() {
    let table = L3 | 3;
    let mut s = Script::new();
    s.store_at(0, L2, table, 0)
        .dsb(0, BarrierOption::ISHST)
        .tlbi(0, TlbiOp::Aside1, true, 7 << 48)
        .dsb(0, BarrierOption::ISH)
        .store_at(0, L2, 0, PAGE_B | 3);
    assert_eq!(s.kinds(), vec![]);
    let mut s = Script::new();
    s.store_at(0, L2, table, 0).on(
        0,
        EventKind::PageTablePage {
            pa: L2,
            level: 3,
            va_base: 0x40_0000,
        },
    );
    s.store_at(0, L2, 0, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![]);
    // Announced again in the same role, the break stands.
    let mut s = Script::new();
    s.store_at(0, L2, table, 0).on(
        0,
        EventKind::PageTablePage {
            pa: L2,
            level: 2,
            va_base: VA & !((1 << 30) - 1),
        },
    );
    s.store_at(0, L2, 0, PAGE_B | 1);
    assert_eq!(s.kinds(), vec![FindingKind::BreakBeforeMake]);
}

#[test]
fn break_before_make_is_checked_both_ways() {
    // Straight from A to B.
    let mut s = Script::new();
    s.fill(0).store(0, PAGE_A | PAGE, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![FindingKind::BreakBeforeMake]);
    // Through invalid with no TLBI in between (and no TLB holding A).
    let mut s = Script::new();
    s.store(0, PAGE_A | PAGE, 0).store(0, 0, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![FindingKind::BreakBeforeMake]);
    // Made valid again with the same output: no remap.
    let mut s = Script::new();
    s.store(0, PAGE_A | PAGE, 0).store(0, 0, PAGE_A | PAGE);
    assert_eq!(s.kinds(), vec![]);
    // With the TLBI: clean; and a permission-only change is not a remap.
    let mut s = Script::new();
    clean_unmap(&mut s, 0);
    s.store(0, 0, PAGE_B | PAGE)
        .store(0, PAGE_B | PAGE, PAGE_B | PAGE | 0x80);
    assert_eq!(s.kinds(), vec![]);
    // A store to a page that is not a known page table is not looked at.
    let mut s = Script::new();
    s.store_at(0, PAGE_B, PAGE_A | PAGE, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![]);
}

/// Once the model retires a page-table page (a kernel reusing a freed table as data),
/// stores to it are no descriptor changes, and a break left open in it is forgotten.
#[test]
fn stores_to_a_retired_table_page_are_not_remaps() {
    let reuse = |s: &mut Script| {
        s.store(0, PAGE_A | PAGE, 0).store(0, 0, PAGE_B | PAGE);
    };
    let mut s = Script::new();
    reuse(&mut s);
    assert_eq!(s.kinds(), vec![FindingKind::BreakBeforeMake]);
    let mut s = Script::new();
    s.on(0, EventKind::PageTableRetired { pa: L3 });
    reuse(&mut s);
    assert_eq!(s.kinds(), vec![]);
    // Retired between the break and the store that completes it.
    let mut s = Script::new();
    s.store(0, PAGE_A | PAGE, 0)
        .on(0, EventKind::PageTableRetired { pa: L3 })
        .on(
            0,
            EventKind::PageTablePage {
                pa: L3,
                level: 3,
                va_base: VA & !((1 << 21) - 1),
            },
        )
        .store(0, 0, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![]);
}

#[test]
fn barriers_must_order_the_store_and_complete_the_tlbi() {
    let mut s = Script::new();
    s.fill(0).store(0, PAGE_A | PAGE, 0);
    s.tlbi_va(0, VA); // no dsb ishst before
    s.isb(0); // no dsb ish before
    let keys: Vec<_> = s
        .check
        .findings()
        .iter()
        .map(|f| (f.kind, f.key.clone()))
        .collect();
    let tlbi_pc = 0x1000 + 6;
    assert_eq!(
        keys,
        vec![
            (
                FindingKind::MissingBarrier,
                format!("store-before-tlbi {tlbi_pc:#x}")
            ),
            (
                FindingKind::MissingBarrier,
                format!("completion {tlbi_pc:#x}")
            ),
        ]
    );
    // A local TLBI needs only non-shareable barriers; a broadcast one does not.
    for (broadcast, clean) in [(false, true), (true, false)] {
        let mut s = Script::new();
        s.fill(0).store(0, PAGE_A | PAGE, 0);
        s.dsb(0, BarrierOption::NSHST)
            .tlbi(0, TlbiOp::Vmalle1, broadcast, 0)
            .dsb(0, BarrierOption::NSH)
            .isb(0);
        assert_eq!(s.kinds().is_empty(), clean, "broadcast {broadcast}");
    }
    // A store-only or load-only DSB does not complete a TLBI.
    for option in [BarrierOption::ISHST, BarrierOption::ISHLD] {
        let mut s = Script::new();
        s.tlbi_va(0, VA).dsb(0, option).isb(0);
        assert_eq!(s.kinds(), vec![FindingKind::MissingBarrier], "{option:?}");
    }
    // Another CPU's barrier completes nothing of this one's.
    let mut s = Script::new();
    s.tlbi_va(0, VA).dsb(1, BarrierOption::ISH).isb(0);
    assert_eq!(s.kinds(), vec![FindingKind::MissingBarrier]);
    // A DMB orders memory accesses but waits for no TLBI, nor does it order a
    // descriptor store before one.
    let mut s = Script::new();
    s.fill(0).store(0, PAGE_A | PAGE, 0);
    s.on(
        0,
        EventKind::Dmb {
            option: BarrierOption::ISHST,
        },
    );
    s.tlbi_va(0, VA);
    s.on(
        0,
        EventKind::Dmb {
            option: BarrierOption::ISH,
        },
    );
    s.isb(0);
    assert_eq!(
        s.kinds(),
        vec![FindingKind::MissingBarrier, FindingKind::MissingBarrier]
    );
}

/// An IRQ handler's `isb` does not end the interrupted code's TLBI sequence:
/// that code completes its TLBI with its own `dsb ish` after the handler
/// returns. A `dsb ish` in the handler completes it as well (a DSB waits for
/// everything the CPU issued before it). The handler's own TLBI still needs
/// its own completion.
#[test]
fn an_irq_handler_s_isb_is_not_the_interrupted_code_s() {
    let irq = |s: &mut Script, body: &dyn Fn(&mut Script)| {
        s.on(0, EventKind::HardIrqEnter { intid: 27 });
        body(s);
        s.on(0, EventKind::HardIrqExit { intid: 27 });
    };
    let mut s = Script::new();
    s.dsb(0, BarrierOption::ISHST).tlbi_va(0, VA);
    irq(&mut s, &|s| {
        s.isb(0);
    });
    s.dsb(0, BarrierOption::ISH).isb(0);
    assert_eq!(s.kinds(), vec![], "handler isb");

    let mut s = Script::new();
    s.dsb(0, BarrierOption::ISHST).tlbi_va(0, VA);
    irq(&mut s, &|s| {
        s.dsb(0, BarrierOption::ISH);
    });
    s.isb(0);
    assert_eq!(s.kinds(), vec![], "handler dsb completes the thread's TLBI");

    let mut s = Script::new();
    irq(&mut s, &|s| {
        s.tlbi_va(0, VA).isb(0);
    });
    assert_eq!(
        s.kinds(),
        vec![FindingKind::MissingBarrier],
        "handler's own TLBI"
    );

    // Without the handler frame it is the same code's sequence.
    let mut s = Script::new();
    s.dsb(0, BarrierOption::ISHST).tlbi_va(0, VA).isb(0);
    assert_eq!(s.kinds(), vec![FindingKind::MissingBarrier]);
}

/// A page-table store before a pending TLBI is completed is a missing barrier only
/// when it changes the translation the TLBI targets: an IRQ handler may map other
/// pages between a TLBI and its `dsb ish`.
#[test]
fn only_a_store_to_the_invalidated_translation_needs_the_tlbi_completed() {
    for (store_at, finding) in [(L3 + 8, false), (L3, true)] {
        let mut s = Script::new();
        s.fill(0)
            .dsb(0, BarrierOption::ISHST)
            .tlbi_va(0, VA)
            .store_at(0, store_at, 0, PAGE_B | PAGE);
        let missing = s.kinds().contains(&FindingKind::MissingBarrier);
        assert_eq!(missing, finding, "store to {store_at:#x}");
    }
}

/// Unmodelled TLBI forms (range, by IPA …) change nothing and check nothing.
#[test]
fn unmodelled_tlbis_are_ignored() {
    let mut s = Script::new();
    s.fill(0).store(0, PAGE_A | PAGE, 0);
    s.tlbi(0, TlbiOp::Other(0x11), true, VA >> 12);
    assert!(s.held(0));
    assert_eq!(s.kinds(), vec![]);
}

impl Script {
    /// `cpu` frees the page of PAGE_A (call site 0x9000).
    fn free_page_a(&mut self, cpu: u16) -> &mut Self {
        self.free(cpu, PAGE_A, 0)
    }

    fn finish(&mut self) -> &mut Self {
        self.check.finish();
        self
    }
}

/// The seed's reclaim: pages freed first, unmapped after, the flush left for later.
/// The window runs from the free to the TLBI that removes the last entry.
#[test]
fn a_page_freed_while_a_tlb_holds_it_is_reported_with_its_window() {
    let mut s = Script::new();
    s.fill(1).free_page_a(0); // time 5
    s.store(0, PAGE_A | PAGE, 0).dsb(0, BarrierOption::ISHST);
    assert_eq!(s.kinds(), vec![], "reported when the window closes");
    s.tlbi_va(0, VA).dsb(0, BarrierOption::ISH); // TLBI at time 8
    assert_eq!(s.kinds(), vec![FindingKind::FreedPageInTlb]);
    let finding = &s.check.findings()[0];
    assert_eq!((finding.cpu, finding.time), (Some(0), Some(5)));
    assert_eq!(finding.key, "freed-in-tlb 0x9000");
    let text = finding.details.join("\n");
    assert!(
        text.contains("cpu1 held va 0x80000000 -> pa 0x40100000 at the free: still mapped"),
        "{text}"
    );
    assert!(text.contains("reachable for 3 instructions"), "{text}");
}

/// Freeing a page the direct map (VA = PA) holds is no hazard: that map is for good.
#[test]
fn the_direct_map_does_not_keep_a_freed_page_reachable() {
    let mut s = Script::new();
    s.on(
        0,
        EventKind::TlbFill(TlbFill {
            va: PAGE_A,
            pa: PAGE_A,
            level: 2,
            write: true,
            exec: false,
            user: Perms::NONE,
            global: true,
            asid: 0,
            walk: [L1 + 8, L2 + 8, 0, 0],
            walk_len: 2,
        }),
    );
    s.free_page_a(0).finish();
    assert_eq!(s.kinds(), vec![]);
}

/// Unmapped, flushed, then freed: nothing holds the page at the free.
#[test]
fn a_page_freed_after_its_flush_is_clean() {
    let mut s = Script::new();
    s.fill(1);
    clean_unmap(&mut s, 0);
    s.free_page_a(0).finish();
    assert_eq!(s.kinds(), vec![]);
}

/// A window still open when the events end is reported then, as open; an allocation
/// of the page meanwhile is named.
#[test]
fn an_open_window_is_reported_at_the_end_with_the_reuse() {
    let mut s = Script::new();
    s.fill(2).store(0, PAGE_A | PAGE, 0).free_page_a(0);
    s.on(
        3,
        EventKind::PageAlloc {
            order: 0,
            gfp: 0,
            pa: PAGE_A,
        },
    );
    // A local TLBI on another CPU does not close it.
    s.dsb(0, BarrierOption::NSHST)
        .tlbi(0, TlbiOp::Vaae1, false, VA >> 12)
        .dsb(0, BarrierOption::NSH);
    assert_eq!(s.kinds(), vec![]);
    s.finish();
    assert_eq!(s.kinds(), vec![FindingKind::FreedPageInTlb]);
    let text = s.check.findings()[0].details.join("\n");
    assert!(
        text.contains("cpu2 held va 0x80000000 -> pa 0x40100000 at the free: unmapped by cpu0"),
        "{text}"
    );
    assert!(text.contains("cpu3 allocated the page again"), "{text}");
    let finding = &s.check.findings()[0];
    assert!(
        finding.title.contains("freed and allocated again"),
        "{finding:?}"
    );
    assert_eq!(finding.key, "freed-in-tlb 0x9000 reused");
    assert!(
        text.contains("still reachable at the last MMU event"),
        "{text}"
    );
}

/// Entries are found by any address in their page, and pages differ in bit 12.
#[test]
fn held_entries_are_found_by_any_address_in_their_page() {
    let mut s = Script::new();
    let odd_page = VA + 4096;
    s.fill_as(0, odd_page, 0, true);
    let held = s.check.held();
    assert!(held.get(0, odd_page + 0xfff, None).is_some());
    assert!(held.get(0, VA, None).is_none() && held.get(0, odd_page + 4096, None).is_none());
    assert!(held.get(1, odd_page, None).is_none());
    // A store to the odd page's own descriptor (L3 + 8) makes it stale, not VA's.
    s.fill(0).store_at(1, L3 + 8, PAGE_A | PAGE, 0);
    assert!(s
        .check
        .held()
        .get(0, odd_page, None)
        .is_some_and(|e| e.stale.is_some()));
    assert!(!s.stale(0));
}

/// A descriptor's VA comes from its index in its table: the break of L3[1] (VA +
/// 4 KiB) is completed by a TLBI of VA + 4 KiB, not of VA.
#[test]
fn a_descriptor_maps_the_va_of_its_index() {
    for (tlbi_va, clean) in [(VA + 4096, true), (VA, false)] {
        let mut s = Script::new();
        s.store_at(0, L3 + 8, PAGE_B | PAGE, 0)
            .dsb(0, BarrierOption::ISHST)
            .tlbi_va(0, tlbi_va)
            .dsb(0, BarrierOption::ISH)
            .store_at(0, L3 + 8, 0, PAGE_A | PAGE);
        assert_eq!(s.kinds().is_empty(), clean, "TLBI of {tlbi_va:#x}");
    }
}

/// With a symbolizer, findings name the code: `0x… <symbol>`.
#[test]
fn findings_name_code_with_the_symbolizer() {
    let mut s = Script::with(TlbCheck::with_symbolizer(Box::new(|pc, _| {
        Some(format!("fn_{pc:x}"))
    })));
    s.store(0, PAGE_A | PAGE, 0).store(0, 0, PAGE_B | PAGE);
    let details = s.check.findings()[0].details.join("\n");
    let pc = 0x1000 + s.time;
    assert!(
        details.contains(&format!("{pc:#x} <fn_{pc:x}>")),
        "{details}"
    );
}

/// A descriptor store must be ordered before any TLBI: a local one after no DSB at
/// all, a broadcast one after only a non-shareable one.
#[test]
fn the_store_before_a_tlbi_needs_a_dsb_of_the_tlbi_s_reach() {
    for (dsb, broadcast, finding) in [
        (None, false, true),
        (Some(BarrierOption::NSHST), false, false),
        (Some(BarrierOption::NSHST), true, true),
        (Some(BarrierOption::ISHST), true, false),
    ] {
        let mut s = Script::new();
        s.store(0, PAGE_A | PAGE, 0);
        if let Some(option) = dsb {
            s.dsb(0, option);
        }
        s.tlbi(0, TlbiOp::Vaae1, broadcast, VA >> 12);
        let keys: Vec<&str> = s.check.findings().iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys.iter().any(|k| k.starts_with("store-before-tlbi")),
            finding,
            "{dsb:?} broadcast {broadcast}: {keys:?}"
        );
    }
}

/// `free_pages(pa, order)` frees `1 << order` pages from `pa`: a TLB entry to the
/// last page of an order-2 free is in it, one to the page after is not.
#[test]
fn a_free_covers_its_order() {
    for (page, inside) in [(3, true), (4, false)] {
        let mut s = Script::new();
        s.fill_as(0, VA + page * 4096, 0, true).free(0, PAGE_A, 2);
        s.finish();
        assert_eq!(!s.kinds().is_empty(), inside, "page {page}");
    }
}

impl Script {
    /// `cpu` frees `1 << order` pages at `pa` (call site 0x9000).
    fn free(&mut self, cpu: u16, pa: u64, order: u8) -> &mut Self {
        self.time += 1;
        let event = Event {
            time: self.time,
            cpu: CpuId(cpu),
            task: TaskId(0),
            pc: 0x8000,
            caller: 0x9000,
            kind: EventKind::PageFree { pa, order },
        };
        self.check.event(&event, &StringTable::default());
        self
    }

    fn alloc(&mut self, cpu: u16, pa: u64, order: u8) -> &mut Self {
        self.on(cpu, EventKind::PageAlloc { order, gfp: 0, pa })
    }

    fn finding_text(&self) -> String {
        self.check
            .findings()
            .iter()
            .flat_map(|f| f.details.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The window closes at the TLBI that removes the last entry to the freed page;
/// entries to other pages do not keep it open.
#[test]
fn only_entries_to_the_freed_page_keep_its_window_open() {
    let mut s = Script::new();
    s.fill_as(0, VA, 0, true).fill_as(1, VA + 4096, 0, true);
    s.free(0, PAGE_A, 0).tlbi_va(0, VA);
    assert_eq!(s.kinds(), vec![FindingKind::FreedPageInTlb]);
    assert!(
        s.finding_text().contains("until the TLBI"),
        "{}",
        s.finding_text()
    );
}

/// A refill through the mapping the free left in place joins the holders.
#[test]
fn a_refill_after_the_free_is_a_holder_too() {
    let mut s = Script::new();
    s.fill(1).free(0, PAGE_A, 0).fill(0).fill(0).finish();
    let text = s.finding_text();
    assert_eq!(text.matches("cpu0 held va").count(), 1, "{text}");
    assert_eq!(text.matches("cpu1 held va").count(), 1, "{text}");
}

/// An allocation of the freed page while it is reachable is named; one of another
/// page is not, one of a block that contains it is.
#[test]
fn only_allocations_covering_the_freed_page_are_reuses() {
    for (pa, order, reuse) in [
        (PAGE_A + 4096, 0, false),
        (PAGE_A - 4096, 0, false),
        (PAGE_A - 4096, 1, true),
        (PAGE_A, 2, true),
    ] {
        let mut s = Script::new();
        s.fill(1).free(0, PAGE_A, 0).alloc(2, pa, order).finish();
        let text = s.finding_text();
        assert_eq!(
            text.contains("allocated the page again"),
            reuse,
            "{pa:#x} order {order}: {text}"
        );
    }
}

/// A descriptor change marks stale only the entries that walked through it: not a
/// later refill of the same page through other tables.
#[test]
fn a_refill_through_other_tables_is_not_made_stale_by_the_old_ones() {
    let mut s = Script::new();
    s.fill(0).tlbi(0, TlbiOp::Vmalle1, false, 0);
    let other_l3 = 0x4000_5000;
    s.on(
        0,
        EventKind::TlbFill(TlbFill {
            va: VA,
            pa: PAGE_B,
            level: 3,
            write: true,
            exec: true,
            user: Perms::NONE,
            global: true,
            asid: 0,
            walk: [L1 + 16, L2, other_l3, 0],
            walk_len: 3,
        }),
    );
    s.store(1, PAGE_A | PAGE, 0);
    assert!(s.held(0) && !s.stale(0));
}

/// The same tables in Sv39: a valid entry may change directly (RISC-V has no
/// break-before-make), there are no barrier rules, and a remote CPU keeps a stale
/// translation until an invalidation by meaning reaches it.
#[test]
fn riscv_tables_follow_riscv_rules() {
    use crate::riscv64::{PageTableFormat, PTE_A, PTE_D, PTE_R, PTE_V, PTE_W};
    let pte = |pa: u64| (pa >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;
    let invalidate = |cpus: u64, len: u64| EventKind::TlbInvalidate {
        cpus,
        start: VA,
        len,
        asid: None,
    };
    let sv39 = || Script::with(TlbCheck::new().for_format(PageTableFormat::Sv39));
    // Straight from A to B, then fenced on both harts: clean.
    let mut s = sv39();
    s.fill(0)
        .fill(1)
        .store(0, pte(PAGE_A), pte(PAGE_B))
        .on(0, invalidate(0b11, 4096));
    assert_eq!(s.kinds(), vec![]);
    assert!(!s.held(0) && !s.held(1));
    // Fenced locally only: hart 1 uses its stale entry.
    let mut s = sv39();
    s.fill(0)
        .fill(1)
        .store(0, pte(PAGE_A), 0)
        .on(0, invalidate(0b01, 4096));
    assert!(!s.held(0) && s.stale(1));
    s.stale_use(1);
    assert_eq!(s.kinds(), vec![FindingKind::StaleTlb]);
    // A range that misses the page, and an ASID's fence, leave a global entry alone.
    let mut s = sv39();
    s.fill(0).on(0, invalidate(0b01, 0)).fill(0);
    s.on(
        0,
        EventKind::TlbInvalidate {
            cpus: 1,
            start: VA + 4096,
            len: 4096,
            asid: None,
        },
    )
    .on(
        0,
        EventKind::TlbInvalidate {
            cpus: 1,
            start: VA,
            len: 4096,
            asid: Some(0),
        },
    );
    assert!(s.held(0));
    // The same direct change in Arm's tables is a break-before-make finding.
    let mut s = Script::new();
    s.fill(0).store(0, PAGE_A | PAGE, PAGE_B | PAGE);
    assert_eq!(s.kinds(), vec![FindingKind::BreakBeforeMake]);
}

/// Sv39 entries and fences for the scripts below.
mod sv39 {
    use super::*;
    use crate::riscv64::{PageTableFormat, PTE_A, PTE_D, PTE_R, PTE_V, PTE_W, PTE_X};

    pub fn script() -> Script {
        Script::with(TlbCheck::new().for_format(PageTableFormat::Sv39))
    }

    pub fn leaf(pa: u64, perms: u64) -> u64 {
        (pa >> 12) << 10 | perms | PTE_V | PTE_A | PTE_D
    }

    pub fn pte(pa: u64) -> u64 {
        leaf(pa, PTE_R | PTE_W)
    }

    pub fn exec_only(pa: u64) -> u64 {
        leaf(pa, PTE_X)
    }

    pub fn pointer(table: u64) -> u64 {
        (table >> 12) << 10 | PTE_V
    }

    /// A fence of VA's page on the harts of `cpus`.
    pub fn fence(cpus: u64) -> EventKind {
        EventKind::TlbInvalidate {
            cpus,
            start: VA,
            len: 4096,
            asid: None,
        }
    }

    pub const ACCESSED: u64 = PTE_A;
}

/// A fence reaches exactly the harts it names, up to hart 63; an entry removed
/// from the last TLB holding a freed page closes that page's window there.
#[test]
fn riscv_fences_reach_the_harts_they_name() {
    let mut s = sv39::script();
    s.fill(0).fill(1).on(0, sv39::fence(0b10));
    assert!(
        s.held(0) && !s.held(1),
        "the issuer is not fenced unless named"
    );
    s.fill_as(63, VA, 0, true).on(0, sv39::fence(1 << 63));
    assert!(s.check.held().get(63, VA, None).is_none());

    let mut s = sv39::script();
    s.fill(1).fill(2).on(
        0,
        EventKind::PageFree {
            pa: PAGE_A,
            order: 0,
        },
    );
    s.on(0, sv39::fence(0b10));
    assert_eq!(s.kinds(), vec![], "hart 2 still reaches the page");
    s.on(0, sv39::fence(0b100));
    assert_eq!(s.kinds(), vec![FindingKind::FreedPageInTlb]);
    let text = s.check.findings()[0].details.join("\n");
    assert!(text.contains("until the TLBI"), "{text}");
}

/// RISC-V has no break-before-make nor barrier rules, even around an Arm-style
/// maintenance sequence; its changes are judged by Sv39's meaning of the bits.
#[test]
fn riscv_changes_are_judged_by_sv39_rules() {
    use sv39::{exec_only, pte};
    // Invalid, fenced, then valid again: nothing to report.
    let mut s = sv39::script();
    s.fill(0)
        .store(0, pte(PAGE_A), 0)
        .on(0, sv39::fence(1))
        .store(0, 0, pte(PAGE_B));
    s.tlbi_va(0, VA).isb(0);
    assert_eq!(s.kinds(), vec![]);
    // A new output makes the entry stale; clearing the accessed bit does not.
    let mut s = sv39::script();
    s.fill(0).store(0, pte(PAGE_A), pte(PAGE_A + 0x1000));
    assert!(s.stale(0));
    let mut s = sv39::script();
    s.fill(0)
        .store(0, pte(PAGE_A), pte(PAGE_A) & !sv39::ACCESSED);
    assert!(!s.stale(0));
    // Mapped again (as an execute-only page, valid only in Sv39) while hart 1 still
    // holds the old mapping.
    let mut s = sv39::script();
    s.fill(1)
        .store(0, pte(PAGE_A), 0)
        .on(0, sv39::fence(1))
        .store(0, 0, exec_only(PAGE_B));
    assert_eq!(s.kinds(), vec![FindingKind::MissingTlbFlush]);
}

/// Sv39's one root maps the upper half from its entry 256 on: a finding there names
/// the sign-extended address.
#[test]
fn riscv_root_entries_of_the_upper_half_name_upper_addresses() {
    let upper = 0xffff_ffc0_0000_0000;
    let root_entry = L1 + 8 * 256;
    let mut s = sv39::script();
    s.on(
        1,
        EventKind::TlbFill(TlbFill {
            va: upper,
            pa: PAGE_A,
            level: 3,
            write: true,
            exec: false,
            user: Perms::NONE,
            global: true,
            asid: 0,
            walk: [root_entry, L2, L3, 0],
            walk_len: 3,
        }),
    );
    s.store_at(0, root_entry, sv39::pointer(L2), 0)
        .store_at(0, root_entry, 0, sv39::pointer(L3));
    assert_eq!(s.kinds(), vec![FindingKind::MissingTlbFlush]);
    let title = &s.check.findings()[0].title;
    assert!(title.contains("va 0xffffffc000000000"), "{title}");
}

/// A retired page's breaks are forgotten wherever they are in it, and the event
/// may name any address of the page.
#[test]
fn a_retirement_covers_its_whole_page() {
    let entry = L3 + 8 * 5;
    let remake = |s: &mut Script| {
        s.on(
            0,
            EventKind::PageTablePage {
                pa: L3,
                level: 3,
                va_base: VA & !((1 << 21) - 1),
            },
        )
        .store_at(0, entry, 0, PAGE_B | PAGE);
    };
    let mut s = Script::new();
    s.store_at(0, entry, PAGE_A | PAGE, 0);
    remake(&mut s);
    assert_eq!(s.kinds(), vec![FindingKind::BreakBeforeMake], "control");
    let mut s = Script::new();
    s.store_at(0, entry, PAGE_A | PAGE, 0)
        .on(0, EventKind::PageTableRetired { pa: L3 | 0x18 });
    remake(&mut s);
    assert_eq!(s.kinds(), vec![]);
}
