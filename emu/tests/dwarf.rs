//! Struct layouts from a kernel's DWARF, checked on the built guest (skipped, with a
//! note, when it has not been built).

mod common;

/// `PerCpu::current` lies where docs/machine.md says the recorder reads it, and
/// the members the guest has are all found (a missing struct is just absent).
#[test]
fn reads_a_struct_layout_from_the_guest_dwarf() {
    let Some(guest) = common::guest() else {
        return;
    };
    let layouts = emu::dwarf::struct_layouts(guest.file_bytes(), &["PerCpu", "NoSuchStruct"]);
    assert!(!layouts.contains_key("NoSuchStruct"));
    let percpu = &layouts["PerCpu"];
    assert_eq!(percpu.offset("id"), Some(0));
    assert_eq!(percpu.offset("preempt_count"), Some(8));
    assert_eq!(percpu.offset("current"), Some(24));
    assert_eq!(percpu.offset("no_such_member"), None);
    assert!(percpu.size > 24);
}

/// Enumerator values by name (the guest's `Gfp`: `Kernel` 0, `Atomic` 1); a name
/// the DWARF lacks is absent.
#[test]
fn reads_enumerator_values_from_the_guest_dwarf() {
    let Some(guest) = common::guest() else {
        return;
    };
    let values =
        emu::dwarf::enumerator_values(guest.file_bytes(), &["Kernel", "Atomic", "NoSuchValue"]);
    assert_eq!(values.get("Kernel"), Some(&0));
    assert_eq!(values.get("Atomic"), Some(&1));
    assert!(!values.contains_key("NoSuchValue"));
}
