//! Kernel page tables: an identity map in the TTBR0 half and a vmalloc-style area
//! in the TTBR1 half mapped with 4 KiB pages.
//!
//! Both halves use a 4 KiB granule and 39-bit virtual addresses (T0SZ = T1SZ = 25),
//! so a walk starts at level 1:
//! - TTBR0: level-1 1 GiB blocks, identity. The first GiB (the board's devices) is
//!   Device-nGnRE, execute-never; the GiBs covering RAM are Normal write-back and
//!   execute-never, except that the kernel's GiB is split into 2 MiB blocks and
//!   the 2 MiB holding the kernel's code into pages, so that its code pages are the
//!   only executable ones (W^X, as Linux maps its linear map; an emulator also
//!   checks every store to an executable page for code it translated). Everything
//!   else faults.
//! - TTBR1: the vmalloc area is the first GiB of the upper half,
//!   `VMALLOC_START..VMALLOC_END`, one level-2 table (static) pointing at level-3
//!   tables allocated on demand from the page allocator.
//!
//! Synchronization rules: the identity map is written once by the boot CPU before
//! any other CPU runs and never changes. `VMAP_LOCK` (spinlock, irqsave) protects
//! every level-2/level-3 entry of the vmalloc area; lock order VMAP_LOCK ->
//! ZONE_LOCK (it allocates level-3 tables). TLB maintenance for a changed entry is
//! done before VMAP_LOCK is released, except through `clear_pte`, whose caller owes
//! a `flush_tlb_kernel_range`.

use core::cell::UnsafeCell;

use crate::bootinfo::boot_info;
use crate::config::PAGE_SIZE;
use crate::page_alloc::{self, Gfp};
use crate::paging;
pub use crate::paging::VMALLOC_START;
use crate::sync::SpinLock;
pub use crate::tlbflush::{FlushStrategy, MAX_TLBI_PAGES};

/// One past the last address of the vmalloc area (1 GiB).
pub const VMALLOC_END: usize = VMALLOC_START + (1 << 30);

const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;

/// Attributes of a vmalloc-area page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageKind {
    /// Kernel data: Normal write-back, read-write, never executable.
    Data,
}

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);
// SAFETY: the identity tables are written only during single-CPU boot; the vmalloc
// tables only under VMAP_LOCK.
unsafe impl Sync for Table {}

impl Table {
    /// CONTEXT: any (const).
    const fn new() -> Self {
        Table(UnsafeCell::new([0; ENTRIES]))
    }
    /// CONTEXT: any.
    fn base(&self) -> u64 {
        self.0.get() as u64
    }
}

static IDENTITY_L1: Table = Table::new();
/// The kernel's GiB, in 2 MiB blocks.
static IDENTITY_L2: Table = Table::new();
/// The 2 MiB holding the kernel's code, in pages.
static IDENTITY_L3: Table = Table::new();

extern "C" {
    /// The kernel's code, page-aligned (link.ld).
    static __text_start: u8;
    static __text_end: u8;
}

const MIB2: u64 = 2 << 20;
static KERNEL_L1: Table = Table::new();
static VMALLOC_L2: Table = Table::new();

/// VMAP_LOCK: protects the vmalloc area's level-2/level-3 entries.
static VMAP_LOCK: SpinLock<()> = SpinLock::new("vmap_lock", ());

/// Builds the kernel page tables for RAM at `ram_base..ram_base + ram_size`.
///
/// CONTEXT: boot CPU, once, before any other CPU starts and before the MMU is on.
pub fn build_tables(ram_base: u64, ram_size: u64) {
    // SAFETY: single CPU at boot; nothing walks these tables yet.
    let identity = unsafe { &mut *IDENTITY_L1.0.get() };
    identity[0] = paging::DEVICE_BLOCK;
    let first = ram_base / GIB;
    let last = (ram_base + ram_size - 1) / GIB;
    for gib in first..=last {
        identity[gib as usize] = paging::ram_leaf(gib * GIB, GIB, false);
    }
    // SAFETY: linker symbols; only their addresses are taken.
    let text = unsafe { &raw const __text_start as u64..&raw const __text_end as u64 };
    let text_block = text.start & !(MIB2 - 1);
    if text.end > text_block + MIB2 {
        panic!("the kernel's code crosses a 2 MiB boundary: {:x?}", text);
    }
    // SAFETY: as above; nothing else refers to these two tables.
    let (l2, l3) = unsafe { (&mut *IDENTITY_L2.0.get(), &mut *IDENTITY_L3.0.get()) };
    let text_gib = text.start & !(GIB - 1);
    for (i, entry) in l2.iter_mut().enumerate() {
        *entry = paging::ram_leaf(text_gib + i as u64 * MIB2, MIB2, false);
    }
    for (i, entry) in l3.iter_mut().enumerate() {
        let page = text_block + (i * PAGE_SIZE) as u64;
        *entry = paging::ram_leaf(page, PAGE_SIZE as u64, text.contains(&page));
    }
    l2[l2_index(text_block as usize)] = paging::table_entry(IDENTITY_L3.base());
    identity[(text_gib / GIB) as usize] = paging::table_entry(IDENTITY_L2.base());
    // SAFETY: as above (with one root, the same table as `identity`).
    let kernel = unsafe { &mut *paging::kernel_root(&IDENTITY_L1.0, &KERNEL_L1.0).get() };
    kernel[l1_index(VMALLOC_START)] = paging::table_entry(VMALLOC_L2.base());
    paging::tables_built_barrier();
}

/// Turns the MMU and caches on for this CPU with the kernel tables.
///
/// CONTEXT: each CPU once at bring-up, after `build_tables`; IRQs masked; the code
/// runs identity-mapped so execution continues across the switch.
pub fn enable_this_cpu() {
    paging::enable_this_cpu(IDENTITY_L1.base(), KERNEL_L1.base());
}

/// CONTEXT: any; pure.
fn l1_index(va: usize) -> usize {
    (va >> 30) & (ENTRIES - 1)
}
/// CONTEXT: any; pure.
fn l2_index(va: usize) -> usize {
    (va >> 21) & (ENTRIES - 1)
}
/// CONTEXT: any; pure.
fn l3_index(va: usize) -> usize {
    (va >> 12) & (ENTRIES - 1)
}

#[derive(Debug, PartialEq, Eq)]
pub enum MapError {
    /// The address is outside the vmalloc area or not page-aligned.
    BadAddress,
    /// No page for a level-3 table.
    NoMemory,
}

/// CONTEXT: any; pure.
fn check_va(va: usize) -> Result<(), MapError> {
    if !(VMALLOC_START..VMALLOC_END).contains(&va) || va % PAGE_SIZE != 0 {
        return Err(MapError::BadAddress);
    }
    Ok(())
}

/// The level-3 entry for `va`, allocating its table if `create`.
///
/// CONTEXT: VMAP_LOCK held.
fn pte_slot(va: usize, create: bool) -> Result<Option<*mut u64>, MapError> {
    lockdep_assert_vmap_held();
    // SAFETY: VMAP_LOCK held; VMALLOC_L2 is only touched under it.
    let l2 = unsafe { &mut *VMALLOC_L2.0.get() };
    let entry = &mut l2[l2_index(va)];
    if !paging::is_valid(*entry) {
        if !create {
            return Ok(None);
        }
        let table = page_alloc::alloc_pages(0, Gfp::Atomic).ok_or(MapError::NoMemory)?;
        // SAFETY: a fresh page from the allocator, identity-mapped, ours alone.
        unsafe { core::ptr::write_bytes(table as *mut u8, 0, PAGE_SIZE) };
        paging::table_store_barrier();
        *entry = paging::table_entry(table as u64);
        paging::table_store_barrier();
    }
    let l3 = paging::entry_output(*entry) as *mut u64;
    // SAFETY: the table is a whole page of 512 entries.
    Ok(Some(unsafe { l3.add(l3_index(va)) }))
}

/// CONTEXT: VMAP_LOCK held (asserted).
fn lockdep_assert_vmap_held() {
    crate::sync::lockdep_assert_held(VMAP_LOCK.raw());
}

/// A range to invalidate, on the stack of the CPU that asked (it waits until
/// every CPU is done with it).
struct FlushRequest {
    start: usize,
    end: usize,
}

/// The call-function IPI handler of the `ipi` strategy: `arg` points at the
/// sender's `FlushRequest`.
///
/// CONTEXT: hard-IRQ (call-function IPI); does not sleep.
fn flush_ipi_handler(arg: usize) {
    // SAFETY: the sender keeps the request alive until this handler is done
    // (smp_call_function_single waits for it).
    let request = unsafe { &*(arg as *const FlushRequest) };
    paging::local_flush_tlb_range(request.start, request.end);
}

/// Invalidates the TLB entries for kernel pages `start..end` on every CPU, by
/// the `flush=` strategy (broadcast by default).
///
/// `inject=local-flush-only` makes it invalidate this CPU's TLB alone: the
/// porting bug of an ISA without broadcast invalidation whose flush forgot
/// the other CPUs.
///
/// CONTEXT: any for `broadcast` and `full`; does not sleep. `ipi`: IRQs on
/// and no spinlock held (it waits for every other CPU's IPI handler, like
/// Linux's `on_each_cpu`); called otherwise, it panics where a real port
/// would deadlock.
#[no_mangle]
#[inline(never)]
pub extern "C" fn flush_tlb_kernel_range(start: usize, end: usize) {
    let info = boot_info();
    // The other CPUs must see the cleared entries before they invalidate.
    paging::table_store_barrier();
    if info
        .inject
        .is_some_and(|word| word.as_str() == "local-flush-only")
    {
        let flags = crate::sync::local_irq_save();
        paging::local_flush_tlb_range(start, end);
        crate::sync::local_irq_restore(flags);
        return;
    }
    match info.flush {
        FlushStrategy::Batched if (end - start) / PAGE_SIZE > MAX_TLBI_PAGES => {
            paging::broadcast_flush_all()
        }
        FlushStrategy::Broadcast | FlushStrategy::Batched => {
            paging::broadcast_flush_tlb_range(start, end)
        }
        FlushStrategy::Full => paging::broadcast_flush_all(),
        FlushStrategy::Ipi => {
            let request = FlushRequest { start, end };
            for target in 0..crate::smp::online_cpus() {
                // Our own TLB is flushed in place; checked with IRQs off so
                // that a migration cannot make us flush another CPU's.
                let flags = crate::sync::local_irq_save();
                let here = target == crate::percpu::this_cpu().id;
                if here {
                    paging::local_flush_tlb_range(start, end);
                }
                crate::sync::local_irq_restore(flags);
                if !here {
                    let arg = &request as *const FlushRequest as usize;
                    if crate::pcpu_platform::ipi_flush_irqs_off_injected() {
                        crate::smp::smp_call_function_single_unchecked(
                            target,
                            flush_ipi_handler,
                            arg,
                        );
                    } else {
                        crate::smp::smp_call_function_single(target, flush_ipi_handler, arg);
                    }
                }
            }
        }
    }
}

/// Maps the page at physical `pa` at `va` in the vmalloc area. Replacing a live
/// mapping to a different page goes through break-before-make: the old entry is
/// invalidated and flushed from every TLB before the new one is written.
///
/// CONTEXT: any, IRQ handlers included; takes VMAP_LOCK (irqsave) and may take
/// ZONE_LOCK (atomic allocation of a level-3 table); does not sleep.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vmap_page(va: usize, pa: usize) -> bool {
    map_page(va, pa, PageKind::Data).is_ok()
}

/// As `vmap_page`, with the error.
///
/// CONTEXT: as vmap_page.
pub fn map_page(va: usize, pa: usize, kind: PageKind) -> Result<(), MapError> {
    check_va(va)?;
    if pa % PAGE_SIZE != 0 {
        return Err(MapError::BadAddress);
    }
    let _guard = VMAP_LOCK.lock_irqsave();
    let slot = pte_slot(va, true)?.expect("created");
    let new = paging::page_entry(pa, kind);
    // SAFETY: `slot` is an entry of a live level-3 table, guarded by VMAP_LOCK.
    unsafe {
        let old = slot.read_volatile();
        if old == new {
            return Ok(());
        }
        if paging::is_valid(old) {
            slot.write_volatile(0);
            flush_tlb_kernel_range(va, va + PAGE_SIZE);
        }
        slot.write_volatile(new);
    }
    paging::table_store_barrier();
    paging::context_barrier();
    Ok(())
}

/// Removes the mapping at `va` (if any) and flushes it from every TLB.
///
/// CONTEXT: as vmap_page.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vunmap_page(va: usize) {
    if clear_pte(va) {
        flush_tlb_kernel_range(va, va + PAGE_SIZE);
    }
}

/// Removes the mapping at `va` without TLB maintenance; returns whether there was
/// one. The caller must `flush_tlb_kernel_range` over it before the page is reused
/// (this lets callers batch one flush for many pages).
///
/// CONTEXT: as vmap_page.
#[no_mangle]
#[inline(never)]
pub extern "C" fn vunmap_page_noflush(va: usize) -> bool {
    clear_pte(va)
}

/// CONTEXT: any; takes VMAP_LOCK (irqsave); does not sleep.
fn clear_pte(va: usize) -> bool {
    if check_va(va).is_err() {
        return false;
    }
    let _guard = VMAP_LOCK.lock_irqsave();
    match pte_slot(va, false) {
        // SAFETY: live level-3 entry under VMAP_LOCK.
        Ok(Some(slot)) => unsafe {
            let was_valid = paging::is_valid(slot.read_volatile());
            slot.write_volatile(0);
            paging::table_store_barrier();
            was_valid
        },
        _ => false,
    }
}

/// The physical page mapped at `va` in the vmalloc area, if any.
///
/// CONTEXT: any; takes VMAP_LOCK (irqsave).
pub fn translate(va: usize) -> Option<usize> {
    check_va(va & !(PAGE_SIZE - 1)).ok()?;
    let _guard = VMAP_LOCK.lock_irqsave();
    let slot = pte_slot(va & !(PAGE_SIZE - 1), false).ok()??;
    // SAFETY: live level-3 entry under VMAP_LOCK.
    let entry = unsafe { slot.read_volatile() };
    paging::is_valid(entry).then(|| paging::entry_output(entry) as usize + (va & (PAGE_SIZE - 1)))
}
