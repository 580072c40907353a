//! [`TlbCheck`]: the TLB-shootdown findings from the MMU events of a run.

use std::collections::BTreeMap;

use crate::fx::FxHashMap;

use crate::aarch64::{level_shift, Descriptor, DsbReach, TlbiScope, PAGE_MASK, PAGE_SIZE};
use crate::analysis::Analysis;
use crate::event::{Event, EventKind, WalkResult};
use crate::finding::{Finding, FindingKind, Findings};
use crate::lockdep::Symbolizer;
use crate::maintenance::{Completion, Maintenance, Reach};
use crate::riscv64::PageTableFormat;
use crate::strings::StringTable;
use crate::tlb::held::{HeldTlbs, StaleSince};

/// A live page-table page: the level of its descriptors and the first VA it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PtPage {
    level: u8,
    va_base: u64,
}

/// A descriptor that went from valid to invalid, waiting for a TLBI of its address.
#[derive(Debug, Clone, Copy)]
struct Broken {
    old: Descriptor,
    /// The old descriptor mapped for one ASID only (a user page, or a table in
    /// TTBR0's half): an invalidation of an ASID completes its break. Which ASID a
    /// table serves is not known, so any ASID's does.
    private: bool,
    va: u64,
    shift: u32,
}

/// A TLBI not yet completed by a DSB.
#[derive(Debug, Clone, Copy)]
struct PendingTlbi {
    pc: u64,
    broadcast: bool,
    scope: TlbiScope,
}

/// One CPU's maintenance in flight.
#[derive(Debug, Default, Clone, Copy)]
struct BarrierState {
    /// A page-table store not yet ordered by a DSB: its PC and whether an NSH DSB
    /// since then has ordered it for this CPU only.
    unordered_store: Option<(u64, bool)>,
    pending_tlbi: Option<PendingTlbi>,
}

/// Whether `fill` is a translation through which a freed page is a hazard: any but
/// the guest's direct map, which is the identity (VA = PA, docs/machine.md) and maps
/// every page of RAM for good, as Linux's linear map does.
fn outlives_a_free(fill: &crate::event::TlbFill) -> bool {
    fill.va != fill.pa
}

/// A freed page some TLB still reaches: the free and who holds what.
#[derive(Debug, Clone)]
struct FreedPage {
    /// The free: its CPU, call site and time.
    at: At,
    order: u8,
    /// (CPU, VA page, stale since) of each entry that reached it at the free or
    /// after (a refill through a mapping still in place).
    holders: Vec<(usize, u64, Option<StaleSince>)>,
    /// The first allocation of the page while it was reachable: (CPU, time).
    reused: Option<(usize, u64)>,
}

/// Where an event happened, as findings say it.
#[derive(Debug, Clone, Copy)]
struct At {
    cpu: usize,
    pc: u64,
    time: u64,
}

/// The TLB-shootdown check (see the [module](crate::tlb)), fed one event at a time.
#[derive(Default)]
pub struct TlbCheck {
    held: HeldTlbs,
    pt_pages: FxHashMap<u64, PtPage>,
    broken: FxHashMap<u64, Broken>,
    /// Per CPU, a stack of contexts: an IRQ handler's `isb` or TLBI is not
    /// the interrupted code's, which completes its own maintenance after the
    /// handler returns; a `dsb` completes everything the CPU issued before it.
    barriers: Vec<Vec<BarrierState>>,
    /// Freed pages still reachable through some TLB, by physical page.
    freed: BTreeMap<u64, FreedPage>,
    /// The time of the latest event this check looked at (where an open window ends
    /// at `finish`).
    last_time: u64,
    findings: Findings,
    symbolize: Option<Symbolizer>,
    /// The tables' format, and with it which rules apply.
    format: PageTableFormat,
}

impl TlbCheck {
    /// A check that names code by address only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A check that names code addresses with `symbolize`.
    pub fn with_symbolizer(symbolize: Symbolizer) -> Self {
        Self {
            symbolize: Some(symbolize),
            ..Self::default()
        }
    }

    /// This check for a machine whose tables are in `format` (Arm's by default).
    pub fn for_format(self, format: PageTableFormat) -> Self {
        Self { format, ..self }
    }

    /// The translations each CPU holds now, as the events tell.
    pub fn held(&self) -> &HeldTlbs {
        &self.held
    }

    /// `0x… <symbol+off>`, or the bare address.
    fn place(&self, pc: u64) -> String {
        match self.symbolize.as_ref().and_then(|s| s(pc, false)) {
            Some(name) => format!("{pc:#x} <{name}>"),
            None => format!("{pc:#x}"),
        }
    }

    /// The maintenance in flight of `cpu`'s current context: its thread, or
    /// the innermost IRQ handler running on it.
    fn barriers(&mut self, cpu: usize) -> &mut BarrierState {
        let contexts = self.contexts(cpu);
        if contexts.is_empty() {
            contexts.push(BarrierState::default());
        }
        contexts.last_mut().expect("just ensured")
    }

    /// `cpu`'s contexts, outermost first.
    fn contexts(&mut self, cpu: usize) -> &mut Vec<BarrierState> {
        if self.barriers.len() <= cpu {
            self.barriers.resize(cpu + 1, Vec::new());
        }
        &mut self.barriers[cpu]
    }

    fn report(
        &mut self,
        kind: FindingKind,
        title: String,
        key: String,
        details: Vec<String>,
        at: At,
    ) {
        let mut finding = Finding::new(kind, &title, key, details);
        finding.cpu = Some(at.cpu as u32);
        finding.time = Some(at.time);
        finding.sites.push(crate::finding::FindingSite {
            role: "reporter".into(),
            lock: None,
            cpu: finding.cpu,
            task: None,
            time: finding.time,
            irq: None,
            frames: vec![at.pc],
        });
        self.findings.report(finding);
    }

    fn stale_use(
        &mut self,
        va: u64,
        access: crate::aarch64::Access,
        now: WalkResult,
        asid: Option<u16>,
        at: At,
    ) {
        let Some(entry) = self.held.get(at.cpu, va, asid) else {
            return;
        };
        let Some(since) = entry.stale else {
            return;
        };
        let (pa, filled_at) = (entry.fill.pa, entry.filled_at);
        if now == WalkResult::Maps(pa) {
            // The tables give this access the page the stale entry gave: the
            // change was one the access cannot see (a permission it still has, a
            // block rebuilt from pages, Linux's fixmap and rodata updates).
            return;
        }
        let now = match now {
            WalkResult::Maps(pa) => format!("now map it to {pa:#x}"),
            WalkResult::Faults(status) => format!("now give a fault (status {status:#x})"),
        };
        let details = vec![
            format!(
                "cpu{} {access:?} of va {va:#x} at {} used the cached translation to pa {pa:#x}",
                at.cpu,
                self.place(at.pc),
            ),
            format!("the page tables {now}"),
            format!(
                "changed by cpu{} at {} (time {}), not invalidated on cpu{} since",
                since.cpu,
                self.place(since.pc),
                since.time,
                at.cpu
            ),
            format!("translation filled at time {filled_at}"),
        ];
        self.report(
            FindingKind::StaleTlb,
            format!("access through a stale TLB entry for va {va:#x}"),
            // One finding per code path: the access and the change it missed.
            format!("access {:#x} change {:#x}", at.pc, since.pc),
            details,
            at,
        );
    }

    fn descriptor_changed(&mut self, desc: u64, old: u64, new: u64, at: At) {
        let Some(&page) = self.pt_pages.get(&(desc & PAGE_MASK)) else {
            return;
        };
        if old == new {
            return;
        }
        let shift = level_shift(page.level);
        let index = (desc & (PAGE_SIZE - 1)) / 8;
        let va = self.format.entry_va(page.va_base, index, shift);
        if self.format.arm_rules() {
            // A TLBI of this translation still in flight on this CPU, in any
            // context: the store races it whoever made it.
            self.barriers(at.cpu);
            let pending = self.contexts(at.cpu).iter_mut().find_map(|state| {
                let tlbi = state.pending_tlbi.filter(|t| t.scope.covers(va, shift))?;
                state.pending_tlbi = None;
                Some(tlbi)
            });
            self.barriers(at.cpu).unordered_store = Some((at.pc, false));
            if let Some(tlbi) = pending {
                self.missing_completion(tlbi.pc, "a page-table store", at);
            }
        }
        if self.format.change_matters(old, new, page.level) {
            let since = StaleSince {
                time: at.time,
                cpu: at.cpu,
                pc: at.pc,
            };
            self.held.mark_stale(desc, since);
        }
        self.check_remap(desc, old, new, page.level, va, at);
    }

    fn check_remap(&mut self, desc: u64, old: u64, new: u64, level: u8, va: u64, at: At) {
        let shift = level_shift(level);
        let od = self.format.decode(old, level);
        let nd = self.format.decode(new, level);
        // Named only for a finding: most page-table writes make none.
        let here = |check: &Self| check.place(at.pc);
        let bbm = self.format.arm_rules();
        match (od.is_valid(), nd.is_valid()) {
            (true, true) if od != nd && bbm => self.report(
                FindingKind::BreakBeforeMake,
                format!("live descriptor for va {va:#x} changed without break-before-make"),
                format!("bbm {:#x}", at.pc),
                vec![
                    format!("cpu{} at {} replaced {od} by {nd}", at.cpu, here(self)),
                    format!(
                        "descriptor at pa {desc:#x}; it was never made invalid and flushed in between"
                    ),
                ],
                at,
            ),
            (true, false) if bbm => {
                // A user table's walks are cached per ASID too (TTBR0's half).
                let private = match od {
                    Descriptor::Leaf { .. } => !self.format.is_global(old),
                    _ => self.format.arm_rules() && (va >> 55) & 1 == 0,
                };
                let broken = Broken {
                    old: od,
                    private,
                    va,
                    shift,
                };
                self.broken.insert(desc, broken);
            }
            (false, true) => {
                // An entry still giving the page the new descriptor gives its address
                // differs at most in permissions, which the architecture lets a TLB
                // hold until the next invalidation (Linux's mprotect clears and sets
                // a PTE, then flushes the range).
                let output = |hva: u64| match nd {
                    Descriptor::Leaf { output, .. } => Some(output | (hva & ((1 << shift) - 1))),
                    _ => None,
                };
                let holders: Vec<_> = self
                    .held
                    .holders(desc)
                    .into_iter()
                    .filter(|&(_, hva, pa)| output(hva) != Some(pa & PAGE_MASK))
                    .collect();
                let broken = self.broken.remove(&desc);
                if !holders.is_empty() {
                    let mut details = vec![format!(
                        "cpu{} at {} mapped va {va:#x} again ({nd})",
                        at.cpu,
                        here(self)
                    )];
                    details.extend(holders.iter().map(|(cpu, hva, pa)| {
                        format!(
                            "cpu{cpu} still holds va {hva:#x} -> pa {pa:#x} from the old mapping (no TLBI on it since)"
                        )
                    }));
                    self.report(
                        FindingKind::MissingTlbFlush,
                        format!("va {va:#x} mapped again while a TLB still holds the old mapping"),
                        format!("remap {:#x}", at.pc),
                        details,
                        at,
                    );
                } else if let Some(b) = broken.filter(|b| b.old != nd) {
                    self.report(
                        FindingKind::BreakBeforeMake,
                        format!("va {va:#x} remapped without a TLBI after the break"),
                        format!("bbm {:#x}", at.pc),
                        vec![
                            format!("cpu{} at {} replaced {} by {nd}", at.cpu, here(self), b.old),
                            format!(
                                "descriptor at pa {desc:#x} was made invalid but no TLBI covered va {:#x} since",
                                b.va
                            ),
                        ],
                        at,
                    );
                }
            }
            _ => {}
        }
    }

    fn missing_completion(&mut self, tlbi_pc: u64, before: &str, at: At) {
        let details = vec![format!(
            "cpu{}: the TLBI at {} reached {before} at {} with no `dsb ish` in between",
            at.cpu,
            self.place(tlbi_pc),
            self.place(at.pc)
        )];
        self.report(
            FindingKind::MissingBarrier,
            "TLBI not completed by `dsb ish`".to_string(),
            format!("completion {tlbi_pc:#x}"),
            details,
            at,
        );
    }

    fn tlbi(&mut self, scope: TlbiScope, broadcast: bool, completion: Completion, at: At) {
        if completion == Completion::AtBarrier {
            self.tlbi_barriers(scope, broadcast, at);
        }
        let removed = self.held.invalidate(at.cpu, broadcast, scope);
        for (_, entry) in removed {
            self.close_if_unreachable(entry.fill.pa, Some(at));
        }
        // The breaks this TLBI completes (ASIDE1 removes only non-global entries of
        // one ASID: kernel mappings are global, so it completes only user ones).
        self.broken.retain(|_, b| match scope {
            TlbiScope::All => false,
            TlbiScope::Va { .. } | TlbiScope::Range { .. } => !scope.covers(b.va, b.shift),
            TlbiScope::Asid(_) => !b.private,
        });
    }

    /// Arm's rules at a TLBI: the stores before it ordered by a `dsb`, and the TLBI
    /// itself in flight until one completes it.
    fn tlbi_barriers(&mut self, scope: TlbiScope, broadcast: bool, at: At) {
        if let Some((store_pc, nsh_ordered)) = self.barriers(at.cpu).unordered_store.take() {
            if broadcast || !nsh_ordered {
                let details = vec![format!(
                    "cpu{}: page-table store at {}, then TLBI at {} with no `dsb ishst` in between",
                    at.cpu,
                    self.place(store_pc),
                    self.place(at.pc)
                )];
                self.report(
                    FindingKind::MissingBarrier,
                    "descriptor store not ordered before TLBI by `dsb ishst`".to_string(),
                    format!("store-before-tlbi {:#x}", at.pc),
                    details,
                    at,
                );
            }
        }
        self.barriers(at.cpu).pending_tlbi = Some(PendingTlbi {
            pc: at.pc,
            broadcast,
            scope,
        });
    }

    /// An invalidation by meaning (RISC-V's `sfence.vma` and SBI remote fences): on
    /// each CPU in `cpus`, with no barrier rules of its own.
    fn invalidate_on(&mut self, cpus: u64, scope: TlbiScope, at: At) {
        for cpu in (0..64).filter(|c| cpus >> c & 1 != 0) {
            let removed = self.held.invalidate(cpu, false, scope);
            for (_, entry) in removed {
                self.close_if_unreachable(entry.fill.pa, Some(at));
            }
        }
    }

    fn dsb(&mut self, reach: DsbReach, cpu: usize) {
        self.barriers(cpu);
        for state in self.contexts(cpu).iter_mut() {
            if reach.stores {
                if reach.shareable {
                    state.unordered_store = None;
                } else if let Some((_, nsh)) = &mut state.unordered_store {
                    *nsh = true;
                }
            }
            if reach.full {
                if let Some(tlbi) = state.pending_tlbi {
                    if reach.shareable || !tlbi.broadcast {
                        state.pending_tlbi = None;
                    }
                }
            }
        }
    }

    /// `at.cpu` freed `1 << order` pages at `pa` (`at.pc` is the call site).
    fn pages_freed(&mut self, pa: u64, order: u8, at: At) {
        let pages = 1u64 << order.min(20);
        let range = pa & PAGE_MASK..(pa & PAGE_MASK) + pages * PAGE_SIZE;
        let mut holders: BTreeMap<u64, Vec<(usize, u64, Option<StaleSince>)>> = BTreeMap::new();
        for (cpu, entry) in self.held.entries_to(range.clone()) {
            if outlives_a_free(&entry.fill) {
                let holder = (cpu, entry.fill.va, entry.stale);
                holders.entry(entry.fill.pa).or_default().push(holder);
            }
        }
        for (page, mut holders) in holders {
            holders.sort_unstable_by_key(|&(cpu, va, _)| (cpu, va));
            self.freed.entry(page).or_insert(FreedPage {
                at,
                order,
                holders,
                reused: None,
            });
        }
    }

    /// A page allocated again while a TLB still reaches it.
    fn pages_allocated(&mut self, pa: u64, order: u8, at: At) {
        let start = pa & PAGE_MASK;
        let end = start + (1u64 << order.min(20)) * PAGE_SIZE;
        for freed in self.freed.range_mut(start..end).map(|(_, f)| f) {
            freed.reused.get_or_insert((at.cpu, at.time));
        }
    }

    /// Reports freed page `pa` once no TLB holds a translation to it any more (`end`:
    /// the TLBI that removed the last one), or at the end of the events (`None`).
    fn close_if_unreachable(&mut self, pa: u64, end: Option<At>) {
        if !self.freed.contains_key(&pa) {
            return;
        }
        let reached = |e: &crate::tlb::HeldEntry| e.fill.pa == pa && outlives_a_free(&e.fill);
        if end.is_some() && self.held.entries().any(|(_, e)| reached(e)) {
            return;
        }
        let freed = self.freed.remove(&pa).expect("present");
        let mut details = vec![format!(
            "cpu{} freed pa {pa:#x} (order {}) at {} (time {})",
            freed.at.cpu,
            freed.order,
            self.place(freed.at.pc),
            freed.at.time
        )];
        for &(cpu, va, stale) in &freed.holders {
            let state = match stale {
                Some(since) => format!(
                    "unmapped by cpu{} at {} (time {}) but not invalidated",
                    since.cpu,
                    self.place(since.pc),
                    since.time
                ),
                None => "still mapped".to_string(),
            };
            details.push(format!(
                "cpu{cpu} held va {va:#x} -> pa {pa:#x} at the free: {state}"
            ));
        }
        if let Some((cpu, time)) = freed.reused {
            details.push(format!(
                "cpu{cpu} allocated the page again at time {time} while it was still reachable"
            ));
        }
        details.push(match end {
            Some(tlbi) => format!(
                "reachable for {} instructions: until the TLBI at {} on cpu{} (time {})",
                tlbi.time.saturating_sub(freed.at.time),
                self.place(tlbi.pc),
                tlbi.cpu,
                tlbi.time
            ),
            None => format!(
                "still reachable at the last MMU event (time {}): {} instructions so far",
                self.last_time,
                self.last_time.saturating_sub(freed.at.time)
            ),
        });
        let cpus: Vec<String> = freed
            .holders
            .iter()
            .map(|&(cpu, ..)| format!("cpu{cpu}"))
            .collect();
        // One finding per call site of the free, and another where the page was
        // handed out again meanwhile (a use-after-free waiting for a stale access).
        let (again, reused) = match freed.reused {
            Some(_) => (" and allocated again", " reused"),
            None => ("", ""),
        };
        self.report(
            FindingKind::FreedPageInTlb,
            format!(
                "page {pa:#x} freed{again} while the TLB of {} still held a translation to it",
                cpus.join(", ")
            ),
            format!("freed-in-tlb {:#x}{reused}", freed.at.pc),
            details,
            freed.at,
        );
    }

    fn isb(&mut self, at: At) {
        if !self.format.arm_rules() {
            return;
        }
        if let Some(tlbi) = self.barriers(at.cpu).pending_tlbi.take() {
            self.missing_completion(tlbi.pc, "an `isb`", at);
        }
    }
}

impl Analysis for TlbCheck {
    fn event(&mut self, event: &Event, _strings: &StringTable) {
        let at = At {
            cpu: usize::from(event.cpu.0),
            pc: event.pc,
            time: event.time,
        };
        match event.kind {
            EventKind::TlbFill(fill) => {
                self.held.insert(at.cpu, fill, at.time, ());
                // A refill through a mapping the free left in place.
                let freed = self.freed.get_mut(&fill.pa);
                if let Some(freed) = freed.filter(|_| outlives_a_free(&fill)) {
                    let holder = (at.cpu, fill.va, None);
                    if !freed.holders.contains(&holder) {
                        freed.holders.push(holder);
                    }
                }
            }
            EventKind::PageFree { pa, order } => {
                // Named by the call site of `free_pages`, not its entry.
                let site = At {
                    pc: if event.caller != 0 {
                        event.caller
                    } else {
                        event.pc
                    },
                    ..at
                };
                self.pages_freed(pa, order, site);
            }
            EventKind::PageAlloc { pa, order, .. } if pa != 0 => {
                self.pages_allocated(pa, order, at)
            }
            EventKind::PageTablePage { pa, level, va_base } => {
                let page = pa & PAGE_MASK;
                let info = PtPage { level, va_base };
                if self
                    .pt_pages
                    .insert(page, info)
                    .is_some_and(|was| was != info)
                {
                    // A freed table reused for another level or range (Linux frees a
                    // process's tables and gives the pages to the next): the breaks
                    // of its old role are moot.
                    self.broken.retain(|desc, _| desc & PAGE_MASK != page);
                }
            }
            EventKind::PageTableRetired { pa } => {
                let page = pa & PAGE_MASK;
                self.pt_pages.remove(&page);
                // Its breaks can no longer be completed or remade by a store to it.
                self.broken.retain(|desc, _| desc & PAGE_MASK != page);
            }
            EventKind::PageTableWrite { desc_pa, old, new } => {
                self.descriptor_changed(desc_pa, old, new, at)
            }
            EventKind::Tlbi { .. }
            | EventKind::TlbInvalidate { .. }
            | EventKind::Dsb { .. }
            | EventKind::Dmb { .. }
            | EventKind::Isb => match event.kind.maintenance() {
                Some(Maintenance::Invalidate {
                    reach,
                    scope,
                    completion,
                }) => match reach {
                    Reach::ThisCpu => self.tlbi(scope, false, completion, at),
                    Reach::Broadcast => self.tlbi(scope, true, completion, at),
                    Reach::Cpus(cpus) => self.invalidate_on(cpus, scope, at),
                },
                Some(Maintenance::Barrier {
                    reach,
                    completes_maintenance: true,
                }) => self.dsb(reach, at.cpu),
                Some(Maintenance::ContextSync) => self.isb(at),
                // A DMB completes no TLBI (nor does it order a descriptor store
                // before one); a TLBI form the model does not decode.
                Some(Maintenance::Barrier { .. }) | None => {}
            },
            EventKind::HardIrqEnter { .. } => {
                self.barriers(at.cpu);
                self.contexts(at.cpu).push(BarrierState::default());
            }
            EventKind::HardIrqExit { .. } => {
                // The thread's context stays (an exit with no entry seen: the
                // trace began inside a handler).
                if self.contexts(at.cpu).len() > 1 {
                    self.contexts(at.cpu).pop();
                }
            }
            EventKind::StaleTlbUse {
                va,
                access,
                now,
                asid,
            } => self.stale_use(va, access, now, asid, at),
            _ => return,
        }
        // Only the events looked at: a trace's closing markers are not fed online.
        self.last_time = self.last_time.max(event.time);
    }

    fn finish(&mut self) {
        let open: Vec<u64> = self.freed.keys().copied().collect();
        for pa in open {
            self.close_if_unreachable(pa, None);
        }
    }

    fn findings(&self) -> &[Finding] {
        self.findings.as_slice()
    }
}
