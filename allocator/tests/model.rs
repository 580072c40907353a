//! Property test: random alloc/free/reclaim sequences against a simple model
//! of what must hold (results aligned, disjoint, inside their chunk, zeroed on
//! every CPU; every free returns space; all free => reclaimable, and reclaim
//! leaves exactly one free chunk), plus the index invariants after every step
//! (checked here and by `Percpu::check`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use allocator::{ChunkKind, PcpuPtr, Percpu, Platform, Variant, MIN_UNIT_SIZE, PAGE_SIZE};
use common::{check_fill, fill, is_zeroed, setup_with, Host, Mock};
use proptest::prelude::*;

const NR_CPUS: usize = 4;
const PER_CPU_START: usize = 0x1000_0000;
const STATIC: usize = 8 << 10;
const RESERVED: usize = 8 << 10;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_shift: u32,
        reserved: bool,
    },
    /// Free the live area at this index (modulo the number live).
    Free(usize),
    /// Run the reclaim work if `free` scheduled it.
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        4 => 1..=64usize,
        3 => 1..=PAGE_SIZE,
        2 => 1..=MIN_UNIT_SIZE,
    ];
    prop_oneof![
        6 => (size, 0..=12u32, prop::bool::weighted(0.1)).prop_map(|(size, align_shift, reserved)| {
            Op::Alloc { size, align_shift, reserved }
        }),
        4 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Reclaim),
    ]
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::Fine),
        Just(Variant::Fixed),
        Just(Variant::Irq),
        Just(Variant::Mutex)
    ]
}

struct Live {
    ptr: PcpuPtr,
    size: usize,
    tag: u64,
}

/// Snapshot of every chunk: (kind, base, free_size), checking the index
/// invariants on the way.
fn chunks_checked<P: Platform>(pcpu: &Percpu<P>) -> Vec<(ChunkKind, usize, usize)> {
    let unit = pcpu.unit_size();
    let mut out = Vec::new();
    pcpu.for_each_chunk(|c| {
        let span: usize = c.map.iter().map(|e| e.unsigned_abs() as usize).sum();
        let expected_span = match c.kind {
            ChunkKind::Reserved => STATIC + RESERVED,
            ChunkKind::First | ChunkKind::Dynamic => unit,
        };
        assert_eq!(span, expected_span, "{:?} map {:?}", c.kind, c.map);
        let free: usize = c.map.iter().filter(|&&e| e > 0).map(|&e| e as usize).sum();
        assert_eq!(c.free_size, free, "free_size");
        let largest = c
            .map
            .iter()
            .filter(|&&e| e > 0)
            .map(|&e| e as usize)
            .max()
            .unwrap_or(0);
        assert!(
            c.contig_hint >= largest,
            "contig_hint {} < {largest}",
            c.contig_hint
        );
        assert!(
            c.map.windows(2).all(|w| !(w[0] > 0 && w[1] > 0)),
            "unmerged free blocks {:?}",
            c.map
        );
        match c.kind {
            ChunkKind::Reserved => assert_eq!(c.listed_slot, None),
            _ => assert_eq!(c.listed_slot, Some(c.expected_slot), "slot placement"),
        }
        out.push((c.kind, c.base, c.free_size));
    });
    // The allocator's own check agrees (it also walks the slot lists).
    assert_eq!(pcpu.check(), Ok(()));
    out
}

fn total_free(chunks: &[(ChunkKind, usize, usize)]) -> usize {
    chunks.iter().map(|c| c.2).sum()
}

fn run(variant: Variant, ops: &[Op]) {
    let (mock, pcpu) = setup_with(variant, NR_CPUS, |c| c.max_chunks = 256);
    let unit = pcpu.unit_size();
    let static_end = PER_CPU_START + STATIC;
    let reserved_end = static_end + RESERVED;
    let mut live: Vec<Live> = Vec::new();
    // Unit-0 ranges of the live areas, for the disjointness check.
    let mut ranges: BTreeMap<usize, usize> = BTreeMap::new();
    let mut tag = 0u64;

    for op in ops {
        match *op {
            Op::Alloc {
                size,
                align_shift,
                reserved,
            } => {
                let align = 1usize << align_shift;
                let got = if reserved {
                    pcpu.alloc_reserved(size, align)
                } else {
                    pcpu.alloc(size, align)
                };
                let Some(ptr) = got else {
                    // Only the small reserved area may run out.
                    assert!(reserved, "alloc({size}, {align}) failed");
                    continue;
                };
                let addr = pcpu.per_cpu_ptr(ptr, 0) as usize;
                assert_eq!(addr % align, 0, "alignment");
                if reserved {
                    assert!(ptr.0 >= static_end && ptr.0 + size <= reserved_end);
                } else {
                    assert!(ptr.0 >= reserved_end || ptr.0 < PER_CPU_START);
                }
                let chunks = chunks_checked(&pcpu);
                let inside = chunks
                    .iter()
                    .any(|&(_, base, _)| addr >= base && addr + size <= base + unit);
                assert!(inside, "area outside every chunk's unit 0");
                if let Some((&lo, &len)) = ranges.range(..addr + size).next_back() {
                    assert!(lo + len <= addr, "overlaps the live area at {lo:#x}");
                }
                for cpu in 0..NR_CPUS {
                    assert!(mock.is_mapped(pcpu.per_cpu_ptr(ptr, cpu) as usize, size));
                }
                assert!(is_zeroed(&pcpu, ptr, size), "not zeroed on every CPU");
                tag += 1;
                fill(&pcpu, ptr, size, tag);
                ranges.insert(addr, size);
                live.push(Live { ptr, size, tag });
            }
            Op::Free(i) => {
                if live.is_empty() {
                    continue;
                }
                let area = live.swap_remove(i % live.len());
                check_fill(&pcpu, area.ptr, area.size, area.tag).unwrap();
                let before = total_free(&chunks_checked(&pcpu));
                pcpu.free(area.ptr);
                let after = total_free(&chunks_checked(&pcpu));
                assert!(
                    after >= before + area.size,
                    "free returned {} < {}",
                    after - before,
                    area.size
                );
                ranges.remove(&(pcpu.per_cpu_ptr(area.ptr, 0) as usize));
            }
            Op::Reclaim => {
                if mock.run_pending_work(&pcpu) {
                    let fully_free = chunks_checked(&pcpu)
                        .iter()
                        .filter(|c| c.0 == ChunkKind::Dynamic && c.2 == unit)
                        .count();
                    assert!(fully_free <= 1, "reclaim left {fully_free} free chunks");
                }
            }
        }
    }

    for area in live.drain(..) {
        check_fill(&pcpu, area.ptr, area.size, area.tag).unwrap();
        pcpu.free(area.ptr);
    }
    let chunks = chunks_checked(&pcpu);
    let dynamic = chunks.iter().filter(|c| c.0 == ChunkKind::Dynamic).count();
    for c in &chunks {
        let initial = match c.0 {
            ChunkKind::First => unit - STATIC - RESERVED,
            ChunkKind::Reserved => RESERVED,
            ChunkKind::Dynamic => unit,
        };
        assert_eq!(
            c.2, initial,
            "{:?} chunk not fully free after freeing all",
            c.0
        );
    }
    if dynamic >= 2 {
        assert!(
            mock.work_pending.load(Ordering::SeqCst),
            "two free chunks and no reclaim queued"
        );
    }
    mock.run_pending_work(&pcpu);
    let left = chunks_checked(&pcpu)
        .iter()
        .filter(|c| c.0 == ChunkKind::Dynamic)
        .count();
    assert_eq!(
        left,
        dynamic.min(1),
        "reclaim leaves exactly one free chunk"
    );
    assert_eq!(mock.live_areas(), 1 + left, "virtual areas released");
    assert!(mock.mapped_pages() <= NR_CPUS * unit / PAGE_SIZE * (1 + left));
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    if variant == Variant::Fixed {
        assert!(
            mock.freed_while_mapped().is_empty(),
            "the corrected reclaim frees only unmapped, flushed pages"
        );
    }
    let _: (&Mock, &Percpu<Host>) = (&mock, &pcpu);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_alloc_free_sequences_match_the_model(
        variant in variant(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(variant, &ops);
    }
}

/// A long fixed sequence that grows to several chunks and back.
#[test]
fn many_chunks_then_all_free() {
    let mut ops = Vec::new();
    for i in 0..40 {
        ops.push(Op::Alloc {
            size: 20_000 + i * 97,
            align_shift: (i % 13) as u32,
            reserved: false,
        });
    }
    for i in 0..40 {
        ops.push(Op::Free(i * 7));
        if i % 5 == 0 {
            ops.push(Op::Reclaim);
        }
    }
    run(Variant::Fine, &ops);
}
