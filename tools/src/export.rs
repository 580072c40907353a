//! `percpu-lab export FILE --perfetto OUT.json`: the trace as Chrome trace-event JSON,
//! which ui.perfetto.dev (and chrome://tracing) opens.
//!
//! Layout: one process per CPU (`pid` = CPU number, named `cpuN`), with threads as
//! its tracks: `tasks` (a span per task while it runs), `hardirq` (a span per hard-IRQ
//! handler, ended by a context switch inside it), `irqs off` (a span while PSTATE.I
//! masks IRQs; a CPU starts masked) and `events` (instants: page and per-CPU
//! alloc/free, reclaim, TLBIs, markers, findings). Lock holds per CPU are async
//! spans (`b`/`e`, category `lock`, one id per lock address) because holds of
//! different locks overlap without nesting. An IPI is an arrow (category `ipi`)
//! from its sender's task to the task its target CPU ran when the host delivered
//! the interrupt (IPIs sent while one was pending all end there). Then one process per task
//! ([`crate::perfetto_tasks`]): what it runs, waits for and holds, with flow arrows
//! from each waiter to the holder, and its findings. Time: one guest instruction
//! (the trace's time unit) is shown as one nanosecond.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};
use traces::{Event, EventKind, Finding, Trace, WalkResult};

use emu::KernelImage;

use crate::analysis::Analyses;
use crate::atomic_file::AtomicFile;
use crate::perfetto_tasks::{task_track, TaskTracks};
use crate::tracefile;
use crate::{BadInput, Verdict};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("output").required(true).multiple(true).args(["perfetto", "text"])))]
pub struct ExportArgs {
    /// The trace to export (from `percpu-lab run --trace`).
    pub file: PathBuf,
    /// Write Chrome trace-event JSON (for ui.perfetto.dev) to this file.
    #[arg(long, value_name = "OUT.json")]
    pub perfetto: Option<PathBuf>,
    /// Write an ftrace-like text log (one line per event, the findings at the end).
    #[arg(long, value_name = "OUT.txt")]
    pub text: Option<PathBuf>,
    /// The guest kernel ELF the trace was recorded from, to name code addresses
    /// (default: the built-in guest; used only if it is the trace's kernel).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

const TID_TASKS: u32 = 1;
const TID_HARDIRQ: u32 = 2;
const TID_IRQS_OFF: u32 = 3;
const TID_EVENTS: u32 = 4;

/// An IPI's arrow, waiting for its target to take it.
struct IpiArrow {
    id: u64,
    /// The sending CPU, and when it sent it.
    sender: u16,
    sent: u64,
}

/// The first id of the IPI arrows (below: [`crate::perfetto_tasks`]'s).
const IPI_FLOW_IDS: u64 = 1 << 40;

fn ts(time: u64) -> f64 {
    time as f64 / 1000.0
}

/// Per-CPU state of the spans being built.
#[derive(Default)]
struct CpuTracks {
    started: bool,
    task: Option<u32>,
    irqs_off: bool,
    hardirq_depth: u32,
    last_time: u64,
}

/// The Chrome trace-event JSON object for `trace` (and `findings` made on it).
pub fn perfetto(trace: &Trace, findings: &[Finding]) -> Value {
    let strings = &trace.strings;
    let cpus = trace.header.config.cpus.max(1);
    let mut out: Vec<Value> = Vec::new();
    for cpu in 0..cpus {
        out.push(json!({"ph": "M", "name": "process_name", "pid": cpu, "tid": 0, "args": {"name": format!("cpu{cpu}")}}));
        out.push(json!({"ph": "M", "name": "process_sort_index", "pid": cpu, "tid": 0, "args": {"sort_index": cpu}}));
        for (tid, name) in [
            (TID_TASKS, "tasks"),
            (TID_HARDIRQ, "hardirq"),
            (TID_IRQS_OFF, "irqs off"),
            (TID_EVENTS, "events"),
        ] {
            out.push(json!({"ph": "M", "name": "thread_name", "pid": cpu, "tid": tid, "args": {"name": name}}));
            out.push(json!({"ph": "M", "name": "thread_sort_index", "pid": cpu, "tid": tid, "args": {"sort_index": tid}}));
        }
    }
    let mut tracks: BTreeMap<u16, CpuTracks> = BTreeMap::new();
    // Lock holds open: (cpu, lock address) -> class name.
    // Lock holds open: lock address -> (CPU that took it, class name). A mutex may
    // be released on another CPU after its holder migrated: its span ends where
    // it began.
    let mut held: BTreeMap<u64, (u16, String)> = BTreeMap::new();
    // IPIs sent and not yet taken: (target CPU, interrupt) -> each one's arrow
    // start (its id, sender and time). An arrow is written once its IPI is taken,
    // so none is left without an end; its ids follow the waits-for arrows'.
    let mut ipis_in_flight: BTreeMap<(u16, u32), Vec<IpiArrow>> = BTreeMap::new();
    let mut ipis_sent = IPI_FLOW_IDS;
    let class = |id| strings.get(id).unwrap_or("?").to_string();
    // Task names, from the recorder's `task:NAME` markers.
    let mut task_names: BTreeMap<u32, String> = BTreeMap::new();
    for e in &trace.events {
        if let EventKind::Marker { label, value } = e.kind {
            if let Some(name) = strings.get(label).and_then(|l| l.strip_prefix("task:")) {
                task_names.insert(value as u32, name.to_string());
            }
        }
    }
    let task_name = |id: u32| match task_names.get(&id) {
        Some(name) => format!("{name} [{id}]"),
        None => format!("task{id}"),
    };

    let mut task_tracks = TaskTracks::default();
    for e in &trace.events {
        task_tracks.event(e, &class, &mut out);
        let Event {
            time, cpu, task, ..
        } = *e;
        let pid = cpu.0;
        let t = tracks.entry(pid).or_default();
        t.last_time = time;
        let span = |ph: &str, tid: u32, name: String| json!({"ph": ph, "pid": pid, "tid": tid, "ts": ts(time), "name": name});
        if !t.started {
            t.started = true;
            t.irqs_off = true;
            out.push(span("B", TID_IRQS_OFF, "irqs off".into()));
            t.task = Some(task.0);
            out.push(span("B", TID_TASKS, task_name(task.0)));
        } else if t.task != Some(task.0) && !matches!(e.kind, EventKind::ContextSwitch { .. }) {
            // The CPU runs another task than its last switch said (a CPU's first
            // events are recorded before the recorder knows its task).
            if t.task.replace(task.0).is_some() {
                out.push(span("E", TID_TASKS, String::new()));
            }
            out.push(span("B", TID_TASKS, task_name(task.0)));
        }
        let instant = |name: String, args: Value| json!({"ph": "i", "s": "t", "pid": pid, "tid": TID_EVENTS, "ts": ts(time), "name": name, "args": args});
        match e.kind {
            EventKind::ContextSwitch { to, .. } => {
                if t.task.take().is_some() {
                    out.push(span("E", TID_TASKS, String::new()));
                }
                // A handler that switches tasks (preemption on IRQ exit) leaves
                // this CPU's hard-IRQ context here: its slice ends at the switch.
                for _ in 0..std::mem::take(&mut t.hardirq_depth) {
                    out.push(span("E", TID_HARDIRQ, String::new()));
                }
                t.task = Some(to.0);
                out.push(span("B", TID_TASKS, task_name(to.0)));
            }
            EventKind::IrqMask { new, .. } if new != t.irqs_off => {
                t.irqs_off = new;
                out.push(span(
                    if new { "B" } else { "E" },
                    TID_IRQS_OFF,
                    "irqs off".into(),
                ));
            }
            EventKind::HardIrqEnter { intid } => {
                t.hardirq_depth += 1;
                out.push(span("B", TID_HARDIRQ, format!("irq {intid}")));
            }
            EventKind::IrqInject { cpu: target, intid } => {
                // The IPIs this interrupt delivers: arrows to the task it interrupts.
                let taken = ipis_in_flight
                    .remove(&(target.0, intid))
                    .unwrap_or_default();
                for IpiArrow { id, sender, sent } in taken {
                    out.push(json!({"ph": "s", "id": id, "cat": "ipi", "name": "ipi",
                        "pid": sender, "tid": TID_TASKS, "ts": ts(sent)}));
                    out.push(
                        json!({"ph": "f", "bp": "e", "id": id, "cat": "ipi", "name": "ipi",
                        "pid": target.0, "tid": TID_TASKS, "ts": ts(time)}),
                    );
                }
            }
            EventKind::IpiSend { target, msg, intid } => {
                let id = ipis_sent;
                ipis_sent += 1;
                let message = traces::event::ipi_message_name(msg)
                    .map_or_else(|| msg.to_string(), str::to_string);
                out.push(instant(
                    format!("ipi send -> {target}"),
                    json!({"target": target.0, "message": message, "intid": intid}),
                ));
                ipis_in_flight
                    .entry((target.0, intid))
                    .or_default()
                    .push(IpiArrow {
                        id,
                        sender: pid,
                        sent: time,
                    });
            }
            EventKind::HardIrqExit { .. } if t.hardirq_depth > 0 => {
                t.hardirq_depth -= 1;
                out.push(span("E", TID_HARDIRQ, String::new()));
            }
            EventKind::LockAcquired { lock, flavor }
            | EventKind::Trylock {
                lock,
                flavor,
                acquired: true,
            } => {
                let name = class(lock.class);
                held.insert(lock.addr, (pid, name.clone()));
                out.push(json!({"ph": "b", "cat": "lock", "id": format!("{:#x}", lock.addr),
                    "pid": pid, "tid": TID_TASKS, "ts": ts(time), "name": name,
                    "args": {"addr": format!("{:#x}", lock.addr), "flavor": flavor.name(), "task": task.0}}));
            }
            EventKind::LockRelease { lock, .. } => {
                if let Some((taken_on, name)) = held.remove(&lock.addr) {
                    out.push(
                        json!({"ph": "e", "cat": "lock", "id": format!("{:#x}", lock.addr),
                        "pid": taken_on, "tid": TID_TASKS, "ts": ts(time), "name": name}),
                    );
                }
            }
            EventKind::PageAlloc { order, gfp, pa } => out.push(instant(
                "page alloc".into(),
                json!({"order": order, "gfp": gfp, "pa": format!("{pa:#x}")}),
            )),
            EventKind::PageFree { pa, order } => out.push(instant(
                "page free".into(),
                json!({"order": order, "pa": format!("{pa:#x}")}),
            )),
            EventKind::PercpuAlloc { size, align, addr } => out.push(instant(
                "percpu alloc".into(),
                json!({"size": size, "align": align, "addr": format!("{addr:#x}")}),
            )),
            EventKind::PercpuFree { addr } => out.push(instant(
                "percpu free".into(),
                json!({"addr": format!("{addr:#x}")}),
            )),
            EventKind::ReclaimEnter | EventKind::ReclaimExit => {
                out.push(instant(e.kind.name().into(), json!({})))
            }
            EventKind::Tlbi {
                op,
                broadcast,
                operand,
            } => out.push(instant(
                format!("tlbi {}", op.mnemonic(broadcast)),
                json!({"operand": format!("{operand:#x}")}),
            )),
            EventKind::PageTableWrite { desc_pa, old, new } => out.push(instant(
                "pt write".into(),
                json!({"desc_pa": format!("{desc_pa:#x}"), "old": format!("{old:#x}"),
                       "new": format!("{new:#x}")}),
            )),
            EventKind::TlbInvalidate {
                cpus,
                start,
                len,
                asid,
            } => out.push(instant(
                "tlb invalidate".into(),
                json!({"cpus": format!("{cpus:#x}"), "start": format!("{start:#x}"),
                       "len": len, "asid": asid}),
            )),
            EventKind::Dsb { option } => {
                out.push(instant(format!("dsb {}", option.name()), json!({})))
            }
            EventKind::Isb => out.push(instant("isb".into(), json!({}))),
            EventKind::StaleTlbUse {
                va,
                access,
                now,
                asid,
            } => {
                let now = match now {
                    WalkResult::Maps(pa) => format!("maps to {pa:#x}"),
                    WalkResult::Faults(status) => format!("faults (status {status:#x})"),
                };
                out.push(instant(
                    "stale tlb use".into(),
                    json!({"va": format!("{va:#x}"), "access": format!("{access:?}"),
                           "tables now": now, "asid": asid}),
                ))
            }
            EventKind::Marker { label, value } if !class(label).starts_with("task:") => {
                out.push(instant(class(label), json!({"value": value})))
            }
            _ => {}
        }
    }
    // Close what is still open at each CPU's last event.
    for (&pid, t) in &tracks {
        let end = |tid: u32| json!({"ph": "E", "pid": pid, "tid": tid, "ts": ts(t.last_time)});
        if t.task.is_some() {
            out.push(end(TID_TASKS));
        }
        if t.irqs_off {
            out.push(end(TID_IRQS_OFF));
        }
        for _ in 0..t.hardirq_depth {
            out.push(end(TID_HARDIRQ));
        }
    }
    for (addr, (pid, name)) in held {
        let last = tracks.get(&pid).map_or(0, |t| t.last_time);
        out.push(json!({"ph": "e", "cat": "lock", "id": format!("{addr:#x}"),
            "pid": pid, "tid": TID_TASKS, "ts": ts(last), "name": name}));
    }
    task_tracks.finish(&|id| format!("task {}", task_name(id)), &mut out);
    for finding in findings {
        let time = ts(finding.time.unwrap_or(0));
        let args = json!({"title": finding.title, "key": finding.key, "details": finding.details});
        // Also on the track of the task that made it (its reporting site's).
        if let Some(task) = finding.sites.first().and_then(|s| s.task) {
            let (pid, tid) = task_track(task);
            out.push(
                json!({"ph": "i", "s": "t", "pid": pid, "tid": tid, "ts": time,
                "name": finding.kind.as_str(), "cat": "finding", "args": args.clone()}),
            );
        }
        out.push(match finding.cpu {
            Some(cpu) => json!({"ph": "i", "s": "t", "pid": cpu, "tid": TID_EVENTS, "ts": time,
                "name": finding.kind.as_str(), "cat": "finding", "args": args}),
            None => json!({"ph": "i", "s": "g", "pid": 0, "tid": TID_EVENTS, "ts": time,
                "name": finding.kind.as_str(), "cat": "finding", "args": args}),
        });
    }
    let config = &trace.header.config;
    json!({
        "traceEvents": out,
        "displayTimeUnit": "ns",
        "otherData": {
            "scenario": config.scenario, "variant": config.variant, "cpus": config.cpus,
            "seed": config.seed, "scheduler": config.scheduler, "quantum": config.quantum,
            "guest_elf_sha256": config.guest_elf.to_hex(),
            "time_unit": "1 guest instruction = 1 ns",
        },
    })
}

pub fn export(args: &ExportArgs) -> Result<Verdict, BadInput> {
    let config = tracefile::open(&args.file)?.header().config.clone();
    let kernel = crate::check::recorded_kernel(&args.file, &config, args.kernel.as_deref())?;
    if let Some(out) = &args.text {
        export_text(&args.file, out, kernel.as_ref())?;
    }
    if let Some(out) = &args.perfetto {
        export_perfetto(&args.file, out, kernel.as_ref())?;
    }
    Ok(Verdict::Clean)
}

/// Findings are made again from the trace itself (as `check` does), so a view shows
/// them at the events that made them.
fn analyses_for(header: &traces::Header, kernel: Option<&KernelImage>) -> Analyses {
    let format = crate::analysis::trace_tlb_check(&header.config, header.minor);
    Analyses::new(kernel, format)
}

fn all_findings(analyses: &Analyses) -> Vec<Finding> {
    analyses
        .tlb_findings()
        .iter()
        .chain(analyses.locks.findings())
        .cloned()
        .collect()
}

fn export_perfetto(file: &Path, out: &Path, kernel: Option<&KernelImage>) -> Result<(), BadInput> {
    let mut reader = tracefile::open(file)?;
    let events: Vec<Event> = reader.by_ref().collect();
    tracefile::warn_damage(file, reader.damage());
    let trace = Trace {
        header: reader.header().clone(),
        strings: reader.strings().clone(),
        events,
        trailer: reader.trailer().copied(),
        damage: reader.damage().cloned(),
    };
    let mut analyses = analyses_for(&trace.header, kernel);
    analyses.feed(&trace.events, &trace.strings);
    analyses.finish();
    let json = perfetto(&trace, &all_findings(&analyses));
    let file = AtomicFile::create(out)?;
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(file);
        serde_json::to_writer(&mut out, &json)?;
        out.into_inner().map_err(|e| e.into_error())?.commit()
    };
    write().map_err(|e| BadInput(format!("cannot write {}: {e}", out.display())))
}

/// The ftrace-like log, streamed: `TASK-ID [CPU] TIME: EVENT`, then the findings as
/// comment lines.
fn export_text(file: &Path, out: &Path, kernel: Option<&KernelImage>) -> Result<(), BadInput> {
    let mut reader = tracefile::open(file)?;
    let header = reader.header().clone();
    let config = &header.config;
    let mut analyses = analyses_for(&header, kernel);
    let mut task_names: BTreeMap<u32, String> = BTreeMap::new();
    let file_out = AtomicFile::create(out)?;
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(file_out);
        writeln!(w, "# tracer: percpu-lab ({})", file.display())?;
        writeln!(
            w,
            "# scenario {}, variant {}, seed {}, {} cpus, scheduler {}",
            config.scenario, config.variant, config.seed, config.cpus, config.scheduler
        )?;
        writeln!(w, "# time: guest instructions of all CPUs")?;
        writeln!(w, "#")?;
        writeln!(w, "#{:>21}  CPU          TIME  EVENT", "TASK-ID")?;
        while let Some(event) = reader.next() {
            let strings = reader.strings();
            if let EventKind::Marker { label, value } = event.kind {
                if let Some(name) = strings.get(label).and_then(|l| l.strip_prefix("task:")) {
                    task_names.insert(value as u32, name.to_string());
                }
            }
            let task = event.task.0;
            let name = task_names.get(&task).map_or("task", String::as_str);
            let who = format!("{name}-{task}");
            let at = match (event.pc, kernel.and_then(|k| k.symbolize(event.pc))) {
                (0, _) => String::new(),
                (pc, Some(symbol)) => format!(" at {pc:#x} <{symbol}>"),
                (pc, None) => format!(" at {pc:#x}"),
            };
            writeln!(
                w,
                "{who:>22} [{:03}] {:>13}: {}{at}",
                event.cpu.0,
                event.time,
                event.display_kind(strings)
            )?;
            analyses.feed(std::slice::from_ref(&event), strings);
        }
        analyses.finish();
        let findings = all_findings(&analyses);
        writeln!(w, "#")?;
        writeln!(w, "# {} finding(s)", findings.len())?;
        for f in &findings {
            let cpu = f.cpu.map_or(String::new(), |c| format!(" cpu{c}"));
            let time = f.time.map_or(String::new(), |t| format!(" at {t}"));
            writeln!(w, "# [{}] {}{cpu}{time}", f.kind, f.title)?;
            for line in &f.details {
                writeln!(w, "#     {line}")?;
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.commit()
    };
    write().map_err(|e| BadInput(format!("cannot write {}: {e}", out.display())))?;
    tracefile::warn_damage(file, reader.damage());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{
        CpuId, FindingKind, Header, LockFlavor, LockRef, StringTable, TaskId, TraceConfig,
    };

    /// A trace of `cpus` CPUs holding `events`.
    fn trace_of(cpus: u32, strings: StringTable, events: Vec<Event>) -> Trace {
        Trace {
            header: Header {
                major: 1,
                minor: traces::format::VERSION_MINOR,
                config: TraceConfig {
                    cpus,
                    ..TraceConfig::default()
                },
                len: 0,
            },
            strings,
            events,
            trailer: None,
            damage: None,
        }
    }

    fn event(time: u64, cpu: u16, kind: EventKind) -> Event {
        Event {
            time,
            cpu: CpuId(cpu),
            task: TaskId(1),
            pc: 0,
            caller: 0,
            kind,
        }
    }

    #[test]
    fn crossing_lock_holds_are_async_spans_and_findings_instants() {
        let mut strings = StringTable::new();
        let a = LockRef {
            addr: 0x10,
            class: strings.intern("a"),
        };
        let b = LockRef {
            addr: 0x20,
            class: strings.intern("b"),
        };
        let spin = LockFlavor::Spin;
        let events = vec![
            event(
                1,
                0,
                EventKind::LockAcquired {
                    lock: a,
                    flavor: spin,
                },
            ),
            event(
                2,
                0,
                EventKind::LockAcquired {
                    lock: b,
                    flavor: spin,
                },
            ),
            event(
                3,
                0,
                EventKind::LockRelease {
                    lock: a,
                    flavor: spin,
                },
            ),
            event(
                4,
                0,
                EventKind::LockRelease {
                    lock: b,
                    flavor: spin,
                },
            ),
        ];
        let trace = trace_of(1, strings, events);
        let mut finding = Finding::new(FindingKind::Deadlock, "deadlock", "k".into(), vec![]);
        finding.cpu = Some(0);
        finding.time = Some(3);
        let json = perfetto(&trace, &[finding]);
        let list = json["traceEvents"].as_array().unwrap();
        let phases: Vec<(&str, &str)> = list
            .iter()
            .filter(|e| e["cat"] == "lock")
            .map(|e| (e["ph"].as_str().unwrap(), e["name"].as_str().unwrap()))
            .collect();
        assert_eq!(phases, [("b", "a"), ("b", "b"), ("e", "a"), ("e", "b")]);
        let found = list.iter().find(|e| e["cat"] == "finding").unwrap();
        assert_eq!(found["ph"], "i");
        assert_eq!(found["name"], "deadlock");
    }

    #[test]
    fn an_ipi_is_an_arrow_to_where_its_interrupt_was_taken() {
        let send = |time, target| {
            event(
                time,
                0,
                EventKind::IpiSend {
                    target: CpuId(target),
                    msg: 1,
                    intid: 1,
                },
            )
        };
        let irq = |time, cpu, intid| {
            let kind = EventKind::IrqInject {
                cpu: CpuId(cpu),
                intid,
            };
            event(time, cpu, kind)
        };
        let events = vec![
            send(1, 1),
            send(2, 2),
            // CPU 1's timer first: not the IPI.
            irq(3, 1, 27),
            send(4, 1),
            irq(5, 1, 1),
            irq(6, 2, 1),
            // Nothing in flight for CPU 2 any more.
            irq(7, 2, 1),
            // Never taken: no arrow.
            send(8, 2),
        ];
        let json = perfetto(&trace_of(3, StringTable::new(), events), &[]);
        let arrows: Vec<(&str, u64, u64, f64)> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["cat"] == "ipi")
            .map(|e| {
                let field = |k: &str| e[k].as_u64().unwrap();
                let id = field("id") - IPI_FLOW_IDS;
                (
                    e["ph"].as_str().unwrap(),
                    id,
                    field("pid"),
                    e["ts"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            arrows,
            [
                ("s", 0, 0, ts(1)),
                ("f", 0, 1, ts(5)),
                ("s", 2, 0, ts(4)),
                ("f", 2, 1, ts(5)),
                ("s", 1, 0, ts(2)),
                ("f", 1, 2, ts(6)),
            ]
        );
    }

    #[test]
    fn a_hold_released_after_migrating_ends_on_the_cpu_that_took_it() {
        let mut strings = StringTable::new();
        let m = LockRef {
            addr: 0x30,
            class: strings.intern("m"),
        };
        let mutex = LockFlavor::Mutex;
        let events = vec![
            event(
                1,
                0,
                EventKind::LockAcquired {
                    lock: m,
                    flavor: mutex,
                },
            ),
            event(
                2,
                1,
                EventKind::LockRelease {
                    lock: m,
                    flavor: mutex,
                },
            ),
        ];
        let trace = trace_of(2, strings, events);
        let json = perfetto(&trace, &[]);
        let ends: Vec<(u64, f64)> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "e" && e["cat"] == "lock")
            .map(|e| (e["pid"].as_u64().unwrap(), e["ts"].as_f64().unwrap()))
            .collect();
        assert_eq!(ends, [(0, 0.002)]);
    }
}
