//! The simulated MMU's memory: which translations each CPU's TLB holds, which physical
//! pages are live page tables, and the TLB-shootdown checks made on them.
//!
//! Unicorn runs in its virtual-TLB mode and asks [`MmuModel::fill`] on every miss of
//! its own soft TLB. The model answers from the CPU's modelled TLB if that holds the
//! page (as hardware would: an entry lives until a TLBI removes it, however the tables
//! changed since) and walks the tables ([`crate::mmu`]) otherwise. Every store to a
//! page-table page reaches [`MmuModel::pt_write`] (the tables are write-protected in the
//! fill answers; a store opens a compare window on its page, see `simmu.rs`),
//! every TLBI [`MmuModel::tlbi`], every DSB/ISB [`MmuModel::barrier`].
//!
//! When a store makes a held translation stale, that CPU's Unicorn TLB is flushed (by
//! the machine, before the CPU runs again) so that its next access to the page comes
//! back here, is answered with the old physical page and reported as `stale-tlb`.
//!
//! Unicorn's soft TLB also refills on its own, at moments set by host time (DESIGN.md),
//! so nothing here may depend on how often a fill comes: the model only changes on the
//! first fill of a page it does not hold (a moment the guest fixes, since every model
//! invalidation is also a Unicorn flush), a stale entry is reported once, on its first
//! access after the flush above, and write windows are compared at the CPU's TLBIs,
//! barriers, `free_pages` calls and slice ends, never at a fill.
//!
//! Checks (each a [`Finding`], once per cause):
//! - `stale-tlb`: an access through a held translation the tables no longer give;
//! - `missing-tlb-flush`: a descriptor made valid while some CPU still holds a
//!   translation that went through it when it held the old mapping;
//! - `break-before-make`: a valid descriptor changed to another output address, block
//!   size or table, directly or through invalid without a TLBI for its address;
//! - `missing-barrier`: a TLBI with a descriptor store of the same CPU not yet ordered
//!   by a `dsb` (ISH or wider for broadcast TLBIs), or a TLBI not completed by a full
//!   `dsb` before the CPU's next `isb` or page-table store.
//!
//! Pages freed (guest `free_pages`) while a stale translation still reaches them are a
//! statistic, not a finding: the seed's reclaim relies on a later flush.

use std::collections::{BTreeMap, HashMap};

use traces::finding::{Finding, FindingKind, Findings};

use crate::memory::{GuestMemory, OutOfRam};
use crate::mmu::{self, Access, Descriptor, Fault, TranslationRegs, PAGE_SIZE};

const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

/// One translation a CPU holds (one 4 KiB page of it; a block is held page by page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry {
    pub pa: u64,
    pub level: u8,
    pub write: bool,
    pub exec: bool,
    pub global: bool,
    pub asid: u16,
    /// Descriptors the walk read (leaf and tables).
    descs: [u64; 4],
    n_descs: u8,
    pub filled_at: u64,
    /// Set when the tables stopped giving this translation.
    pub stale: Option<StaleSince>,
    /// Where the stale entry stands with its one report (see [`StaleReport`]).
    stale_report: StaleReport,
}

/// When the access through a stale entry is reported. Unicorn's soft TLB refills at
/// moments that depend on host time (DESIGN.md), so only the first access after the
/// holding CPU's Unicorn TLB was flushed (which the model asks for when it marks the
/// entry stale) is a moment fixed by the guest: that one is reported, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum StaleReport {
    /// Not stale, or stale while the CPU's Unicorn TLB may still hold the entry.
    #[default]
    Waiting,
    /// The CPU's Unicorn TLB was flushed since the entry went stale: the next access
    /// through it comes to the model.
    Armed,
    Reported,
}

impl HeldEntry {
    fn uses(&self, desc: u64) -> bool {
        self.descs[..self.n_descs as usize].contains(&desc)
    }
    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => true,
            Access::Write => self.write,
            Access::Fetch => self.exec,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSince {
    pub time: u64,
    pub cpu: usize,
    pub pc: u64,
}

/// A TLB invalidation, decoded from `tlbi` (op2 of SYS with CRn = 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbiOp {
    /// VMALLE1: everything.
    All,
    /// VAE1/VALE1 (`asid` or global entries) and VAAE1/VAALE1 (any ASID: `None`).
    Va { va: u64, asid: Option<u16> },
    /// ASIDE1: non-global entries of one ASID.
    Asid(u16),
}

impl TlbiOp {
    /// Decodes `tlbi` from the SYS fields; `None` for what is not an EL1 TLBI we model.
    pub fn decode(op1: u32, crn: u32, crm: u32, op2: u32, xt: u64) -> Option<(Self, bool)> {
        if op1 != 0 || crn != 8 {
            return None;
        }
        let broadcast = match crm {
            7 => false,
            3 | 1 => true, // inner / outer shareable
            _ => return None,
        };
        let asid = (xt >> 48) as u16;
        // Xt[43:0] = VA[55:12]; bits above 55 copy bit 55.
        let va = ((((xt & ((1 << 44) - 1)) << 12) << 8) as i64 >> 8) as u64;
        let op = match op2 {
            0 => TlbiOp::All,
            1 | 5 => TlbiOp::Va {
                va,
                asid: Some(asid),
            },
            3 | 7 => TlbiOp::Va { va, asid: None },
            2 => TlbiOp::Asid(asid),
            _ => return None,
        };
        Some((op, broadcast))
    }

    pub(crate) fn name(&self, broadcast: bool) -> &'static str {
        match (self, broadcast) {
            (TlbiOp::All, false) => "vmalle1",
            (TlbiOp::All, true) => "vmalle1is",
            (TlbiOp::Va { asid: Some(_), .. }, false) => "vae1",
            (TlbiOp::Va { asid: Some(_), .. }, true) => "vae1is",
            (TlbiOp::Va { asid: None, .. }, false) => "vaae1",
            (TlbiOp::Va { asid: None, .. }, true) => "vaae1is",
            (TlbiOp::Asid(_), false) => "aside1",
            (TlbiOp::Asid(_), true) => "aside1is",
        }
    }
}

/// A barrier instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// `dsb` with its CRm option.
    Dsb(u32),
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

/// A DSB option's reach: (orders stores, orders everything, inner shareable or wider).
fn dsb_reach(crm: u32) -> (bool, bool, bool) {
    let types = crm & 3; // 1 LD, 2 ST, 3 full
    let domain = crm >> 2; // 0 OSH, 1 NSH, 2 ISH, 3 SY
    (types & 2 != 0, types == 3, domain != 1)
}

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
    va: u64,
    shift: u32,
    flushed: bool,
}

/// A page-table page a CPU may store to without the model seeing each store: its
/// contents when the window opened (or were last compared), and the first store.
struct WriteWindow {
    page: u64,
    at: At,
    snapshot: Box<[u8]>,
}

#[derive(Debug, Default, Clone, Copy)]
struct BarrierState {
    /// A page-table store not yet ordered by a DSB: its PC and whether an NSH DSB
    /// since then has ordered it for this CPU only.
    unordered_store: Option<(u64, bool)>,
    /// A TLBI not yet completed by a DSB: its PC and whether it was broadcast.
    pending_tlbi: Option<PendingTlbi>,
}

/// A TLBI not yet completed by a DSB.
#[derive(Debug, Clone, Copy)]
struct PendingTlbi {
    pc: u64,
    broadcast: bool,
    op: TlbiOp,
}

impl PendingTlbi {
    /// Whether the TLBI targets the translation of `va` through a descriptor whose
    /// level maps `1 << shift` bytes. A store to another descriptor does not need the
    /// TLBI complete first (an IRQ handler may remap other pages between a TLBI and
    /// its DSB, as Linux's do).
    fn targets(&self, va: u64, shift: u32) -> bool {
        match self.op {
            TlbiOp::All | TlbiOp::Asid(_) => true,
            TlbiOp::Va { va: tlbi_va, .. } => {
                let mask = !((1u64 << shift) - 1);
                tlbi_va & mask == va & mask
            }
        }
    }
}

/// Counts for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MmuStats {
    /// Translations walked and entered into each CPU's modelled TLB.
    pub tlb_fills: Vec<u64>,
    pub tlbi_by_kind: BTreeMap<&'static str, u64>,
    /// Broadcast (…IS) invalidations.
    pub broadcast_invalidations: u64,
    /// Page-table stores by change: valid→invalid, invalid→valid, valid→valid, other.
    pub pt_writes_valid_to_invalid: u64,
    pub pt_writes_invalid_to_valid: u64,
    pub pt_writes_valid_to_valid: u64,
    pub pt_writes_other: u64,
    pub pt_pages: u64,
    /// Stale translations used: the first access through each after it went stale.
    pub stale_accesses: u64,
    /// Faults delivered to the guest by the walker.
    pub faults: u64,
    /// Pages freed while a stale translation still reached them, and the longest
    /// time (instructions, all CPUs) one stayed reachable after being freed.
    pub freed_while_reachable: u64,
    pub longest_reachable_window: u64,
}

/// A page-table store the model saw, kept for the recorder while
/// [`MmuModel::record_pt_writes`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtWrite {
    pub desc_pa: u64,
    pub old: u64,
    pub new: u64,
    /// The storing CPU, the store's PC and time (for a write window: its first store).
    pub store: At,
}

/// What a fill gives Unicorn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillAnswer {
    Map { pa: u64, write: bool, exec: bool },
    Fault(Fault),
}

/// Who made an event: CPU, PC and virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub cpu: usize,
    pub pc: u64,
    pub time: u64,
}

pub struct MmuModel {
    tlbs: Vec<HashMap<u64, HeldEntry>>,
    /// Reverse index: descriptor address → (CPU, VA page) entries that used it
    /// (possibly outdated; checked against the entry).
    users: HashMap<u64, Vec<(usize, u64)>>,
    pt_pages: HashMap<u64, PtPage>,
    broken: HashMap<u64, Broken>,
    barriers: Vec<BarrierState>,
    /// Pages found to be page tables since the running CPU was last told (it must
    /// stop soon: it may hold write permission to them in its soft TLB).
    new_pt_pages: Vec<u64>,
    /// CPUs whose Unicorn TLB must be flushed before they run again.
    need_flush: Vec<bool>,
    /// Freed physical pages still reachable through a stale entry: freed at.
    freed: HashMap<u64, u64>,
    /// Per CPU: page-table pages it was let write (see [`MmuModel::open_write_window`]).
    windows: Vec<Vec<WriteWindow>>,
    /// Whether checks (findings, barrier tracking) are on.
    checks: bool,
    pub findings: Findings,
    pub stats: MmuStats,
    symbolize: Box<dyn Fn(u64) -> String>,
    /// Descriptor changes not yet taken by the recorder (`None`: not recording).
    pt_write_log: Option<Vec<PtWrite>>,
}

fn where_(pc: u64, symbolize: &dyn Fn(u64) -> String) -> String {
    symbolize(pc)
}

impl MmuModel {
    pub fn new(cpus: usize, checks: bool, symbolize: Box<dyn Fn(u64) -> String>) -> Self {
        Self {
            tlbs: vec![HashMap::new(); cpus],
            users: HashMap::new(),
            pt_pages: HashMap::new(),
            broken: HashMap::new(),
            barriers: vec![BarrierState::default(); cpus],
            new_pt_pages: Vec::new(),
            need_flush: vec![false; cpus],
            freed: HashMap::new(),
            windows: (0..cpus).map(|_| Vec::new()).collect(),
            checks,
            findings: Findings::default(),
            stats: MmuStats {
                tlb_fills: vec![0; cpus],
                ..MmuStats::default()
            },
            symbolize,
            pt_write_log: None,
        }
    }

    /// From now on, keep every descriptor change (each one the stats count) for
    /// [`MmuModel::take_pt_writes`].
    pub fn record_pt_writes(&mut self) {
        self.pt_write_log.get_or_insert_with(Vec::new);
    }

    /// The descriptor changes found since the last call, in the order found.
    pub fn take_pt_writes(&mut self) -> Vec<PtWrite> {
        self.pt_write_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
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

    pub fn checks(&self) -> bool {
        self.checks
    }

    /// The translation `cpu` holds for the page of `va`, if any.
    pub fn held(&self, cpu: usize, va: u64) -> Option<&HeldEntry> {
        self.tlbs[cpu].get(&(va & PAGE_MASK))
    }

    pub fn is_page_table(&self, pa: u64) -> bool {
        self.pt_pages.contains_key(&(pa & PAGE_MASK))
    }

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
    pub fn take_flush(&mut self, cpu: usize) -> bool {
        let flush = std::mem::replace(&mut self.need_flush[cpu], false);
        if flush {
            for e in self.tlbs[cpu].values_mut() {
                if e.stale.is_some() && e.stale_report == StaleReport::Waiting {
                    e.stale_report = StaleReport::Armed;
                }
            }
        }
        flush
    }

    fn add_pt_page(&mut self, page: u64, level: u8, va_base: u64) {
        let info = PtPage { level, va_base };
        if self.pt_pages.insert(page, info) != Some(info) {
            self.new_pt_pages.push(page);
            self.stats.pt_pages = self.pt_pages.len() as u64;
            // Any CPU may hold write permission to the page: take it away.
            self.need_flush.iter_mut().for_each(|f| *f = true);
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
    /// page-table writes (in address order, attributed to the window's first store).
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
    fn note_tables(&mut self, mem: &dyn GuestMemory, regs: &TranslationRegs, va: u64) {
        let Ok((root, start, input_bits)) = mmu::walk_start(regs, va) else {
            return;
        };
        let upper = (va >> 55) & 1 == 1;
        let span_mask = if input_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << input_bits) - 1
        };
        let root_base = if upper { !span_mask } else { 0 };
        if !self.pt_pages.contains_key(&root) {
            self.add_pt_page(root, start, root_base);
        }
        let mut table = root;
        for level in start..3 {
            let shift = mmu::level_shift(level);
            let index = (va >> shift) & 511 & (span_mask >> shift);
            let Ok(desc) = mem.read_u64(table + 8 * index) else {
                return;
            };
            match Descriptor::decode(desc, level) {
                Descriptor::Table(next) => {
                    if !self.pt_pages.contains_key(&next) {
                        self.add_pt_page(next, level + 1, va & !((1u64 << shift) - 1));
                    }
                    table = next;
                }
                _ => return,
            }
        }
    }

    /// Answers a soft-TLB miss of `at.cpu` for `va`. `guest` is false for the host's
    /// own reads through a core's MMU (nothing is recorded then).
    pub fn fill(
        &mut self,
        mem: &dyn GuestMemory,
        regs: &TranslationRegs,
        va: u64,
        access: Access,
        at: At,
        guest: bool,
    ) -> FillAnswer {
        let va = va & PAGE_MASK;
        if !regs.mmu_on() {
            return FillAnswer::Map {
                pa: va,
                write: true,
                exec: true,
            };
        }
        let cpu = at.cpu;
        // Open write windows are compared at the CPU's next TLBI, barrier, free_pages or
        // slice end, never here: fills come at host-dependent moments.
        if let Some(e) = self.tlbs[cpu].get_mut(&va) {
            let answer = if e.allows(access) {
                FillAnswer::Map {
                    pa: e.pa,
                    write: e.write,
                    exec: e.exec,
                }
            } else {
                FillAnswer::Fault(Fault {
                    status: mmu::PERMISSION_FAULT + e.level as u64,
                    level: e.level,
                })
            };
            if guest {
                // A refused access faults, so every one comes back here: countable.
                self.stats.faults += matches!(answer, FillAnswer::Fault(_)) as u64;
                if let (Some(since), StaleReport::Armed) = (e.stale, e.stale_report) {
                    e.stale_report = StaleReport::Reported;
                    let e = e.clone();
                    self.report_stale_access(mem, regs, va, access, at, &e, since);
                }
            }
            return answer;
        }
        let walked = mmu::walk_any(mem, regs, va);
        if !guest {
            return match walked {
                Ok(t) if t.allows(access) => FillAnswer::Map {
                    pa: t.pa,
                    write: t.write,
                    exec: t.exec,
                },
                Ok(t) => FillAnswer::Fault(Fault {
                    status: mmu::PERMISSION_FAULT + t.level as u64,
                    level: t.level,
                }),
                Err(f) => FillAnswer::Fault(f),
            };
        }
        self.note_tables(mem, regs, va);
        let t = match walked {
            Ok(t) => t,
            Err(f) => {
                self.stats.faults += 1;
                return FillAnswer::Fault(f);
            }
        };
        let mut descs = [0u64; 4];
        descs[..t.n_tables as usize].copy_from_slice(&t.tables[..t.n_tables as usize]);
        descs[t.n_tables as usize] = t.leaf;
        let entry = HeldEntry {
            pa: t.pa,
            level: t.level,
            write: t.write,
            exec: t.exec,
            global: t.global,
            asid: (regs.ttbr0 >> 48) as u16,
            descs,
            n_descs: t.n_tables + 1,
            filled_at: at.time,
            stale: None,
            stale_report: StaleReport::Waiting,
        };
        for &d in &descs[..entry.n_descs as usize] {
            self.users.entry(d).or_default().push((cpu, va));
        }
        self.tlbs[cpu].insert(va, entry);
        self.stats.tlb_fills[cpu] += 1;
        if t.allows(access) {
            FillAnswer::Map {
                pa: t.pa,
                write: t.write,
                exec: t.exec,
            }
        } else {
            self.stats.faults += 1;
            FillAnswer::Fault(Fault {
                status: mmu::PERMISSION_FAULT + t.level as u64,
                level: t.level,
            })
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report_stale_access(
        &mut self,
        mem: &dyn GuestMemory,
        regs: &TranslationRegs,
        va: u64,
        access: Access,
        at: At,
        e: &HeldEntry,
        since: StaleSince,
    ) {
        self.stats.stale_accesses += 1;
        if !self.checks {
            return;
        }
        let now = match mmu::walk_any(mem, regs, va) {
            Ok(t) => format!("now map it to {:#x}", t.pa),
            Err(f) => format!("now give a fault (status {:#x})", f.status),
        };
        let sym = &self.symbolize;
        let details = vec![
            format!(
                "cpu{} {:?} of va {va:#x} at {} used the cached translation to pa {:#x}",
                at.cpu,
                access,
                where_(at.pc, sym),
                e.pa
            ),
            format!("the page tables {now}"),
            format!(
                "changed by cpu{} at {} (time {}), not invalidated on cpu{} since",
                since.cpu,
                where_(since.pc, sym),
                since.time,
                at.cpu
            ),
            format!("translation filled at time {}", e.filled_at),
        ];
        self.findings.report(Finding {
            kind: FindingKind::StaleTlb,
            title: format!("access through a stale TLB entry for va {va:#x}"),
            // One finding per code path: the access and the change it missed.
            key: format!("access {:#x} change {:#x}", at.pc, since.pc),
            details,
            cpu: Some(at.cpu as u32),
            time: Some(at.time),
        });
    }

    fn finding(
        &mut self,
        kind: FindingKind,
        title: String,
        key: String,
        details: Vec<String>,
        at: At,
    ) {
        self.findings.report(Finding {
            kind,
            title,
            key,
            details,
            cpu: Some(at.cpu as u32),
            time: Some(at.time),
        });
    }

    /// A store of `size` bytes of `value` at physical `addr`, which lies in a page
    /// table page; called before the store lands (`mem` still has the old bytes).
    /// Returns whether the storing CPU must stop soon (its Unicorn TLB or hooks need
    /// updating before it goes on).
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
            let mut stop = false;
            let bytes = value.to_le_bytes();
            let first = 8 - offset;
            stop |= self.pt_write(mem, addr, first, value, at);
            let mut rest = [0u8; 8];
            rest[..size - first].copy_from_slice(&bytes[first..size]);
            stop |= self.pt_write(
                mem,
                desc_addr + 8,
                size - first,
                u64::from_le_bytes(rest),
                at,
            );
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
        let va = page
            .va_base
            .wrapping_add(((desc_addr & (PAGE_SIZE - 1)) / 8) << shift);
        let (od, nd) = (
            Descriptor::decode(old, level),
            Descriptor::decode(new, level),
        );
        let mut stop = false;
        match (od.is_valid(), nd.is_valid()) {
            (true, false) => self.stats.pt_writes_valid_to_invalid += 1,
            (false, true) => self.stats.pt_writes_invalid_to_valid += 1,
            (true, true) => self.stats.pt_writes_valid_to_valid += 1,
            (false, false) => self.stats.pt_writes_other += 1,
        }
        if let Some(log) = &mut self.pt_write_log {
            log.push(PtWrite {
                desc_pa: desc_addr,
                old,
                new,
                store: at,
            });
        }
        if self.checks {
            let pending = &mut self.barriers[at.cpu].pending_tlbi;
            if let Some(tlbi) = pending.filter(|t| t.targets(va, shift)) {
                *pending = None;
                self.missing_completion(tlbi.pc, "a page-table store", at);
            }
            self.barriers[at.cpu].unordered_store = Some((at.pc, false));
        }
        // What the change does to translations held through this descriptor.
        let translation_changed = match (od, nd) {
            (Descriptor::Invalid, _) => false,
            (Descriptor::Leaf { .. }, Descriptor::Leaf { .. }) => {
                // Output, level or permissions/attributes (not AF or software bits).
                let relevant = !((1u64 << 10) | (0xfu64 << 55));
                od != nd || (old ^ new) & relevant != 0
            }
            _ => od != nd,
        };
        if translation_changed {
            stop |= self.mark_stale(desc_addr, at);
        }
        if self.checks {
            self.check_remap(desc_addr, od, nd, va, shift, at);
        }
        if let Descriptor::Table(next) = nd {
            if level < 3
                && self.pt_pages.get(&next)
                    != Some(&PtPage {
                        level: level + 1,
                        va_base: va,
                    })
            {
                self.add_pt_page(next, level + 1, va);
                stop = true;
            }
        }
        stop
    }

    /// Marks every held translation that went through `desc` stale; returns whether
    /// the storing CPU holds one (it must stop to flush its Unicorn TLB).
    fn mark_stale(&mut self, desc: u64, at: At) -> bool {
        let Some(users) = self.users.get_mut(&desc) else {
            return false;
        };
        let mut stop = false;
        let mut kept = Vec::with_capacity(users.len());
        for &(cpu, va) in users.iter() {
            if let Some(e) = self.tlbs[cpu].get_mut(&va) {
                if e.uses(desc) {
                    kept.push((cpu, va));
                    if e.stale.is_none() {
                        e.stale = Some(StaleSince {
                            time: at.time,
                            cpu: at.cpu,
                            pc: at.pc,
                        });
                        self.need_flush[cpu] = true;
                        stop |= cpu == at.cpu;
                    }
                }
            }
        }
        kept.sort_unstable();
        kept.dedup();
        *users = kept;
        stop
    }

    fn holders(&self, desc: u64) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        if let Some(users) = self.users.get(&desc) {
            for &(cpu, va) in users {
                if let Some(e) = self.tlbs[cpu].get(&va) {
                    if e.uses(desc) {
                        out.push((cpu, va, e.pa));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn check_remap(
        &mut self,
        desc: u64,
        od: Descriptor,
        nd: Descriptor,
        va: u64,
        shift: u32,
        at: At,
    ) {
        let sym = &self.symbolize;
        let here = where_(at.pc, sym);
        match (od.is_valid(), nd.is_valid()) {
            (true, true) if od != nd => {
                self.finding(
                    FindingKind::BreakBeforeMake,
                    format!("live descriptor for va {va:#x} changed without break-before-make"),
                    format!("bbm {:#x}", at.pc),
                    vec![
                        format!("cpu{} at {here} replaced {od} by {nd}", at.cpu),
                        format!("descriptor at pa {desc:#x}; it was never made invalid and flushed in between"),
                    ],
                    at,
                );
            }
            (true, false) => {
                self.broken.insert(
                    desc,
                    Broken {
                        old: od,
                        va,
                        shift,
                        flushed: false,
                    },
                );
            }
            (false, true) => {
                let holders = self.holders(desc);
                let broken = self.broken.remove(&desc);
                if !holders.is_empty() {
                    let mut details = vec![format!(
                        "cpu{} at {here} mapped va {va:#x} again ({nd})",
                        at.cpu
                    )];
                    for (cpu, hva, pa) in &holders {
                        details.push(format!(
                            "cpu{cpu} still holds va {hva:#x} -> pa {pa:#x} from the old mapping (no TLBI on it since)"
                        ));
                    }
                    self.finding(
                        FindingKind::MissingTlbFlush,
                        format!("va {va:#x} mapped again while a TLB still holds the old mapping"),
                        format!("remap {:#x}", at.pc),
                        details,
                        at,
                    );
                } else if let Some(b) = broken {
                    if !b.flushed && b.old != nd {
                        self.finding(
                            FindingKind::BreakBeforeMake,
                            format!("va {va:#x} remapped without a TLBI after the break"),
                            format!("bbm {:#x}", at.pc),
                            vec![
                                format!("cpu{} at {here} replaced {} by {nd}", at.cpu, b.old),
                                format!("descriptor at pa {desc:#x} was made invalid but no TLBI covered va {:#x} since", b.va),
                            ],
                            at,
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn missing_completion(&mut self, tlbi_pc: u64, before: &str, at: At) {
        let here = where_(at.pc, &self.symbolize);
        let tlbi = where_(tlbi_pc, &self.symbolize);
        self.finding(
            FindingKind::MissingBarrier,
            "TLBI not completed by `dsb ish`".to_string(),
            format!("completion {tlbi_pc:#x}"),
            vec![format!(
                "cpu{}: the TLBI at {tlbi} reached {before} at {here} with no `dsb ish` in between",
                at.cpu
            )],
            at,
        );
    }

    /// A `tlbi` executed by `at.cpu` (before it takes effect on Unicorn).
    pub fn tlbi(&mut self, mem: &dyn GuestMemory, op: TlbiOp, broadcast: bool, at: At) {
        self.sync_windows(mem, at.cpu);
        *self
            .stats
            .tlbi_by_kind
            .entry(op.name(broadcast))
            .or_default() += 1;
        if broadcast {
            self.stats.broadcast_invalidations += 1;
        }
        if self.checks {
            let state = &mut self.barriers[at.cpu];
            if let Some((store_pc, nsh_ordered)) = state.unordered_store.take() {
                if broadcast || !nsh_ordered {
                    let store = where_(store_pc, &self.symbolize);
                    let here = where_(at.pc, &self.symbolize);
                    self.finding(
                        FindingKind::MissingBarrier,
                        "descriptor store not ordered before TLBI by `dsb ishst`".to_string(),
                        format!("store-before-tlbi {:#x}", at.pc),
                        vec![format!(
                            "cpu{}: page-table store at {store}, then TLBI at {here} with no `dsb ishst` in between",
                            at.cpu
                        )],
                        at,
                    );
                }
            }
            self.barriers[at.cpu].pending_tlbi = Some(PendingTlbi {
                pc: at.pc,
                broadcast,
                op,
            });
        }
        let cpus: Vec<usize> = if broadcast {
            (0..self.tlbs.len()).collect()
        } else {
            vec![at.cpu]
        };
        let mut removed_pas = Vec::new();
        for cpu in cpus {
            let tlb = &mut self.tlbs[cpu];
            match op {
                TlbiOp::All => {
                    removed_pas.extend(tlb.values().filter(|e| e.stale.is_some()).map(|e| e.pa));
                    tlb.clear();
                }
                TlbiOp::Asid(asid) => tlb.retain(|_, e| {
                    let drop = !e.global && e.asid == asid;
                    if drop && e.stale.is_some() {
                        removed_pas.push(e.pa);
                    }
                    !drop
                }),
                TlbiOp::Va { va, asid } => {
                    let page = va & PAGE_MASK;
                    let matches = |e: &HeldEntry| asid.is_none_or(|a| e.global || e.asid == a);
                    if tlb.get(&page).is_some_and(|e| e.level == 3 && matches(e)) {
                        let e = tlb.remove(&page).expect("present");
                        if e.stale.is_some() {
                            removed_pas.push(e.pa);
                        }
                    }
                    // Blocks: every page held from a block containing `va`.
                    if tlb.values().any(|e| e.level < 3) {
                        tlb.retain(|&k, e| {
                            let mask = !((1u64 << mmu::level_shift(e.level)) - 1);
                            let drop = e.level < 3 && k & mask == va & mask && matches(e);
                            if drop && e.stale.is_some() {
                                removed_pas.push(e.pa);
                            }
                            !drop
                        });
                    }
                }
            }
        }
        // Breaks this TLBI completes.
        for b in self.broken.values_mut() {
            let covered = match op {
                TlbiOp::All => true,
                TlbiOp::Va { va, .. } => {
                    let mask = !((1u64 << b.shift) - 1);
                    va & mask == b.va & mask
                }
                TlbiOp::Asid(_) => false,
            };
            b.flushed |= covered;
        }
        self.broken.retain(|_, b| !b.flushed);
        // Freed pages no longer reachable once no stale entry maps them.
        for pa in removed_pas {
            if let Some(&freed_at) = self.freed.get(&pa) {
                if !self
                    .tlbs
                    .iter()
                    .any(|t| t.values().any(|e| e.pa == pa && e.stale.is_some()))
                {
                    self.freed.remove(&pa);
                    let window = at.time.saturating_sub(freed_at);
                    self.stats.longest_reachable_window =
                        self.stats.longest_reachable_window.max(window);
                }
            }
        }
    }

    /// A `dsb` or `isb` executed by `at.cpu`.
    pub fn barrier(&mut self, mem: &dyn GuestMemory, barrier: Barrier, at: At) {
        if !self.checks {
            return;
        }
        self.sync_windows(mem, at.cpu);
        let state = &mut self.barriers[at.cpu];
        match barrier {
            Barrier::Dsb(crm) => {
                let (stores, full, shareable) = dsb_reach(crm);
                if stores {
                    if shareable {
                        state.unordered_store = None;
                    } else if let Some((_, nsh)) = &mut state.unordered_store {
                        *nsh = true;
                    }
                }
                if full {
                    if let Some(tlbi) = state.pending_tlbi {
                        if shareable || !tlbi.broadcast {
                            state.pending_tlbi = None;
                        }
                    }
                }
            }
            Barrier::Isb => {
                if let Some(tlbi) = state.pending_tlbi.take() {
                    self.missing_completion(tlbi.pc, "an `isb`", at);
                }
            }
        }
    }

    /// The guest freed physical pages `pa..pa + len`: count those a stale entry still
    /// reaches.
    pub fn pages_freed(&mut self, mem: &dyn GuestMemory, pa: u64, len: u64, at: At) {
        self.sync_windows(mem, at.cpu);
        let (start, end) = (pa & PAGE_MASK, pa.saturating_add(len));
        let mut reachable: Vec<u64> = self
            .tlbs
            .iter()
            .flat_map(|t| t.values())
            .filter(|e| e.stale.is_some() && e.pa >= start && e.pa < end)
            .map(|e| e.pa)
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

    const L1: u64 = RAM_BASE;
    const L2: u64 = RAM_BASE + 0x1000;
    const L3: u64 = RAM_BASE + 0x2000;
    const VA: u64 = 0x8000_0000;
    const PAGE_A: u64 = 0x4010_0000;
    const PAGE_B: u64 = 0x4010_1000;
    /// Valid page, AF, read-write.
    const PAGE: u64 = 0x403;

    fn setup(cpus: usize) -> (GuestRam, TranslationRegs, MmuModel) {
        let mut ram = GuestRam::new(RAM_BASE, 0x10_0000).unwrap();
        ram.write_u64(L1 + 8 * 2, L2 | 3).unwrap();
        ram.write_u64(L2, L3 | 3).unwrap();
        ram.write_u64(L3, PAGE_A | PAGE).unwrap();
        let regs = TranslationRegs {
            sctlr: 1,
            tcr: 25 | (1 << 23),
            ttbr0: L1,
            ttbr1: 0,
        };
        let model = MmuModel::new(cpus, true, Box::new(|pc| format!("{pc:#x}")));
        (ram, regs, model)
    }

    fn at(cpu: usize, time: u64) -> At {
        At {
            cpu,
            pc: 0x1000 + time,
            time,
        }
    }

    fn read(m: &mut MmuModel, ram: &GuestRam, regs: &TranslationRegs, cpu: usize) -> FillAnswer {
        m.fill(ram, regs, VA, Access::Read, at(cpu, 1), true)
    }

    /// Stores `new` to the descriptor of VA as the guest would (model told first).
    fn store(m: &mut MmuModel, ram: &mut GuestRam, new: u64, cpu: usize, time: u64) {
        m.pt_write(ram, L3, 8, new, at(cpu, time));
        ram.write_u64(L3, new).unwrap();
    }

    fn kinds(m: &MmuModel) -> Vec<FindingKind> {
        m.findings.as_slice().iter().map(|f| f.kind).collect()
    }

    const DSB_ISHST: Barrier = Barrier::Dsb(0b1010);
    const DSB_ISH: Barrier = Barrier::Dsb(0b1011);
    const VAAE1IS: TlbiOp = TlbiOp::Va { va: VA, asid: None };

    #[test]
    fn decodes_tlbi_and_barriers() {
        // tlbi vaae1is, x0 with VA 0xffff_ff80_0000_1000 (bits 55.. copied from 55).
        let xt = (0xffff_ff80_0000_1000u64 >> 12) & ((1 << 44) - 1);
        assert_eq!(
            TlbiOp::decode(0, 8, 3, 3, xt),
            Some((
                TlbiOp::Va {
                    va: 0xffff_ff80_0000_1000,
                    asid: None
                },
                true
            ))
        );
        assert_eq!(TlbiOp::decode(0, 8, 7, 0, 0), Some((TlbiOp::All, false)));
        assert_eq!(
            TlbiOp::decode(0, 8, 7, 1, (5 << 48) | 0x80000),
            Some((
                TlbiOp::Va {
                    va: 0x8000_0000,
                    asid: Some(5)
                },
                false
            ))
        );
        assert_eq!(TlbiOp::decode(0, 7, 5, 1, 0), None, "IC IVAU is not a TLBI");
        assert_eq!(Barrier::decode(0xd503_3a9f), Some(DSB_ISHST));
        assert_eq!(Barrier::decode(0xd503_3b9f), Some(DSB_ISH));
        assert_eq!(Barrier::decode(0xd503_3fdf), Some(Barrier::Isb));
        assert_eq!(Barrier::decode(0xd503_201f), None, "NOP");
    }

    #[test]
    fn fills_are_held_until_invalidated_even_when_the_tables_change() {
        let (mut ram, regs, mut m) = setup(2);
        let mapped_a = FillAnswer::Map {
            pa: PAGE_A,
            write: true,
            exec: true,
        };
        assert_eq!(read(&mut m, &ram, &regs, 0), mapped_a);
        assert_eq!(m.stats.tlb_fills, vec![1, 0]);
        assert!(m.is_page_table(L3) && m.is_page_table(L1));
        // New page tables: every CPU must drop what write permission it had to them.
        assert!(m.take_flush(0) && m.take_flush(1));
        // Break (with the barrier), no TLBI yet: CPU 0 still uses A; CPU 1 walks.
        store(&mut m, &mut ram, 0, 0, 2);
        assert!(m.take_flush(0), "CPU 0's Unicorn TLB must go");
        assert!(!m.take_flush(1), "CPU 1 held nothing");
        assert_eq!(read(&mut m, &ram, &regs, 0), mapped_a);
        assert_eq!(kinds(&m), vec![FindingKind::StaleTlb]);
        assert!(
            matches!(read(&mut m, &ram, &regs, 1), FillAnswer::Fault(f) if f.status == 0b00_0111)
        );
        // A broadcast TLBI removes it everywhere; the refill walks the new tables.
        m.barrier(&ram, DSB_ISHST, at(0, 3));
        m.tlbi(&ram, VAAE1IS, true, at(0, 4));
        m.barrier(&ram, DSB_ISH, at(0, 5));
        assert!(m.held(0, VA).is_none());
        assert!(matches!(read(&mut m, &ram, &regs, 0), FillAnswer::Fault(_)));
        assert_eq!(m.stats.tlbi_by_kind.get("vaae1is"), Some(&1));
        assert_eq!(m.stats.broadcast_invalidations, 1);
        assert_eq!(kinds(&m), vec![FindingKind::StaleTlb], "nothing else");
    }

    #[test]
    fn a_local_tlbi_leaves_the_other_cores_entries() {
        let (mut ram, regs, mut m) = setup(2);
        read(&mut m, &ram, &regs, 0);
        read(&mut m, &ram, &regs, 1);
        store(&mut m, &mut ram, 0, 0, 2);
        m.barrier(&ram, DSB_ISHST, at(0, 3));
        m.tlbi(&ram, TlbiOp::Va { va: VA, asid: None }, false, at(0, 4));
        assert!(m.held(0, VA).is_none());
        m.barrier(&ram, Barrier::Dsb(0b0111), at(0, 4)); // dsb nsh: enough for a local TLBI
        assert!(m.held(1, VA).is_some_and(|e| e.stale.is_some()));
        // Mapping it again while CPU 1 holds the old translation.
        store(&mut m, &mut ram, PAGE_B | PAGE, 0, 5);
        assert_eq!(kinds(&m), vec![FindingKind::MissingTlbFlush]);
    }

    /// The leaf's nG bit: the translation belongs to the ASID it was filled under.
    const NOT_GLOBAL: u64 = 1 << 11;

    /// A model whose CPU 0 holds VA, filled under `asid` from a leaf that is global or
    /// not.
    fn held_under_asid(asid: u16, global: bool) -> (GuestRam, MmuModel) {
        let (mut ram, mut regs, mut m) = setup(1);
        let leaf = PAGE_A | PAGE | if global { 0 } else { NOT_GLOBAL };
        ram.write_u64(L3, leaf).unwrap();
        regs.ttbr0 = L1 | (u64::from(asid) << 48);
        read(&mut m, &ram, &regs, 0);
        let held = m.held(0, VA).expect("filled");
        assert_eq!((held.asid, held.global), (asid, global));
        (ram, m)
    }

    /// TLBI by VA with an ASID (VAE1) removes the entries of that ASID and global
    /// ones, never another ASID's non-global entry; VAAE1 ignores ASIDs; ASIDE1 removes
    /// only non-global entries of its ASID; VMALLE1 removes everything.
    #[test]
    fn tlbi_scope_follows_asid_and_global_bit() {
        let va_with = |asid| TlbiOp::Va {
            va: VA,
            asid: Some(asid),
        };
        let cases: [(bool, TlbiOp, bool); 9] = [
            // (leaf global, TLBI, entry survives)
            (false, va_with(6), true),
            (false, va_with(5), false),
            (true, va_with(6), false),
            (false, VAAE1IS, false),
            (false, TlbiOp::Asid(6), true),
            (false, TlbiOp::Asid(5), false),
            (true, TlbiOp::Asid(5), true),
            (true, TlbiOp::All, false),
            (
                false,
                TlbiOp::Va {
                    va: VA + PAGE_SIZE,
                    asid: None,
                },
                true,
            ),
        ];
        for (global, op, survives) in cases {
            for broadcast in [false, true] {
                let (ram, mut m) = held_under_asid(5, global);
                m.tlbi(&ram, op, broadcast, at(0, 2));
                assert_eq!(
                    m.held(0, VA).is_some(),
                    survives,
                    "global {global}, {op:?}, broadcast {broadcast}"
                );
            }
        }
    }

    /// A broadcast TLBI reaches every CPU's entries, a local one only its own CPU's.
    #[test]
    fn tlbi_reach_is_the_issuing_cpu_or_all() {
        for broadcast in [false, true] {
            let (ram, regs, mut m) = setup(3);
            for cpu in 0..3 {
                read(&mut m, &ram, &regs, cpu);
            }
            m.tlbi(&ram, VAAE1IS, broadcast, at(1, 2));
            let held: Vec<bool> = (0..3).map(|cpu| m.held(cpu, VA).is_some()).collect();
            let expected = if broadcast {
                vec![false, false, false]
            } else {
                vec![true, false, true]
            };
            assert_eq!(held, expected, "broadcast {broadcast}");
        }
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
            (1 << 10, false), // AF: clearing it only makes the next walk fault
            (1 << 55, false), // software bit
        ] {
            let (mut ram, regs, mut m) = setup(1);
            read(&mut m, &ram, &regs, 0);
            store(&mut m, &mut ram, (PAGE_A | PAGE) ^ change, 0, 2);
            assert_eq!(
                m.held(0, VA).expect("still held").stale.is_some(),
                stale,
                "bits {change:#x}"
            );
        }
    }

    /// A break (valid → invalid) is completed by a TLBI of its own VA, and only that:
    /// making the descriptor valid again after a TLBI of another page is still a
    /// break-before-make violation.
    #[test]
    fn a_break_is_completed_only_by_a_tlbi_of_its_address() {
        for (tlbi_va, complete) in [(VA, true), (VA + PAGE_SIZE, false), (VA + (1 << 21), false)] {
            let (mut ram, _, mut m) = setup(1);
            m.add_pt_page(L3, 3, VA);
            store(&mut m, &mut ram, 0, 0, 2);
            m.barrier(&ram, DSB_ISHST, at(0, 3));
            let op = TlbiOp::Va {
                va: tlbi_va,
                asid: None,
            };
            m.tlbi(&ram, op, true, at(0, 4));
            m.barrier(&ram, DSB_ISH, at(0, 5));
            store(&mut m, &mut ram, PAGE_B | PAGE, 0, 6);
            let expected = if complete {
                vec![]
            } else {
                vec![FindingKind::BreakBeforeMake]
            };
            assert_eq!(kinds(&m), expected, "TLBI of {tlbi_va:#x}");
        }
    }

    /// A stale entry is reported once, on the first access after its CPU's Unicorn
    /// TLB was flushed; refills before that flush (host timing) and after the report
    /// change nothing.
    #[test]
    fn a_stale_entry_is_reported_once_after_its_cpus_flush() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        m.take_flush(0);
        store(&mut m, &mut ram, 0, 0, 2);
        // A refill before the machine flushed: Unicorn may or may not ask, so no report.
        read(&mut m, &ram, &regs, 0);
        assert_eq!(kinds(&m), vec![]);
        assert_eq!(m.stats.stale_accesses, 0);
        assert!(m.take_flush(0));
        for _ in 0..3 {
            read(&mut m, &ram, &regs, 0);
        }
        assert_eq!(kinds(&m), vec![FindingKind::StaleTlb]);
        assert_eq!(m.stats.stale_accesses, 1);
    }

    /// A page-table store before a pending TLBI is completed is a missing barrier only
    /// when it changes the translation the TLBI targets: an IRQ handler may map other
    /// pages between a TLBI and its `dsb ish`.
    #[test]
    fn only_a_store_to_the_invalidated_translation_needs_the_tlbi_completed() {
        for (store_at, finding) in [(L3 + 8, false), (L3, true)] {
            let (mut ram, regs, mut m) = setup(1);
            read(&mut m, &ram, &regs, 0);
            m.barrier(&ram, DSB_ISHST, at(0, 2));
            m.tlbi(&ram, VAAE1IS, true, at(0, 3));
            m.pt_write(&ram, store_at, 8, PAGE_B | PAGE, at(0, 4));
            ram.write_u64(store_at, PAGE_B | PAGE).unwrap();
            let missing = kinds(&m).contains(&FindingKind::MissingBarrier);
            assert_eq!(missing, finding, "store to {store_at:#x}");
        }
    }

    #[test]
    fn break_before_make_is_checked_both_ways() {
        // Straight from A to B.
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, PAGE_B | PAGE, 0, 2);
        assert_eq!(kinds(&m), vec![FindingKind::BreakBeforeMake]);
        // Through invalid but with no TLBI in between (and no TLB holding A).
        let (mut ram, _, mut m) = setup(1);
        m.add_pt_page(L3, 3, 0x8000_0000);
        store(&mut m, &mut ram, 0, 0, 2);
        store(&mut m, &mut ram, PAGE_B | PAGE, 0, 3);
        assert_eq!(kinds(&m), vec![FindingKind::BreakBeforeMake]);
        // The same with the TLBI: clean; and a permission-only change is not a remap.
        let (mut ram, _, mut m) = setup(1);
        m.add_pt_page(L3, 3, 0x8000_0000);
        store(&mut m, &mut ram, 0, 0, 2);
        m.barrier(&ram, DSB_ISHST, at(0, 3));
        m.tlbi(&ram, VAAE1IS, true, at(0, 4));
        m.barrier(&ram, DSB_ISH, at(0, 5));
        store(&mut m, &mut ram, PAGE_B | PAGE, 0, 6);
        store(&mut m, &mut ram, PAGE_B | PAGE | 0x80, 0, 7);
        assert_eq!(kinds(&m), vec![]);
        assert_eq!(m.stats.pt_writes_valid_to_invalid, 1);
        assert_eq!(m.stats.pt_writes_invalid_to_valid, 1);
        assert_eq!(m.stats.pt_writes_valid_to_valid, 1);
    }

    #[test]
    fn barriers_must_order_the_store_and_complete_the_tlbi() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 2);
        m.tlbi(&ram, VAAE1IS, true, at(0, 3)); // no dsb ishst before
        m.barrier(&ram, Barrier::Isb, at(0, 4)); // no dsb ish before
        let titles: Vec<_> = m
            .findings
            .as_slice()
            .iter()
            .map(|f| (f.kind, f.key.clone()))
            .collect();
        assert_eq!(
            titles,
            vec![
                (
                    FindingKind::MissingBarrier,
                    format!("store-before-tlbi {:#x}", 0x1003)
                ),
                (
                    FindingKind::MissingBarrier,
                    format!("completion {:#x}", 0x1003)
                ),
            ]
        );
        // A local TLBI needs only non-shareable barriers.
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 2);
        m.barrier(&ram, Barrier::Dsb(0b0110), at(0, 3)); // dsb nshst
        m.tlbi(&ram, TlbiOp::All, false, at(0, 4));
        m.barrier(&ram, Barrier::Dsb(0b0111), at(0, 5)); // dsb nsh
        m.barrier(&ram, Barrier::Isb, at(0, 6));
        assert_eq!(kinds(&m), vec![]);
    }

    #[test]
    fn write_windows_turn_stores_into_descriptor_changes() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        m.open_write_window(&ram, L3, at(0, 2));
        ram.write_u64(L3, 0).unwrap();
        m.sync_windows(&ram, 0);
        assert_eq!(m.stats.pt_writes_valid_to_invalid, 1);
        ram.write_u64(L3, PAGE_A | PAGE).unwrap();
        assert!(m.close_windows(&ram, 0));
        assert_eq!(m.stats.pt_writes_invalid_to_valid, 1);
        assert!(!m.close_windows(&ram, 0));
    }

    #[test]
    fn descriptor_changes_are_kept_for_the_recorder_only_when_asked() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 2);
        assert_eq!(m.take_pt_writes(), vec![]);
        m.record_pt_writes();
        m.open_write_window(&ram, L3, at(0, 3));
        ram.write_u64(L3, PAGE_B | PAGE).unwrap();
        // An unchanged descriptor is not a write.
        ram.write_u64(L3 + 8, 0).unwrap();
        assert!(m.close_windows(&ram, 0));
        assert_eq!(
            m.take_pt_writes(),
            vec![PtWrite {
                desc_pa: L3,
                old: 0,
                new: PAGE_B | PAGE,
                store: at(0, 3),
            }]
        );
        assert_eq!(m.take_pt_writes(), vec![]);
        assert_eq!(
            m.stats.pt_writes_valid_to_invalid + m.stats.pt_writes_invalid_to_valid,
            2
        );
    }

    #[test]
    fn freed_pages_reachable_through_stale_entries_are_counted() {
        let (mut ram, regs, mut m) = setup(1);
        read(&mut m, &ram, &regs, 0);
        store(&mut m, &mut ram, 0, 0, 2);
        m.pages_freed(&ram, PAGE_A, 4096, at(0, 10));
        m.pages_freed(&ram, PAGE_B, 4096, at(0, 11));
        assert_eq!(m.stats.freed_while_reachable, 1);
        m.barrier(&ram, DSB_ISHST, at(0, 50));
        m.tlbi(&ram, TlbiOp::All, true, at(0, 110));
        assert_eq!(m.stats.longest_reachable_window, 100);
    }
}
