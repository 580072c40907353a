//! Struct layouts of a kernel read from its DWARF (`gimli`), so that the host reads
//! a foreign kernel's data (a Linux `lockdep_map`, a `task_struct`) at the offsets
//! its compiler chose, never at offsets written down here.

use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, LittleEndian};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// One struct's members: name → byte offset (members of anonymous struct or union
/// members are flattened into it, with their offsets added, as C lets code name
/// them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructLayout {
    /// `sizeof` the struct.
    pub size: u64,
    members: HashMap<String, u64>,
}

impl StructLayout {
    /// The byte offset of member `name`.
    pub fn offset(&self, name: &str) -> Option<u64> {
        self.members.get(name).copied()
    }
}

/// The first complete definitions of the structs `names` in `elf`'s `.debug_info`
/// (a struct the DWARF lacks is missing from the map). Stops reading once all are
/// found.
pub fn struct_layouts(elf: &[u8], names: &[&str]) -> HashMap<String, StructLayout> {
    let mut found = HashMap::new();
    each_unit(elf, |dwarf, unit| {
        let Ok(mut tree) = unit.entries_tree(None) else {
            return false;
        };
        if let Ok(root) = tree.root() {
            find_structs(dwarf, unit, root, names, &mut found);
        }
        found.len() == names.len()
    });
    found
}

/// Looks for the structs `names` among `node`'s children, and inside namespaces
/// (where Rust puts its types; C has them at the top of the unit).
fn find_structs(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    node: gimli::EntriesTreeNode<'_, '_, Reader<'_>>,
    names: &[&str],
    found: &mut HashMap<String, StructLayout>,
) {
    let mut children = node.children();
    while let Ok(Some(child)) = children.next() {
        let entry = child.entry();
        if entry.tag() == gimli::DW_TAG_namespace {
            find_structs(dwarf, unit, child, names, found);
            continue;
        }
        if entry.tag() != gimli::DW_TAG_structure_type
            || entry.attr(gimli::DW_AT_declaration).is_some()
        {
            continue;
        }
        let Some(name) = entry_name(dwarf, unit, entry) else {
            continue;
        };
        if !names.contains(&name.as_str()) || found.contains_key(&name) {
            continue;
        }
        let size = udata(entry, gimli::DW_AT_byte_size).unwrap_or(0);
        let mut layout = StructLayout {
            size,
            members: HashMap::new(),
        };
        collect_members(dwarf, unit, child, 0, &mut layout.members);
        found.insert(name, layout);
    }
}

/// The values of the C enumerators `names` (`enum` constants), from the first
/// unit that defines each; stops reading once all are found.
pub fn enumerator_values(elf: &[u8], names: &[&str]) -> HashMap<String, i64> {
    let mut found = HashMap::new();
    each_unit(elf, |dwarf, unit| {
        let mut entries = unit.entries();
        while let Ok(Some(entry)) = entries.next_dfs() {
            if entry.tag() != gimli::DW_TAG_enumerator {
                continue;
            }
            let Some(name) = entry_name(dwarf, unit, entry) else {
                continue;
            };
            if !names.contains(&name.as_str()) || found.contains_key(&name) {
                continue;
            }
            let value = match entry.attr_value(gimli::DW_AT_const_value) {
                Some(AttributeValue::Sdata(v)) => Some(v),
                Some(v) => v.udata_value().map(|v| v as i64),
                None => None,
            };
            if let Some(value) = value {
                found.insert(name, value);
            }
        }
        found.len() == names.len()
    });
    found
}

/// Calls `visit` with each compilation unit of `elf`'s DWARF until it returns
/// `true` (done).
fn each_unit<'a>(
    elf: &'a [u8],
    mut visit: impl FnMut(&gimli::Dwarf<Reader<'a>>, &gimli::Unit<Reader<'a>>) -> bool,
) {
    let Some(dwarf) = load(elf) else {
        return;
    };
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        if visit(&dwarf, &unit) {
            return;
        }
    }
}

/// `elf`'s DWARF sections, borrowed.
fn load(elf: &[u8]) -> Option<gimli::Dwarf<Reader<'_>>> {
    let object = goblin::elf::Elf::parse(elf).ok()?;
    let section = |id: gimli::SectionId| -> Result<Reader<'_>, gimli::Error> {
        let data = object
            .section_headers
            .iter()
            .find(|h| object.shdr_strtab.get_at(h.sh_name) == Some(id.name()))
            .and_then(|h| {
                let start = usize::try_from(h.sh_offset).ok()?;
                elf.get(start..start.checked_add(usize::try_from(h.sh_size).ok()?)?)
            })
            .unwrap_or(&[]);
        Ok(EndianSlice::new(data, LittleEndian))
    };
    gimli::Dwarf::load(section).ok()
}

/// Adds the members of the struct or union `node` at `base` to `members`,
/// descending into anonymous struct/union members.
fn collect_members(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    node: gimli::EntriesTreeNode<'_, '_, Reader<'_>>,
    base: u64,
    members: &mut HashMap<String, u64>,
) {
    let mut children = node.children();
    while let Ok(Some(child)) = children.next() {
        let entry = child.entry();
        if entry.tag() != gimli::DW_TAG_member {
            continue;
        }
        let offset = base + udata(entry, gimli::DW_AT_data_member_location).unwrap_or(0);
        match entry_name(dwarf, unit, entry) {
            Some(name) => {
                members.entry(name).or_insert(offset);
            }
            None => {
                // An anonymous struct or union: its members are named directly.
                if let Some(AttributeValue::UnitRef(ty)) = entry.attr_value(gimli::DW_AT_type) {
                    if let Ok(mut tree) = unit.entries_tree(Some(ty)) {
                        if let Ok(inner) = tree.root() {
                            collect_members(dwarf, unit, inner, offset, members);
                        }
                    }
                }
            }
        }
    }
}

fn entry_name(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    unit: &gimli::Unit<Reader<'_>>,
    entry: &gimli::DebuggingInformationEntry<Reader<'_>>,
) -> Option<String> {
    let value = entry.attr_value(gimli::DW_AT_name)?;
    let name = dwarf.attr_string(unit, value).ok()?;
    Some(name.to_string_lossy().into_owned())
}

fn udata(entry: &gimli::DebuggingInformationEntry<Reader<'_>>, attr: gimli::DwAt) -> Option<u64> {
    entry.attr_value(attr)?.udata_value()
}
