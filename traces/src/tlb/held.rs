//! Which translations each CPU's TLB holds: entered by a walk, kept (however the
//! tables change) until a TLBI that reaches them, marked stale when a descriptor
//! they went through changes.

use crate::fx::FxHashMap;

use crate::aarch64::{level_shift, TlbiScope, PAGE_MASK};
use crate::event::TlbFill;

/// When, where and by whom a held translation was made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSince {
    pub time: u64,
    pub cpu: usize,
    pub pc: u64,
}

/// One translation a CPU holds, with `T`: what its owner keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry<T = ()> {
    pub fill: TlbFill,
    pub filled_at: u64,
    /// Set when the tables stopped giving this translation.
    pub stale: Option<StaleSince>,
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

/// Every CPU's held translations, by page, and which entries went through each
/// descriptor (to mark them stale when it changes).
#[derive(Debug, Clone)]
pub struct HeldTlbs<T = ()> {
    tlbs: Vec<FxHashMap<u64, HeldEntry<T>>>,
    /// Descriptor address → (CPU, page) entries that used it (possibly outdated:
    /// checked against the entry).
    users: FxHashMap<u64, Vec<(usize, u64)>>,
}

impl<T> Default for HeldTlbs<T> {
    fn default() -> Self {
        Self {
            tlbs: Vec::new(),
            users: FxHashMap::default(),
        }
    }
}

impl<T> HeldTlbs<T> {
    pub fn new(cpus: usize) -> Self {
        let mut held = Self::default();
        held.tlbs.resize_with(cpus, FxHashMap::default);
        held
    }

    fn cpu_mut(&mut self, cpu: usize) -> &mut FxHashMap<u64, HeldEntry<T>> {
        if self.tlbs.len() <= cpu {
            self.tlbs.resize_with(cpu + 1, FxHashMap::default);
        }
        &mut self.tlbs[cpu]
    }

    /// The translation `cpu` holds for the page of `va`.
    pub fn get(&self, cpu: usize, va: u64) -> Option<&HeldEntry<T>> {
        self.tlbs.get(cpu)?.get(&(va & PAGE_MASK))
    }

    pub fn get_mut(&mut self, cpu: usize, va: u64) -> Option<&mut HeldEntry<T>> {
        self.tlbs.get_mut(cpu)?.get_mut(&(va & PAGE_MASK))
    }

    /// `cpu` entered `fill` at `time`.
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
        self.cpu_mut(cpu).insert(va, entry);
    }

    /// Marks every held translation that went through descriptor `desc` stale (those
    /// already stale keep their first cause); returns the CPUs that got a newly stale
    /// entry, in order.
    pub fn mark_stale(&mut self, desc: u64, since: StaleSince) -> Vec<usize> {
        let Some(users) = self.users.get_mut(&desc) else {
            return Vec::new();
        };
        let mut cpus = Vec::new();
        let mut kept = Vec::with_capacity(users.len());
        for &(cpu, va) in users.iter() {
            let Some(entry) = self.tlbs[cpu].get_mut(&va).filter(|e| e.uses(desc)) else {
                continue;
            };
            kept.push((cpu, va));
            if entry.stale.is_none() {
                entry.stale = Some(since);
                cpus.push(cpu);
            }
        }
        kept.sort_unstable();
        kept.dedup();
        *users = kept;
        cpus.sort_unstable();
        cpus.dedup();
        cpus
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
            .filter_map(|&(cpu, va)| {
                let entry = self.tlbs[cpu].get(&va).filter(|e| e.uses(desc))?;
                Some((cpu, va, entry.fill.pa))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A TLBI of `scope` by `cpu`, `broadcast` to every CPU or local: removes the
    /// entries it reaches and returns them, ordered by CPU and page.
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
            let tlb = &mut self.tlbs[cpu];
            let pages: Vec<u64> = match scope {
                // One page, unless blocks are held: then any page of a block with it.
                TlbiScope::Va { va, .. } if tlb.values().all(|e| e.fill.level == 3) => {
                    let page = va & PAGE_MASK;
                    tlb.get(&page)
                        .filter(|e| e.invalidated_by(page, scope))
                        .map(|_| page)
                        .into_iter()
                        .collect()
                }
                _ => tlb
                    .iter()
                    .filter(|(&page, e)| e.invalidated_by(page, scope))
                    .map(|(&page, _)| page)
                    .collect(),
            };
            let mut pages = pages;
            pages.sort_unstable();
            for page in pages {
                let entry = tlb.remove(&page).expect("listed above");
                removed.push((cpu, entry));
            }
        }
        removed
    }

    /// Every held entry: (CPU, entry), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &HeldEntry<T>)> {
        self.tlbs
            .iter()
            .enumerate()
            .flat_map(|(cpu, tlb)| tlb.values().map(move |e| (cpu, e)))
    }

    /// `cpu`'s held entries, mutable, in no particular order.
    pub fn entries_of_mut(&mut self, cpu: usize) -> impl Iterator<Item = &mut HeldEntry<T>> {
        self.tlbs
            .get_mut(cpu)
            .into_iter()
            .flat_map(|t| t.values_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(va: u64) -> TlbFill {
        TlbFill {
            va,
            pa: 0x4010_0000,
            level: 3,
            write: true,
            exec: false,
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
        assert!(held.get(0, VA + 8192).is_some());
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
        assert_eq!(held.mark_stale(0x4000_2028, since), vec![0]);
        assert!(held.walked_through_page(0x4000_2000), "stale entries count");
    }

    /// What the machine's model keeps beside each entry is reached by any address of
    /// the page, per CPU.
    #[test]
    fn entries_carry_their_owner_s_tag() {
        let mut held: HeldTlbs<u32> = HeldTlbs::new(2);
        held.insert(1, fill(0x8000_1000), 5, 7);
        let entry = held.get_mut(1, 0x8000_1abc).expect("held");
        entry.tag += 1;
        assert_eq!(
            held.get(1, 0x8000_1000).map(|e| (e.tag, e.filled_at)),
            Some((8, 5))
        );
        assert!(held.get_mut(0, 0x8000_1000).is_none());
        assert!(held.get_mut(1, 0x8000_0000).is_none());
        assert!(held.get_mut(2, 0x8000_1000).is_none(), "no such CPU");
        for entry in held.entries_of_mut(1) {
            entry.tag = 40;
        }
        assert_eq!(held.entries_of_mut(0).count(), 0);
        assert_eq!(held.get(1, 0x8000_1000).map(|e| e.tag), Some(40));
    }
}
