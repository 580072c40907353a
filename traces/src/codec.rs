//! Record encoding and decoding inside one chunk (layout: [`crate::format`]).
//!
//! Writer and reader share [`ChunkState`]; both update it through the same methods so
//! the two sides cannot drift apart.

use crate::aarch64::Access;
use crate::event::{
    BarrierOption, CpuId, Event, EventKind, IrqMaskCause, LockFlavor, LockRef, Perms, StrId,
    TaskId, TlbFill, TlbiOp, WalkResult,
};
use crate::format::{tag, MAX_CPUS, MAX_STRING_LEN};
use crate::strings::StringTable;
use crate::varint::{put_uleb, uleb_len, unzigzag, zigzag, ByteCursor, VarintError};

const MRU_SLOTS: usize = 3;
const LITERAL_LOCK: u8 = 3;

/// Per-CPU decoding state, reset at every chunk start.
#[derive(Clone)]
struct CpuState {
    task: TaskId,
    time: u64,
    pc: u64,
    caller: u64,
    page_pa: u64,
    pt_pa: u64,
    percpu_addr: u64,
    pc_by_tag: Box<[u64; 256]>,
    caller_by_tag: Box<[u64; 256]>,
    locks: [Option<LockRef>; MRU_SLOTS],
}

impl CpuState {
    fn new() -> Self {
        CpuState {
            task: TaskId(0),
            time: 0,
            pc: 0,
            caller: 0,
            page_pa: 0,
            pt_pa: 0,
            percpu_addr: 0,
            pc_by_tag: Box::new([0; 256]),
            caller_by_tag: Box::new([0; 256]),
            locks: [None; MRU_SLOTS],
        }
    }

    /// The common state update after any event record (both sides call this).
    fn after(&mut self, record_tag: u8, event: &Event) {
        let t = usize::from(record_tag);
        self.time = event.time;
        self.pc = event.pc;
        self.caller = event.caller;
        self.pc_by_tag[t] = event.pc;
        self.caller_by_tag[t] = event.caller;
        if let EventKind::ContextSwitch { to, .. } = event.kind {
            // The switch itself belongs to the outgoing task; from now on `to` runs.
            self.task = to;
        }
    }

    /// Moves `lock` to MRU slot 0; `slot` is where it was (or the last slot if new).
    fn touch_lock(&mut self, slot: usize, lock: LockRef) {
        self.locks.copy_within(0..slot, 1);
        self.locks[0] = Some(lock);
    }
}

/// Decoding state of one chunk.
pub(crate) struct ChunkState {
    cpus: Vec<Option<CpuState>>,
    current: usize,
}

/// How one address-like value (pc, caller) is coded: the mode and the delta to write.
fn choose_addr_mode(value: u64, prev: u64, for_tag: u64) -> (u8, Option<u64>) {
    if value == for_tag {
        return (0, None);
    }
    if value == prev {
        return (1, None);
    }
    let from_tag = zigzag(value.wrapping_sub(for_tag) as i64);
    let from_prev = zigzag(value.wrapping_sub(prev) as i64);
    if uleb_len(from_tag) <= uleb_len(from_prev) {
        (2, Some(from_tag))
    } else {
        (3, Some(from_prev))
    }
}

fn read_addr(cursor: &mut ByteCursor, mode: u8, prev: u64, for_tag: u64) -> Result<u64, Malformed> {
    Ok(match mode {
        0 => for_tag,
        1 => prev,
        2 => for_tag.wrapping_add(cursor.zigzag().map_err(Malformed::varint)? as u64),
        _ => prev.wrapping_add(cursor.zigzag().map_err(Malformed::varint)? as u64),
    })
}

fn put_zz_delta(out: &mut Vec<u8>, value: u64, base: u64) {
    put_uleb(out, zigzag(value.wrapping_sub(base) as i64));
}

/// A record that does not decode: why, and where in the payload it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub reason: &'static str,
}

impl Malformed {
    fn new(reason: &'static str) -> Self {
        Malformed { reason }
    }

    fn varint(err: VarintError) -> Self {
        match err {
            VarintError::Truncated => Malformed::new("record runs past the chunk"),
            VarintError::Overflow => Malformed::new("integer overflows 64 bits"),
        }
    }
}

fn flavor_code(flavor: LockFlavor) -> u8 {
    LockFlavor::ALL.iter().position(|&f| f == flavor).unwrap() as u8
}

fn tlbi_code(op: TlbiOp) -> u8 {
    match op {
        TlbiOp::Vmalle1 => 0,
        TlbiOp::Vae1 => 1,
        TlbiOp::Vale1 => 2,
        TlbiOp::Vaae1 => 3,
        TlbiOp::Vaale1 => 4,
        TlbiOp::Aside1 => 5,
        TlbiOp::Other(_) => 6,
    }
}

fn cause_code(cause: IrqMaskCause) -> u8 {
    match cause {
        IrqMaskCause::Instruction => 0,
        IrqMaskCause::ExceptionEntry => 1,
        IrqMaskCause::Eret => 2,
    }
}

/// The kind-specific part of an event as the encoder lays it out: tag, flags bits 4–7,
/// the lock it names (coded into bits 4–5 and possibly a literal) and body integers.
struct Layout {
    tag: u8,
    kind_bits: u8,
    lock: Option<LockRef>,
    body: Body,
}

/// Body integers in order; deltas are resolved by the encoder against the CPU state.
#[derive(Default)]
struct Body {
    fields: [Field; 4],
    len: usize,
}

#[derive(Clone, Copy)]
enum Field {
    Uleb(u64),
    PagePa(u64),
    PtPa(u64),
    PercpuAddr(u64),
}

impl Default for Field {
    fn default() -> Self {
        Field::Uleb(0)
    }
}

impl Body {
    fn of(fields: &[Field]) -> Body {
        let mut body = Body {
            len: fields.len(),
            ..Body::default()
        };
        body.fields[..fields.len()].copy_from_slice(fields);
        body
    }
}

fn layout(kind: &EventKind) -> Layout {
    use Field::{PagePa, PercpuAddr, PtPa, Uleb};
    let plain = |tag, body| Layout {
        tag,
        kind_bits: 0,
        lock: None,
        body,
    };

    let lock_op = |op: u8, flavor, lock, kind_bits| Layout {
        tag: tag::LOCK_BASE + 8 * op + flavor_code(flavor),
        kind_bits,
        lock: Some(lock),
        body: Body::default(),
    };
    match *kind {
        EventKind::LockAttempt { lock, flavor } => lock_op(tag::LOCK_OP_ATTEMPT, flavor, lock, 0),
        EventKind::LockAcquired { lock, flavor } => lock_op(tag::LOCK_OP_ACQUIRED, flavor, lock, 0),
        EventKind::LockRelease { lock, flavor } => lock_op(tag::LOCK_OP_RELEASE, flavor, lock, 0),
        EventKind::Trylock {
            lock,
            flavor,
            acquired,
        } => lock_op(tag::LOCK_OP_TRYLOCK, flavor, lock, u8::from(acquired) << 2),
        EventKind::AssertHeld { lock } => Layout {
            tag: tag::ASSERT_HELD,
            kind_bits: 0,
            lock: Some(lock),
            body: Body::default(),
        },
        EventKind::IrqMask { old, new, cause } => Layout {
            tag: tag::IRQ_MASK,
            kind_bits: u8::from(old) | u8::from(new) << 1 | cause_code(cause) << 2,
            lock: None,
            body: Body::default(),
        },
        EventKind::HardIrqEnter { intid } => {
            plain(tag::HARDIRQ_ENTER, Body::of(&[Uleb(intid.into())]))
        }
        EventKind::HardIrqExit { intid } => {
            plain(tag::HARDIRQ_EXIT, Body::of(&[Uleb(intid.into())]))
        }
        EventKind::ContextSwitch { from, to } => plain(
            tag::CONTEXT_SWITCH,
            Body::of(&[Uleb(from.0.into()), Uleb(to.0.into())]),
        ),
        EventKind::Sleep => plain(tag::SLEEP, Body::default()),
        EventKind::Wake { task } => plain(tag::WAKE, Body::of(&[Uleb(task.0.into())])),
        EventKind::MightSleep => plain(tag::MIGHT_SLEEP, Body::default()),
        EventKind::PreemptDisable { count } => {
            plain(tag::PREEMPT_DISABLE, Body::of(&[Uleb(count.into())]))
        }
        EventKind::PreemptEnable { count } => {
            plain(tag::PREEMPT_ENABLE, Body::of(&[Uleb(count.into())]))
        }
        EventKind::PageAlloc { order, gfp, pa } => plain(
            tag::PAGE_ALLOC,
            Body::of(&[Uleb(order.into()), Uleb(gfp.into()), PagePa(pa)]),
        ),
        EventKind::PageFree { pa, order } => {
            plain(tag::PAGE_FREE, Body::of(&[PagePa(pa), Uleb(order.into())]))
        }
        EventKind::ReclaimEnter => plain(tag::RECLAIM_ENTER, Body::default()),
        EventKind::ReclaimExit => plain(tag::RECLAIM_EXIT, Body::default()),
        EventKind::PercpuAlloc { size, align, addr } => plain(
            tag::PERCPU_ALLOC,
            Body::of(&[Uleb(size), Uleb(align), PercpuAddr(addr)]),
        ),
        EventKind::PercpuFree { addr } => plain(tag::PERCPU_FREE, Body::of(&[PercpuAddr(addr)])),
        EventKind::PageTableWrite { desc_pa, old, new } => plain(
            tag::PT_WRITE,
            Body::of(&[PtPa(desc_pa), Uleb(old), Uleb(new)]),
        ),
        EventKind::Tlbi {
            op,
            broadcast,
            operand,
        } => {
            let raw = match op {
                TlbiOp::Other(encoding) => Body::of(&[Uleb(encoding.into()), Uleb(operand)]),
                _ => Body::of(&[Uleb(operand)]),
            };
            Layout {
                tag: tag::TLBI,
                kind_bits: tlbi_code(op) | u8::from(broadcast) << 3,
                lock: None,
                body: raw,
            }
        }
        EventKind::Dsb { option } => Layout {
            tag: tag::DSB,
            kind_bits: option.0,
            lock: None,
            body: Body::default(),
        },
        EventKind::Dmb { option } => Layout {
            tag: tag::DMB,
            kind_bits: option.0,
            lock: None,
            body: Body::default(),
        },
        EventKind::Isb => plain(tag::ISB, Body::default()),
        EventKind::SchedDecision { cpu, slice } => {
            plain(tag::SCHED, Body::of(&[Uleb(cpu.0.into()), Uleb(slice)]))
        }
        EventKind::IrqInject { cpu, intid } => plain(
            tag::IRQ_INJECT,
            Body::of(&[Uleb(cpu.0.into()), Uleb(intid.into())]),
        ),
        EventKind::Marker { label, value } => {
            plain(tag::MARKER, Body::of(&[Uleb(label.0.into()), Uleb(value)]))
        }
        // A sized kind's body is `sized_body_of`'s.
        crate::format::any_sized_kind!() => {
            let tag = crate::format::sized_tag(kind).expect("a sized kind");
            plain(tag, Body::default())
        }
        EventKind::Unknown { tag } => plain(tag, Body::default()),
    }
}

/// Whether sized `tag` is a kind this crate decodes (writing it as `Unknown` would
/// give a body it cannot parse).
fn known_sized(tag: u8) -> bool {
    tag::KNOWN.contains(&tag)
}

/// A signed address (kernel VAs are "negative"): zigzag, so both halves stay short.
fn put_va(out: &mut Vec<u8>, va: u64) {
    put_uleb(out, zigzag(va as i64));
}

fn access_code(access: Access) -> u64 {
    match access {
        Access::Read => 0,
        Access::Write => 1,
        Access::Fetch => 2,
    }
}

/// Appends the body of a sized kind this crate knows to `body` (nothing for
/// [`EventKind::Unknown`]). Sized bodies use no delta state, so a reader that skips
/// them stays in step.
fn sized_body_of(kind: &EventKind, body: &mut Vec<u8>) {
    match *kind {
        EventKind::TlbFill(fill) => {
            put_va(body, fill.va);
            put_uleb(body, fill.pa);
            let bits = u64::from(fill.level)
                | u64::from(fill.write) << 2
                | u64::from(fill.exec) << 3
                | u64::from(fill.global) << 4;
            put_uleb(body, bits);
            put_uleb(body, fill.asid.into());
            put_uleb(body, fill.walk_len.into());
            for &desc in fill.descriptors() {
                put_uleb(body, desc);
            }
            put_uleb(body, fill.user.bits());
        }
        EventKind::PageTablePage { pa, level, va_base } => {
            put_uleb(body, pa);
            put_uleb(body, level.into());
            put_va(body, va_base);
        }
        EventKind::PageTableRetired { pa } => put_uleb(body, pa),
        EventKind::TlbInvalidate {
            cpus,
            start,
            len,
            asid,
        } => {
            put_uleb(body, cpus);
            put_va(body, start);
            put_uleb(body, len);
            put_uleb(body, asid.map_or(0, |a| u64::from(a) + 1));
        }
        EventKind::StaleTlbUse {
            va,
            access,
            now,
            asid,
        } => {
            put_va(body, va);
            put_uleb(body, access_code(access));
            let (code, value) = match now {
                WalkResult::Maps(pa) => (0, pa),
                WalkResult::Faults(status) => (1, status.into()),
            };
            put_uleb(body, code);
            put_uleb(body, value);
            put_uleb(body, asid.map_or(0, |a| u64::from(a) + 1));
        }
        EventKind::Stack { frames } => put_uleb(body, frames.0.into()),
        EventKind::CsdWait { target, csd } => {
            put_uleb(body, target.0.into());
            put_va(body, csd);
        }
        EventKind::CsdUnlock { csd } => put_va(body, csd),
        EventKind::IpiSend { target, msg, intid } => {
            put_uleb(body, target.0.into());
            put_uleb(body, msg.into());
            put_uleb(body, intid.into());
        }
        EventKind::LocalLockClass { class } => put_uleb(body, class.0.into()),
        EventKind::LockMemoryFreed { addr, len } => {
            put_va(body, addr);
            put_uleb(body, len);
        }
        EventKind::ReadLock {
            lock,
            recursive,
            trylock,
        } => {
            put_va(body, lock.addr);
            put_uleb(body, lock.class.0.into());
            put_uleb(body, u64::from(recursive) | u64::from(trylock) << 1);
        }
        _ => {}
    }
}

/// Appends a sized kind's body after its length.
fn put_sized_body(kind: &EventKind, out: &mut Vec<u8>) {
    put_length_prefixed(out, |out| sized_body_of(kind, out));
}

/// Appends what `write` appends, after its length (ULEB128). Bodies are short: one
/// length byte is reserved and filled in afterwards, with no buffer of their own;
/// a longer body moves over for the longer length.
fn put_length_prefixed(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::new();
        put_uleb(&mut prefix, len as u64);
        out.splice(at..at + 1, prefix);
    }
}

/// String id `id` of a sized body, which must be one of the `string_count`
/// defined so far.
fn defined_string(id: u64, string_count: usize) -> Result<StrId, Malformed> {
    if id >= string_count as u64 {
        return Err(Malformed::new("undefined string id"));
    }
    Ok(StrId(id as u32))
}

/// A field a later minor version appended to a sized body: absent in older traces.
fn optional_uleb(cursor: &mut ByteCursor<'_>) -> Result<Option<u64>, Malformed> {
    if cursor.is_empty() {
        return Ok(None);
    }
    cursor.uleb().map(Some).map_err(Malformed::varint)
}

/// Decodes the body of sized kind `tag` (`string_count` strings are defined); `None`
/// for a tag this crate does not know.
fn decode_sized(tag: u8, body: &[u8], string_count: usize) -> Result<Option<EventKind>, Malformed> {
    let mut cursor = ByteCursor::new(body);
    let mut uleb = || cursor.uleb().map_err(Malformed::varint);
    let kind = match tag {
        tag::TLB_FILL => {
            let va = unzigzag(uleb()?) as u64;
            let pa = uleb()?;
            let bits = uleb()?;
            if bits >> 5 != 0 || bits & 3 == 0 {
                return Err(Malformed::new("invalid TLB fill attributes"));
            }
            let asid = u16::try_from(uleb()?).map_err(|_| Malformed::new("ASID out of range"))?;
            let walk_len = uleb()?;
            if walk_len == 0 || walk_len > 4 {
                return Err(Malformed::new("table walk length out of range"));
            }
            let mut walk = [0; 4];
            for desc in &mut walk[..walk_len as usize] {
                *desc = uleb()?;
            }
            // Since 1.7: EL0's permissions (none before).
            let user = optional_uleb(&mut cursor)?.unwrap_or(0);
            if user >> 3 != 0 {
                return Err(Malformed::new("invalid TLB fill EL0 permissions"));
            }
            EventKind::TlbFill(TlbFill {
                va,
                pa,
                level: (bits & 3) as u8,
                write: bits & 4 != 0,
                exec: bits & 8 != 0,
                user: Perms::from_bits(user),
                global: bits & 16 != 0,
                asid,
                walk,
                walk_len: walk_len as u8,
            })
        }
        tag::PT_PAGE => {
            let pa = uleb()?;
            let level = uleb()?;
            if level > 3 {
                return Err(Malformed::new("page-table level out of range"));
            }
            let va_base = unzigzag(uleb()?) as u64;
            EventKind::PageTablePage {
                pa,
                level: level as u8,
                va_base,
            }
        }
        tag::PT_RETIRED => EventKind::PageTableRetired { pa: uleb()? },
        tag::TLB_INVALIDATE => {
            let cpus = uleb()?;
            let start = unzigzag(uleb()?) as u64;
            let len = uleb()?;
            let asid = match uleb()? {
                0 => None,
                n => Some(u16::try_from(n - 1).map_err(|_| Malformed::new("ASID out of range"))?),
            };
            EventKind::TlbInvalidate {
                cpus,
                start,
                len,
                asid,
            }
        }
        tag::STALE_TLB_USE => {
            let va = unzigzag(uleb()?) as u64;
            let access = *Access::ALL
                .get(uleb()? as usize)
                .ok_or(Malformed::new("invalid access kind"))?;
            let now = match (uleb()?, uleb()?) {
                (0, pa) => WalkResult::Maps(pa),
                (1, status) => WalkResult::Faults(
                    u8::try_from(status)
                        .map_err(|_| Malformed::new("fault status out of range"))?,
                ),
                _ => return Err(Malformed::new("invalid walk result")),
            };
            // Since 1.7: the ASID + 1 (0 or absent: not known).
            let asid = match optional_uleb(&mut cursor)?.unwrap_or(0) {
                0 => None,
                n => Some(u16::try_from(n - 1).map_err(|_| Malformed::new("ASID out of range"))?),
            };
            EventKind::StaleTlbUse {
                va,
                access,
                now,
                asid,
            }
        }
        tag::STACK => EventKind::Stack {
            frames: defined_string(uleb()?, string_count)?,
        },
        tag::CSD_WAIT => {
            let target =
                u16::try_from(uleb()?).map_err(|_| Malformed::new("CPU number out of range"))?;
            EventKind::CsdWait {
                target: CpuId(target),
                csd: unzigzag(uleb()?) as u64,
            }
        }
        tag::CSD_UNLOCK => EventKind::CsdUnlock {
            csd: unzigzag(uleb()?) as u64,
        },
        tag::IPI_SEND => EventKind::IpiSend {
            target: CpuId(
                u16::try_from(uleb()?).map_err(|_| Malformed::new("CPU number out of range"))?,
            ),
            msg: u32::try_from(uleb()?).map_err(|_| Malformed::new("IPI message out of range"))?,
            intid: u32::try_from(uleb()?)
                .map_err(|_| Malformed::new("interrupt number out of range"))?,
        },
        tag::LOCAL_LOCK_CLASS => EventKind::LocalLockClass {
            class: defined_string(uleb()?, string_count)?,
        },
        tag::LOCK_MEMORY_FREED => EventKind::LockMemoryFreed {
            addr: unzigzag(uleb()?) as u64,
            len: uleb()?,
        },
        tag::SOFTIRQ_ENTER => EventKind::SoftIrqEnter,
        tag::SOFTIRQ_EXIT => EventKind::SoftIrqExit,
        tag::SOFTIRQS_ON => EventKind::SoftirqsOn,
        tag::SOFTIRQS_OFF => EventKind::SoftirqsOff,
        tag::READ_LOCK => {
            let addr = unzigzag(uleb()?) as u64;
            let class = defined_string(uleb()?, string_count)?;
            let bits = uleb()?;
            if bits >> 2 != 0 {
                return Err(Malformed::new("invalid read lock bits"));
            }
            EventKind::ReadLock {
                lock: LockRef { addr, class },
                recursive: bits & 1 != 0,
                trylock: bits & 2 != 0,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// Why the encoder refused an event (mapped to `WriteError` by the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncodeRefusal {
    TimeWentBackwards { previous: u64 },
    CpuOutOfRange,
    NotAnExtensionTag { tag: u8 },
    FieldOutOfRange { field: &'static str },
}

impl ChunkState {
    pub fn new() -> Self {
        ChunkState {
            cpus: Vec::new(),
            current: 0,
        }
    }

    fn cpu_state(&mut self, cpu: usize) -> &mut CpuState {
        if self.cpus.len() <= cpu {
            self.cpus.resize(cpu + 1, None);
        }
        self.cpus[cpu].get_or_insert_with(CpuState::new)
    }

    /// Appends `event` (and any CPU/task switch records it needs) to `out`. On refusal
    /// nothing is appended and the state is unchanged.
    pub fn encode(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeRefusal> {
        let cpu = usize::from(event.cpu.0);
        if event.cpu.0 >= MAX_CPUS {
            return Err(EncodeRefusal::CpuOutOfRange);
        }
        let layout = layout(&event.kind);
        match event.kind {
            EventKind::Unknown { tag } if tag < tag::FIRST_SIZED || known_sized(tag) => {
                return Err(EncodeRefusal::NotAnExtensionTag { tag });
            }
            EventKind::TlbFill(fill)
                if fill.level > 3 || fill.level == 0 || fill.walk_len == 0 || fill.walk_len > 4 =>
            {
                return Err(EncodeRefusal::FieldOutOfRange {
                    field: "TLB fill level or walk",
                });
            }
            EventKind::PageTablePage { level, .. } if level > 3 => {
                return Err(EncodeRefusal::FieldOutOfRange {
                    field: "page-table level",
                });
            }
            EventKind::Dsb { option } | EventKind::Dmb { option } if option.0 > 0xf => {
                return Err(EncodeRefusal::FieldOutOfRange {
                    field: "barrier option",
                });
            }
            _ => {}
        }
        let previous = self.cpu_state(cpu).time;
        if event.time < previous {
            return Err(EncodeRefusal::TimeWentBackwards { previous });
        }

        if self.current != cpu {
            out.push(tag::SET_CPU);
            put_uleb(out, cpu as u64);
            self.current = cpu;
        }
        let state = self.cpu_state(cpu);
        if state.task != event.task {
            out.push(tag::SET_TASK);
            put_uleb(out, event.task.0.into());
            state.task = event.task;
        }

        let t = usize::from(layout.tag);
        let (pc_mode, pc_delta) = choose_addr_mode(event.pc, state.pc, state.pc_by_tag[t]);
        let (caller_mode, caller_delta) =
            choose_addr_mode(event.caller, state.caller, state.caller_by_tag[t]);
        let (lock_mode, lock_literal) = match layout.lock {
            None => (0, None),
            Some(lock) => match state.locks.iter().position(|slot| *slot == Some(lock)) {
                Some(slot) => {
                    state.touch_lock(slot, lock);
                    (slot as u8, None)
                }
                None => {
                    let base = state.locks[0].map_or(0, |l| l.addr);
                    state.touch_lock(MRU_SLOTS - 1, lock);
                    (LITERAL_LOCK, Some((lock, base)))
                }
            },
        };
        let kind_bits = layout.kind_bits | lock_mode;
        out.push(layout.tag);
        out.push(pc_mode | caller_mode << 2 | kind_bits << 4);
        put_uleb(out, event.time - state.time);
        for delta in [pc_delta, caller_delta].into_iter().flatten() {
            put_uleb(out, delta);
        }
        if let Some((lock, base)) = lock_literal {
            put_zz_delta(out, lock.addr, base);
            put_uleb(out, lock.class.0.into());
        }
        if layout.tag >= tag::FIRST_SIZED {
            // A sized kind we know (its own body) or one we know only by tag (empty).
            put_sized_body(&event.kind, out);
        }
        for field in &layout.body.fields[..layout.body.len] {
            match *field {
                Field::Uleb(value) => put_uleb(out, value),
                Field::PagePa(pa) => {
                    put_zz_delta(out, pa, state.page_pa);
                    state.page_pa = pa;
                }
                Field::PtPa(pa) => {
                    put_zz_delta(out, pa, state.pt_pa);
                    state.pt_pa = pa;
                }
                Field::PercpuAddr(addr) => {
                    put_zz_delta(out, addr, state.percpu_addr);
                    state.percpu_addr = addr;
                }
            }
        }
        state.after(layout.tag, event);
        Ok(())
    }

    /// Decodes the next record. Returns `Ok(None)` for records that are not events
    /// (CPU/task switches, string definitions, which are appended to `strings`).
    pub fn decode(
        &mut self,
        cursor: &mut ByteCursor,
        strings: &mut StringTable,
    ) -> Result<Option<Event>, Malformed> {
        let uleb = |cursor: &mut ByteCursor| cursor.uleb().map_err(Malformed::varint);
        let record_tag = cursor.u8().map_err(Malformed::varint)?;
        match record_tag {
            tag::DEFINE_STRING => {
                let len = uleb(cursor)?;
                if len > MAX_STRING_LEN as u64 {
                    return Err(Malformed::new("string too long"));
                }
                let bytes = cursor.take(len as usize).map_err(Malformed::varint)?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| Malformed::new("string is not UTF-8"))?;
                if strings.len() >= u32::MAX as usize {
                    return Err(Malformed::new("too many strings"));
                }
                strings.push(text.into());
                return Ok(None);
            }
            tag::SET_CPU => {
                let cpu = uleb(cursor)?;
                if cpu >= u64::from(MAX_CPUS) {
                    return Err(Malformed::new("CPU number out of range"));
                }
                self.current = cpu as usize;
                return Ok(None);
            }
            tag::SET_TASK => {
                let task = u32::try_from(uleb(cursor)?)
                    .map_err(|_| Malformed::new("task id out of range"))?;
                let current = self.current;
                self.cpu_state(current).task = TaskId(task);
                return Ok(None);
            }
            t if t < tag::FIRST_EVENT => return Err(Malformed::new("invalid record tag")),
            _ => {}
        }

        let cpu_index = self.current;
        let string_count = strings.len();
        let state = self.cpu_state(cpu_index);
        let t = usize::from(record_tag);
        let flags = cursor.u8().map_err(Malformed::varint)?;
        let kind_bits = flags >> 4;
        let time = state
            .time
            .checked_add(uleb(cursor)?)
            .ok_or(Malformed::new("time overflows"))?;
        let pc = read_addr(cursor, flags & 3, state.pc, state.pc_by_tag[t])?;
        let caller = read_addr(
            cursor,
            (flags >> 2) & 3,
            state.caller,
            state.caller_by_tag[t],
        )?;

        let string = |id: u64| -> Result<StrId, Malformed> {
            if id < string_count as u64 {
                Ok(StrId(id as u32))
            } else {
                Err(Malformed::new("undefined string id"))
            }
        };
        let u32_field = |cursor: &mut ByteCursor, what| {
            u32::try_from(uleb(cursor)?).map_err(|_| Malformed::new(what))
        };
        let u16_field = |cursor: &mut ByteCursor, what| {
            u16::try_from(uleb(cursor)?).map_err(|_| Malformed::new(what))
        };
        let u8_field = |cursor: &mut ByteCursor, what| {
            u8::try_from(uleb(cursor)?).map_err(|_| Malformed::new(what))
        };
        let delta_from = |cursor: &mut ByteCursor, base: u64| -> Result<u64, Malformed> {
            Ok(base.wrapping_add(cursor.zigzag().map_err(Malformed::varint)? as u64))
        };
        let no_bits = |kind| {
            if kind_bits == 0 {
                Ok(kind)
            } else {
                Err(Malformed::new("reserved flag bits set"))
            }
        };
        let read_lock = |cursor: &mut ByteCursor, state: &mut CpuState| {
            let mode = kind_bits & 3;
            if mode == LITERAL_LOCK {
                let base = state.locks[0].map_or(0, |l| l.addr);
                let addr = delta_from(cursor, base)?;
                let class = string(uleb(cursor)?)?;
                let lock = LockRef { addr, class };
                state.touch_lock(MRU_SLOTS - 1, lock);
                Ok(lock)
            } else {
                let slot = usize::from(mode);
                let lock = state.locks[slot].ok_or(Malformed::new("lock slot is empty"))?;
                state.touch_lock(slot, lock);
                Ok(lock)
            }
        };

        let kind = match record_tag {
            tag::IRQ_MASK => {
                let cause = match kind_bits >> 2 {
                    0 => IrqMaskCause::Instruction,
                    1 => IrqMaskCause::ExceptionEntry,
                    2 => IrqMaskCause::Eret,
                    _ => return Err(Malformed::new("invalid IRQ mask cause")),
                };
                EventKind::IrqMask {
                    old: kind_bits & 1 != 0,
                    new: kind_bits & 2 != 0,
                    cause,
                }
            }
            tag::HARDIRQ_ENTER => no_bits(EventKind::HardIrqEnter {
                intid: u32_field(cursor, "interrupt number out of range")?,
            })?,
            tag::HARDIRQ_EXIT => no_bits(EventKind::HardIrqExit {
                intid: u32_field(cursor, "interrupt number out of range")?,
            })?,
            tag::CONTEXT_SWITCH => {
                let from = TaskId(u32_field(cursor, "task id out of range")?);
                let to = TaskId(u32_field(cursor, "task id out of range")?);
                no_bits(EventKind::ContextSwitch { from, to })?
            }
            tag::SLEEP => no_bits(EventKind::Sleep)?,
            tag::WAKE => no_bits(EventKind::Wake {
                task: TaskId(u32_field(cursor, "task id out of range")?),
            })?,
            tag::MIGHT_SLEEP => no_bits(EventKind::MightSleep)?,
            tag::PREEMPT_DISABLE => no_bits(EventKind::PreemptDisable {
                count: u32_field(cursor, "preemption count out of range")?,
            })?,
            tag::PREEMPT_ENABLE => no_bits(EventKind::PreemptEnable {
                count: u32_field(cursor, "preemption count out of range")?,
            })?,
            tag::PAGE_ALLOC => {
                let order = u8_field(cursor, "page order out of range")?;
                let gfp = u32_field(cursor, "gfp flags out of range")?;
                let pa = delta_from(cursor, state.page_pa)?;
                state.page_pa = pa;
                no_bits(EventKind::PageAlloc { order, gfp, pa })?
            }
            tag::PAGE_FREE => {
                let pa = delta_from(cursor, state.page_pa)?;
                state.page_pa = pa;
                let order = u8_field(cursor, "page order out of range")?;
                no_bits(EventKind::PageFree { pa, order })?
            }
            tag::RECLAIM_ENTER => no_bits(EventKind::ReclaimEnter)?,
            tag::RECLAIM_EXIT => no_bits(EventKind::ReclaimExit)?,
            tag::PERCPU_ALLOC => {
                let size = uleb(cursor)?;
                let align = uleb(cursor)?;
                let addr = delta_from(cursor, state.percpu_addr)?;
                state.percpu_addr = addr;
                no_bits(EventKind::PercpuAlloc { size, align, addr })?
            }
            tag::PERCPU_FREE => {
                let addr = delta_from(cursor, state.percpu_addr)?;
                state.percpu_addr = addr;
                no_bits(EventKind::PercpuFree { addr })?
            }
            tag::PT_WRITE => {
                let desc_pa = delta_from(cursor, state.pt_pa)?;
                state.pt_pa = desc_pa;
                let old = uleb(cursor)?;
                let new = uleb(cursor)?;
                no_bits(EventKind::PageTableWrite { desc_pa, old, new })?
            }
            tag::TLBI => {
                let op = match kind_bits & 7 {
                    0 => TlbiOp::Vmalle1,
                    1 => TlbiOp::Vae1,
                    2 => TlbiOp::Vale1,
                    3 => TlbiOp::Vaae1,
                    4 => TlbiOp::Vaale1,
                    5 => TlbiOp::Aside1,
                    6 => TlbiOp::Other(u16_field(cursor, "TLBI encoding out of range")?),
                    _ => return Err(Malformed::new("invalid TLBI op")),
                };
                let operand = uleb(cursor)?;
                EventKind::Tlbi {
                    op,
                    broadcast: kind_bits & 8 != 0,
                    operand,
                }
            }
            tag::DSB => EventKind::Dsb {
                option: BarrierOption(kind_bits),
            },
            tag::DMB => EventKind::Dmb {
                option: BarrierOption(kind_bits),
            },
            tag::ISB => no_bits(EventKind::Isb)?,
            tag::SCHED => {
                let cpu = CpuId(u16_field(cursor, "CPU number out of range")?);
                let slice = uleb(cursor)?;
                no_bits(EventKind::SchedDecision { cpu, slice })?
            }
            tag::IRQ_INJECT => {
                let cpu = CpuId(u16_field(cursor, "CPU number out of range")?);
                let intid = u32_field(cursor, "interrupt number out of range")?;
                no_bits(EventKind::IrqInject { cpu, intid })?
            }
            tag::MARKER => {
                let label = string(uleb(cursor)?)?;
                let value = uleb(cursor)?;
                no_bits(EventKind::Marker { label, value })?
            }
            tag::ASSERT_HELD => {
                if kind_bits >> 2 != 0 {
                    return Err(Malformed::new("reserved flag bits set"));
                }
                EventKind::AssertHeld {
                    lock: read_lock(cursor, state)?,
                }
            }
            t if (tag::LOCK_BASE..tag::LOCK_BASE + 8 * tag::LOCK_OPS).contains(&t) => {
                let op = (t - tag::LOCK_BASE) / 8;
                let flavor = *LockFlavor::ALL
                    .get(usize::from((t - tag::LOCK_BASE) % 8))
                    .ok_or(Malformed::new("invalid lock flavor"))?;
                let acquired = kind_bits & 4 != 0;
                if kind_bits & 8 != 0 || (acquired && op != tag::LOCK_OP_TRYLOCK) {
                    return Err(Malformed::new("reserved flag bits set"));
                }
                let lock = read_lock(cursor, state)?;
                match op {
                    tag::LOCK_OP_ATTEMPT => EventKind::LockAttempt { lock, flavor },
                    tag::LOCK_OP_ACQUIRED => EventKind::LockAcquired { lock, flavor },
                    tag::LOCK_OP_RELEASE => EventKind::LockRelease { lock, flavor },
                    _ => EventKind::Trylock {
                        lock,
                        flavor,
                        acquired,
                    },
                }
            }
            t if t >= tag::FIRST_SIZED => {
                let len = uleb(cursor)?;
                let len = usize::try_from(len).map_err(|_| Malformed::new("body too long"))?;
                let body = cursor.take(len).map_err(Malformed::varint)?;
                match decode_sized(t, body, string_count)? {
                    Some(kind) if kind_bits == 0 => kind,
                    Some(_) => return Err(Malformed::new("reserved flag bits set")),
                    None => EventKind::Unknown { tag: t },
                }
            }
            _ => return Err(Malformed::new("invalid record tag")),
        };

        let event = Event {
            time,
            cpu: CpuId(cpu_index as u16),
            task: state.task,
            pc,
            caller,
            kind,
        };
        state.after(record_tag, &event);
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_prefix_takes_as_many_bytes_as_the_length_needs() {
        for len in [0usize, 1, 0x7f, 0x80, 300, 20_000] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = vec![0xee];
            put_length_prefixed(&mut out, |out| out.extend_from_slice(&body));
            let mut cursor = ByteCursor::new(&out[1..]);
            assert_eq!(cursor.uleb().unwrap(), len as u64);
            assert_eq!(cursor.take(len).unwrap(), &body[..], "{len}");
            assert!(cursor.is_empty());
            assert_eq!(out[0], 0xee);
        }
    }
}
