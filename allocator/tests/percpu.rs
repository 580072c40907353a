//! Behaviour of the allocator on the host mock: setup, alloc/free, the
//! reserved chunk, chunk creation and reclaim, the lock protocol of each
//! variant, and the flush discipline.

mod common;

use allocator::{ChunkKind, PcpuPtr, Variant, MIN_UNIT_SIZE, PAGE_SIZE};
use common::{check_fill, fill, in_hardirq, is_zeroed, setup, setup_with, Event, STATIC_IMAGE};

const ALL: [Variant; 5] = Variant::ALL;

fn chunk_kinds<P: allocator::Platform>(pcpu: &allocator::Percpu<P>) -> Vec<(ChunkKind, usize)> {
    let mut v = Vec::new();
    pcpu.for_each_chunk(|c| v.push((c.kind, c.free_size)));
    v
}

#[test]
fn first_chunk_holds_the_static_image_on_every_cpu() {
    for variant in ALL {
        let (mock, pcpu) = setup(variant);
        assert_eq!(pcpu.unit_size(), MIN_UNIT_SIZE);
        for cpu in 0..4 {
            // The static image's link address is per_cpu_start.
            let copy = pcpu.per_cpu_ptr(PcpuPtr(0x1000_0000), cpu);
            assert_eq!(copy as usize, pcpu.base_addr() + cpu * pcpu.unit_size());
            // SAFETY: the first chunk's static area is mapped on every CPU.
            let bytes = unsafe { std::slice::from_raw_parts(copy, STATIC_IMAGE.len()) };
            assert_eq!(bytes, STATIC_IMAGE);
            assert!(mock.is_mapped(copy as usize, pcpu.unit_size()));
            // The rest of the static area (the per-CPU .bss) starts zeroed, though
            // the frames were mapped poisoned.
            // SAFETY: as above; the static area is 8 KiB.
            let bss = unsafe { std::slice::from_raw_parts(copy, 8 << 10) };
            assert!(
                bss[STATIC_IMAGE.len()..].iter().all(|&b| b == 0),
                "cpu{cpu}"
            );
        }
        let kinds = chunk_kinds(&pcpu);
        assert_eq!(
            kinds,
            vec![
                (ChunkKind::First, MIN_UNIT_SIZE - (16 << 10)),
                (ChunkKind::Reserved, 8 << 10)
            ]
        );
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

#[test]
fn allocations_are_zeroed_aligned_and_per_cpu() {
    for variant in ALL {
        let (mock, pcpu) = setup(variant);
        let mut live = Vec::new();
        for (i, (size, align)) in [(4, 4), (100, 8), (3000, 64), (5000, 4096), (1, 1)]
            .into_iter()
            .enumerate()
        {
            let ptr = pcpu.alloc(size, align).expect("alloc");
            for cpu in 0..4 {
                assert_eq!(pcpu.per_cpu_ptr(ptr, cpu) as usize % align, 0);
                assert!(mock.is_mapped(pcpu.per_cpu_ptr(ptr, cpu) as usize, size));
            }
            assert!(is_zeroed(&pcpu, ptr, size));
            fill(&pcpu, ptr, size, i as u64);
            live.push((ptr, size, i as u64));
        }
        for &(ptr, size, tag) in &live {
            check_fill(&pcpu, ptr, size, tag).unwrap();
        }
        for (ptr, _, _) in live {
            pcpu.free(ptr);
        }
        // Everything is back: the first chunk is as at boot.
        assert_eq!(
            chunk_kinds(&pcpu)[0],
            (ChunkKind::First, MIN_UNIT_SIZE - (16 << 10))
        );
        let stats = pcpu.stats();
        assert_eq!((stats.allocs, stats.frees), (5, 5));
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

#[test]
fn illegal_requests_are_refused() {
    let (_mock, pcpu) = setup(Variant::Fine);
    assert!(pcpu.alloc(0, 4).is_none());
    assert!(pcpu.alloc(MIN_UNIT_SIZE + 1, 4).is_none());
    assert!(pcpu.alloc(8, 3).is_none());
    assert!(pcpu.alloc(8, 2 * PAGE_SIZE).is_none());
    assert!(
        pcpu.alloc(MIN_UNIT_SIZE, PAGE_SIZE).is_some(),
        "a whole unit fits a new chunk"
    );
}

#[test]
fn reserved_allocations_come_from_the_reserved_area() {
    for variant in ALL {
        let (_mock, pcpu) = setup(variant);
        let static_end = 0x1000_0000 + (8 << 10);
        let reserved_end = static_end + (8 << 10);
        let r = pcpu.alloc_reserved(1024, 16).unwrap();
        assert!(r.0 >= static_end && r.0 + 1024 <= reserved_end);
        let d = pcpu.alloc(1024, 16).unwrap();
        assert!(
            d.0 >= reserved_end,
            "dynamic allocations stay out of the reserved area"
        );
        // The reserved area is small and never grows.
        assert!(pcpu.alloc_reserved(8 << 10, 4).is_none());
        pcpu.free(r);
        assert!(pcpu.alloc_reserved(8 << 10, 4).is_some());
        pcpu.free(d);
    }
}

#[test]
#[should_panic(expected = "double free")]
fn double_free_is_caught() {
    let (_mock, pcpu) = setup(Variant::Fine);
    let a = pcpu.alloc(64, 8).unwrap();
    let _b = pcpu.alloc(64, 8).unwrap();
    pcpu.free(a);
    pcpu.free(a);
}

/// Allocate whole units until the first chunk and `n` new chunks are full.
fn fill_chunks<P: allocator::Platform>(pcpu: &allocator::Percpu<P>, n: usize) -> Vec<PcpuPtr> {
    let mut v = Vec::new();
    // The first chunk's dynamic part: 48 KiB.
    v.push(pcpu.alloc(48 << 10, 4).unwrap());
    for _ in 0..n {
        v.push(pcpu.alloc(MIN_UNIT_SIZE, 4).unwrap());
    }
    v
}

#[test]
fn full_chunks_make_new_ones_and_reclaim_keeps_one_free() {
    for variant in ALL {
        let (mock, pcpu) = setup(variant);
        let (mem0, pages0, areas0) = (mock.live_mem_allocs(), mock.live_pages(), mock.live_areas());
        let v = fill_chunks(&pcpu, 3);
        assert_eq!(pcpu.stats().chunks_created, 3);
        assert_eq!(mock.live_areas(), areas0 + 3);
        assert_eq!(mock.live_pages(), pages0 + 3 * 4 * 16);

        for &p in &v[1..] {
            pcpu.free(p);
        }
        // Freeing the second fully free chunk woke the reclaimer.
        assert!(
            mock.work_scheduled
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 1
        );
        assert!(mock.run_pending_work(&pcpu));
        let dynamic: Vec<_> = chunk_kinds(&pcpu)
            .into_iter()
            .filter(|(k, _)| *k == ChunkKind::Dynamic)
            .collect();
        assert_eq!(dynamic, vec![(ChunkKind::Dynamic, MIN_UNIT_SIZE)]);
        assert_eq!(pcpu.stats().chunks_reclaimed, 2);
        // Two chunks' metadata, area maps, virtual areas and pages are gone.
        assert_eq!(mock.live_areas(), areas0 + 1);
        assert_eq!(mock.live_pages(), pages0 + 4 * 16);
        // The first chunk's extended map and one chunk's metadata and map.
        assert_eq!(mock.live_mem_allocs(), mem0 + 3);
        pcpu.free(v[0]);
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

#[test]
fn chunks_sit_on_the_slot_their_free_size_calls_for() {
    let (_mock, pcpu) = setup(Variant::Fine);
    let mut live = Vec::new();
    for i in 0..200usize {
        live.push(pcpu.alloc(1 + (i * 37) % 2000, 1 << (i % 6)).unwrap());
        if i % 3 == 0 {
            pcpu.free(live.swap_remove(i % live.len()));
        }
        pcpu.for_each_chunk(|c| {
            if c.kind != ChunkKind::Reserved {
                assert_eq!(c.listed_slot, Some(c.expected_slot));
            } else {
                assert_eq!(c.listed_slot, None);
            }
            let largest = c.map.iter().copied().filter(|&e| e > 0).max().unwrap_or(0) as usize;
            assert!(c.contig_hint >= largest);
        });
    }
}

/// Leave the first chunk with free space only in two 2-byte holes and a
/// `contig_hint` of 8 that no block has any more (an allocation took the
/// 8-byte block that was not the map's last entry, so the hint kept its old
/// value): its free size still puts it on a slot list above 0.
fn first_chunk_with_only_tiny_holes_and_a_stale_hint<P: allocator::Platform>(
    pcpu: &allocator::Percpu<P>,
) -> Vec<PcpuPtr> {
    // The dynamic area starts page-aligned: 4 bytes first keep the holes off
    // any alignment above 2.
    let mut live = vec![pcpu.alloc(4, 1).unwrap()];
    let hole1 = pcpu.alloc(2, 1).unwrap();
    live.push(pcpu.alloc(2, 1).unwrap());
    let hole2 = pcpu.alloc(2, 1).unwrap();
    live.push(pcpu.alloc(2, 1).unwrap());
    let block = pcpu.alloc(8, 1).unwrap();
    loop {
        let mut free = 0;
        pcpu.for_each_chunk(|c| {
            if c.kind == ChunkKind::First {
                free = c.free_size;
            }
        });
        if free == 0 {
            break;
        }
        live.push(pcpu.alloc(free.min(MIN_UNIT_SIZE), 1).unwrap());
    }
    for p in [hole1, hole2, block] {
        pcpu.free(p);
    }
    live.push(pcpu.alloc(8, 1).unwrap());
    pcpu.for_each_chunk(|c| {
        if c.kind == ChunkKind::First {
            let largest = c.map.iter().copied().filter(|&e| e > 0).max();
            assert_eq!((c.free_size, c.contig_hint, largest), (4, 8, Some(2)));
            assert_ne!(c.listed_slot, Some(0));
        }
    });
    live
}

/// A failed scan is not a lock race: with `pcpu_lock` held throughout, the
/// request (fits the stale hint, no hole is aligned for it) fails on the
/// first chunk, whose hint becomes 2 and moves it to slot 0. The seed's
/// `list_for_each_entry` then reads the next entry from slot 0's list and
/// runs off its end; `fixed` read the next entry before and goes on to a new
/// chunk.
#[test]
fn a_chunk_moved_by_its_own_failed_scan_takes_only_the_seed_s_walk_off_its_list() {
    for variant in ALL {
        let (_mock, pcpu) = setup(variant);
        let _live = first_chunk_with_only_tiny_holes_and_a_stale_hint(&pcpu);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pcpu.alloc(1, PAGE_SIZE)));
        match outcome {
            Ok(p) if variant == Variant::Fixed => {
                let p = p.expect("fixed allocates from a new chunk");
                assert_eq!(pcpu.per_cpu_ptr(p, 0) as usize % PAGE_SIZE, 0);
                assert_eq!(pcpu.stats().chunks_created, 1);
                pcpu.check().unwrap();
            }
            Err(panic) if variant != Variant::Fixed => {
                let message = panic.downcast_ref::<String>().expect("a formatted panic");
                assert!(
                    message.contains("ran off the end of slot 0's list")
                        && message.contains("this walk's own failed pcpu_alloc_area"),
                    "{variant:?}: {message}"
                );
            }
            Ok(_) => panic!("{variant:?}: the walk went on"),
            Err(_) => panic!("{variant:?}: the walk panicked"),
        }
    }
}

fn lock_and_mem_events(mock: &common::Mock) -> Vec<Event> {
    mock.events()
        .into_iter()
        .filter(|e| matches!(e, Event::Lock(..) | Event::MemAlloc(_)))
        .collect()
}

/// The lock calls of the final patch, in order, for an allocation that has
/// to extend the area map (the first chunk starts with a two-entry map).
#[test]
fn fine_drops_pcpu_lock_to_extend_the_map() {
    for variant in [
        Variant::Fine,
        Variant::Irq,
        Variant::IrqPlain,
        Variant::Fixed,
    ] {
        let (mock, pcpu) = setup(variant);
        mock.record(true);
        let a = pcpu.alloc(64, 8).unwrap();
        pcpu.free(a);
        mock.record(false);
        use Event::*;
        let free_ops = match variant {
            Variant::Fine | Variant::Fixed => ["spin_lock_irqsave", "spin_unlock_irqrestore"],
            Variant::IrqPlain => ["spin_lock", "spin_unlock"],
            _ => ["spin_lock_irq", "spin_unlock_irq"],
        };
        assert_eq!(
            lock_and_mem_events(&mock),
            [
                Lock("mutex_lock", "pcpu_alloc_mutex"),
                Lock("spin_lock_irq", "pcpu_lock"),
                Lock("spin_unlock_irq", "pcpu_lock"),
                MemAlloc(16 * 4),
                Lock("spin_lock_irq", "pcpu_lock"),
                // (fixed: restart) area found
                Lock("spin_unlock_irq", "pcpu_lock"),
                Lock("mutex_unlock", "pcpu_alloc_mutex"),
                Lock(free_ops[0], "pcpu_lock"),
                Lock(free_ops[1], "pcpu_lock"),
            ]
        );
        assert_eq!(pcpu.stats().map_extensions, 1);
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

/// The lock calls of `reclaim_work` (the seed's Synchronization rules: the chunk
/// list is changed under `pcpu_alloc_mutex` and `pcpu_lock`, so that reclaim cannot
/// unlink a chunk an allocation is populating), and that the chunks really went.
#[test]
fn mutex_variant_allocates_under_pcpu_mutex() {
    let (mock, pcpu) = setup(Variant::Mutex);
    mock.record(true);
    let a = pcpu.alloc(64, 8).unwrap();
    pcpu.free(a);
    mock.record(false);
    use Event::*;
    assert_eq!(
        lock_and_mem_events(&mock),
        [
            Lock("mutex_lock", "pcpu_mutex"),
            MemAlloc(16 * 4),
            Lock("mutex_unlock", "pcpu_mutex"),
            Lock("mutex_lock", "pcpu_mutex"),
            Lock("mutex_unlock", "pcpu_mutex"),
        ]
    );
}

#[test]
fn free_from_hardirq_is_clean_only_in_fine() {
    let expect = [
        (Variant::Fine, None),
        (Variant::Fixed, None),
        (Variant::Irq, Some("irqs-enabled-in-hardirq")),
        (Variant::Mutex, Some("sleep-in-atomic")),
    ];
    for (variant, finding) in expect {
        let (mock, pcpu) = setup(variant);
        let p = pcpu.alloc(256, 8).unwrap();
        in_hardirq(&mock, || pcpu.free(p));
        let violations = mock.violations();
        match finding {
            None => assert!(violations.is_empty(), "{variant:?}: {violations:?}"),
            Some(kind) => assert!(
                violations.iter().any(|v| v.starts_with(kind)),
                "{variant:?} should show {kind}: {violations:?}"
            ),
        }
    }
}

/// The seed's reclaim frees every page, then unmaps without any flush; the
/// corrected variant flushes the cache, unmaps, flushes the TLB, then frees.
#[test]
fn reclaim_depopulates_in_the_variants_order() {
    for variant in [Variant::Fine, Variant::Fixed] {
        let (mock, pcpu) = setup_with(variant, 2, |_| {});
        let v = fill_chunks(&pcpu, 2);
        pcpu.free(v[1]);
        pcpu.free(v[2]);
        mock.record(true);
        assert!(mock.run_pending_work(&pcpu));
        mock.record(false);
        let mem: Vec<Event> = mock
            .events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Lock(..) | Event::MemAlloc(_) | Event::MemFree(_)))
            .collect();
        let unit = MIN_UNIT_SIZE;
        let first_unmap = mem
            .iter()
            .position(|e| matches!(e, Event::Unmap(..)))
            .unwrap();
        let base = match mem[first_unmap] {
            Event::Unmap(addr, _) => addr,
            _ => unreachable!(),
        };
        let unmaps = [Event::Unmap(base, unit), Event::Unmap(base + unit, unit)];
        let frees = std::iter::repeat_n(Event::FreePage, 2 * 16);
        let mut expected = Vec::new();
        if variant == Variant::Fixed {
            expected.push(Event::FlushCacheVunmap(base, base + 2 * unit));
            expected.extend(unmaps);
            expected.push(Event::FlushTlb(base, base + 2 * unit));
            expected.extend(frees);
        } else {
            expected.extend(frees);
            expected.extend(unmaps);
        }
        expected.push(Event::VmRelease(base));
        assert_eq!(mem, expected, "{variant:?}");
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
        let freed_mapped = mock.freed_while_mapped().len();
        match variant {
            Variant::Fixed => assert_eq!(freed_mapped, 0),
            _ => assert_eq!(freed_mapped, 2 * 16, "every page freed while mapped"),
        }
    }
}

#[test]
fn populate_maps_then_flushes_the_cache() {
    let (mock, pcpu) = setup_with(Variant::Fine, 2, |_| {});
    fill_chunks(&pcpu, 0);
    mock.record(true);
    let p = pcpu.alloc(PAGE_SIZE + 1, PAGE_SIZE).unwrap();
    mock.record(false);
    let mem: Vec<Event> = mock
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Map(..) | Event::FlushCacheVmap(..)))
        .collect();
    let base = pcpu.per_cpu_ptr(p, 0) as usize;
    let unit = MIN_UNIT_SIZE;
    assert_eq!(
        mem,
        [
            Event::Map(base, 2 * PAGE_SIZE),
            Event::Map(base + unit, 2 * PAGE_SIZE),
            Event::FlushCacheVmap(base, base + unit + 2 * PAGE_SIZE),
        ]
    );
}

#[test]
fn failed_populate_gives_back_only_its_own_pages() {
    for variant in ALL {
        let (mock, pcpu) = setup_with(variant, 2, |_| {});
        fill_chunks(&pcpu, 0);
        // A new chunk; `a` populates its first page.
        let a = pcpu.alloc(PAGE_SIZE - 64, 8).unwrap();
        fill(&pcpu, a, PAGE_SIZE - 64, 7);
        let pages = mock.live_pages();
        let mem = mock.live_mem_allocs();
        let allocs = pcpu.stats().allocs;
        // `b` shares a's page and needs two more; only one more frame exists.
        mock.page_budget
            .store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(pcpu.alloc(2 * PAGE_SIZE, 8).is_none());
        mock.page_budget
            .store(-1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            mock.live_pages(),
            pages,
            "{variant:?}: the failed call's frame is back"
        );
        assert_eq!(mock.live_mem_allocs(), mem);
        check_fill(&pcpu, a, PAGE_SIZE - 64, 7).expect("the neighbour keeps its page");
        assert!(mock.is_mapped(pcpu.per_cpu_ptr(a, 1) as usize, PAGE_SIZE - 64));
        assert_eq!(pcpu.stats().alloc_failures, 1);
        assert_eq!(
            pcpu.stats().allocs,
            allocs,
            "{variant:?}: a failed alloc is not counted"
        );
        // And the space is allocatable again.
        let b = pcpu.alloc(2 * PAGE_SIZE, 8).unwrap();
        assert!(is_zeroed(&pcpu, b, 2 * PAGE_SIZE));
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

#[test]
fn failed_metadata_allocation_fails_the_alloc_cleanly() {
    use std::sync::atomic::Ordering::SeqCst;
    for variant in ALL {
        let (mock, pcpu) = setup(variant);
        // Extending the first chunk's map needs memory.
        mock.mem_budget.store(0, SeqCst);
        assert!(pcpu.alloc(64, 8).is_none());
        mock.mem_budget.store(-1, SeqCst);
        let a = pcpu.alloc(64, 8).unwrap();
        // So does a new chunk.
        mock.mem_budget.store(0, SeqCst);
        assert!(pcpu.alloc(MIN_UNIT_SIZE, 8).is_none());
        mock.mem_budget.store(-1, SeqCst);
        let b = pcpu.alloc(MIN_UNIT_SIZE, 8).unwrap();
        assert_eq!(pcpu.stats().alloc_failures, 2);
        pcpu.free(a);
        pcpu.free(b);
        assert!(
            mock.violations().is_empty(),
            "{variant:?}: {:?}",
            mock.violations()
        );
    }
}

#[test]
fn failed_mapping_is_unmapped_with_flushes_before_its_pages_are_freed() {
    use std::sync::atomic::Ordering::SeqCst;
    for variant in ALL {
        let (mock, pcpu) = setup_with(variant, 2, |_| {});
        fill_chunks(&pcpu, 0);
        let a = pcpu.alloc(100, 8).unwrap();
        fill(&pcpu, a, 100, 3);
        let pages = mock.live_pages();
        // Pages 1 and 2 map for CPU 0, then mapping fails for CPU 1.
        mock.map_budget.store(1, SeqCst);
        mock.record(true);
        assert!(pcpu.alloc(2 * PAGE_SIZE, PAGE_SIZE).is_none());
        mock.record(false);
        mock.map_budget.store(-1, SeqCst);
        let mem: Vec<Event> = mock
            .events()
            .into_iter()
            .filter(|e| {
                !matches!(
                    e,
                    Event::Lock(..) | Event::MemAlloc(_) | Event::MemFree(_) | Event::AllocPage
                )
            })
            .collect();
        let base = pcpu.per_cpu_ptr(a, 0) as usize;
        let unit = MIN_UNIT_SIZE;
        let (start, end) = (base + PAGE_SIZE, base + unit + 3 * PAGE_SIZE);
        let mut expected = vec![
            Event::Map(base + PAGE_SIZE, 2 * PAGE_SIZE),
            Event::FlushCacheVunmap(start, end),
            Event::Unmap(base + PAGE_SIZE, 2 * PAGE_SIZE),
            Event::Unmap(base + unit + PAGE_SIZE, 2 * PAGE_SIZE),
            Event::FlushTlb(start, end),
        ];
        expected.extend(std::iter::repeat_n(Event::FreePage, 2 * 2));
        assert_eq!(mem, expected, "{variant:?}");
        assert_eq!(mock.live_pages(), pages);
        check_fill(&pcpu, a, 100, 3).unwrap();
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

#[test]
fn explicit_geometry_is_honoured() {
    let (mock, pcpu) = setup_with(Variant::Fine, 1, |c| {
        c.unit_size = Some(2 * MIN_UNIT_SIZE);
        c.dyn_size = Some(4096);
    });
    assert_eq!(pcpu.unit_size(), 2 * MIN_UNIT_SIZE);
    // Static 8 KiB + reserved 8 KiB + dynamic 4 KiB: five pages populated.
    assert_eq!(mock.live_pages(), 5);
    let mut first = Vec::new();
    pcpu.for_each_chunk(|c| first.push((c.kind, c.map.to_vec())));
    assert_eq!(first[0], (ChunkKind::First, vec![-(16 << 10), 4096]));
    // Too big for the first chunk's dynamic part: a new 128 KiB chunk.
    let p = pcpu.alloc(8192, 8).unwrap();
    assert_eq!(pcpu.stats().chunks_created, 1);
    assert!(p.0 > 0x1000_0000 + 2 * MIN_UNIT_SIZE || p.0 < 0x1000_0000);
    assert!(is_zeroed(&pcpu, p, 8192));
}

#[test]
fn bad_configurations_are_refused() {
    use allocator::{Config, InitError, Percpu};
    let mock = common::Mock::new(2);
    let host = common::Host(mock);
    let bad = |c: Config| Percpu::new(host.clone(), c, &[]).err();
    let base = Config::new(Variant::Fine, 4096);
    assert!(matches!(
        bad(Config {
            static_size: 0,
            ..base
        }),
        Some(InitError::BadConfig(_))
    ));
    assert!(matches!(
        bad(Config {
            unit_size: Some(MIN_UNIT_SIZE / 2),
            ..base
        }),
        Some(InitError::BadConfig(_))
    ));
    assert!(matches!(
        bad(Config {
            unit_size: Some(MIN_UNIT_SIZE + 100),
            ..base
        }),
        Some(InitError::BadConfig(_))
    ));
    assert!(matches!(
        bad(Config {
            // The first chunk does not fit the unit.
            reserved_size: MIN_UNIT_SIZE,
            unit_size: Some(MIN_UNIT_SIZE),
            ..base
        }),
        Some(InitError::BadConfig(_))
    ));
    assert!(Percpu::new(host.clone(), base, &[0u8; 4097]).is_err());
}

#[test]
fn variant_names_round_trip() {
    let names: Vec<&str> = ALL.iter().map(|v| v.name()).collect();
    assert_eq!(names, ["mutex", "irq", "irq-plain", "fine", "fixed"]);
    for variant in ALL {
        assert_eq!(Variant::from_name(variant.name()), Some(variant));
    }
    assert_eq!(Variant::from_name("spin"), None);
}

/// When the chunk index is full, the chunk made for the request is destroyed again:
/// the allocation fails and nothing it made is left behind.
#[test]
fn a_full_chunk_index_fails_the_alloc_without_leaking_the_new_chunk() {
    for variant in ALL {
        let (mock, pcpu) = setup_with(variant, 2, |c| c.max_chunks = 2);
        let mut v = fill_chunks(&pcpu, 0);
        // Dynamic chunks until the index refuses another.
        while let Some(p) = pcpu.alloc(MIN_UNIT_SIZE, 4) {
            v.push(p);
            assert!(v.len() < 16, "{variant:?}: max_chunks is not enforced");
        }
        let (mem, pages, areas) = (mock.live_mem_allocs(), mock.live_pages(), mock.live_areas());
        assert_eq!(pcpu.alloc(MIN_UNIT_SIZE, 4), None);
        assert_eq!(
            (mock.live_mem_allocs(), mock.live_pages(), mock.live_areas()),
            (mem, pages, areas),
            "{variant:?}"
        );
        assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    }
}

#[test]
fn accessors_report_the_configuration() {
    for cpus in [1, 3] {
        let (_mock, pcpu) = setup_with(Variant::Irq, cpus, |_| {});
        assert_eq!(pcpu.nr_cpus(), cpus);
        assert_eq!(pcpu.variant(), Variant::Irq);
    }
}

/// Reclaim is scheduled only when a free makes a chunk fully free while another
/// fully free chunk exists (one free chunk is kept as a spare).
#[test]
fn reclaim_is_scheduled_only_for_a_second_fully_free_chunk() {
    use std::sync::atomic::Ordering::SeqCst;
    for variant in ALL {
        let (mock, pcpu) = setup(variant);
        let v = fill_chunks(&pcpu, 2);
        pcpu.free(v[1]);
        assert_eq!(
            mock.work_scheduled.load(SeqCst),
            0,
            "{variant:?}: one free chunk"
        );
        assert_eq!(pcpu.stats().reclaim_scheduled, 0);
        pcpu.free(v[2]);
        assert_eq!(
            mock.work_scheduled.load(SeqCst),
            1,
            "{variant:?}: two free chunks"
        );
        assert_eq!(pcpu.stats().reclaim_scheduled, 1);
        assert_eq!(pcpu.stats().frees, 2);
    }
}

/// The counters and the chunk walk read the index under the variant's index lock:
/// `pcpu_mutex` in `mutex` (which has no `pcpu_lock`), `pcpu_lock` otherwise.
#[test]
fn stats_and_chunk_walks_take_the_variant_s_index_lock() {
    for (variant, lock) in [
        (Variant::Mutex, "pcpu_mutex"),
        (Variant::Irq, "pcpu_lock"),
        (Variant::Fine, "pcpu_lock"),
        (Variant::Fixed, "pcpu_lock"),
    ] {
        let (mock, pcpu) = setup(variant);
        mock.record(true);
        let _ = pcpu.stats();
        pcpu.for_each_chunk(|_| {});
        mock.record(false);
        let events = lock_and_mem_events(&mock);
        assert_eq!(events.len(), 4, "{variant:?}: {events:?}");
        assert!(
            events
                .iter()
                .all(|e| matches!(e, Event::Lock(_, name) if *name == lock)),
            "{variant:?}: {events:?}"
        );
    }
}
