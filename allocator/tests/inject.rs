//! The seeded rule breaks ([`Inject`]) on the host mock: each changes exactly
//! its one rule, and when the race it opens is forced (through the mock's
//! `mem_alloc` hook, which runs while an extension has `pcpu_lock` dropped)
//! the allocator's checks panic with what went wrong; the variant without the
//! break comes through the same schedule clean.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use allocator::{ChunkKind, Inject, PcpuPtr, Percpu, Variant, PAGE_SIZE};
use common::{setup_with, Event, Host, Mock};

fn setup_injected(variant: Variant, inject: Option<Inject>) -> (Arc<Mock>, Arc<Percpu<Host>>) {
    let (mock, pcpu) = setup_with(variant, 4, |config| config.inject = inject);
    (mock, Arc::new(pcpu))
}

/// The lock calls recorded while `f` runs.
fn locks_during(mock: &Mock, f: impl FnOnce()) -> Vec<Event> {
    mock.record(true);
    f();
    mock.record(false);
    mock.events()
        .into_iter()
        .filter(|e| matches!(e, Event::Lock(..)))
        .collect()
}

/// Runs `f` on a thread of its own: a caught panic leaves the mock's
/// per-thread state (IRQs off, locks held) behind on the thread it hit.
fn on_a_fresh_thread(f: impl FnOnce() + Send + 'static) {
    thread::spawn(f).join().unwrap();
}

/// The message of a panic caught by `catch_unwind`.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|text| text.to_string())
            .unwrap_or_default(),
    }
}

/// Runs `f` once, on another thread, inside the `mem_alloc` of the next
/// area-map extension from 16 to 32 entries (the window in which the
/// allocation holds only `pcpu_alloc_mutex`), and waits for it there.
fn in_next_extension_window(mock: &Mock, f: impl Fn() + Send + Sync + 'static) {
    let fired = AtomicBool::new(false);
    let f = Arc::new(f);
    mock.set_mem_alloc_hook(Some(Arc::new(move |size| {
        if size == 32 * 4 && !fired.swap(true, Ordering::SeqCst) {
            let f = f.clone();
            thread::spawn(move || f()).join().unwrap();
        }
    })));
}

/// The map of the one dynamic chunk: (entries, listed slot).
fn dynamic_chunk(pcpu: &Percpu<Host>, base: usize) -> (usize, Option<usize>) {
    let mut found = None;
    pcpu.for_each_chunk(|c| {
        if c.kind == ChunkKind::Dynamic && c.base == base {
            found = Some((c.map.len(), c.listed_slot));
        }
    });
    found.expect("the chunk is in the index")
}

/// The base of the dynamic chunk that holds `p` (0: the first chunk's).
fn chunk_base_of_any(pcpu: &Percpu<Host>, p: PcpuPtr) -> usize {
    let addr = pcpu.per_cpu_ptr(p, 0) as usize;
    let mut base = 0;
    pcpu.for_each_chunk(|c| {
        if c.kind == ChunkKind::Dynamic && addr >= c.base && addr < c.base + pcpu.unit_size() {
            base = c.base;
        }
    });
    base
}

/// The base of the dynamic chunk that holds `p`.
fn chunk_base_of(pcpu: &Percpu<Host>, p: PcpuPtr) -> usize {
    let base = chunk_base_of_any(pcpu, p);
    assert_ne!(base, 0, "{p:?} is in the first chunk");
    base
}

#[test]
fn inject_names_round_trip_and_leave_the_platform_s_own_alone() {
    for inject in Inject::ALL {
        assert_eq!(Inject::from_name(inject.name()), Some(inject));
    }
    assert_eq!(Inject::from_name("skip-tlb-flush"), None);
}

/// `reclaim-one-lock` unlinks under `pcpu_lock` alone; `mutex`, whose one
/// lock covers everything, is unchanged.
#[test]
fn reclaim_one_lock_takes_pcpu_lock_only() {
    for variant in [Variant::Fixed, Variant::Fine, Variant::Mutex] {
        let (mock, pcpu) = setup_injected(variant, Some(Inject::ReclaimOneLock));
        let a = pcpu.alloc(60 << 10, 8).unwrap();
        let b = pcpu.alloc(60 << 10, 8).unwrap();
        pcpu.free(a);
        pcpu.free(b);
        let locks = locks_during(&mock, || assert!(mock.run_pending_work(&pcpu)));
        let expected = match variant {
            Variant::Mutex => vec![
                Event::Lock("mutex_lock", "pcpu_mutex"),
                Event::Lock("mutex_unlock", "pcpu_mutex"),
            ],
            _ => vec![
                Event::Lock("spin_lock_irq", "pcpu_lock"),
                Event::Lock("spin_unlock_irq", "pcpu_lock"),
            ],
        };
        assert_eq!(locks, expected, "{variant:?}");
        assert_eq!(pcpu.stats().chunks_reclaimed, 1, "{variant:?}");
    }
}

/// `free-unlocked` frees without any lock call and without asserting one
/// (the mock's `spin_assert_held` would panic), in every variant.
#[test]
fn free_unlocked_takes_no_lock() {
    for variant in Variant::ALL {
        let (mock, pcpu) = setup_injected(variant, Some(Inject::FreeUnlocked));
        let p = pcpu.alloc(64, 8).unwrap();
        let locks = locks_during(&mock, || pcpu.free(p));
        assert_eq!(locks, [], "{variant:?}");
        assert_eq!(pcpu.stats().frees, 1, "{variant:?}");
        assert_eq!(pcpu.check(), Ok(()), "{variant:?}");
    }
}

/// `extend-no-restart` makes `fixed` walk on after an extension, like the
/// seed; the rest of `fixed` stays (the old map is still freed after
/// dropping `pcpu_lock`).
#[test]
fn extend_no_restart_keeps_fixed_from_restarting() {
    let (mock, pcpu) = setup_injected(Variant::Fixed, Some(Inject::ExtendNoRestart));
    mock.record(true);
    let areas: Vec<PcpuPtr> = (0..40).map(|_| pcpu.alloc(4, 4).unwrap()).collect();
    mock.record(false);
    let stats = pcpu.stats();
    assert!(stats.map_extensions >= 2, "{stats:?}");
    assert_eq!(stats.search_restarts, 0, "{stats:?}");
    let events = mock.events();
    let old_map_free = events
        .iter()
        .position(|e| matches!(e, Event::MemFree(_)))
        .expect("an old map was freed");
    assert_eq!(
        events[..old_map_free]
            .iter()
            .rev()
            .find(|e| matches!(e, Event::Lock(_, "pcpu_lock"))),
        Some(&Event::Lock("spin_unlock_irq", "pcpu_lock"))
    );
    for p in areas {
        pcpu.free(p);
    }
    assert_eq!(pcpu.check(), Ok(()));
}

/// A chunk whose map is full (15 entries) and whose rest has its only page
/// boundary taken: a 61240-byte area, an 8-byte one at 61440, and twelve of
/// 20 bytes, which leave 4048 bytes free (slot 9). Returns the chunk's base
/// and the 20-byte areas.
fn chunk_without_a_free_page_boundary(pcpu: &Percpu<Host>) -> (usize, Vec<PcpuPtr>) {
    let big = pcpu.alloc(61240, PAGE_SIZE).unwrap();
    let base = chunk_base_of(pcpu, big);
    let pin = pcpu.alloc(8, PAGE_SIZE).unwrap();
    assert_eq!(pcpu.per_cpu_ptr(pin, 0) as usize, base + 61440);
    let small: Vec<PcpuPtr> = (0..12).map(|_| pcpu.alloc(20, 4).unwrap()).collect();
    assert!(small.iter().all(|&p| chunk_base_of(pcpu, p) == base));
    assert_eq!(dynamic_chunk(pcpu, base), (15, Some(9)));
    (base, small)
}

/// The seed's missing restart: a page-aligned request tries the full chunk
/// of slot 9 and extends its map; meanwhile frees move the chunk to slot 10.
/// It still has no page boundary free, and without a restart the walk goes
/// on along slot 10's list, which ends there: `list_for_each_entry` would
/// take that list's head for a chunk. `fine` and `fixed` with
/// `extend-no-restart` panic; `fixed` restarts and finds room in the first
/// chunk.
#[test]
fn a_walk_that_continues_on_another_slot_s_list_runs_off_its_end() {
    for (variant, inject) in [
        (Variant::Fine, None),
        (Variant::Fixed, Some(Inject::ExtendNoRestart)),
        (Variant::Fixed, None),
    ] {
        on_a_fresh_thread(move || walk_after_extension(variant, inject));
    }
}

fn walk_after_extension(variant: Variant, inject: Option<Inject>) {
    let (mock, pcpu) = setup_injected(variant, inject);
    let (base, small) = chunk_without_a_free_page_boundary(&pcpu);
    {
        let pcpu = pcpu.clone();
        in_next_extension_window(&mock, move || {
            for &p in &small[..3] {
                pcpu.free(p);
            }
        });
    }
    let result = catch_unwind(AssertUnwindSafe(|| pcpu.alloc(64, PAGE_SIZE)));
    mock.set_mem_alloc_hook(None);
    match (variant, inject) {
        (Variant::Fixed, None) => {
            let p = result
                .expect("fixed restarts")
                .expect("room in the first chunk");
            assert_ne!(chunk_base_of_any(&pcpu, p), base);
            assert_eq!(dynamic_chunk(&pcpu, base).1, Some(10));
            assert_eq!(pcpu.check(), Ok(()));
            assert!(mock.violations().is_empty(), "{:?}", mock.violations());
        }
        _ => {
            let text = panic_text(result.expect_err("the walk ran off"));
            assert!(
                text.contains("walk of slot 9 ran off the end of slot 10's list"),
                "{variant:?} {inject:?}: {text}"
            );
        }
    }
}

/// The rule `reclaim-one-lock` breaks: an allocation extending a chunk's map
/// holds only `pcpu_alloc_mutex`. Meanwhile every area of that chunk is
/// freed, then the only area of a second chunk (which so goes first on the
/// fully-free list) and the reclaim work runs. Without the mutex it reclaims
/// the chunk under the allocation, which panics when it re-takes
/// `pcpu_lock`; with it (`fixed`), the reclaim waits for the allocation.
#[test]
fn reclaim_without_the_mutex_frees_the_chunk_an_extension_is_using() {
    for inject in [Some(Inject::ReclaimOneLock), None] {
        on_a_fresh_thread(move || reclaim_during_extension(inject));
    }
}

fn reclaim_during_extension(inject: Option<Inject>) {
    let (mock, pcpu) = setup_injected(Variant::Fixed, inject);
    let big = pcpu.alloc(61240, PAGE_SIZE).unwrap();
    let base = chunk_base_of(&pcpu, big);
    let other = pcpu.alloc(60000, PAGE_SIZE).unwrap();
    assert_ne!(chunk_base_of(&pcpu, other), base);
    let small: Vec<PcpuPtr> = (0..13).map(|_| pcpu.alloc(20, 4).unwrap()).collect();
    assert!(small.iter().all(|&p| chunk_base_of(&pcpu, p) == base));
    assert_eq!(dynamic_chunk(&pcpu, base).0, 15);
    let reclaimer = Arc::new(std::sync::Mutex::new(None));
    {
        let (pcpu, mock2, reclaimer) = (pcpu.clone(), mock.clone(), reclaimer.clone());
        in_next_extension_window(&mock, move || {
            for &p in small.iter().chain([&big]) {
                pcpu.free(p);
            }
            pcpu.free(other);
            // The reclaim work, on its own thread: without the mutex it
            // is done before this returns; with it, it waits.
            let (pcpu, mock2) = (pcpu.clone(), mock2.clone());
            let worker = thread::spawn(move || assert!(mock2.run_pending_work(&pcpu)));
            if inject.is_some() {
                worker.join().unwrap();
            } else {
                *reclaimer.lock().unwrap() = Some(worker);
            }
        });
    }
    let result = catch_unwind(AssertUnwindSafe(|| pcpu.alloc(8, 4)));
    mock.set_mem_alloc_hook(None);
    if inject.is_some() {
        let text = panic_text(result.expect_err("the chunk went away"));
        assert!(
            text.contains(&format!(
                "chunk {base:#x} was reclaimed while an allocation had pcpu_lock dropped"
            )),
            "{text}"
        );
    } else {
        let p = result.expect("no panic").expect("an area");
        let worker = reclaimer.lock().unwrap().take().expect("reclaim started");
        worker.join().unwrap();
        assert_eq!(pcpu.stats().chunks_reclaimed, 1);
        pcpu.free(p);
        assert_eq!(pcpu.check(), Ok(()));
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}
