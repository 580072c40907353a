//! The binary trace format, byte by byte (format version 1.1).
//!
//! All fixed-width integers are little-endian. `uleb` is unsigned LEB128 and `zz` is a
//! zigzag-mapped signed value stored as `uleb` (see [`crate::varint`]). `str` is
//! `uleb length` followed by that many bytes of UTF-8. CRC-32 is the IEEE/zlib CRC
//! (reflected polynomial `0xEDB88320`, initial value and final xor `0xFFFFFFFF`).
//!
//! ```text
//! file    = header frame* trailer?
//! ```
//!
//! # Header
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `89 50 43 50 55 54 52 0A` (`\x89PCPUTR\n`) |
//! | 8 | 2 | format major version (u16) — a reader refuses any major it does not know |
//! | 10 | 2 | format minor version (u16) — a newer minor only adds things older readers skip |
//! | 12 | 4 | `body_len` (u32), at most [`MAX_HEADER_BODY`] |
//! | 16 | 4 | CRC-32 of the body |
//! | 20 | `body_len` | body |
//!
//! The body is, in order: 32 bytes SHA-256 of the guest ELF file; `uleb cpus`;
//! `str variant`; `str scenario`; `uleb seed`; `str scheduler`; `uleb quantum`;
//! `uleb n` then `n` pairs `str key, str value` of further configuration, keys unique and
//! in ascending byte order. Bytes after that inside the body are reserved for later minor
//! versions and ignored.
//!
//! # Frames
//!
//! After the header come frames, each a 13-byte frame header and a payload:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | frame kind: [`FRAME_CHUNK`] (`'C'`) or [`FRAME_TRAILER`] (`'T'`) |
//! | 1 | 4 | `payload_len` (u32), at most [`MAX_PAYLOAD`] |
//! | 5 | 4 | `event_count` (u32): event records in the payload (0 for the trailer) |
//! | 9 | 4 | CRC-32 of frame bytes 0..9 followed by the payload |
//! | 13 | `payload_len` | payload |
//!
//! The writer emits a frame in one piece when its chunk is full (or on request), so a
//! killed writer leaves whole frames plus at most one partial one. The trailer, written by
//! a clean finish, is the last frame; its payload is `uleb total_events`,
//! `uleb chunk_count`, `uleb string_count` (strings defined in the file), which a reader
//! checks against what it read. A reader keeps every event of every frame
//! before the first frame that is truncated, fails its CRC or does not decode, and
//! reports what it dropped.
//!
//! # Chunk payload: records
//!
//! A chunk payload is a sequence of records. Decoding state is reset at the start of every
//! chunk, so a chunk decodes on its own given the strings defined before it. The state is:
//! the current CPU (initially 0) and, per CPU, all initially 0: running task, time, pc,
//! caller, last page PA, last page-table descriptor PA, last per-CPU address, a table
//! "last pc / last caller seen with record tag t" for each of the 256 tags, and a
//! three-slot most-recently-used list of locks (initially empty). CPU numbers are below
//! [`MAX_CPUS`].
//!
//! Each record starts with a tag byte:
//!
//! | tag | record |
//! | --- | --- |
//! | `0x00` | invalid |
//! | `0x01` | define string: `str`; it gets the next string id (0, 1, 2, … in file order; the writer defines each string just before the first record that uses it) |
//! | `0x02` | set current CPU: `uleb cpu` |
//! | `0x03` | set running task of the current CPU: `uleb task` (u32) |
//! | `0x04..=0x0f` | reserved (invalid in 1.x) |
//! | `0x10..=0x7f` | an event of a kind every 1.x reader knows (table below); unlisted tags are invalid |
//! | `0x80..=0xff` | an event of a kind added later: common part, `uleb body_len`, body |
//!
//! An event record (tag ≥ `0x10`) is `tag`, `flags`, `uleb time_delta`, the pc, the
//! caller, then the kind's body. Its CPU is the current CPU and its task that CPU's
//! running task. `time = cpu.time + time_delta` (so the first event of each CPU in a
//! chunk carries its full time; times never decrease along one CPU). The writer emits a
//! set-CPU or set-task record only when the next event's CPU or task differs from the
//! state.
//!
//! `flags` bits 0–1 choose how the pc is coded and bits 2–3 how the caller is coded, both
//! with the same four modes, where `prev` is the value of this CPU's previous event in the
//! chunk and `for_tag` the value of this CPU's last event with the same tag (0 if none):
//!
//! | mode | value | bytes that follow |
//! | --- | --- | --- |
//! | 0 | `for_tag` | none |
//! | 1 | `prev` | none |
//! | 2 | `for_tag + d` (wrapping) | `zz d` |
//! | 3 | `prev + d` (wrapping) | `zz d` |
//!
//! (the pc's bytes, if any, come before the caller's). The writer picks the mode with the
//! fewest bytes, the first in table order on a tie. Bits 4–7 are kind-specific and
//! must be 0 where the table says nothing. After the record the CPU's time, pc and caller
//! and the tag's `for_tag` values are updated.
//!
//! A lock reference (`lock` below) is coded by flags bits 4–5: 0, 1 or 2 name the lock in
//! that slot of the CPU's MRU list (slot 0 = most recent; naming an empty slot is
//! invalid); 3 means a literal follows: `zz (addr − slot0.addr)` (slot0.addr = 0 when
//! empty) then `uleb class` (a string id). The lock then moves to (or enters at) slot 0,
//! pushing the others down; the third slot falls off. Two locks are the same slot only if
//! both address and class match.
//!
//! | tag | kind | flags bits 4–7 | body |
//! | --- | --- | --- | --- |
//! | `0x10` | IRQ mask | bit 4 old I, bit 5 new I, bits 6–7 cause (0 instruction, 1 exception entry, 2 eret; 3 invalid) | — |
//! | `0x11` | hard-IRQ entry | — | `uleb intid` |
//! | `0x12` | hard-IRQ exit | — | `uleb intid` |
//! | `0x13` | context switch | — | `uleb from`, `uleb to`; afterwards the CPU's running task is `to` |
//! | `0x14` | sleep | — | — |
//! | `0x15` | wake | — | `uleb task` |
//! | `0x16` | might-sleep | — | — |
//! | `0x17` | page alloc | — | `uleb order`, `uleb gfp`, `zz (pa − cpu.page_pa)`; then `cpu.page_pa = pa` |
//! | `0x18` | page free | — | `zz (pa − cpu.page_pa)`, `uleb order`; then `cpu.page_pa = pa` |
//! | `0x19` | reclaim entry | — | — |
//! | `0x1a` | reclaim exit | — | — |
//! | `0x1b` | per-CPU alloc | — | `uleb size`, `uleb align`, `zz (addr − cpu.percpu_addr)`; then `cpu.percpu_addr = addr` |
//! | `0x1c` | per-CPU free | — | `zz (addr − cpu.percpu_addr)`; then `cpu.percpu_addr = addr` |
//! | `0x1d` | page-table write | — | `zz (desc_pa − cpu.pt_pa)`, `uleb old`, `uleb new`; then `cpu.pt_pa = desc_pa` |
//! | `0x1e` | TLBI | bits 4–6 op (0 vmalle1, 1 vae1, 2 vale1, 3 vaae1, 4 vaale1, 5 aside1, 6 other), bit 7 inner-shareable | op 6 only: `uleb encoding` (u16); then `uleb operand` |
//! | `0x1f` | DSB | bits 4–7 the CRm option | — |
//! | `0x20` | DMB | bits 4–7 the CRm option | — |
//! | `0x21` | ISB | — | — |
//! | `0x22` | scheduler decision | — | `uleb cpu` (u16), `uleb slice` |
//! | `0x23` | interrupt injection | — | `uleb cpu` (u16), `uleb intid` (u32) |
//! | `0x24` | assert-held | bits 4–5 lock | `lock` literal if any |
//! | `0x25` | marker | — | `uleb label` (string id), `uleb value` |
//! | `0x38` | preempt_disable | — | `uleb count` (u32, the preemption count after it) |
//! | `0x39` | preempt_enable | — | `uleb count` (u32, the preemption count after it) |
//! | `0x40 + 8·op + flavor` | lock operation | bits 4–5 lock; bit 6 trylock result (op 3 only) | `lock` literal if any |
//!
//! Lock `op`: 0 attempt, 1 acquired, 2 release, 3 trylock. `flavor`: 0 spin, 1 spin_irq,
//! 2 spin_irqsave, 3 mutex, 4 pseudo-lock. Ops 4–7 and flavors 5–7 are invalid in 1.x.
//!
//! A chunk is invalid as a whole (and dropped with everything after it) if any record is:
//! an invalid tag or nonzero reserved flag bits; a varint running past the payload or
//! beyond 64 bits; a field larger than its type (page order: u8; gfp, interrupt number,
//! task id, string id: u32; CPU in a body: u16; CPU in a set-CPU record: below
//! [`MAX_CPUS`]; a string: at most [`MAX_STRING_LEN`] bytes of valid UTF-8); a time that
//! overflows; a string id not yet defined; an empty MRU slot. It is also invalid if the
//! number of event records differs from the frame's `event_count`.
//!
//! # The end of a run (1.1)
//!
//! Since 1.1 the writer of a run ends a finished trace with two marker events: a
//! `console-digest` marker whose value is a digest of the guest console output, then an
//! `end:NAME` marker saying how the run ended (`power-off`, `reset`, `fault`, `watchdog`,
//! `hang`, `stopped: REASON`, `interrupted`); [`crate::ending`] has the details. Nothing
//! else changed: a 1.0 reader sees two more markers. A trace without them was written by
//! 1.0, edited, or cut before its end.
//!
//! # The TLB model (1.2)
//!
//! Since 1.2 a run with the checked MMU records what its TLB model did, in sized
//! records (`uleb body_len`, then the body; no flag bits, no delta state), so that the
//! TLB check can be re-derived from the trace; a 1.1 reader skips them as unknown:
//!
//! | tag | kind | body |
//! | --- | --- | --- |
//! | `0x80` | TLB fill | `zz va`, `uleb pa`, `uleb bits` (bits 0–1 leaf level 1–3, bit 2 write, bit 3 exec, bit 4 global), `uleb asid` (u16), `uleb n` (1–4), then `n` × `uleb descriptor pa`, outermost first |
//! | `0x81` | page-table page | `uleb pa`, `uleb level` (0–3), `zz va_base` |
//! | `0x82` | stale TLB use | `zz va`, `uleb access` (0 read, 1 write, 2 fetch), `uleb result` (0 maps, 1 faults), `uleb value` (the physical page, or the fault status: u8) |
//!
//! Since 1.3 the recorder stores backtraces, for reports that show a stack per
//! dependency as lockdep does:
//!
//! | tag | kind | body |
//! | --- | --- | --- |
//! | `0x83` | stack | `uleb frames` (a string id: hexadecimal return addresses, innermost first, separated by spaces) |
//!
//! A stack record names the backtrace of every later event of its CPU up to the
//! next stack record of that CPU; the recorder writes one before a probed event
//! whose backtrace differs from the CPU's current one (with that event's time, pc
//! and caller). Events the host makes itself (scheduler decisions,
//! interrupt injection, exception entry, the TLB model's records) have no stack of
//! their own.
//!
//! Since 1.4 cross-CPU calls (an IPI whose sender spins until the target has run
//! it) are recorded, so that a wait for an IPI joins the wait-for graph:
//!
//! | tag | kind | body |
//! | --- | --- | --- |
//! | `0x84` | csd wait | `uleb target` (the CPU asked), `zz csd` (the call's address) |
//! | `0x85` | csd unlock | `zz csd` |
//!
//! Since 1.5 the facts lockdep has about Linux locks are recorded (by the Linux
//! profile of the recorder):
//!
//! | tag | kind | body |
//! | --- | --- | --- |
//! | `0x86` | local-lock class | `uleb class` (a string id: the class is a `local_lock_t`, lockdep's `LD_LOCK_PERCPU`) |
//! | `0x87` | lock memory freed | `zz addr`, `uleb len` (memory freed or re-initialised; a lock held in it is a bug) |
//! | `0x89` | softirq enter | — (the task enters softirq context: lockdep's `softirq_context`) |
//! | `0x8a` | softirq exit | — |
//! | `0x8b` | softirqs on | — (the task enables softirqs: lockdep's `softirqs_enabled`) |
//! | `0x8c` | softirqs off | — |
//! | `0x88` | read lock | `zz addr`, `uleb class` (string id), `uleb bits` (bit 0 recursive, bit 1 trylock): an acquisition for reading (lockdep's `read` 1, or 2 when recursive); released by an ordinary lock release |
//!
//! Since 1.6 the TLB model says when a page stops being a page table (a kernel
//! freeing its boot tables and reusing the memory as data), so that stores to it
//! are no longer read as descriptor changes, and an ISA without Arm's TLBIs
//! (RISC-V) records its TLB invalidations by meaning:
//!
//! | tag | kind | body |
//! | --- | --- | --- |
//! | `0x8d` | page-table page retired | `uleb pa` (no CPU's translation registers reach the page and no TLB entry was filled through it) |
//! | `0x8e` | TLB invalidate | `uleb cpus` (a bit per CPU invalidated), `zz start`, `uleb len` (0: every address), `uleb asid` (0: every ASID, else the ASID + 1: its non-global entries) |
//!
//! Since 1.7 user space runs under the checked MMU (a Linux guest's processes), and
//! two sized bodies gain a field at their end, absent in older traces:
//!
//! | tag | field appended |
//! | --- | --- |
//! | `0x80` TLB fill | `uleb el0` (bit 0 read, bit 1 write, bit 2 execute: what EL0 / U-mode may do through the entry; absent: nothing) |
//! | `0x82` stale TLB use | `uleb asid` (0 or absent: not known, else the ASID of the access + 1: a CPU holds an entry per page and ASID) |
//!
//! Since 1.8 the IPIs a kernel sends are recorded (the guest's `smp_cross_call`,
//! Linux's `__ipi_send_mask`), one record per target CPU:
//!
//! | tag | kind | body |
//! | --- | --- | --- |
//! | `0x8f` | IPI send | `uleb target` (the CPU sent to), `uleb msg` (the kernel's IPI message: 0 reschedule, 1 call-function, others as the kernel numbers them), `uleb intid` (the interrupt the target takes it as: its `hardirq enter`'s number) |
//!
//! `zz` here is the zigzag of the value itself (kernel addresses are "negative").
//! Bytes after the fields of a known sized kind are ignored (room for later fields).
//!
//! # Extending
//!
//! A new event kind takes an unused tag in `0x80..=0xff` and a new minor version: its
//! record is the common part (tag, flags with bits 4–7 its own, time, pc, caller), then
//! `uleb body_len` and the body. An older reader decodes the common part (so time and pc
//! deltas stay in step), skips the body and yields [`crate::EventKind::Unknown`]. Such a
//! record must not touch any other decoding state. Changing anything else needs a new
//! major version.

/// First bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"\x89PCPUTR\n";
/// The format major version this crate writes and reads.
pub const VERSION_MAJOR: u16 = 1;
/// The format minor version this crate writes (it reads any minor of its major).
pub const VERSION_MINOR: u16 = 8;
/// Size of the fixed part of the header (before the body).
pub const HEADER_FIXED_LEN: usize = 20;
/// Largest header body a reader accepts.
pub const MAX_HEADER_BODY: u32 = 1 << 20;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 13;
/// Largest frame payload a reader accepts (a larger length means corruption).
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Frame kind of an event chunk.
pub const FRAME_CHUNK: u8 = b'C';
/// Frame kind of the trailer.
pub const FRAME_TRAILER: u8 = b'T';
/// CPU numbers in a trace are below this.
pub const MAX_CPUS: u16 = 1024;
/// Longest string the writer defines (bytes).
pub const MAX_STRING_LEN: usize = 64 << 10;

pub(crate) mod tag {
    pub const DEFINE_STRING: u8 = 0x01;
    pub const SET_CPU: u8 = 0x02;
    pub const SET_TASK: u8 = 0x03;
    /// Smallest event tag.
    pub const FIRST_EVENT: u8 = 0x10;
    pub const IRQ_MASK: u8 = 0x10;
    pub const HARDIRQ_ENTER: u8 = 0x11;
    pub const HARDIRQ_EXIT: u8 = 0x12;
    pub const CONTEXT_SWITCH: u8 = 0x13;
    pub const SLEEP: u8 = 0x14;
    pub const WAKE: u8 = 0x15;
    pub const MIGHT_SLEEP: u8 = 0x16;
    pub const PAGE_ALLOC: u8 = 0x17;
    pub const PAGE_FREE: u8 = 0x18;
    pub const RECLAIM_ENTER: u8 = 0x19;
    pub const RECLAIM_EXIT: u8 = 0x1a;
    pub const PERCPU_ALLOC: u8 = 0x1b;
    pub const PERCPU_FREE: u8 = 0x1c;
    pub const PT_WRITE: u8 = 0x1d;
    pub const TLBI: u8 = 0x1e;
    pub const DSB: u8 = 0x1f;
    pub const DMB: u8 = 0x20;
    pub const ISB: u8 = 0x21;
    pub const SCHED: u8 = 0x22;
    pub const IRQ_INJECT: u8 = 0x23;
    pub const ASSERT_HELD: u8 = 0x24;
    pub const MARKER: u8 = 0x25;
    pub const PREEMPT_DISABLE: u8 = 0x38;
    pub const PREEMPT_ENABLE: u8 = 0x39;
    pub const LOCK_BASE: u8 = 0x40;
    pub const LOCK_OP_ATTEMPT: u8 = 0;
    pub const LOCK_OP_ACQUIRED: u8 = 1;
    pub const LOCK_OP_RELEASE: u8 = 2;
    pub const LOCK_OP_TRYLOCK: u8 = 3;
    pub const LOCK_OPS: u8 = 4;
    /// Smallest tag of the sized (skippable) range.
    pub const FIRST_SIZED: u8 = 0x80;
    pub use super::sized::*;
}

/// The sized (skippable) event kinds, one list: each kind's tag, and the
/// [`EventKind`](crate::EventKind) it encodes. It makes the tag constants, the
/// set of sized tags this crate decodes, and the kind → tag map the encoder
/// uses; each kind's body is written and read in `codec.rs` (`sized_body`,
/// `decode_sized`), as the table above describes it.
macro_rules! sized_kinds {
    ($( $(#[$doc:meta])* $name:ident = $tag:literal => $kind:pat ),* $(,)?) => {
        pub(crate) mod sized {
            $( $(#[$doc])* pub const $name: u8 = $tag; )*
            /// Every sized tag this crate decodes.
            pub const KNOWN: &[u8] = &[$($name),*];
        }

        /// The sized tag of `kind`, if it is a sized kind.
        pub(crate) fn sized_tag(kind: &crate::EventKind) -> Option<u8> {
            use crate::EventKind;
            match kind {
                $( $kind => Some(sized::$name), )*
                _ => None,
            }
        }

        /// A pattern matching every sized kind (so that matches on `EventKind`
        /// stay exhaustive).
        macro_rules! any_sized_kind {
            () => { $($kind)|* };
        }
        pub(crate) use any_sized_kind;
    };
}

sized_kinds! {
    /// Minor version 2: what the simulated MMU's TLB model did.
    TLB_FILL = 0x80 => EventKind::TlbFill(_),
    PT_PAGE = 0x81 => EventKind::PageTablePage { .. },
    STALE_TLB_USE = 0x82 => EventKind::StaleTlbUse { .. },
    /// Minor version 3: a backtrace.
    STACK = 0x83 => EventKind::Stack { .. },
    /// Minor version 4: cross-CPU calls waited for and completed, and lockdep's
    /// kinds from Linux.
    CSD_WAIT = 0x84 => EventKind::CsdWait { .. },
    CSD_UNLOCK = 0x85 => EventKind::CsdUnlock { .. },
    LOCAL_LOCK_CLASS = 0x86 => EventKind::LocalLockClass { .. },
    LOCK_MEMORY_FREED = 0x87 => EventKind::LockMemoryFreed { .. },
    READ_LOCK = 0x88 => EventKind::ReadLock { .. },
    SOFTIRQ_ENTER = 0x89 => EventKind::SoftIrqEnter,
    SOFTIRQ_EXIT = 0x8a => EventKind::SoftIrqExit,
    SOFTIRQS_ON = 0x8b => EventKind::SoftirqsOn,
    SOFTIRQS_OFF = 0x8c => EventKind::SoftirqsOff,
    /// Minor version 6: a page-table page no longer in use, and a TLB
    /// invalidation by meaning.
    PT_RETIRED = 0x8d => EventKind::PageTableRetired { .. },
    TLB_INVALIDATE = 0x8e => EventKind::TlbInvalidate { .. },
    /// Minor version 8: an IPI sent.
    IPI_SEND = 0x8f => EventKind::IpiSend { .. },
}

#[cfg(test)]
mod tests {
    use super::tag;

    #[test]
    fn sized_tags_are_distinct_and_in_the_sized_range() {
        let mut tags = tag::KNOWN.to_vec();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), tag::KNOWN.len());
        assert!(tags.iter().all(|&t| t >= tag::FIRST_SIZED));
    }
}
