//! What the 2009 code did, pinned on the host mock: the lock calls of the
//! reclaim work, map extension that does not restart the search (`fine`) or
//! does (`fixed`), where the replaced area map is freed, the plain-spin `free`
//! of `irq-plain`, and the seed's warning on illegal requests.

mod common;

use allocator::{PcpuPtr, Percpu, Variant, MIN_UNIT_SIZE, PAGE_SIZE};
use common::{in_hardirq, setup, Event, Host};

/// The post-patch variants: they share alloc and reclaim, and differ in
/// `free` and in the seed's latent hazards.
const POST_PATCH: [Variant; 4] = [
    Variant::Irq,
    Variant::IrqPlain,
    Variant::Fine,
    Variant::Fixed,
];

/// Allocations of 4 bytes in the first chunk until its area map has grown past
/// `entries` entries.
fn grow_map(pcpu: &Percpu<Host>, entries: usize) -> Vec<PcpuPtr> {
    (0..entries)
        .map(|_| pcpu.alloc(4, 4).expect("small alloc"))
        .collect()
}

/// Two chunks of their own, both freed: the reclaim work is pending.
fn two_free_chunks(mock: &common::Mock, pcpu: &Percpu<Host>) {
    let a = pcpu.alloc(MIN_UNIT_SIZE, 8).unwrap();
    let b = pcpu.alloc(MIN_UNIT_SIZE, 8).unwrap();
    pcpu.free(a);
    pcpu.free(b);
    assert!(mock.work_pending.load(std::sync::atomic::Ordering::SeqCst));
}

/// `pcpu_reclaim` takes `pcpu_alloc_mutex` then `pcpu_lock` (both, because an
/// allocation may use a chunk with only the mutex held), unlinks, drops both
/// and only then depopulates and frees. A reclaim that skipped the mutex, or
/// released memory under a lock, fails here.
#[test]
fn reclaim_work_takes_both_locks_and_releases_memory_outside_them() {
    for variant in Variant::ALL {
        let (mock, pcpu) = setup(variant);
        two_free_chunks(&mock, &pcpu);
        mock.record(true);
        assert!(mock.run_pending_work(&pcpu));
        mock.record(false);
        let events = mock.events();
        let locks: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Lock(..)))
            .collect();
        use Event::Lock;
        let expected = match variant {
            Variant::Mutex => vec![
                Lock("mutex_lock", "pcpu_mutex"),
                Lock("mutex_unlock", "pcpu_mutex"),
            ],
            _ => vec![
                Lock("mutex_lock", "pcpu_alloc_mutex"),
                Lock("spin_lock_irq", "pcpu_lock"),
                Lock("spin_unlock_irq", "pcpu_lock"),
                Lock("mutex_unlock", "pcpu_alloc_mutex"),
            ],
        };
        assert_eq!(locks, expected.iter().collect::<Vec<_>>(), "{variant:?}");
        let last_lock = events
            .iter()
            .rposition(|e| matches!(e, Event::Lock(..)))
            .unwrap();
        let first_release = events
            .iter()
            .position(|e| {
                matches!(
                    e,
                    Event::FreePage | Event::Unmap(..) | Event::VmRelease(_) | Event::MemFree(_)
                )
            })
            .expect("reclaim released memory");
        assert!(
            first_release > last_lock,
            "{variant:?}: memory released under a lock: {events:?}"
        );
        assert_eq!(pcpu.stats().chunks_reclaimed, 1, "{variant:?}");
    }
}

/// The seed's `pcpu_extend_area_map` returns 0 after extending, so
/// `pcpu_alloc` never restarts its walk; the corrected variant restarts after
/// every extension.
#[test]
fn extension_restarts_the_search_only_in_fixed() {
    for variant in POST_PATCH {
        let (_mock, pcpu) = setup(variant);
        grow_map(&pcpu, 40);
        let stats = pcpu.stats();
        assert!(stats.map_extensions >= 2, "{variant:?}: {stats:?}");
        match variant {
            Variant::Fixed => assert_eq!(stats.search_restarts, stats.map_extensions),
            _ => assert_eq!(stats.search_restarts, 0, "{variant:?}: the seed restarted"),
        }
    }
}

/// The pcpu_lock event that precedes each `mem_free` of a replaced map larger
/// than a page (the seed's `vfree`).
fn lock_state_at_large_map_frees(variant: Variant) -> Vec<&'static str> {
    let (mock, pcpu) = setup(variant);
    mock.record(true);
    // Past 2048 entries: the 2048-entry map (8 KiB, vmalloc'ed) is replaced.
    let areas = grow_map(&pcpu, 2100);
    mock.record(false);
    assert!(pcpu.stats().map_extensions >= 8);
    let events = mock.events();
    let mut states = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if matches!(e, Event::MemFree(size) if *size > PAGE_SIZE) {
            let last = events[..i]
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::Lock(op, "pcpu_lock") => Some(*op),
                    _ => None,
                })
                .expect("a pcpu_lock call before the free");
            states.push(last);
        }
    }
    for p in areas {
        pcpu.free(p);
    }
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    states
}

/// The seed frees the old map (`vfree` above a page) with pcpu_lock held and
/// IRQs off; the corrected variant after dropping the lock.
#[test]
fn old_large_map_is_freed_under_pcpu_lock_only_in_the_seed() {
    assert_eq!(
        lock_state_at_large_map_frees(Variant::Fine),
        ["spin_lock_irq"]
    );
    assert_eq!(
        lock_state_at_large_map_frees(Variant::Fixed),
        ["spin_unlock_irq"]
    );
}

/// `irq-plain` frees with plain spin ops: once pcpu_lock has been taken with
/// IRQs on (a free from process context) and in hard-IRQ (a free from an IRQ
/// handler), its usage is inconsistent. The irqsave free of `fine` is not.
#[test]
fn plain_spin_free_is_inconsistent_irq_usage() {
    for variant in [Variant::IrqPlain, Variant::Fine] {
        let (mock, pcpu) = setup(variant);
        let a = pcpu.alloc(64, 8).unwrap();
        let b = pcpu.alloc(64, 8).unwrap();
        mock.record(true);
        pcpu.free(a);
        in_hardirq(&mock, || pcpu.free(b));
        mock.record(false);
        let inconsistent = mock
            .violations()
            .iter()
            .any(|v| v.starts_with("inconsistent-irq-state: pcpu_lock"));
        assert_eq!(inconsistent, variant == Variant::IrqPlain, "{variant:?}");
        if variant == Variant::IrqPlain {
            let locks: Vec<Event> = mock.events();
            assert_eq!(
                locks,
                [
                    Event::Lock("spin_lock", "pcpu_lock"),
                    Event::Lock("spin_unlock", "pcpu_lock"),
                    Event::Lock("spin_lock", "pcpu_lock"),
                    Event::Lock("spin_unlock", "pcpu_lock"),
                ]
            );
        }
    }
}

/// The seed warns about, and refuses, a size of 0 or over the unit minimum
/// and an alignment over a page (the port also refuses non-powers of two).
#[test]
fn illegal_requests_warn_and_fail() {
    let (mock, pcpu) = setup(Variant::Fine);
    for (size, align) in [(0, 4), (MIN_UNIT_SIZE + 1, 4), (16, 2 * PAGE_SIZE), (16, 3)] {
        assert!(pcpu.alloc(size, align).is_none());
        let warnings = mock.warnings();
        assert_eq!(
            warnings.last().map(String::as_str),
            Some(
                format!("illegal size ({size}) or align ({align}) for percpu allocation").as_str()
            )
        );
    }
    assert_eq!(mock.warnings().len(), 4);
    assert!(pcpu.alloc(16, 16).is_some());
    assert_eq!(mock.warnings().len(), 4, "a legal request does not warn");
}
