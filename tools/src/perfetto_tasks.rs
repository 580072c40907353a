//! The per-task part of the Perfetto export: one process per task (pid
//! [`TASK_PID_BASE`] + task id) with a `running` track (a slice per stint on a CPU),
//! a `waits` track (`spinning on L` / `blocked on L` from a lock attempt to its
//! acquisition, nested when a mutex's wait spins on its internal lock) and a `holds
//! L` track per lock it takes (a slice per hold, kept across sleep and migration: a
//! hold belongs to the task, not the CPU). A wait on a lock another task holds
//! starts a flow arrow from the waiter's wait to the holder's hold, so tasks that
//! wait for each other show as a cycle of arrows.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use traces::{Event, EventKind, LockFlavor};

/// Task processes come after the CPU processes (pid = CPU number).
pub const TASK_PID_BASE: u64 = 10_000;
const TID_RUNNING: u64 = 1;
const TID_WAITS: u64 = 2;
/// Hold tracks: this plus the order in which the task first took each lock.
const TID_HOLDS: u64 = 100;

fn ts(time: u64) -> f64 {
    time as f64 / 1000.0
}

/// A slice begun and not yet ended.
#[derive(Debug, Clone)]
struct Open {
    start: u64,
    name: String,
    args: Value,
}

#[derive(Debug, Default)]
struct Task {
    /// The CPU it runs on since `Open::start`, if running.
    running: Option<(u16, u64)>,
    /// Acquisitions begun and not completed, innermost last: (lock address, slice).
    waits: Vec<(u64, Open)>,
    /// Open holds by lock address.
    holds: BTreeMap<u64, Open>,
    /// The track of each lock address it took, in order of first hold.
    hold_tracks: BTreeMap<u64, (u64, String)>,
}

/// Builds the task tracks from the events, in order.
#[derive(Debug, Default)]
pub struct TaskTracks {
    tasks: BTreeMap<u32, Task>,
    /// Which task holds each lock now.
    owners: BTreeMap<u64, u32>,
    next_flow: u64,
    last_time: u64,
}

fn pid(task: u32) -> u64 {
    TASK_PID_BASE + u64::from(task)
}

fn slice(task: u32, tid: u64, open: &Open, end: u64) -> Value {
    json!({"ph": "X", "pid": pid(task), "tid": tid, "ts": ts(open.start),
           "dur": ts(end.saturating_sub(open.start)), "name": open.name, "args": open.args})
}

impl TaskTracks {
    fn task(&mut self, task: u32) -> &mut Task {
        self.tasks.entry(task).or_default()
    }

    /// The hold track of `addr` in `task` (made on its first hold).
    fn hold_tid(&mut self, task: u32, addr: u64, class: &str) -> u64 {
        let t = self.task(task);
        let next = TID_HOLDS + t.hold_tracks.len() as u64;
        t.hold_tracks
            .entry(addr)
            .or_insert_with(|| (next, format!("holds {class}")))
            .0
    }

    /// Takes in `e` (lock classes named by `class`), appending finished slices and
    /// flow arrows to `out`.
    pub fn event(
        &mut self,
        e: &Event,
        class: &dyn Fn(traces::StrId) -> String,
        out: &mut Vec<Value>,
    ) {
        let (time, task) = (e.time, e.task.0);
        self.last_time = self.last_time.max(time);
        match e.kind {
            EventKind::ContextSwitch { from, to } => {
                self.stop_running(from.0, time, out);
                self.task(to.0).running = Some((e.cpu.0, time));
                return;
            }
            // A host decision or the TLB model's record is not the task's doing.
            EventKind::SchedDecision { .. } | EventKind::IrqInject { .. } => return,
            _ => {}
        }
        if self.task(task).running.is_none() {
            // First seen running without a recorded switch to it (boot, idle).
            self.task(task).running = Some((e.cpu.0, time));
        }
        match e.kind {
            EventKind::LockAttempt { lock, flavor } if flavor != LockFlavor::Pseudo => {
                let name = class(lock.class);
                let verb = if flavor == LockFlavor::Mutex {
                    "blocked on"
                } else {
                    "spinning on"
                };
                let open = Open {
                    start: time,
                    name: format!("{verb} {name}"),
                    args: json!({"lock": name, "addr": format!("{:#x}", lock.addr), "flavor": flavor.name()}),
                };
                self.task(task).waits.push((lock.addr, open));
                if let Some(&holder) = self.owners.get(&lock.addr).filter(|&&h| h != task) {
                    self.flow(task, holder, lock.addr, &name, time, out);
                }
            }
            EventKind::LockAcquired { lock, .. }
            | EventKind::Trylock {
                lock,
                acquired: true,
                ..
            } => {
                let t = self.task(task);
                if let Some(i) = t.waits.iter().rposition(|(addr, _)| *addr == lock.addr) {
                    let (_, open) = t.waits.remove(i);
                    out.push(slice(task, TID_WAITS, &open, time));
                }
                let name = class(lock.class);
                self.hold_tid(task, lock.addr, &name);
                let open = Open {
                    start: time,
                    name: name.clone(),
                    args: json!({"addr": format!("{:#x}", lock.addr)}),
                };
                self.task(task).holds.insert(lock.addr, open);
                self.owners.insert(lock.addr, task);
            }
            EventKind::LockRelease { lock, .. } => {
                if let Some(open) = self.task(task).holds.remove(&lock.addr) {
                    let tid = self.hold_tid(task, lock.addr, &open.name);
                    out.push(slice(task, tid, &open, time));
                }
                if self.owners.get(&lock.addr) == Some(&task) {
                    self.owners.remove(&lock.addr);
                }
            }
            _ => {}
        }
    }

    fn stop_running(&mut self, task: u32, time: u64, out: &mut Vec<Value>) {
        if let Some((cpu, start)) = self.task(task).running.take() {
            let open = Open {
                start,
                name: format!("on cpu{cpu}"),
                args: json!({"cpu": cpu}),
            };
            out.push(slice(task, TID_RUNNING, &open, time));
        }
    }

    /// An arrow from `waiter`'s wait (starting now) to `holder`'s hold of `addr`.
    fn flow(
        &mut self,
        waiter: u32,
        holder: u32,
        addr: u64,
        name: &str,
        time: u64,
        out: &mut Vec<Value>,
    ) {
        let id = self.next_flow;
        self.next_flow += 1;
        let hold_tid = self.hold_tid(holder, addr, name);
        let args =
            json!({"lock": name, "addr": format!("{addr:#x}"), "waiter": waiter, "holder": holder});
        out.push(
            json!({"ph": "s", "id": id, "cat": "waits-for", "name": name, "pid": pid(waiter),
                        "tid": TID_WAITS, "ts": ts(time), "args": args}),
        );
        out.push(
            json!({"ph": "f", "bp": "e", "id": id, "cat": "waits-for", "name": name,
                        "pid": pid(holder), "tid": hold_tid, "ts": ts(time), "args": args}),
        );
    }

    /// Ends what is still open at the last event, and names the tracks
    /// (`task_name` gives each task's label).
    pub fn finish(mut self, task_name: &dyn Fn(u32) -> String, out: &mut Vec<Value>) {
        let end = self.last_time;
        let tasks: Vec<u32> = self.tasks.keys().copied().collect();
        for task in tasks {
            self.stop_running(task, end, out);
            let t = self.tasks.get_mut(&task).expect("listed");
            // Innermost first, so that nested waits end inside their outer wait.
            for (_, open) in std::mem::take(&mut t.waits).iter().rev() {
                out.push(slice(task, TID_WAITS, open, end));
            }
            for (addr, open) in std::mem::take(&mut t.holds) {
                let tid = t.hold_tracks[&addr].0;
                out.push(slice(task, tid, &open, end));
            }
            let meta = |name: &str, tid: u64, key: &str, value: Value| json!({"ph": "M", "name": name, "pid": pid(task), "tid": tid, "args": {key: value}});
            out.push(meta("process_name", 0, "name", json!(task_name(task))));
            out.push(meta(
                "process_sort_index",
                0,
                "sort_index",
                json!(pid(task)),
            ));
            out.push(meta("thread_name", TID_RUNNING, "name", json!("running")));
            out.push(meta("thread_name", TID_WAITS, "name", json!("waits")));
            for (tid, name) in t.hold_tracks.values() {
                out.push(meta("thread_name", *tid, "name", json!(name)));
            }
        }
    }
}

/// The track of `task`'s events (its `running` track), for instants such as
/// findings.
pub fn task_track(task: u32) -> (u64, u64) {
    (pid(task), TID_RUNNING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use traces::{CpuId, LockRef, StrId, TaskId};

    const A: LockRef = LockRef {
        addr: 0xa0,
        class: StrId(0),
    };
    const B: LockRef = LockRef {
        addr: 0xb0,
        class: StrId(1),
    };

    fn at(time: u64, cpu: u16, task: u32, kind: EventKind) -> Event {
        Event {
            time,
            cpu: CpuId(cpu),
            task: TaskId(task),
            pc: 0,
            caller: 0,
            kind,
        }
    }

    fn name(id: StrId) -> String {
        ["a", "b"][id.0 as usize].to_string()
    }

    /// The flows as (waiter pid, holder pid, lock, waiter tid, holder tid).
    fn flows(out: &[Value]) -> Vec<(u64, u64, String, u64, u64)> {
        let mut by_id: BTreeMap<u64, (Option<&Value>, Option<&Value>)> = BTreeMap::new();
        for e in out {
            match e["ph"].as_str() {
                Some("s") => by_id.entry(e["id"].as_u64().unwrap()).or_default().0 = Some(e),
                Some("f") => by_id.entry(e["id"].as_u64().unwrap()).or_default().1 = Some(e),
                _ => {}
            }
        }
        by_id
            .values()
            .map(|(s, f)| {
                let (s, f) = (s.unwrap(), f.unwrap());
                assert_eq!(f["bp"], "e");
                assert_eq!(s["ts"], f["ts"]);
                (
                    s["pid"].as_u64().unwrap(),
                    f["pid"].as_u64().unwrap(),
                    s["name"].as_str().unwrap().to_string(),
                    s["tid"].as_u64().unwrap(),
                    f["tid"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// The X slices of `task` on track `tid`: (start, end, name).
    fn slices(out: &[Value], task: u32, tid: u64) -> Vec<(f64, f64, String)> {
        out.iter()
            .filter(|e| e["ph"] == "X" && e["pid"] == pid(task) && e["tid"] == tid)
            .map(|e| {
                let start = e["ts"].as_f64().unwrap();
                let end = start + e["dur"].as_f64().unwrap();
                (start, end, e["name"].as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn waiters_point_at_holders_and_holds_survive_migration() {
        let (spin, mutex) = (LockFlavor::Spin, LockFlavor::Mutex);
        let events = [
            at(
                1000,
                0,
                1,
                EventKind::LockAcquired {
                    lock: A,
                    flavor: mutex,
                },
            ),
            // Task 1 sleeps and resumes on CPU 1, still holding a.
            at(
                2000,
                0,
                1,
                EventKind::ContextSwitch {
                    from: TaskId(1),
                    to: TaskId(2),
                },
            ),
            at(
                3000,
                0,
                2,
                EventKind::LockAcquired {
                    lock: B,
                    flavor: spin,
                },
            ),
            at(
                4000,
                1,
                3,
                EventKind::ContextSwitch {
                    from: TaskId(3),
                    to: TaskId(1),
                },
            ),
            // Each now waits for the other's lock.
            at(
                5000,
                1,
                1,
                EventKind::LockAttempt {
                    lock: B,
                    flavor: spin,
                },
            ),
            at(
                6000,
                0,
                2,
                EventKind::LockAttempt {
                    lock: A,
                    flavor: mutex,
                },
            ),
        ];
        let mut tracks = TaskTracks::default();
        let mut out = Vec::new();
        for e in &events {
            tracks.event(e, &name, &mut out);
        }
        tracks.finish(&|task| format!("task{task}"), &mut out);
        // The two arrows form the cycle 1 -> 2 -> 1, each from a wait to a hold.
        let mut arrows = flows(&out);
        arrows.sort();
        assert_eq!(
            arrows,
            [
                (pid(1), pid(2), "b".to_string(), TID_WAITS, TID_HOLDS),
                (pid(2), pid(1), "a".to_string(), TID_WAITS, TID_HOLDS),
            ]
        );
        // Task 1's hold of a is one slice from its acquisition on CPU 0 to the end,
        // across the switch away and the resumption on CPU 1.
        assert_eq!(slices(&out, 1, TID_HOLDS), [(1.0, 6.0, "a".to_string())]);
        assert_eq!(
            slices(&out, 1, TID_RUNNING),
            [
                (1.0, 2.0, "on cpu0".to_string()),
                (4.0, 6.0, "on cpu1".to_string())
            ]
        );
        // The waits are open to the end, named by how the task waits.
        assert_eq!(
            slices(&out, 1, TID_WAITS),
            [(5.0, 6.0, "spinning on b".to_string())]
        );
        assert_eq!(
            slices(&out, 2, TID_WAITS),
            [(6.0, 6.0, "blocked on a".to_string())]
        );
        let thread_names: Vec<&str> = out
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == pid(2))
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(thread_names, ["running", "waits", "holds b"]);
    }

    #[test]
    fn an_acquired_lock_ends_its_wait_and_a_release_its_hold() {
        let spin = LockFlavor::Spin;
        let events = [
            at(
                1000,
                0,
                1,
                EventKind::LockAcquired {
                    lock: A,
                    flavor: spin,
                },
            ),
            at(
                2000,
                1,
                2,
                EventKind::LockAttempt {
                    lock: A,
                    flavor: spin,
                },
            ),
            at(
                3000,
                0,
                1,
                EventKind::LockRelease {
                    lock: A,
                    flavor: spin,
                },
            ),
            at(
                4000,
                1,
                2,
                EventKind::LockAcquired {
                    lock: A,
                    flavor: spin,
                },
            ),
            at(
                5000,
                1,
                2,
                EventKind::LockRelease {
                    lock: A,
                    flavor: spin,
                },
            ),
            // Uncontended now: no arrow.
            at(
                6000,
                0,
                1,
                EventKind::LockAttempt {
                    lock: A,
                    flavor: spin,
                },
            ),
        ];
        let mut tracks = TaskTracks::default();
        let mut out = Vec::new();
        for e in &events {
            tracks.event(e, &name, &mut out);
        }
        tracks.finish(&|task| format!("task{task}"), &mut out);
        assert_eq!(flows(&out).len(), 1);
        assert_eq!(
            slices(&out, 2, TID_WAITS),
            [(2.0, 4.0, "spinning on a".to_string())]
        );
        assert_eq!(slices(&out, 1, TID_HOLDS), [(1.0, 3.0, "a".to_string())]);
        assert_eq!(slices(&out, 2, TID_HOLDS), [(4.0, 5.0, "a".to_string())]);
    }
}
