//! The simulated MMU's memory: which translations each CPU's TLB holds and which
//! physical pages are live page tables. It decides what each access translates to;
//! the checks on TLB maintenance are an analysis of the events it records
//! ([`traces::tlb::TlbCheck`]), so that a trace alone gives the same findings.
//!
//! Unicorn runs in its virtual-TLB mode and asks [`MmuModel::fill`] on every miss of
//! its own soft TLB. The model answers from the CPU's modelled TLB if that holds the
//! page (as hardware would: an entry lives until a TLBI removes it, however the tables
//! changed since) and walks the tables (`arch/aarch64/mmu.rs`) otherwise. Stores to
//! page-table pages are found by comparing the pages a CPU was let write (the tables
//! are write-protected in the fill answers; a store opens a compare window on its
//! page, see `simmu.rs`), every TLBI reaches [`MmuModel::tlbi`].
//!
//! When a store makes a held translation stale, that CPU's Unicorn TLB is flushed (by
//! the machine, before the CPU runs again) so that its next access to the page comes
//! back here and is answered with the old physical page.
//!
//! Unicorn's soft TLB also refills on its own, at moments set by host time (DESIGN.md),
//! so nothing here may depend on how often a fill comes: the model only changes on the
//! first fill of a page it does not hold (a moment the guest fixes, since every model
//! invalidation is also a Unicorn flush), a stale entry's use is recorded once, on its
//! first access after the flush above, and write windows are compared at the CPU's
//! TLBIs, barriers, `free_pages` calls and slice ends, never at a fill.
//!
//! # What it records
//! With [`MmuModel::record_events`] on, every change of the model is kept, in the
//! order made, for the recorder: `TlbFill` (a walk entered into a CPU's TLB),
//! `PageTablePage` (a page found to hold tables), `PageTableWrite` (a descriptor
//! change found by a compare) and `StaleTlbUse`. With the guest's TLBIs and barriers
//! (recorded by `simmu.rs`) they are all the TLB check needs.

use std::collections::BTreeMap;

use traces::fx::FxHashMap;

use traces::aarch64::TlbiScope;
use traces::riscv64::PageTableFormat;
use traces::tlb::{HeldEntry, HeldTlbs, StaleSince};
use traces::{EventKind, TlbFill, WalkResult};

use crate::arch::aarch64::mmu::{
    self, Access, Descriptor, Fault, Perms, TranslationRegs, PAGE_SIZE,
};
use crate::memory::{GuestMemory, OutOfRam};

const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

/// When the use of a stale entry is recorded. Unicorn's soft TLB refills at moments
/// that depend on host time (DESIGN.md), so only the first access after the holding
/// CPU's Unicorn TLB was flushed (which the model asks for when it marks the entry
/// stale) is a moment fixed by the guest: that one is recorded, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StaleReport {
    /// Not stale, or stale while the CPU's Unicorn TLB may still hold the entry.
    #[default]
    Waiting,
    /// The CPU's Unicorn TLB was flushed since the entry went stale: the next access
    /// through it comes to the model.
    Armed,
    /// Its first use since it went stale was recorded.
    Reported,
}

/// A translation the model holds for a CPU.
pub type Held = HeldEntry<StaleReport>;

/// What a held entry lets EL1 (`el0` false) or EL0 do.
fn held_perms(entry: &Held, el0: bool) -> Perms {
    if el0 {
        entry.fill.user
    } else {
        Perms {
            read: true,
            write: entry.fill.write,
            exec: entry.fill.exec,
        }
    }
}

/// The answer to a fill for `access` through a translation to `pa` with `perms`
/// (leaf at `level`): mapped with those permissions, or a permission fault.
fn answer(pa: u64, perms: Perms, level: u8, access: Access) -> FillAnswer {
    if perms.allows(access) {
        FillAnswer::Map {
            pa,
            read: perms.read,
            write: perms.write,
            exec: perms.exec,
        }
    } else {
        FillAnswer::Fault(Fault {
            status: mmu::PERMISSION_FAULT + u64::from(level),
            level,
        })
    }
}

/// A barrier instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// `dsb` with its CRm option.
    Dsb(u32),
    /// `isb`.
    Isb,
}

impl Barrier {
    /// DSB (0xd503309f | CRm << 8, CRm ≠ 0 and ≠ 4 which are SSBB/PSSBB) or ISB.
    pub fn decode(word: u32) -> Option<Self> {
        if word & 0xffff_f0ff == 0xd503_309f {
            let crm = (word >> 8) & 0xf;
            return (crm != 0 && crm != 4).then_some(Barrier::Dsb(crm));
        }
        (word & 0xffff_f0ff == 0xd503_30df).then_some(Barrier::Isb)
    }
}

/// A live page-table page: the level of its descriptors and the first VA it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PtPage {
    level: u8,
    va_base: u64,
}

/// A page-table page a CPU may store to without the model seeing each store: its
/// contents when the window opened (or were last compared), and the first store.
#[derive(Clone)]
struct WriteWindow {
    page: u64,
    at: At,
    snapshot: Box<[u8]>,
}

/// Counts for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MmuStats {
    /// Translations walked and entered into each CPU's modelled TLB.
    pub tlb_fills: Vec<u64>,
    /// TLBIs by mnemonic (`vaae1is`, …).
    pub tlbi_by_kind: BTreeMap<String, u64>,
    /// Broadcast (…IS) invalidations.
    pub broadcast_invalidations: u64,
    /// Page-table stores that made a valid descriptor invalid.
    pub pt_writes_valid_to_invalid: u64,
    /// Page-table stores that made an invalid descriptor valid.
    pub pt_writes_invalid_to_valid: u64,
    /// Page-table stores that left a valid descriptor valid.
    pub pt_writes_valid_to_valid: u64,
    /// Page-table stores that left an invalid descriptor invalid.
    pub pt_writes_other: u64,
    /// Pages found to be page tables.
    pub pt_pages: u64,
    /// Page-table pages no longer in use when next stored to (a freed table reused).
    pub pt_pages_retired: u64,
    /// Stale translations used: the first access through each after it went stale.
    pub stale_accesses: u64,
    /// Faults delivered to the guest by the walker.
    pub faults: u64,
    /// Pages freed while a stale translation still reached them.
    pub freed_while_reachable: u64,
    /// The longest time (instructions, all CPUs) one stayed reachable after being
    /// freed.
    pub longest_reachable_window: u64,
}

/// What a fill gives Unicorn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillAnswer {
    /// The access goes on: this page, with these permissions for the level asked.
    Map {
        /// The physical page.
        pa: u64,
        /// Loads allowed.
        read: bool,
        /// Stores allowed.
        write: bool,
        /// Instruction fetches allowed.
        exec: bool,
    },
    /// The access faults.
    Fault(Fault),
}

/// A TLB invalidation by meaning: on each CPU whose bit is set in `cpus`, of `len`
/// bytes from `start` (0: every address), of `asid` (`None`: every ASID; one ASID
/// leaves global entries alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidation {
    /// The CPUs reached, a bit each.
    pub cpus: u64,
    /// First address.
    pub start: u64,
    /// Length in bytes, 0 for every address.
    pub len: u64,
    /// The ASID, `None` for every one.
    pub asid: Option<u16>,
}

/// Who made an event: CPU, PC and virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// The CPU.
    pub cpu: usize,
    /// Its instruction.
    pub pc: u64,
    /// The virtual time.
    pub time: u64,
}

/// A change of the model, kept for the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelEvent {
    /// Who made it.
    pub at: At,
    /// What it was.
    pub kind: EventKind,
}

/// What a CPU's Unicorn TLB may hold that [`MmuModel::take_flush`] asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftTlbEntry {
    /// A translation of the 4 KiB virtual page at this address.
    Page(u64),
    /// Write permission to the physical page at this address.
    WritableFrame(u64),
}

/// The simulated MMU's state: each CPU's modelled TLB, the page-table pages
/// found, and the checks on their maintenance.
#[derive(Clone)]
pub struct MmuModel {
    held: HeldTlbs<StaleReport>,
    pt_pages: FxHashMap<u64, PtPage>,
    /// Each CPU's translation registers as last seen (`None`: it has not run), which
    /// tell whether a page is still a table.
    roots: Vec<Option<TranslationRegs>>,
    /// Pages found to be page tables since the running CPU was last told (it must
    /// stop soon: it may hold write permission to them in its soft TLB).
    new_pt_pages: Vec<u64>,
    /// CPUs whose Unicorn TLB must be flushed before they run again.
    need_flush: Vec<bool>,
    /// Per CPU: the pages where it holds entries made stale since its last flush,
    /// whose reports the flush arms (nothing else of its can be waiting).
    newly_stale: Vec<Vec<u64>>,
    /// Per CPU: page-table pages found since its last flush, to which its Unicorn
    /// TLB may still give write permission.
    new_tables: Vec<Vec<u64>>,
    /// Freed physical pages still reachable through a stale entry: freed at.
    freed: FxHashMap<u64, u64>,
    /// Per CPU: page-table pages it was let write (see [`MmuModel::open_write_window`]).
    windows: Vec<Vec<WriteWindow>>,
    /// Whether the machine checks TLB maintenance (hooks its barriers and
    /// `free_pages`).
    checks: bool,
    /// The format of the guest's tables.
    format: PageTableFormat,
    /// Counts for the report.
    pub stats: MmuStats,
    /// Changes not yet taken by the recorder (`None`: not recording).
    log: Option<Vec<ModelEvent>>,
}

impl MmuModel {
    /// A model of `cpus` TLBs over tables in Arm's format.
    pub fn new(cpus: usize, checks: bool) -> Self {
        Self::for_format(cpus, checks, PageTableFormat::Vmsa)
    }

    /// A model of `cpus` TLBs over tables in `format`.
    pub fn for_format(cpus: usize, checks: bool, format: PageTableFormat) -> Self {
        Self {
            held: HeldTlbs::new(cpus),
            pt_pages: FxHashMap::default(),
            roots: vec![None; cpus],
            new_pt_pages: Vec::new(),
            need_flush: vec![false; cpus],
            newly_stale: vec![Vec::new(); cpus],
            new_tables: vec![Vec::new(); cpus],
            freed: FxHashMap::default(),
            windows: (0..cpus).map(|_| Vec::new()).collect(),
            checks,
            format,
            stats: MmuStats {
                tlb_fills: vec![0; cpus],
                ..MmuStats::default()
            },
            log: None,
        }
    }

    /// From now on, keep every change of the model for [`MmuModel::take_events`].
    pub fn record_events(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    /// The changes made since the last call, in the order made.
    pub fn take_events(&mut self) -> Vec<ModelEvent> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, at: At, kind: EventKind) {
        if let Some(log) = &mut self.log {
            log.push(ModelEvent { at, kind });
        }
    }

    /// The counts at virtual time `now`: freed pages still reachable count their
    /// window up to `now`.
    pub fn stats_at(&self, now: u64) -> MmuStats {
        let mut stats = self.stats.clone();
        for &freed_at in self.freed.values() {
            let window = now.saturating_sub(freed_at);
            stats.longest_reachable_window = stats.longest_reachable_window.max(window);
        }
        stats
    }

    /// Whether the machine checks TLB maintenance.
    pub fn checks(&self) -> bool {
        self.checks
    }

    /// The translation `cpu` holds for the page of `va` under `asid` (`None`: the
    /// global one, else the first held), if any.
    pub fn held(&self, cpu: usize, va: u64, asid: Option<u16>) -> Option<&Held> {
        self.held.get(cpu, va, asid)
    }

    /// `cpu`'s translation registers are `regs` now (called before any of its
    /// stores to page tables are compared, and when it stops).
    pub fn set_translation_regs(&mut self, cpu: usize, regs: TranslationRegs) {
        self.roots[cpu] = Some(regs);
    }

    /// Whether page-table page `page` can still give a translation: some CPU's
    /// translation registers walk to it (MMU on or not: a CPU about to turn it on
    /// uses them), or some TLB entry was walked through it. A page neither
    /// reaches is a table no longer (Linux frees its boot tables and reuses them).
    fn in_use(&self, mem: &dyn GuestMemory, page: u64, info: PtPage) -> bool {
        if self.roots.iter().all(Option::is_none) {
            // Not told any CPU's registers: no way to tell.
            return true;
        }
        let reaches = |regs: &TranslationRegs| -> bool {
            let Ok((mut table, start, input_bits)) = mmu::walk_start(regs, info.va_base) else {
                return false;
            };
            if info.level < start {
                return false;
            }
            let span_mask = (1u64 << input_bits.min(63)) - 1;
            for level in start..info.level {
                let shift = mmu::level_shift(level);
                let index = (info.va_base >> shift) & 511 & (span_mask >> shift);
                match mem.read_u64(table + 8 * index) {
                    Ok(desc) => match self.format.decode(desc, level) {
                        Descriptor::Table(next) => table = next,
                        _ => return false,
                    },
                    Err(_) => return false,
                }
            }
            table == page
        };
        self.roots.iter().flatten().any(reaches) || self.held.walked_through_page(page)
    }

    /// `page` is a table no longer: stores to it change no translation.
    fn retire_pt_page(&mut self, page: u64, at: At) {
        if self.pt_pages.remove(&page).is_some() {
            self.stats.pt_pages_retired += 1;
            self.record(at, EventKind::PageTableRetired { pa: page });
        }
    }

    /// Whether the page at `pa` is known to hold page-table descriptors.
    pub fn is_page_table(&self, pa: u64) -> bool {
        self.pt_pages.contains_key(&(pa & PAGE_MASK))
    }

    /// Whether page-table pages were found since the last [`Self::take_new_pt_pages`].
    pub fn has_new_pt_pages(&self) -> bool {
        !self.new_pt_pages.is_empty()
    }

    /// Page-table pages found since the last call.
    pub fn take_new_pt_pages(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.new_pt_pages)
    }

    /// Whether `cpu`'s Unicorn TLB must be flushed before it runs; clears the request.
    /// The caller flushes that TLB when this returns true: from then on the next access
    /// through each of `cpu`'s stale entries reaches the model, so it is armed.
    /// `may_hold` says what that TLB may hold (`|_| true` when unknown): a flush is
    /// asked for only when it may hold a stale page or write permission to a new
    /// page table.
    pub fn take_flush(&mut self, cpu: usize, may_hold: &dyn Fn(SoftTlbEntry) -> bool) -> bool {
        if !std::mem::replace(&mut self.need_flush[cpu], false) {
            return false;
        }
        let stale = std::mem::take(&mut self.newly_stale[cpu]);
        for &page in &stale {
            for e in self.held.page_entries_mut(cpu, page) {
                if e.stale.is_some() && e.tag == StaleReport::Waiting {
                    e.tag = StaleReport::Armed;
                }
            }
        }
        let tables = std::mem::take(&mut self.new_tables[cpu]);
        stale
            .into_iter()
            .any(|page| may_hold(SoftTlbEntry::Page(page)))
            || tables
                .into_iter()
                .any(|page| may_hold(SoftTlbEntry::WritableFrame(page)))
    }

    fn add_pt_page(&mut self, page: u64, level: u8, va_base: u64, at: At) {
        let info = PtPage { level, va_base };
        if self.pt_pages.insert(page, info) != Some(info) {
            self.new_pt_pages.push(page);
            self.stats.pt_pages = self.pt_pages.len() as u64;
            // Any CPU may hold write permission to the page: take it away.
            self.need_flush.iter_mut().for_each(|f| *f = true);
            self.new_tables.iter_mut().for_each(|t| t.push(page));
            self.record(
                at,
                EventKind::PageTablePage {
                    pa: page,
                    level,
                    va_base,
                },
            );
        }
    }

    /// `at.cpu` is about to store to page-table page `page` (Unicorn will let it write
    /// the page until its soft TLB is flushed): compare the page from now on.
    pub fn open_write_window(&mut self, mem: &dyn GuestMemory, page: u64, at: At) {
        let page = page & PAGE_MASK;
        if self.windows[at.cpu].iter().any(|w| w.page == page) {
            return;
        }
        let mut snapshot = vec![0u8; PAGE_SIZE as usize].into_boxed_slice();
        if mem.read(page, &mut snapshot).is_ok() {
            self.windows[at.cpu].push(WriteWindow { page, at, snapshot });
        }
    }

    /// Turns what `cpu` stored to its open windows since they were last compared into
    /// descriptor changes (in address order, attributed to the window's first store).
    pub fn sync_windows(&mut self, mem: &dyn GuestMemory, cpu: usize) {
        if self.windows[cpu].is_empty() {
            return;
        }
        let mut windows = std::mem::take(&mut self.windows[cpu]);
        let mut now = vec![0u8; PAGE_SIZE as usize];
        for w in &mut windows {
            if mem.read(w.page, &mut now).is_err() || now[..] == w.snapshot[..] {
                continue;
            }
            match self.pt_pages.get(&w.page) {
                Some(&info) if !self.in_use(mem, w.page, info) => self.retire_pt_page(w.page, w.at),
                _ => {}
            }
            for i in (0..PAGE_SIZE as usize).step_by(8) {
                let old = u64::from_le_bytes(w.snapshot[i..i + 8].try_into().expect("8 bytes"));
                let new = u64::from_le_bytes(now[i..i + 8].try_into().expect("8 bytes"));
                if old != new {
                    self.descriptor_changed(w.page + i as u64, old, new, w.at);
                }
            }
            w.snapshot.copy_from_slice(&now);
        }
        self.windows[cpu] = windows;
    }

    /// Ends `cpu`'s windows (its Unicorn TLB is flushed next); returns whether it had any.
    pub fn close_windows(&mut self, mem: &dyn GuestMemory, cpu: usize) -> bool {
        self.sync_windows(mem, cpu);
        let had = !self.windows[cpu].is_empty();
        self.windows[cpu].clear();
        had
    }

    /// Registers the page-table pages a walk of `va` goes through.
    fn note_tables(&mut self, mem: &dyn GuestMemory, regs: &TranslationRegs, va: u64, at: At) {
        let Ok((root, start, input_bits)) = mmu::walk_start(regs, va) else {
            return;
        };
        let span_mask = if input_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << input_bits) - 1
        };
        let root_base = regs.root_va_base(va);
        if !self.pt_pages.contains_key(&root) {
            self.add_pt_page(root, start, root_base, at);
        }
        let mut table = root;
        for level in start..3 {
            let shift = mmu::level_shift(level);
            let index = (va >> shift) & 511 & (span_mask >> shift);
            let Ok(desc) = mem.read_u64(table + 8 * index) else {
                return;
            };
            match self.format.decode(desc, level) {
                Descriptor::Table(next) => {
                    if !self.pt_pages.contains_key(&next) {
                        self.add_pt_page(next, level + 1, va & !((1u64 << shift) - 1), at);
                    }
                    table = next;
                }
                _ => return,
            }
        }
    }

    /// Answers a soft-TLB miss of `at.cpu` for `va`, for an `access` at EL1 (at EL0
    /// if `el0`). `guest` is false for the host's own reads through a core's MMU
    /// (nothing changes then).
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        mem: &dyn GuestMemory,
        regs: &TranslationRegs,
        va: u64,
        access: Access,
        el0: bool,
        at: At,
        guest: bool,
    ) -> FillAnswer {
        let va = va & PAGE_MASK;
        if !regs.mmu_on() {
            return FillAnswer::Map {
                pa: va,
                read: true,
                write: true,
                exec: true,
            };
        }
        let cpu = at.cpu;
        let asid = regs.asid();
        // Open write windows are compared at the CPU's next TLBI, barrier, free_pages or
        // slice end, never here: fills come at host-dependent moments.
        if let Some(e) = self.held.get_mut(cpu, va, Some(asid)) {
            let answer = answer(e.fill.pa, held_perms(e, el0), e.fill.level, access);
            if guest {
                // A refused access faults, so every one comes back here: countable.
                self.stats.faults += matches!(answer, FillAnswer::Fault(_)) as u64;
                if e.stale.is_some() && e.tag == StaleReport::Armed {
                    e.tag = StaleReport::Reported;
                    self.stats.stale_accesses += 1;
                    // What the tables give this very access (a permission
                    // they no longer grant is a fault).
                    let now = match mmu::walk(mem, regs, va, access, el0) {
                        Ok(t) => WalkResult::Maps(t.pa),
                        Err(f) => WalkResult::Faults(f.status as u8),
                    };
                    let asid = Some(asid);
                    self.record(
                        at,
                        EventKind::StaleTlbUse {
                            va,
                            access,
                            now,
                            asid,
                        },
                    );
                }
            }
            return answer;
        }
        let walked = mmu::walk_any(mem, regs, va);
        if !guest {
            return match walked {
                Ok(t) => answer(t.pa, t.perms(el0), t.level, access),
                Err(f) => FillAnswer::Fault(f),
            };
        }
        self.note_tables(mem, regs, va, at);
        let t = match walked {
            Ok(t) => t,
            Err(f) => {
                self.stats.faults += 1;
                return FillAnswer::Fault(f);
            }
        };
        let mut walk = [0u64; 4];
        let tables = usize::from(t.n_tables);
        walk[..tables].copy_from_slice(&t.tables[..tables]);
        walk[tables] = t.leaf;
        let fill = TlbFill {
            va,
            pa: t.pa,
            level: t.level,
            write: t.write,
            exec: t.exec,
            user: t.user,
            global: t.global,
            asid,
            walk,
            walk_len: t.n_tables + 1,
        };
        self.held.insert(cpu, fill, at.time, StaleReport::Waiting);
        self.record(at, EventKind::TlbFill(fill));
        self.stats.tlb_fills[cpu] += 1;
        let answer = answer(t.pa, t.perms(el0), t.level, access);
        self.stats.faults += matches!(answer, FillAnswer::Fault(_)) as u64;
        answer
    }

    /// A store of `size` bytes of `value` at physical `addr` by the guest, seen before
    /// it lands (`mem` still has the old bytes); nothing happens unless `addr` lies in
    /// a page-table page. Returns whether the storing CPU must stop soon (its Unicorn
    /// TLB or hooks need updating before it goes on).
    pub fn pt_write(
        &mut self,
        mem: &dyn GuestMemory,
        addr: u64,
        size: usize,
        value: u64,
        at: At,
    ) -> bool {
        if !self.is_page_table(addr) {
            return false;
        }
        let desc_addr = addr & !7;
        let Ok(old) = mem.read_u64(desc_addr) else {
            return false;
        };
        let offset = (addr & 7) as usize;
        if offset + size > 8 {
            // A store straddling two descriptors (e.g. zeroing): take it 8 bytes at a time.
            let bytes = value.to_le_bytes();
            let first = 8 - offset;
            let mut stop = self.pt_write(mem, addr, first, value, at);
            let mut rest = [0u8; 8];
            rest[..size - first].copy_from_slice(&bytes[first..size]);
            let rest = u64::from_le_bytes(rest);
            stop |= self.pt_write(mem, desc_addr + 8, size - first, rest, at);
            return stop;
        }
        let mut bytes = old.to_le_bytes();
        bytes[offset..offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
        let new = u64::from_le_bytes(bytes);
        self.descriptor_changed(desc_addr, old, new, at)
    }

    /// The descriptor at `desc_addr` (in a page-table page) changed from `old` to
    /// `new`; returns whether the storing CPU must stop soon.
    fn descriptor_changed(&mut self, desc_addr: u64, old: u64, new: u64, at: At) -> bool {
        let Some(&page) = self.pt_pages.get(&(desc_addr & PAGE_MASK)) else {
            return false;
        };
        if old == new {
            return false;
        }
        let level = page.level;
        let shift = mmu::level_shift(level);
        let index = (desc_addr & (PAGE_SIZE - 1)) / 8;
        let va = self.format.entry_va(page.va_base, index, shift);
        let (od, nd) = (
            self.format.decode(old, level),
            self.format.decode(new, level),
        );
        match (od.is_valid(), nd.is_valid()) {
            (true, false) => self.stats.pt_writes_valid_to_invalid += 1,
            (false, true) => self.stats.pt_writes_invalid_to_valid += 1,
            (true, true) => self.stats.pt_writes_valid_to_valid += 1,
            (false, false) => self.stats.pt_writes_other += 1,
        }
        let desc_pa = desc_addr;
        self.record(at, EventKind::PageTableWrite { desc_pa, old, new });
        let mut stop = false;
        if self.format.change_matters(old, new, level) {
            let since = StaleSince {
                time: at.time,
                cpu: at.cpu,
                pc: at.pc,
            };
            for (cpu, page) in self.held.mark_stale(desc_addr, since) {
                self.need_flush[cpu] = true;
                self.newly_stale[cpu].push(page);
                stop |= cpu == at.cpu;
            }
        }
        if let Descriptor::Table(next) = nd {
            let here = PtPage {
                level: level + 1,
                va_base: va,
            };
            if level < 3 && self.pt_pages.get(&next) != Some(&here) {
                self.add_pt_page(next, level + 1, va, at);
                stop = true;
            }
        }
        stop
    }

    /// A `tlbi` of `scope` executed by `at.cpu` (before it takes effect on Unicorn);
    /// `name` is its mnemonic. Returns the pages it removed from `at.cpu`'s TLB.
    pub fn tlbi(
        &mut self,
        mem: &dyn GuestMemory,
        scope: TlbiScope,
        broadcast: bool,
        name: String,
        at: At,
    ) -> Vec<u64> {
        self.sync_windows(mem, at.cpu);
        *self.stats.tlbi_by_kind.entry(name).or_default() += 1;
        if broadcast {
            self.stats.broadcast_invalidations += 1;
        }
        let removed = self.held.invalidate(at.cpu, broadcast, scope);
        self.forget_removed(&removed, at);
        let own = removed.iter().filter(|(cpu, _)| *cpu == at.cpu);
        own.map(|(_, e)| e.fill.va & PAGE_MASK).collect()
    }

    /// Invalidation `inv` by `at.cpu` (RISC-V's `sfence.vma`, or an SBI remote fence
    /// the host runs for it); recorded as such, since no instruction of the trace
    /// says it.
    pub fn invalidate_on(&mut self, mem: &dyn GuestMemory, inv: Invalidation, name: &str, at: At) {
        let Invalidation {
            cpus,
            start,
            len,
            asid,
        } = inv;
        self.sync_windows(mem, at.cpu);
        *self.stats.tlbi_by_kind.entry(name.to_string()).or_default() += 1;
        if cpus & !(1 << at.cpu) != 0 {
            self.stats.broadcast_invalidations += 1;
        }
        let scope = TlbiScope::of_range(start, len, asid);
        let mut removed = Vec::new();
        for cpu in (0..self.need_flush.len()).filter(|c| cpus >> c & 1 != 0) {
            removed.extend(self.held.invalidate(cpu, false, scope));
        }
        self.record(
            at,
            EventKind::TlbInvalidate {
                cpus,
                start,
                len,
                asid,
            },
        );
        self.forget_removed(&removed, at);
    }

    /// Freed pages no longer reachable once no stale entry maps them: their window
    /// ends at `at`.
    fn forget_removed(&mut self, removed: &[(usize, Held)], at: At) {
        for (_, entry) in removed.iter().filter(|(_, e)| e.stale.is_some()) {
            let pa = entry.fill.pa;
            let Some(&freed_at) = self.freed.get(&pa) else {
                continue;
            };
            let still = self
                .held
                .entries()
                .any(|(_, e)| e.fill.pa == pa && e.stale.is_some());
            if !still {
                self.freed.remove(&pa);
                let window = at.time.saturating_sub(freed_at);
                self.stats.longest_reachable_window =
                    self.stats.longest_reachable_window.max(window);
            }
        }
    }

    /// A hooked `dsb` or `isb` of `cpu`: the page tables it stored to are compared (the
    /// barrier itself is recorded by the caller, after what this finds).
    pub fn barrier(&mut self, mem: &dyn GuestMemory, cpu: usize) {
        self.sync_windows(mem, cpu);
    }

    /// The guest freed physical pages `pa..pa + len`: count those a stale entry still
    /// reaches.
    pub fn pages_freed(&mut self, mem: &dyn GuestMemory, pa: u64, len: u64, at: At) {
        self.sync_windows(mem, at.cpu);
        if !self.held.any_stale() {
            return;
        }
        let (start, end) = (pa & PAGE_MASK, pa.saturating_add(len));
        let mut reachable: Vec<u64> = self
            .held
            .entries_to(start..end)
            .into_iter()
            .filter(|(_, e)| e.stale.is_some())
            .map(|(_, e)| e.fill.pa)
            .collect();
        reachable.sort_unstable();
        reachable.dedup();
        for page in reachable {
            self.stats.freed_while_reachable += 1;
            self.freed.insert(page, at.time);
        }
    }
}

/// Read-only view of guest RAM for hooks (which run while the machine owns the RAM).
#[derive(Clone, Copy)]
pub(crate) struct RamView {
    base: u64,
    size: u64,
    ptr: *const u8,
}

impl RamView {
    /// SAFETY: the RAM must outlive every use of the view.
    pub(crate) unsafe fn new(ram: &crate::memory::GuestRam) -> Self {
        Self {
            base: ram.base(),
            size: ram.size(),
            ptr: ram.host_ptr(),
        }
    }
}

impl GuestMemory for RamView {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let len = buf.len() as u64;
        if addr < self.base
            || addr
                .checked_add(len)
                .is_none_or(|end| end > self.base + self.size)
        {
            return Err(OutOfRam { addr, len });
        }
        // SAFETY: in range; the RAM outlives the view (see `new`), and hooks run on the
        // one host thread that also runs the guest.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add((addr - self.base) as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), OutOfRam> {
        Err(OutOfRam {
            addr,
            len: data.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, RAM_BASE};
    use traces::{Analysis, CpuId, Event, FindingKind, StringTable, TaskId, TlbiOp};

    const L1: u64 = RAM_BASE;
    const L2: u64 = RAM_BASE + 0x1000;
    const L3: u64 = RAM_BASE + 0x2000;
    const VA: u64 = 0x8000_0000;
    const PAGE_A: u64 = 0x4010_0000;
    const PAGE_B: u64 = 0x4010_1000;
    /// Valid page, AF, read-write.
    const PAGE: u64 = 0x403;
    const VAAE1: TlbiScope = TlbiScope::Va { va: VA, asid: None };

    fn setup(cpus: usize) -> (GuestRam, TranslationRegs, MmuModel) {
        let mut ram = GuestRam::new(RAM_BASE, 0x10_0000).unwrap();
        ram.write_u64(L1 + 8 * 2, L2 | 3).unwrap();
        ram.write_u64(L2, L3 | 3).unwrap();
        ram.write_u64(L3, PAGE_A | PAGE).unwrap();
        let regs = crate::arch::aarch64::mmu::VmsaRegs {
            sctlr: 1,
            tcr: 25 | (1 << 23),
            ttbr0: L1,
            ttbr1: 0,
        }
        .into();
        (ram, regs, MmuModel::new(cpus, true))
    }

    fn at(cpu: usize, time: u64) -> At {
        At {
            cpu,
            pc: 0x1000 + time,
            time,
        }
    }

    fn read(m: &mut MmuModel, ram: &GuestRam, regs: &TranslationRegs, cpu: usize) -> FillAnswer {
        m.fill(ram, regs, VA, Access::Read, false, at(cpu, 1), true)
    }

    /// Stores `new` to the descriptor of VA as the guest would (model told first).
    fn store(m: &mut MmuModel, ram: &mut GuestRam, new: u64, cpu: usize, time: u64) {
        m.pt_write(ram, L3, 8, new, at(cpu, time));
        ram.write_u64(L3, new).unwrap();
    }

    fn tlbi(m: &mut MmuModel, ram: &GuestRam, broadcast: bool, at: At) -> Vec<u64> {
        m.tlbi(ram, VAAE1, broadcast, TlbiOp::Vaae1.mnemonic(broadcast), at)
    }

    /// A TLBI says which pages it took from the issuing CPU's TLB (whose Unicorn
    /// TLB the machine must then flush: see `on_sys`), not those of the others.
    #[test]
    fn a_tlbi_names_the_pages_it_took_from_the_issuing_cpu() {
        let (ram, regs, mut m) = setup(2);
        read(&mut m, &ram, &regs, 1);
        assert!(
            tlbi(&mut m, &ram, true, at(0, 2)).is_empty(),
            "CPU 0 held nothing"
        );
        assert!(m.held(1, VA, None).is_none(), "broadcast");
        read(&mut m, &ram, &regs, 0);
        read(&mut m, &ram, &regs, 1);
        assert_eq!(tlbi(&mut m, &ram, true, at(0, 4)), vec![VA]);
        assert!(
            tlbi(&mut m, &ram, false, at(0, 5)).is_empty(),
            "nothing left"
        );
    }

    /// The names of the events the model recorded since the last call.
    fn recorded(m: &mut MmuModel) -> Vec<&'static str> {
        m.take_events().iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn decodes_barriers() {
        assert_eq!(Barrier::decode(0xd503_3a9f), Some(Barrier::Dsb(0b1010)));
        assert_eq!(Barrier::decode(0xd503_3b9f), Some(Barrier::Dsb(0b1011)));
        assert_eq!(Barrier::decode(0xd503_3fdf), Some(Barrier::Isb));
        assert_eq!(Barrier::decode(0xd503_309f), None, "SSBB");
        assert_eq!(Barrier::decode(0xd503_201f), None, "NOP");
    }

    /// Two processes map the same user VA under their own ASIDs (nG pages): each
    /// CPU holds an entry per ASID and answers an access from the entry of the ASID
    /// it runs under, with EL0's permissions for an EL0 access; a kernel-only page
    /// refuses EL0.
    #[test]
    fn user_pages_are_held_per_asid_with_el0_permissions() {
        let (mut ram, _, mut m) = setup(1);
        const NG: u64 = 1 << 11;
        const UXN: u64 = 1 << 54;
        const PXN: u64 = 1 << 53;
        // A: EL0 read-write (AP 01); B, another process's table: EL0 read-only (AP 11).
        ram.write_u64(L3, PAGE_A | PAGE | NG | 0x40 | UXN | PXN)
            .unwrap();
        const L1_B: u64 = RAM_BASE + 0x8000;
        const L2_B: u64 = RAM_BASE + 0x9000;
        const L3_B: u64 = RAM_BASE + 0xa000;
        ram.write_u64(L1_B + 8 * 2, L2_B | 3).unwrap();
        ram.write_u64(L2_B, L3_B | 3).unwrap();
        ram.write_u64(L3_B, PAGE_B | PAGE | NG | 0xc0 | PXN)
            .unwrap();
        // Linux's registers: TCR.A1, the ASID in TTBR1.
        let process = |l1: u64, asid: u64| -> TranslationRegs {
            crate::arch::aarch64::mmu::VmsaRegs {
                sctlr: 1,
                tcr: 25 | (1 << 23) | (1 << 22),
                ttbr0: l1,
                ttbr1: asid << 48,
            }
            .into()
        };
        let (a, b) = (process(L1, 1), process(L1_B, 2));
        let mut fill = |regs: &TranslationRegs, access, el0, time| {
            m.fill(&ram, regs, VA, access, el0, at(0, time), true)
        };
        let map = |pa, read, write, exec| FillAnswer::Map {
            pa,
            read,
            write,
            exec,
        };
        assert_eq!(
            fill(&a, Access::Write, true, 1),
            map(PAGE_A, true, true, false)
        );
        assert_eq!(
            fill(&b, Access::Read, true, 2),
            map(PAGE_B, true, false, true)
        );
        // Held, not walked again: each ASID gets its own page back.
        assert_eq!(
            fill(&a, Access::Read, true, 3),
            map(PAGE_A, true, true, false)
        );
        assert!(
            matches!(fill(&b, Access::Write, true, 4), FillAnswer::Fault(f) if f.is_permission())
        );
        assert!(
            matches!(fill(&a, Access::Fetch, true, 5), FillAnswer::Fault(f) if f.is_permission())
        );
        // EL1 through the same entries: its own permissions (never executing B).
        assert_eq!(
            fill(&b, Access::Read, false, 6),
            map(PAGE_B, true, false, false)
        );
        assert_eq!(m.stats.tlb_fills, vec![2]);
        assert_eq!(m.held(0, VA, Some(1)).map(|e| e.fill.pa), Some(PAGE_A));
        assert_eq!(m.held(0, VA, Some(2)).map(|e| e.fill.pa), Some(PAGE_B));
        assert!(m.held(0, VA, Some(3)).is_none());
        // Kernel only (AP 00, global): EL0 is refused, EL1 is not.
        ram.write_u64(L3 + 8, PAGE_B | PAGE | UXN | PXN).unwrap();
        let va = VA + 0x1000;
        let el0 = m.fill(&ram, &a, va, Access::Read, true, at(0, 7), true);
        assert!(matches!(el0, FillAnswer::Fault(f) if f.is_permission()));
        let el1 = m.fill(&ram, &a, va, Access::Read, false, at(0, 8), true);
        assert_eq!(el1, map(PAGE_B, true, true, false));
    }

    #[test]
    fn fills_are_held_until_invalidated_even_when_the_tables_change() {
        let (mut ram, regs, mut m) = setup(2);
        let mapped_a = FillAnswer::Map {
            pa: PAGE_A,
            read: true,
            write: true,
            exec: true,
        };
        assert_eq!(read(&mut m, &ram, &regs, 0), mapped_a);
        assert_eq!(m.stats.tlb_fills, vec![1, 0]);
        assert!(m.is_page_table(L3) && m.is_page_table(L1));
        // New page tables: every CPU must drop what write permission it had to them.
        assert!(m.take_flush(0, &|_| true) && m.take_flush(1, &|_| true));
        // Break, no TLBI yet: CPU 0 still uses A; CPU 1 walks and faults.
        store(&mut m, &mut ram, 0, 0, 2);
        assert!(m.take_flush(0, &|_| true), "CPU 0's Unicorn TLB must go");
        assert!(!m.take_flush(1, &|_| true), "CPU 1 held nothing");
        assert_eq!(read(&mut m, &ram, &regs, 0), mapped_a);
        assert_eq!(m.stats.stale_accesses, 1);
        assert!(
            matches!(read(&mut m, &ram, &regs, 1), FillAnswer::Fault(f) if f.status == 0b00_0111)
        );
        // A broadcast TLBI removes it everywhere; the refill walks the new tables.
        tlbi(&mut m, &ram, true, at(0, 4));
        assert!(m.held(0, VA, None).is_none());
        assert!(matches!(read(&mut m, &ram, &regs, 0), FillAnswer::Fault(_)));
        assert_eq!(m.stats.tlbi_by_kind.get("vaae1is"), Some(&1));
        assert_eq!(m.stats.broadcast_invalidations, 1);
    }

    /// A flush is asked for only when the CPU's Unicorn TLB may hold what must
    /// leave it (a stale page, write permission to a new table); the stale entry is
    /// armed either way, so its next use is reported.
    #[test]
    fn a_flush_is_asked_for_only_what_the_soft_tlb_may_hold() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        let nothing = |_: SoftTlbEntry| false;
        assert!(!m.take_flush(0, &nothing), "new tables it never wrote");
        let writable_l3 = |e| e == SoftTlbEntry::WritableFrame(L3);
        store(&mut m, &mut ram, 0, 0, 2);
        assert!(!m.take_flush(0, &writable_l3), "the stale page is not held");
        assert!(matches!(
            read(&mut m, &ram, &regs, 0),
            FillAnswer::Map { pa: PAGE_A, .. }
        ));
        assert_eq!(m.stats.stale_accesses, 1, "armed without a flush");
        // Held: flushed. And a new table written through the soft TLB: flushed.
        store(&mut m, &mut ram, PAGE_B | PAGE, 0, 3);
        tlbi(&mut m, &ram, false, at(0, 4));
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 5);
        assert!(m.take_flush(0, &|e| e == SoftTlbEntry::Page(VA)));
        ram.write_u64(L3, PAGE_A | PAGE).unwrap();
        const L2_OTHER: u64 = RAM_BASE + 0x5000;
        ram.write_u64(L1 + 8 * 3, L2_OTHER | 3).unwrap();
        ram.write_u64(L2_OTHER, L3 | 3).unwrap();
        m.fill(
            &ram,
            &regs,
            VA + 0x4000_0000,
            Access::Read,
            false,
            at(0, 6),
            true,
        );
        assert!(m.is_page_table(L2_OTHER));
        assert!(m.take_flush(0, &|e| e == SoftTlbEntry::WritableFrame(L2_OTHER)));
    }

    #[test]
    fn a_local_tlbi_leaves_the_other_cores_entries() {
        let (mut ram, regs, mut m) = setup(2);
        read(&mut m, &ram, &regs, 0);
        read(&mut m, &ram, &regs, 1);
        store(&mut m, &mut ram, 0, 0, 2);
        tlbi(&mut m, &ram, false, at(0, 4));
        assert!(m.held(0, VA, None).is_none());
        assert!(m.held(1, VA, None).is_some_and(|e| e.stale.is_some()));
    }

    /// A stale entry's use is recorded once, on the first access after its CPU's
    /// Unicorn TLB was flushed; refills before that flush (host timing) and after it
    /// change nothing.
    #[test]
    fn a_stale_use_is_recorded_once_after_its_cpus_flush() {
        let (mut ram, regs, mut m) = setup(1);
        m.record_events();
        read(&mut m, &ram, &regs, 0);
        m.take_flush(0, &|_| true);
        assert_eq!(
            recorded(&mut m),
            vec!["pt-page", "pt-page", "pt-page", "tlb-fill"]
        );
        store(&mut m, &mut ram, 0, 0, 2);
        assert_eq!(recorded(&mut m), vec!["pt-write"]);
        // A refill before the machine flushed: Unicorn may or may not ask, so nothing.
        read(&mut m, &ram, &regs, 0);
        assert_eq!(recorded(&mut m), Vec::<&str>::new());
        assert!(m.take_flush(0, &|_| true));
        for _ in 0..3 {
            read(&mut m, &ram, &regs, 0);
        }
        let events = m.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].kind,
            EventKind::StaleTlbUse {
                va: VA,
                access: Access::Read,
                now: WalkResult::Faults(0b00_0111),
                asid: Some(0),
            }
        );
        assert_eq!(m.stats.stale_accesses, 1);
    }

    /// What the model records is what the TLB check needs: fed to it, the stale use
    /// is a `stale-tlb` finding.
    #[test]
    fn the_recorded_changes_give_the_tlb_check_its_findings() {
        let (mut ram, regs, mut m) = setup(1);
        m.record_events();
        read(&mut m, &ram, &regs, 0);
        m.take_flush(0, &|_| true);
        m.open_write_window(&ram, L3, at(0, 2));
        ram.write_u64(L3, 0).unwrap();
        m.close_windows(&ram, 0);
        m.take_flush(0, &|_| true);
        read(&mut m, &ram, &regs, 0);
        let mut check = traces::tlb::TlbCheck::new();
        for e in m.take_events() {
            let event = Event {
                time: e.at.time,
                cpu: CpuId(e.at.cpu as u16),
                task: TaskId(0),
                pc: e.at.pc,
                caller: 0,
                kind: e.kind,
            };
            check.event(&event, &StringTable::default());
        }
        let kinds: Vec<_> = check.findings().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FindingKind::StaleTlb]);
    }

    #[test]
    fn write_windows_turn_stores_into_descriptor_changes() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        m.record_events();
        m.open_write_window(&ram, L3, at(0, 2));
        ram.write_u64(L3, 0).unwrap();
        m.sync_windows(&ram, 0);
        assert_eq!(m.stats.pt_writes_valid_to_invalid, 1);
        ram.write_u64(L3, PAGE_B | PAGE).unwrap();
        // An unchanged descriptor is not a write.
        ram.write_u64(L3 + 8, 0).unwrap();
        assert!(m.close_windows(&ram, 0));
        assert_eq!(m.stats.pt_writes_invalid_to_valid, 1);
        assert!(!m.close_windows(&ram, 0));
        let writes: Vec<_> = m
            .take_events()
            .into_iter()
            .map(|e| (e.at, e.kind))
            .collect();
        let write = |old, new| EventKind::PageTableWrite {
            desc_pa: L3,
            old,
            new,
        };
        assert_eq!(
            writes,
            vec![
                (at(0, 2), write(PAGE_A | PAGE, 0)),
                (at(0, 2), write(0, PAGE_B | PAGE))
            ]
        );
    }

    /// A page-table page stays one while a CPU's registers reach it or a TLB entry
    /// was walked through it; stored to after neither holds, it is retired (Linux
    /// reusing its freed boot tables as data), and a later walk makes it a table again.
    #[test]
    fn a_table_page_nothing_reaches_is_retired_when_stored_to() {
        let (mut ram, regs, mut m) = setup(2);
        m.set_translation_regs(0, regs);
        m.set_translation_regs(1, regs);
        read(&mut m, &ram, &regs, 0);
        m.record_events();
        let TranslationRegs::Vmsa(vmsa) = regs else {
            unreachable!("set up as VMSA")
        };
        let elsewhere = crate::arch::aarch64::mmu::VmsaRegs {
            ttbr0: RAM_BASE + 0x3000,
            ..vmsa
        }
        .into();
        m.set_translation_regs(0, elsewhere);
        let mut junk = 0x1111;
        let mut store_junk = |m: &mut MmuModel, ram: &mut GuestRam, time| {
            m.open_write_window(ram, L3, at(0, time));
            junk += 0x1000;
            ram.write_u64(L3, junk).unwrap();
            m.close_windows(ram, 0);
        };
        // CPU 0 switched tables but still holds a translation walked through L3.
        store_junk(&mut m, &mut ram, 2);
        assert_eq!(recorded(&mut m), vec!["pt-write"]);
        m.tlbi(&ram, TlbiScope::All, false, "vmalle1".into(), at(0, 3));
        // CPU 1's registers still reach L3.
        store_junk(&mut m, &mut ram, 4);
        assert_eq!(recorded(&mut m), vec!["pt-write"]);
        m.set_translation_regs(1, elsewhere);
        store_junk(&mut m, &mut ram, 5);
        assert_eq!(recorded(&mut m), vec!["pt-retired"]);
        assert!(!m.is_page_table(L3) && m.is_page_table(L2));
        assert_eq!(m.stats.pt_pages_retired, 1);
        store_junk(&mut m, &mut ram, 6);
        assert_eq!(recorded(&mut m), Vec::<&str>::new());
        // Walked through again: a table again.
        ram.write_u64(L3, PAGE_A | PAGE).unwrap();
        m.set_translation_regs(0, regs);
        read(&mut m, &ram, &regs, 0);
        assert_eq!(recorded(&mut m), vec!["pt-page", "tlb-fill"]);
        assert!(m.is_page_table(L3));
    }

    /// An invalidation by meaning reaches the CPUs it names and the pages of its
    /// range, and is recorded (no instruction in the trace says it).
    #[test]
    fn an_invalidation_by_meaning_reaches_the_cpus_and_pages_it_names() {
        let (ram, regs, mut m) = setup(3);
        for cpu in 0..3 {
            read(&mut m, &ram, &regs, cpu);
        }
        m.record_events();
        let inv = |cpus, start| Invalidation {
            cpus,
            start,
            len: PAGE_SIZE,
            asid: None,
        };
        m.invalidate_on(&ram, inv(0b101, VA + PAGE_SIZE), "sfence.vma", at(0, 2));
        assert!(
            (0..3).all(|cpu| m.held(cpu, VA, None).is_some()),
            "another page"
        );
        m.invalidate_on(&ram, inv(0b101, VA), "sfence.vma", at(0, 3));
        let held: Vec<bool> = (0..3).map(|cpu| m.held(cpu, VA, None).is_some()).collect();
        assert_eq!(held, vec![false, true, false]);
        assert_eq!(recorded(&mut m), vec!["tlb-invalidate", "tlb-invalidate"]);
        assert_eq!(m.stats.tlbi_by_kind.get("sfence.vma"), Some(&2));
        assert_eq!(m.stats.broadcast_invalidations, 2);
    }

    #[test]
    fn nothing_is_kept_for_the_recorder_unless_asked() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 2);
        assert_eq!(m.take_events(), vec![]);
    }

    /// A table descriptor stored to point to a new page makes that page a page table
    /// (recorded), and the storing CPU must stop.
    #[test]
    fn a_new_table_descriptor_adds_a_page_table_page() {
        let (ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        m.record_events();
        let new_table = RAM_BASE + 0x5000;
        assert!(m.pt_write(&ram, L2 + 8, 8, new_table | 3, at(0, 3)));
        assert!(m.is_page_table(new_table));
        assert_eq!(recorded(&mut m), vec!["pt-write", "pt-page"]);
    }

    #[test]
    fn freed_pages_reachable_through_stale_entries_are_counted() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 2);
        m.pages_freed(&ram, PAGE_A, 4096, at(0, 10));
        m.pages_freed(&ram, PAGE_B, 4096, at(0, 11));
        assert_eq!(m.stats.freed_while_reachable, 1);
        m.tlbi(&ram, TlbiScope::All, true, "vmalle1is".into(), at(0, 110));
        assert_eq!(m.stats.longest_reachable_window, 100);
    }
}
