//! Which translations each CPU's TLB holds: entered by a walk, kept (however the
//! tables change) until a TLBI that reaches them, marked stale when a descriptor
//! they went through changes.

use crate::fx::FxHashMap;

use crate::aarch64::{level_shift, TlbiScope, PAGE_MASK, PAGE_SIZE};
use crate::event::TlbFill;

/// When, where and by whom a held translation was made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSince {
    /// The virtual time of the store that made it stale.
    pub time: u64,
    /// The CPU that made it.
    pub cpu: usize,
    /// The storing instruction.
    pub pc: u64,
}

/// One translation a CPU holds, with `T`: what its owner keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry<T = ()> {
    /// The translation, as the walk gave it.
    pub fill: TlbFill,
    /// The virtual time it was filled.
    pub filled_at: u64,
    /// Set when the tables stopped giving this translation.
    pub stale: Option<StaleSince>,
    /// What the owner keeps beside it.
    pub tag: T,
}

impl<T> HeldEntry<T> {
    fn uses(&self, desc: u64) -> bool {
        self.fill.descriptors().contains(&desc)
    }

    /// Whether a TLBI of `scope` removes this entry (held for page `va`).
    fn invalidated_by(&self, va: u64, scope: TlbiScope) -> bool {
        let fill = &self.fill;
        match scope {
            TlbiScope::All => true,
            TlbiScope::Asid(asid) => !fill.global && fill.asid == asid,
            TlbiScope::Range { asid, .. } => {
                let of_asid = asid.is_none_or(|a| !fill.global && fill.asid == a);
                of_asid && scope.covers(va, level_shift(fill.level))
            }
            TlbiScope::Va { va: tlbi_va, asid } => {
                let of_asid = asid.is_none_or(|a| fill.global || fill.asid == a);
                // A block is held page by page: a TLBI anywhere in it removes them all.
                let mask = !((1u64 << level_shift(fill.level)) - 1);
                of_asid && va & mask == tlbi_va & mask
            }
        }
    }
}

/// Every CPU's held translations, by page (a page may be held once globally and once
/// per ASID), and which entries went through each descriptor (to mark them stale
/// when it changes).
#[derive(Debug, Clone)]
pub struct HeldTlbs<T = ()> {
    tlbs: Vec<FxHashMap<u64, Vec<HeldEntry<T>>>>,
    /// Per CPU: how many block entries it holds in each block, by (block size
    /// shift, block base). A TLBI of one page reaches every entry of a block that
    /// holds the page, and only this says, without a scan, whether there is one.
    blocks: Vec<FxHashMap<(u32, u64), u32>>,
    /// How many held entries are stale, over all CPUs.
    stale_entries: usize,
    /// Physical page → (CPU, page) of each entry that translates to it, once per
    /// entry: what a free of the page may leave reachable.
    frames: FxHashMap<u64, Vec<(usize, u64)>>,
    /// Descriptor address → (CPU, page) entries that used it (possibly outdated:
    /// checked against the entries).
    users: FxHashMap<u64, Vec<(usize, u64)>>,
}

impl<T> Default for HeldTlbs<T> {
    fn default() -> Self {
        Self {
            tlbs: Vec::new(),
            blocks: Vec::new(),
            stale_entries: 0,
            frames: FxHashMap::default(),
            users: FxHashMap::default(),
        }
    }
}

/// The block a block entry's translation belongs to: (size shift, base); `None`
/// for a page.
fn block_of(fill: &TlbFill) -> Option<(u32, u64)> {
    (fill.level < 3).then(|| {
        let shift = level_shift(fill.level);
        (shift, fill.va & !((1u64 << shift) - 1))
    })
}

/// The entry of a page that answers an access under `asid`: its own before a global
/// one, as a global entry is what the page holds for every ASID. `None` (a trace that
/// did not say): the global entry, else the first entered.
fn position<T>(entries: &[HeldEntry<T>], asid: Option<u16>) -> Option<usize> {
    let global = || entries.iter().position(|e| e.fill.global);
    match asid {
        Some(a) => entries
            .iter()
            .position(|e| !e.fill.global && e.fill.asid == a)
            .or_else(global),
        None => global().or((!entries.is_empty()).then_some(0)),
    }
}

impl<T> HeldTlbs<T> {
    /// Empty TLBs for `cpus` CPUs.
    pub fn new(cpus: usize) -> Self {
        let mut held = Self::default();
        held.tlbs.resize_with(cpus, FxHashMap::default);
        held.blocks.resize_with(cpus, FxHashMap::default);
        held
    }

    fn cpu_mut(&mut self, cpu: usize) -> &mut FxHashMap<u64, Vec<HeldEntry<T>>> {
        if self.tlbs.len() <= cpu {
            self.tlbs.resize_with(cpu + 1, FxHashMap::default);
            self.blocks.resize_with(cpu + 1, FxHashMap::default);
        }
        &mut self.tlbs[cpu]
    }

    /// Enters (`held`) or removes the frame index's item for `cpu`'s entry `fill`.
    fn index_frame(
        frames: &mut FxHashMap<u64, Vec<(usize, u64)>>,
        cpu: usize,
        fill: &TlbFill,
        held: bool,
    ) {
        let (frame, item) = (fill.pa & PAGE_MASK, (cpu, fill.va & PAGE_MASK));
        if held {
            frames.entry(frame).or_default().push(item);
        } else if let Some(items) = frames.get_mut(&frame) {
            if let Some(i) = items.iter().position(|&x| x == item) {
                items.swap_remove(i);
            }
            if items.is_empty() {
                frames.remove(&frame);
            }
        }
    }

    /// Counts `fill` in or out of `cpu`'s blocks, if it is a block entry.
    fn count_block(blocks: &mut FxHashMap<(u32, u64), u32>, fill: &TlbFill, held: bool) {
        let Some(block) = block_of(fill) else {
            return;
        };
        if held {
            *blocks.entry(block).or_default() += 1;
        } else if let Some(n) = blocks.get_mut(&block) {
            *n -= 1;
            if *n == 0 {
                blocks.remove(&block);
            }
        }
    }

    /// The translation `cpu` holds for the page of `va` under `asid` (`None`: the
    /// global one, else the first held).
    pub fn get(&self, cpu: usize, va: u64, asid: Option<u16>) -> Option<&HeldEntry<T>> {
        let entries = self.tlbs.get(cpu)?.get(&(va & PAGE_MASK))?;
        position(entries, asid).map(|i| &entries[i])
    }

    /// [`Self::get`], to change.
    pub fn get_mut(&mut self, cpu: usize, va: u64, asid: Option<u16>) -> Option<&mut HeldEntry<T>> {
        let entries = self.tlbs.get_mut(cpu)?.get_mut(&(va & PAGE_MASK))?;
        position(entries, asid).map(move |i| &mut entries[i])
    }

    /// `cpu` entered `fill` at `time` (replacing what it held for the page under the
    /// same ASID, or globally).
    pub fn insert(&mut self, cpu: usize, fill: TlbFill, time: u64, tag: T) {
        let va = fill.va & PAGE_MASK;
        for &desc in fill.descriptors() {
            self.users.entry(desc).or_default().push((cpu, va));
        }
        let entry = HeldEntry {
            fill,
            filled_at: time,
            stale: None,
            tag,
        };
        let entries = self.cpu_mut(cpu).entry(va).or_default();
        let same = |e: &HeldEntry<T>| {
            e.fill.global == fill.global && (fill.global || e.fill.asid == fill.asid)
        };
        let replaced = match entries.iter().position(same) {
            Some(i) => Some(std::mem::replace(&mut entries[i], entry)),
            None => {
                entries.push(entry);
                None
            }
        };
        let blocks = &mut self.blocks[cpu];
        if let Some(old) = replaced {
            Self::count_block(blocks, &old.fill, false);
            Self::index_frame(&mut self.frames, cpu, &old.fill, false);
            self.stale_entries -= usize::from(old.stale.is_some());
        }
        Self::count_block(blocks, &fill, true);
        Self::index_frame(&mut self.frames, cpu, &fill, true);
    }

    /// Marks every held translation that went through descriptor `desc` stale (those
    /// already stale keep their first cause); returns the (CPU, page) of each page
    /// that got a newly stale entry, in order.
    pub fn mark_stale(&mut self, desc: u64, since: StaleSince) -> Vec<(usize, u64)> {
        let Some(users) = self.users.get_mut(&desc) else {
            return Vec::new();
        };
        let mut pages = Vec::new();
        let mut kept = Vec::with_capacity(users.len());
        for &(cpu, va) in users.iter() {
            let Some(entries) = self.tlbs[cpu].get_mut(&va) else {
                continue;
            };
            for entry in entries.iter_mut().filter(|e| e.uses(desc)) {
                kept.push((cpu, va));
                if entry.stale.is_none() {
                    entry.stale = Some(since);
                    self.stale_entries += 1;
                    pages.push((cpu, va));
                }
            }
        }
        kept.sort_unstable();
        kept.dedup();
        *users = kept;
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Whether some held translation was walked through a descriptor in page `page`.
    pub fn walked_through_page(&self, page: u64) -> bool {
        let page = page & PAGE_MASK;
        self.entries()
            .any(|(_, e)| e.fill.descriptors().iter().any(|d| d & PAGE_MASK == page))
    }

    /// The entries that went through descriptor `desc`: (CPU, page, physical page),
    /// in order.
    pub fn holders(&self, desc: u64) -> Vec<(usize, u64, u64)> {
        let mut out: Vec<_> = self
            .users
            .get(&desc)
            .into_iter()
            .flatten()
            .flat_map(|&(cpu, va)| {
                self.tlbs[cpu]
                    .get(&va)
                    .into_iter()
                    .flatten()
                    .filter(move |e| e.uses(desc))
                    .map(move |e| (cpu, va, e.fill.pa))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A TLBI of `scope` by `cpu`, `broadcast` to every CPU or local: removes the
    /// entries it reaches and returns them, ordered by CPU and page (a page's entries
    /// in the order they were entered).
    pub fn invalidate(
        &mut self,
        cpu: usize,
        broadcast: bool,
        scope: TlbiScope,
    ) -> Vec<(usize, HeldEntry<T>)> {
        let reached = if broadcast {
            0..self.tlbs.len()
        } else {
            cpu..(cpu + 1).min(self.tlbs.len())
        };
        let mut removed = Vec::new();
        for cpu in reached {
            let (tlb, blocks) = (&mut self.tlbs[cpu], &mut self.blocks[cpu]);
            let reaches = |page: u64, entries: &[HeldEntry<T>]| {
                entries.iter().any(|e| e.invalidated_by(page, scope))
            };
            let in_held_block = |va: u64| {
                blocks
                    .keys()
                    .any(|&(shift, base)| va & !((1u64 << shift) - 1) == base)
            };
            let mut pages: Vec<u64> = match scope {
                // One page, unless a held block holds it: then every page of the block.
                TlbiScope::Va { va, .. } if !in_held_block(va) => {
                    let page = va & PAGE_MASK;
                    tlb.get(&page)
                        .filter(|entries| reaches(page, entries))
                        .map(|_| page)
                        .into_iter()
                        .collect()
                }
                _ => tlb
                    .iter()
                    .filter(|(&page, entries)| reaches(page, entries))
                    .map(|(&page, _)| page)
                    .collect(),
            };
            pages.sort_unstable();
            for page in pages {
                let entries = tlb.get_mut(&page).expect("listed above");
                let mut i = 0;
                while i < entries.len() {
                    if entries[i].invalidated_by(page, scope) {
                        let entry = entries.remove(i);
                        Self::count_block(blocks, &entry.fill, false);
                        Self::index_frame(&mut self.frames, cpu, &entry.fill, false);
                        self.stale_entries -= usize::from(entry.stale.is_some());
                        removed.push((cpu, entry));
                    } else {
                        i += 1;
                    }
                }
                if entries.is_empty() {
                    tlb.remove(&page);
                }
            }
        }
        removed
    }

    /// Every held entry that translates to a physical address in `range`: (CPU,
    /// entry), in no particular order.
    pub fn entries_to(&self, range: std::ops::Range<u64>) -> Vec<(usize, &HeldEntry<T>)> {
        // A large range is cheaper to test against every entry.
        const LOOKUPS_MAX: u64 = 256;
        let first = range.start & PAGE_MASK;
        if range.end.saturating_sub(first) / PAGE_SIZE > LOOKUPS_MAX {
            return self
                .entries()
                .filter(|(_, e)| range.contains(&e.fill.pa))
                .collect();
        }
        let mut pages: Vec<(usize, u64)> = (first..range.end)
            .step_by(PAGE_SIZE as usize)
            .filter_map(|frame| self.frames.get(&frame))
            .flatten()
            .copied()
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
            .into_iter()
            .flat_map(|(cpu, va)| {
                self.tlbs[cpu]
                    .get(&va)
                    .into_iter()
                    .flatten()
                    .filter(|e| range.contains(&e.fill.pa))
                    .map(move |e| (cpu, e))
            })
            .collect()
    }

    /// Whether any CPU holds a stale entry.
    pub fn any_stale(&self) -> bool {
        self.stale_entries != 0
    }

    /// Every held entry: (CPU, entry), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &HeldEntry<T>)> {
        self.tlbs
            .iter()
            .enumerate()
            .flat_map(|(cpu, tlb)| tlb.values().flatten().map(move |e| (cpu, e)))
    }

    /// `cpu`'s held entries for the page of `va`, mutable, in the order entered.
    pub fn page_entries_mut(
        &mut self,
        cpu: usize,
        va: u64,
    ) -> impl Iterator<Item = &mut HeldEntry<T>> {
        self.tlbs
            .get_mut(cpu)
            .and_then(|t| t.get_mut(&(va & PAGE_MASK)))
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Perms;

    fn fill(va: u64) -> TlbFill {
        TlbFill {
            va,
            pa: 0x4010_0000,
            level: 3,
            write: true,
            exec: false,
            user: Perms::NONE,
            global: true,
            asid: 0,
            walk: [0x4000_2000, 0, 0, 0],
            walk_len: 1,
        }
    }

    /// RISC-V's range invalidations: the pages (and blocks) of the range, and with an
    /// ASID only that ASID's non-global entries.
    #[test]
    fn a_range_removes_the_entries_it_touches_of_its_asid() {
        const VA: u64 = 0x8000_0000;
        let range = |start, len, asid| TlbiScope::of_range(start, len, asid);
        let mut held: HeldTlbs = HeldTlbs::new(1);
        for va in [VA, VA + 4096, VA + 8192] {
            held.insert(0, fill(va), 0, ());
        }
        let removed = held.invalidate(0, false, range(VA, 8192, None));
        let pages: Vec<u64> = removed.iter().map(|(_, e)| e.fill.va).collect();
        assert_eq!(pages, vec![VA, VA + 4096]);
        assert!(held.get(0, VA + 8192, None).is_some());
        // One ASID's fence leaves global entries and other ASIDs' alone.
        let private = |asid| TlbFill {
            global: false,
            asid,
            ..fill(VA)
        };
        held.insert(0, private(1), 0, ());
        assert!(held
            .invalidate(0, false, range(VA, 4096, Some(2)))
            .is_empty());
        assert_eq!(held.invalidate(0, false, range(VA, 4096, Some(1))).len(), 1);
        // A block is reached by a range anywhere in it.
        let block = TlbFill {
            level: 2,
            ..fill(VA + 0x5000)
        };
        held.insert(0, block, 0, ());
        assert_eq!(held.invalidate(0, false, range(VA, 4096, None)).len(), 1);
    }

    /// A TLBI of one page reaches every page held of a block that holds it, and
    /// only that page otherwise, whatever else is held; a block's pages leave the
    /// block index with their entries, and stale entries are counted while held.
    #[test]
    fn a_page_tlbi_reaches_the_blocks_that_hold_the_page() {
        const RAM: u64 = 0x4000_0000;
        const MAPPED: u64 = 0x10_7000_0000;
        let va_any = |va| TlbiScope::Va { va, asid: None };
        let block = |va| TlbFill {
            level: 1,
            ..fill(va)
        };
        let mut held: HeldTlbs = HeldTlbs::new(2);
        for va in [RAM, RAM + 0x5000, RAM + 0x20_0000] {
            held.insert(0, block(va), 0, ());
        }
        for va in [MAPPED, MAPPED + 4096] {
            held.insert(0, fill(va), 0, ());
        }
        // A page outside every held block: that page alone.
        let removed = held.invalidate(0, false, va_any(MAPPED + 4096));
        assert_eq!(removed.len(), 1);
        assert!(held.get(0, MAPPED, None).is_some());
        // A page of the block, even one not held itself: the block's pages.
        let removed = held.invalidate(0, false, va_any(RAM + 0x3000_0000));
        let pages: Vec<u64> = removed.iter().map(|(_, e)| e.fill.va).collect();
        assert_eq!(pages, vec![RAM, RAM + 0x5000, RAM + 0x20_0000]);
        // The block is gone from the index: its pages held again as pages are
        // reached one by one.
        held.insert(0, fill(RAM), 0, ());
        held.insert(0, fill(RAM + 0x5000), 0, ());
        assert_eq!(held.invalidate(0, false, va_any(RAM + 0x5000)).len(), 1);
        assert!(held.get(0, RAM, None).is_some());
        // A block still held after one of its pages is entered again as a page:
        // a TLBI elsewhere in the block still reaches the other page.
        held.insert(1, block(RAM), 0, ());
        held.insert(1, block(RAM + 0x7000), 0, ());
        held.insert(1, fill(RAM), 1, ());
        let removed = held.invalidate(1, false, va_any(RAM + 0x100_0000));
        let pages: Vec<u64> = removed.iter().map(|(_, e)| e.fill.va).collect();
        assert_eq!(pages, vec![RAM + 0x7000]);
        assert!(
            held.get(1, RAM, None).is_some(),
            "a page entry, not the block's"
        );
        // Stale entries are counted while held, on any CPU.
        assert!(!held.any_stale());
        let since = StaleSince {
            time: 1,
            cpu: 1,
            pc: 0,
        };
        held.insert(1, fill(MAPPED), 0, ());
        let stale = held.mark_stale(0x4000_2000, since);
        assert_eq!(stale, vec![(0, RAM), (0, MAPPED), (1, RAM), (1, MAPPED)]);
        assert!(held.any_stale());
        held.insert(1, fill(MAPPED), 2, ());
        assert!(held.any_stale(), "CPU 0's entries are still stale");
        held.invalidate(0, true, TlbiScope::All);
        assert!(!held.any_stale());
    }

    /// The entries that translate into a physical range are those a scan of every
    /// entry finds, through fills, refills of a page elsewhere and invalidations.
    #[test]
    fn entries_to_a_range_are_found_as_a_scan_finds_them() {
        let at = |va: u64, pa: u64| TlbFill { pa, ..fill(va) };
        let scan = |held: &HeldTlbs, range: std::ops::Range<u64>| {
            let mut found: Vec<(usize, u64)> = held
                .entries()
                .filter(|(_, e)| range.contains(&e.fill.pa))
                .map(|(cpu, e)| (cpu, e.fill.va))
                .collect();
            found.sort_unstable();
            found
        };
        let indexed = |held: &HeldTlbs, range: std::ops::Range<u64>| {
            let mut found: Vec<(usize, u64)> = held
                .entries_to(range)
                .into_iter()
                .map(|(cpu, e)| (cpu, e.fill.va))
                .collect();
            found.sort_unstable();
            found
        };
        let mut held: HeldTlbs = HeldTlbs::new(2);
        const FRAME: u64 = 0x4010_0000;
        held.insert(0, at(0x8000_0000, FRAME), 0, ());
        held.insert(1, at(0x8000_0000, FRAME), 0, ());
        held.insert(0, at(0x8000_1000, FRAME + 0x1000), 0, ());
        held.insert(1, at(0x9000_0000, FRAME), 0, ());
        // Refilled elsewhere: no longer an entry of FRAME.
        held.insert(1, at(0x8000_0000, FRAME + 0x5000), 1, ());
        let ranges = [
            FRAME..FRAME + 0x1000,
            FRAME..FRAME + 0x2000,
            FRAME + 0x1000..FRAME + 0x6000,
            FRAME..FRAME + 0x1000_0000,
        ];
        for range in ranges.clone() {
            assert_eq!(
                indexed(&held, range.clone()),
                scan(&held, range.clone()),
                "{range:x?}"
            );
        }
        assert_eq!(
            indexed(&held, FRAME..FRAME + 0x1000),
            vec![(0, 0x8000_0000), (1, 0x9000_0000)]
        );
        held.invalidate(
            0,
            true,
            TlbiScope::Va {
                va: 0x8000_0000,
                asid: None,
            },
        );
        for range in ranges {
            assert_eq!(
                indexed(&held, range.clone()),
                scan(&held, range.clone()),
                "{range:x?}"
            );
        }
        assert_eq!(
            indexed(&held, FRAME..FRAME + 0x1000),
            vec![(1, 0x9000_0000)]
        );
    }

    /// A page is held once per ASID and once globally: an access finds its own ASID's
    /// entry, else the global one, never another ASID's; entering a page again
    /// replaces only the entry of the same ASID (or the global one).
    #[test]
    fn a_page_is_held_per_asid() {
        const VA: u64 = 0x40_0000;
        let mut held: HeldTlbs = HeldTlbs::new(1);
        let private = |asid, pa| TlbFill {
            global: false,
            asid,
            pa,
            ..fill(VA)
        };
        held.insert(0, private(1, 0x1000), 0, ());
        held.insert(0, private(2, 0x2000), 0, ());
        let pa = |held: &HeldTlbs, asid| held.get(0, VA, asid).map(|e| e.fill.pa);
        assert_eq!(pa(&held, Some(1)), Some(0x1000));
        assert_eq!(pa(&held, Some(2)), Some(0x2000));
        assert_eq!(
            pa(&held, Some(3)),
            None,
            "another ASID's entry never answers"
        );
        assert_eq!(
            pa(&held, None),
            Some(0x1000),
            "unknown ASID: the first entered"
        );
        held.insert(0, private(1, 0x3000), 1, ());
        assert_eq!(pa(&held, Some(1)), Some(0x3000));
        assert_eq!(held.entries().count(), 2, "replaced, not added");
        held.insert(
            0,
            TlbFill {
                pa: 0x4000,
                ..fill(VA)
            },
            2,
            (),
        );
        assert_eq!(pa(&held, Some(3)), Some(0x4000), "the global entry");
        assert_eq!(
            pa(&held, Some(2)),
            Some(0x2000),
            "its own before the global one"
        );
        assert_eq!(pa(&held, None), Some(0x4000));
        // Both ASIDs' entries went through the same table: both go stale.
        let since = StaleSince {
            time: 3,
            cpu: 0,
            pc: 0,
        };
        assert_eq!(held.mark_stale(0x4000_2000, since), vec![(0, VA)]);
        assert_eq!(held.entries().filter(|(_, e)| e.stale.is_some()).count(), 3);
        assert_eq!(held.holders(0x4000_2000).len(), 3);
        // An ASID's invalidation takes only its own.
        let gone = held.invalidate(0, false, TlbiScope::Asid(2));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1.fill.pa, 0x2000);
        assert_eq!(pa(&held, Some(2)), Some(0x4000));
        let gone = held.invalidate(
            0,
            false,
            TlbiScope::Va {
                va: VA,
                asid: Some(1),
            },
        );
        let pas: Vec<u64> = gone.iter().map(|(_, e)| e.fill.pa).collect();
        assert_eq!(
            pas,
            vec![0x3000, 0x4000],
            "by VA for ASID 1: its own and the global"
        );
        assert_eq!(held.entries().count(), 0);
    }

    /// Which page-table pages held entries were walked through, at any offset, stale
    /// or not.
    #[test]
    fn walks_are_found_by_their_table_pages() {
        let mut held: HeldTlbs = HeldTlbs::new(1);
        let through = TlbFill {
            walk: [0x4000_0010, 0x4000_1000, 0x4000_2028, 0],
            walk_len: 3,
            ..fill(0x8000_5000)
        };
        held.insert(0, through, 0, ());
        assert!(held.walked_through_page(0x4000_2000));
        assert!(
            held.walked_through_page(0x4000_2010),
            "any address in the page"
        );
        assert!(held.walked_through_page(0x4000_0000));
        assert!(!held.walked_through_page(0x4000_3000));
        let since = StaleSince {
            time: 1,
            cpu: 0,
            pc: 0,
        };
        assert_eq!(held.mark_stale(0x4000_2028, since).len(), 1);
        assert!(held.walked_through_page(0x4000_2000), "stale entries count");
    }

    /// What the machine's model keeps beside each entry is reached by any address of
    /// the page, per CPU.
    #[test]
    fn entries_carry_their_owner_s_tag() {
        let mut held: HeldTlbs<u32> = HeldTlbs::new(2);
        held.insert(1, fill(0x8000_1000), 5, 7);
        let entry = held.get_mut(1, 0x8000_1abc, Some(3)).expect("held");
        entry.tag += 1;
        assert_eq!(
            held.get(1, 0x8000_1000, None).map(|e| (e.tag, e.filled_at)),
            Some((8, 5))
        );
        assert!(held.get_mut(0, 0x8000_1000, None).is_none());
        assert!(held.get_mut(1, 0x8000_0000, None).is_none());
        assert!(held.get_mut(2, 0x8000_1000, None).is_none(), "no such CPU");
        for entry in held.page_entries_mut(1, 0x8000_1234) {
            entry.tag = 40;
        }
        assert_eq!(held.page_entries_mut(0, 0x8000_1000).count(), 0);
        assert_eq!(
            held.page_entries_mut(3, 0x8000_1000).count(),
            0,
            "no such CPU"
        );
        assert_eq!(held.get(1, 0x8000_1000, None).map(|e| e.tag), Some(40));
    }
}
