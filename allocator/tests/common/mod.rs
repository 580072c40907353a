//! A host implementation of the allocator's platform, for tests.
//!
//! Virtual areas are real host memory, so the allocator's writes through them
//! work; "mapping" is bookkeeping over those areas, and every map or unmap
//! fills the page with a poison pattern so that a missing zeroing or a use of
//! an unmapped page shows up. Locks are real blocking locks. Each host thread
//! is a CPU with its own simulated IRQ state, and the mock records protocol
//! violations the way lockdep and `might_sleep` would: sleeping while atomic,
//! IRQs re-enabled in hard-IRQ context, recursive locking, unlocking a lock
//! not held, a spinlock taken both in hard-IRQ and with IRQs on, releasing a
//! virtual area with pages still mapped. A page freed while still mapped is
//! the seed's reclaim order, so it is kept apart (`freed_while_mapped`).
#![allow(dead_code)]

use std::alloc::Layout;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};

use allocator::{
    Config, Gfp, IllegalRequest, MapError, Page, Percpu, Platform, Variant, PAGE_SIZE,
};

/// Byte pattern of freshly mapped pages (a page's old contents).
pub const MAP_POISON: u8 = 0xa5;
/// Byte pattern of unmapped pages.
pub const UNMAP_POISON: u8 = 0x6b;

thread_local! {
    static IRQS_OFF: Cell<bool> = const { Cell::new(false) };
    static IN_HARDIRQ: Cell<bool> = const { Cell::new(false) };
    static SPINS_HELD: Cell<usize> = const { Cell::new(0) };
    /// Spinlocks this thread holds that were taken with plain `spin_lock`.
    static PLAIN_SPINS_HELD: Cell<usize> = const { Cell::new(0) };
}

fn atomic_context() -> bool {
    IRQS_OFF.get() || IN_HARDIRQ.get() || SPINS_HELD.get() > 0
}

/// Run `f` as this CPU's hard-IRQ handler: IRQs off on entry; they must
/// still be off on exit.
pub fn in_hardirq<R>(mock: &Mock, f: impl FnOnce() -> R) -> R {
    let saved = IRQS_OFF.replace(true);
    IN_HARDIRQ.set(true);
    let r = f();
    if !IRQS_OFF.get() {
        mock.violation("irqs-enabled-in-hardirq: handler returned with IRQs on".into());
    }
    IN_HARDIRQ.set(false);
    IRQS_OFF.set(saved);
    r
}

/// Whether this CPU has IRQs off.
pub fn irqs_off() -> bool {
    IRQS_OFF.get()
}

/// A lock that blocks, and knows its owner.
pub struct HostLock {
    pub name: &'static str,
    owner: Mutex<Option<ThreadId>>,
    released: Condvar,
    /// Taken in hard-IRQ context / with IRQs on (lockdep's usage bits).
    used_in_hardirq: AtomicBool,
    used_irqs_on: AtomicBool,
}

impl HostLock {
    fn new(name: &'static str) -> Self {
        HostLock {
            name,
            owner: Mutex::new(None),
            released: Condvar::new(),
            used_in_hardirq: AtomicBool::new(false),
            used_irqs_on: AtomicBool::new(false),
        }
    }

    /// Record how a spinlock is being taken and flag lockdep's inconsistent
    /// {HARDIRQ-ON-W} -> {IN-HARDIRQ-W} usage.
    fn note_spin_usage(&self, mock: &Mock) {
        if IN_HARDIRQ.get() {
            self.used_in_hardirq.store(true, Ordering::SeqCst);
        }
        if !IRQS_OFF.get() {
            self.used_irqs_on.store(true, Ordering::SeqCst);
        }
        if self.used_in_hardirq.load(Ordering::SeqCst) && self.used_irqs_on.load(Ordering::SeqCst) {
            mock.violation(format!(
                "inconsistent-irq-state: {} taken in hard-IRQ and with IRQs on",
                self.name
            ));
        }
    }

    fn acquire(&self, mock: &Mock) {
        let me = thread::current().id();
        let mut owner = self.owner.lock().unwrap();
        if *owner == Some(me) {
            mock.violation(format!("recursive-locking: {}", self.name));
            panic!("recursive locking of {}", self.name);
        }
        while owner.is_some() {
            if mock.abandoned() {
                panic!(
                    "{}: another CPU thread panicked, maybe holding it",
                    self.name
                );
            }
            // Woken by the release, or every so often to notice abandonment.
            owner = self
                .released
                .wait_timeout(owner, std::time::Duration::from_millis(50))
                .unwrap()
                .0;
        }
        *owner = Some(me);
    }

    fn release(&self, mock: &Mock) {
        let me = thread::current().id();
        let mut owner = self.owner.lock().unwrap();
        if *owner != Some(me) {
            mock.violation(format!("bad-unlock: {} not held", self.name));
        }
        *owner = None;
        self.released.notify_one();
    }

    fn held_by_me(&self) -> bool {
        *self.owner.lock().unwrap() == Some(thread::current().id())
    }
}

/// A platform event, recorded while recording is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Lock(&'static str, &'static str),
    MemAlloc(usize),
    MemFree(usize),
    AllocPage,
    FreePage,
    Map(usize, usize),
    Unmap(usize, usize),
    FlushCacheVmap(usize, usize),
    FlushCacheVunmap(usize, usize),
    FlushTlb(usize, usize),
    VmReserve,
    VmRelease(usize),
    ScheduleWork,
}

#[derive(Default)]
struct Memory {
    next_frame: u64,
    live_frames: HashSet<u64>,
    /// Mapped page address -> frame.
    mapped: HashMap<usize, u64>,
    /// Frame -> page address it is mapped at.
    frame_at: HashMap<u64, usize>,
    /// Reserved virtual areas: base -> size.
    areas: BTreeMap<usize, usize>,
    /// Live metadata allocations: address -> size.
    mem: HashMap<usize, usize>,
}

type MemAllocHook = Arc<dyn Fn(usize) + Send + Sync>;

/// The mock machine state; share it with `Arc`.
pub struct Mock {
    pub nr_cpus: usize,
    memory: Mutex<Memory>,
    violations: Mutex<Vec<String>>,
    events: Mutex<Vec<Event>>,
    /// Pages freed while still mapped (the seed's reclaim order).
    freed_while_mapped: Mutex<Vec<u64>>,
    /// Warnings the allocator printed.
    warnings: Mutex<Vec<String>>,
    recording: AtomicBool,
    /// Reclaim work scheduled and not yet run.
    pub work_pending: AtomicBool,
    pub work_scheduled: AtomicU64,
    /// Page allocations still allowed; negative: unlimited.
    pub page_budget: AtomicI64,
    /// Metadata allocations still allowed; negative: unlimited.
    pub mem_budget: AtomicI64,
    /// `map_pages` calls still allowed to succeed; negative: unlimited.
    pub map_budget: AtomicI64,
    /// Called (outside the mock's own locks) at every `mem_alloc`.
    mem_alloc_hook: Mutex<Option<MemAllocHook>>,
    /// A thread started by [`Mock::spawn`] panicked: any lock it held is
    /// never released, so waiters give up instead of blocking for ever.
    abandoned: AtomicBool,
}

impl Mock {
    pub fn new(nr_cpus: usize) -> Arc<Mock> {
        Arc::new(Mock {
            nr_cpus,
            memory: Mutex::new(Memory::default()),
            freed_while_mapped: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            recording: AtomicBool::new(false),
            work_pending: AtomicBool::new(false),
            work_scheduled: AtomicU64::new(0),
            page_budget: AtomicI64::new(-1),
            mem_budget: AtomicI64::new(-1),
            map_budget: AtomicI64::new(-1),
            mem_alloc_hook: Mutex::new(None),
            abandoned: AtomicBool::new(false),
        })
    }

    /// Start a CPU thread. If it panics, the locks it held are abandoned and
    /// every thread waiting for a lock of this mock panics too, so a failing
    /// test fails instead of hanging with its threads blocked.
    pub fn spawn<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        struct AbandonOnPanic(Arc<Mock>);
        impl Drop for AbandonOnPanic {
            fn drop(&mut self) {
                if thread::panicking() {
                    self.0.abandoned.store(true, Ordering::SeqCst);
                }
            }
        }
        let guard = AbandonOnPanic(self.clone());
        thread::spawn(move || {
            let _guard = guard;
            f()
        })
    }

    /// Whether a thread of this mock panicked (see [`Mock::spawn`]).
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    pub fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Frames freed while they were still mapped.
    pub fn freed_while_mapped(&self) -> Vec<u64> {
        self.freed_while_mapped.lock().unwrap().clone()
    }

    /// The allocator's warnings so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap().clone()
    }

    pub fn record(&self, on: bool) {
        self.recording.store(on, Ordering::SeqCst);
        if on {
            self.events.lock().unwrap().clear();
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn event(&self, e: Event) {
        if self.recording.load(Ordering::SeqCst) {
            self.events.lock().unwrap().push(e);
        }
    }

    pub fn set_mem_alloc_hook(&self, hook: Option<MemAllocHook>) {
        *self.mem_alloc_hook.lock().unwrap() = hook;
    }

    fn might_sleep(&self, what: &str) {
        if atomic_context() {
            self.violation(format!("sleep-in-atomic: {what}"));
        }
    }

    fn take_budget(budget: &AtomicI64) -> bool {
        budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| match b {
                b if b < 0 => Some(b),
                0 => None,
                b => Some(b - 1),
            })
            .is_ok()
    }

    /// Whether every page of `[addr, addr + len)` is mapped.
    pub fn is_mapped(&self, addr: usize, len: usize) -> bool {
        let memory = self.memory.lock().unwrap();
        let first = addr / PAGE_SIZE * PAGE_SIZE;
        (first..addr + len)
            .step_by(PAGE_SIZE)
            .all(|page| memory.mapped.contains_key(&page))
    }

    pub fn live_pages(&self) -> usize {
        self.memory.lock().unwrap().live_frames.len()
    }

    pub fn mapped_pages(&self) -> usize {
        self.memory.lock().unwrap().mapped.len()
    }

    pub fn live_mem_allocs(&self) -> usize {
        self.memory.lock().unwrap().mem.len()
    }

    pub fn live_areas(&self) -> usize {
        self.memory.lock().unwrap().areas.len()
    }

    /// Run the reclaim work if it is pending, like a workqueue thread.
    pub fn run_pending_work<P: Platform>(&self, pcpu: &Percpu<P>) -> bool {
        if self.work_pending.swap(false, Ordering::SeqCst) {
            pcpu.reclaim_work();
            true
        } else {
            false
        }
    }
}

/// The platform handed to the allocator.
#[derive(Clone)]
pub struct Host(pub Arc<Mock>);

impl Deref for Host {
    type Target = Mock;
    fn deref(&self) -> &Mock {
        &self.0
    }
}

impl Platform for Host {
    type Mutex = HostLock;
    type SpinLock = HostLock;
    type IrqFlags = bool;

    fn nr_cpus(&self) -> usize {
        self.0.nr_cpus
    }

    fn new_mutex(&self, name: &'static str) -> HostLock {
        HostLock::new(name)
    }

    fn new_spinlock(&self, name: &'static str) -> HostLock {
        HostLock::new(name)
    }

    fn mutex_lock(&self, lock: &HostLock) {
        self.might_sleep(&format!("mutex_lock({})", lock.name));
        self.event(Event::Lock("mutex_lock", lock.name));
        lock.acquire(self);
    }

    fn mutex_unlock(&self, lock: &HostLock) {
        self.event(Event::Lock("mutex_unlock", lock.name));
        lock.release(self);
    }

    fn mutex_assert_held(&self, lock: &HostLock) {
        assert!(lock.held_by_me(), "{} not held", lock.name);
    }

    fn spin_lock_irq(&self, lock: &HostLock) {
        self.event(Event::Lock("spin_lock_irq", lock.name));
        IRQS_OFF.set(true);
        lock.note_spin_usage(self);
        lock.acquire(self);
        SPINS_HELD.set(SPINS_HELD.get() + 1);
    }

    fn spin_unlock_irq(&self, lock: &HostLock) {
        self.event(Event::Lock("spin_unlock_irq", lock.name));
        SPINS_HELD.set(SPINS_HELD.get() - 1);
        lock.release(self);
        if IN_HARDIRQ.get() {
            self.violation(format!(
                "irqs-enabled-in-hardirq: spin_unlock_irq({})",
                lock.name
            ));
        }
        IRQS_OFF.set(false);
    }

    fn spin_lock_irqsave(&self, lock: &HostLock) -> bool {
        self.event(Event::Lock("spin_lock_irqsave", lock.name));
        let flags = IRQS_OFF.replace(true);
        lock.note_spin_usage(self);
        lock.acquire(self);
        SPINS_HELD.set(SPINS_HELD.get() + 1);
        flags
    }

    fn spin_unlock_irqrestore(&self, lock: &HostLock, flags: bool) {
        self.event(Event::Lock("spin_unlock_irqrestore", lock.name));
        SPINS_HELD.set(SPINS_HELD.get() - 1);
        lock.release(self);
        IRQS_OFF.set(flags);
    }

    fn spin_lock(&self, lock: &HostLock) {
        self.event(Event::Lock("spin_lock", lock.name));
        lock.note_spin_usage(self);
        lock.acquire(self);
        SPINS_HELD.set(SPINS_HELD.get() + 1);
        PLAIN_SPINS_HELD.set(PLAIN_SPINS_HELD.get() + 1);
    }

    fn spin_unlock(&self, lock: &HostLock) {
        self.event(Event::Lock("spin_unlock", lock.name));
        SPINS_HELD.set(SPINS_HELD.get() - 1);
        PLAIN_SPINS_HELD.set(PLAIN_SPINS_HELD.get() - 1);
        lock.release(self);
    }

    fn spin_assert_held(&self, lock: &HostLock) {
        assert!(lock.held_by_me(), "{} not held", lock.name);
        assert!(
            IRQS_OFF.get() || PLAIN_SPINS_HELD.get() > 0,
            "{} held with IRQs on",
            lock.name
        );
    }

    fn warn(&self, what: IllegalRequest) {
        self.warnings.lock().unwrap().push(what.to_string());
    }

    fn alloc_page(&self, cpu: usize, gfp: Gfp) -> Option<Page> {
        assert!(cpu < self.0.nr_cpus);
        if gfp.may_sleep {
            self.might_sleep("alloc_page(GFP_KERNEL)");
        }
        self.event(Event::AllocPage);
        if !Mock::take_budget(&self.page_budget) {
            return None;
        }
        let mut memory = self.memory.lock().unwrap();
        memory.next_frame += 1;
        let frame = memory.next_frame * PAGE_SIZE as u64;
        memory.live_frames.insert(frame);
        Some(Page(frame))
    }

    fn free_page(&self, page: Page) {
        self.event(Event::FreePage);
        let mut memory = self.memory.lock().unwrap();
        if !memory.live_frames.remove(&page.0) {
            drop(memory);
            self.violation(format!("free of a page not allocated: {:#x}", page.0));
            return;
        }
        if memory.frame_at.contains_key(&page.0) {
            drop(memory);
            self.freed_while_mapped.lock().unwrap().push(page.0);
        }
    }

    fn mem_alloc(&self, size: usize, gfp: Gfp) -> Option<NonNull<u8>> {
        if gfp.may_sleep {
            self.might_sleep("mem_alloc(GFP_KERNEL)");
        }
        let hook = self.mem_alloc_hook.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook(size);
        }
        self.event(Event::MemAlloc(size));
        if !Mock::take_budget(&self.mem_budget) {
            return None;
        }
        let layout = Layout::from_size_align(size.max(1), allocator::MEM_ALIGN).unwrap();
        // SAFETY: non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        self.memory
            .lock()
            .unwrap()
            .mem
            .insert(ptr.as_ptr() as usize, size);
        Some(ptr)
    }

    fn mem_free(&self, ptr: NonNull<u8>, size: usize) {
        self.event(Event::MemFree(size));
        let known = self
            .memory
            .lock()
            .unwrap()
            .mem
            .remove(&(ptr.as_ptr() as usize));
        match known {
            Some(s) if s == size => {
                let layout = Layout::from_size_align(size.max(1), allocator::MEM_ALIGN).unwrap();
                // SAFETY: allocated by mem_alloc with this layout.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
            }
            Some(s) => self.violation(format!("mem_free size {size} != allocated {s}")),
            None => self.violation(format!("mem_free of unknown {:p}", ptr)),
        }
    }

    fn vm_reserve(&self, size: usize) -> Option<usize> {
        self.might_sleep("vm_reserve");
        self.event(Event::VmReserve);
        let layout = Layout::from_size_align(size, PAGE_SIZE).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: fresh allocation of `size` bytes.
        unsafe { ptr.write_bytes(UNMAP_POISON, size) };
        let addr = ptr as usize;
        self.memory.lock().unwrap().areas.insert(addr, size);
        Some(addr)
    }

    fn vm_release(&self, addr: usize, size: usize) {
        self.event(Event::VmRelease(addr));
        let mut memory = self.memory.lock().unwrap();
        let still_mapped = memory
            .mapped
            .keys()
            .filter(|&&va| va >= addr && va < addr + size)
            .count();
        let known = memory.areas.remove(&addr);
        drop(memory);
        if still_mapped != 0 {
            self.violation(format!(
                "vm area {addr:#x} released with {still_mapped} pages mapped"
            ));
        }
        if known != Some(size) {
            self.violation(format!("vm_release of unknown area {addr:#x}"));
            return;
        }
        let layout = Layout::from_size_align(size, PAGE_SIZE).unwrap();
        // SAFETY: allocated by vm_reserve with this layout.
        unsafe { std::alloc::dealloc(addr as *mut u8, layout) };
    }

    fn map_pages(&self, addr: usize, pages: &[Page]) -> Result<(), MapError> {
        self.might_sleep("map_pages");
        if !Mock::take_budget(&self.map_budget) {
            return Err(MapError);
        }
        self.event(Event::Map(addr, pages.len() * PAGE_SIZE));
        let mut memory = self.memory.lock().unwrap();
        let in_area = memory
            .areas
            .range(..=addr)
            .next_back()
            .is_some_and(|(&base, &size)| addr + pages.len() * PAGE_SIZE <= base + size);
        assert!(in_area, "map outside any reserved area at {addr:#x}");
        let mut bad = Vec::new();
        for (i, page) in pages.iter().enumerate() {
            let va = addr + i * PAGE_SIZE;
            if !memory.live_frames.contains(&page.0) {
                bad.push(format!("mapping unallocated page {:#x}", page.0));
            }
            if memory.mapped.insert(va, page.0).is_some() {
                bad.push(format!("mapping over a live mapping at {va:#x}"));
            }
            memory.frame_at.insert(page.0, va);
            // SAFETY: inside a reserved area (checked above).
            unsafe { (va as *mut u8).write_bytes(MAP_POISON, PAGE_SIZE) };
        }
        drop(memory);
        for b in bad {
            self.violation(b);
        }
        Ok(())
    }

    fn unmap_pages(&self, addr: usize, size: usize) {
        self.event(Event::Unmap(addr, size));
        let mut memory = self.memory.lock().unwrap();
        for va in (addr..addr + size).step_by(PAGE_SIZE) {
            if let Some(frame) = memory.mapped.remove(&va) {
                memory.frame_at.remove(&frame);
                // SAFETY: the page lies in a reserved area (it was mapped).
                unsafe { (va as *mut u8).write_bytes(UNMAP_POISON, PAGE_SIZE) };
            }
        }
    }

    fn flush_cache_vmap(&self, start: usize, end: usize) {
        self.event(Event::FlushCacheVmap(start, end));
    }

    fn flush_cache_vunmap(&self, start: usize, end: usize) {
        self.event(Event::FlushCacheVunmap(start, end));
    }

    fn flush_tlb_kernel_range(&self, start: usize, end: usize) {
        self.event(Event::FlushTlb(start, end));
    }

    fn schedule_reclaim_work(&self) {
        self.event(Event::ScheduleWork);
        self.work_scheduled.fetch_add(1, Ordering::SeqCst);
        self.work_pending.store(true, Ordering::SeqCst);
    }
}

/// Static per-CPU data used by the tests' first chunks.
pub const STATIC_IMAGE: &[u8] = b"static per-cpu data of the kernel";

/// An allocator over a fresh mock: 4 CPUs, 8 KiB static area, 8 KiB reserved,
/// 64 KiB units, dynamic first chunk the rest of the unit.
pub fn setup(variant: Variant) -> (Arc<Mock>, Percpu<Host>) {
    setup_with(variant, 4, |_| {})
}

pub fn setup_with(
    variant: Variant,
    nr_cpus: usize,
    tweak: impl FnOnce(&mut Config),
) -> (Arc<Mock>, Percpu<Host>) {
    let mock = Mock::new(nr_cpus);
    let mut config = Config::new(variant, 8 << 10);
    config.reserved_size = 8 << 10;
    config.per_cpu_start = 0x1000_0000;
    tweak(&mut config);
    let pcpu = Percpu::new(Host(mock.clone()), config, STATIC_IMAGE).expect("init");
    (mock, pcpu)
}

/// Fill `cpu`'s copy of an area with a pattern derived from `tag`.
pub fn fill<P: Platform>(pcpu: &Percpu<P>, ptr: allocator::PcpuPtr, size: usize, tag: u64) {
    for cpu in 0..pcpu.nr_cpus() {
        let byte = pattern(tag, cpu);
        // SAFETY: the area is live and `size` bytes long on every CPU.
        unsafe { pcpu.per_cpu_ptr(ptr, cpu).write_bytes(byte, size) };
    }
}

/// Check the pattern `fill` wrote; returns the first mismatch.
pub fn check_fill<P: Platform>(
    pcpu: &Percpu<P>,
    ptr: allocator::PcpuPtr,
    size: usize,
    tag: u64,
) -> Result<(), String> {
    for cpu in 0..pcpu.nr_cpus() {
        let byte = pattern(tag, cpu);
        // SAFETY: the area is live and `size` bytes long on every CPU.
        let bytes = unsafe { std::slice::from_raw_parts(pcpu.per_cpu_ptr(ptr, cpu), size) };
        // Slice equality is a memcmp: fast even in unoptimised test builds.
        if bytes != vec![byte; size].as_slice() {
            let i = bytes.iter().position(|&b| b != byte).unwrap();
            return Err(format!(
                "area {:#x} cpu {cpu} byte {i}: {:#x} != {byte:#x}",
                ptr.0, bytes[i]
            ));
        }
    }
    Ok(())
}

/// Whether every CPU's copy of an area is zero.
pub fn is_zeroed<P: Platform>(pcpu: &Percpu<P>, ptr: allocator::PcpuPtr, size: usize) -> bool {
    let zeros = vec![0u8; size];
    (0..pcpu.nr_cpus()).all(|cpu| {
        // SAFETY: the area is live and `size` bytes long on every CPU.
        let bytes = unsafe { std::slice::from_raw_parts(pcpu.per_cpu_ptr(ptr, cpu), size) };
        bytes == zeros.as_slice()
    })
}

fn pattern(tag: u64, cpu: usize) -> u8 {
    let x = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (cpu as u64).wrapping_mul(0xff51_afd7);
    // Never 0, so a zeroed area never passes as filled.
    (x >> 56) as u8 | 1
}
