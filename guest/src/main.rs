//! percpu-lab's guest: a small arm64 kernel for QEMU's `virt` board and for the
//! emulated copy of it in `emu/` (docs/machine.md is the contract).
//!
//! Synchronization rules — every lock in the kernel, what it protects, how taken:
//! - `console_lock` (console.rs, spinlock, irqsave): the UART, one whole line at a time.
//! - `run_queue` (sched.rs, one per CPU, spinlock, IRQs masked): that CPU's queue of
//!   runnable threads and their queue links/`queued` flags.
//! - `wait_queue` locks (sched.rs `WaitQueue`, spinlock, irqsave): the waiters of
//!   one wait queue and their wait links; the condition is checked under it.
//! - `mutex.wait_lock` (mutex.rs, one per mutex, spinlock, irqsave): the mutex's
//!   FIFO of sleeping waiters and handoff of `owner`.
//! - `ipi_mailbox` (smp.rs, one per CPU, spinlock, irqsave): call-function requests
//!   queued for that CPU.
//! - `worker_pool` (workqueue.rs, one per CPU, spinlock, irqsave): that CPU's list
//!   of pending work items.
//! - `zone_lock` (page_alloc.rs, spinlock, irqsave): the physical page bitmap and
//!   free count.
//! - `shrinker_list` (page_alloc.rs, mutex): the registered shrinkers; held while
//!   direct reclaim calls them.
//! - `fs_reclaim` (page_alloc.rs, pseudo-lock: `fs_reclaim_acquire/release`):
//!   marks direct reclaim for lock checkers.
//! - `vmap_lock` (mmu.rs, spinlock, irqsave): the vmalloc area's page tables.
//! - scenario locks (`smoke_counter`, `smoke_mutex`) are documented in scenarios.rs.
//! - the per-CPU allocator's `pcpu_alloc_mutex`, `pcpu_lock`, `pcpu_mutex` and
//!   `pcpu_vm_pool` are documented in pcpu_platform.rs; the allocator scenarios'
//!   locks (`fs_lock`, `storm_live`, `irq_free_queue`, `fs_handoff`,
//!   `reclaim_grown`) in alloc_scenarios.rs.
//!
//! Lock order (outer first): fs_reclaim -> shrinker_list; mutex.wait_lock /
//! wait_queue -> run_queue; vmap_lock -> zone_lock; console_lock is innermost.

#![no_std]
#![no_main]

mod alloc_scenarios;
#[cfg(target_arch = "aarch64")]
mod arch;
mod bootinfo;
mod config;
mod console;
#[cfg(target_arch = "aarch64")]
mod exceptions;
mod fdt;
#[cfg(target_arch = "aarch64")]
mod gic;
#[cfg(target_arch = "aarch64")]
mod head;
mod irq;
mod lock_selftest;
mod mem;
mod mmu;
#[cfg(target_arch = "aarch64")]
mod mmu_selftest;
mod mutex;
mod page_alloc;
#[cfg(target_arch = "aarch64")]
mod paging;
mod panic;
mod pcpu_platform;
mod percpu;
#[cfg(target_arch = "aarch64")]
mod psci;
mod rand;
mod scenarios;
mod sched;
mod smp;
#[cfg(target_arch = "aarch64")]
mod switch;
mod sync;
mod tlbflush;
mod vmalloc;
mod workqueue;

// The RISC-V counterparts of the arm64-only modules above, under the same names.
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/arch.rs"]
mod arch;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/exceptions.rs"]
mod exceptions;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/head.rs"]
mod head;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/irqchip.rs"]
mod irqchip;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/mmu_selftest.rs"]
mod mmu_selftest;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/paging.rs"]
mod paging;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/sbi.rs"]
mod sbi;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64/switch.rs"]
mod switch;

use crate::bootinfo::boot_info;
use crate::percpu::this_cpu;

extern "C" {
    /// End of the kernel image, BSS included (link.ld).
    static _end: u8;
}

/// Bring-up shared by every CPU once its stack and vectors are set.
///
/// CONTEXT: bring-up, IRQs masked, no lock held.
fn bring_up_this_cpu(id: usize) {
    mmu::enable_this_cpu();
    arch::irqchip::init_this_cpu(id, boot_info().cpu_mpidr[id]);
    sched::init_this_cpu();
    irq::arm_tick();
    smp::mark_online();
    println!("cpu{}: online", id);
}

/// The boot CPU's Rust entry, with the device tree's address.
///
/// CONTEXT: boot CPU, MMU off, IRQs masked, alone.
#[no_mangle]
extern "C" fn kernel_main(dtb: usize) -> ! {
    percpu::init_this_cpu(0);
    if let Err(error) = bootinfo::parse(dtb, arch::this_cpu_hw_id()) {
        panic!("cannot read the device tree at 0x{:x}: {:?}", dtb, error);
    }
    let info = boot_info();
    mmu::build_tables(info.ram_base, info.ram_size);
    arch::irqchip::init_distributor();
    bring_up_this_cpu(0);
    println!(
        "cpu0: percpu-lab guest: scenario={} seed={} variant={} cpus={}",
        info.scenario.as_str(),
        info.seed,
        info.variant.name(),
        info.cpu_count
    );
    if let Some(word) = info.unknown_arg {
        println!("cpu0: ignoring bootarg '{}'", word.as_str());
    }
    if info.scale != 1 {
        println!("cpu0: scale={}", info.scale);
    }
    if let Some(inject) = info.inject {
        println!("cpu0: inject={}", inject.as_str());
    }
    if info.flush != crate::mmu::FlushStrategy::Broadcast {
        println!("cpu0: flush={}", info.flush.name());
    }
    if info.cpus_ignored != 0 {
        println!(
            "cpu0: ignoring {} CPUs beyond {}",
            info.cpus_ignored,
            config::MAX_CPUS
        );
    }
    // The device tree has been read in full; its memory becomes free RAM now.
    // SAFETY: taking the address of a linker symbol.
    let kernel_end = unsafe { &_end as *const u8 as usize };
    page_alloc::init(kernel_end, (info.ram_base + info.ram_size) as usize);

    smp::bring_up_secondaries();
    sync::local_irq_enable();
    // Whatever may sleep runs in a thread: the boot context is CPU 0's idle thread.
    if sched::spawn_on(0, "kinit", kernel_init, 0).is_none() {
        panic!("no memory for the kinit thread");
    }
    sched::idle_loop()
}

/// Starts the workqueue and the scenario, then exits.
///
/// CONTEXT: the kinit thread on CPU 0; may sleep.
fn kernel_init(_: usize) {
    workqueue::init(smp::online_cpus());
    pcpu_platform::init(smp::online_cpus());
    scenarios::start();
}

/// A secondary CPU's Rust entry (PSCI CPU_ON context = its logical number).
///
/// CONTEXT: that CPU, MMU off, IRQs masked.
#[no_mangle]
extern "C" fn secondary_main(id: usize) -> ! {
    percpu::init_this_cpu(id);
    bring_up_this_cpu(id);
    debug_assert_eq!(this_cpu().id, id);
    sync::local_irq_enable();
    sched::idle_loop()
}
