//! PSCI 0.2 function IDs and return codes (called with `hvc #0`), and the mapping
//! between CPU indices and MPIDR affinity values.

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_SUSPEND: u32 = 0xc400_0001;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON: u32 = 0xc400_0003;
pub const AFFINITY_INFO: u32 = 0xc400_0004;
pub const MIGRATE: u32 = 0xc400_0005;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;

/// Version 0.2 in PSCI's major.minor encoding.
pub const VERSION_0_2: u64 = 2;
pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
pub const ALREADY_ON: i64 = -4;
/// AFFINITY_INFO answers.
pub const AFFINITY_ON: u64 = 0;
pub const AFFINITY_OFF: u64 = 1;
/// MIGRATE_INFO_TYPE: no trusted OS to migrate.
pub const TOS_NOT_PRESENT: u64 = 2;

/// MPIDR_EL1 of a CPU: Aff0 = index (one cluster of up to 8, as QEMU's `virt` with
/// GICv2), bit 31 RES1.
pub fn mpidr_of(cpu: usize) -> u64 {
    cpu as u64
}

/// The value `mrs xN, mpidr_el1` returns.
pub fn mpidr_register(cpu: usize) -> u64 {
    (1 << 31) | mpidr_of(cpu)
}

/// The CPU a PSCI target MPIDR names (affinity fields only).
pub fn cpu_of_mpidr(mpidr: u64, ncpus: usize) -> Option<usize> {
    let affinity = mpidr & 0xff_00ff_ffff;
    (affinity < ncpus as u64).then_some(affinity as usize)
}
