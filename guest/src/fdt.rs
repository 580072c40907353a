//! A minimal flattened-device-tree reader: walks the structure block once and hands
//! every property to a visitor with its node's path context. Enough for the handful
//! of values the kernel needs (memory, CPUs, bootargs); no allocation.

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const MAX_DEPTH: usize = 8;

/// Where a property sits: its node's name, its parent's name, the depth (root = 0)
/// and the `#address-cells`/`#size-cells` that apply to the node's `reg`.
pub struct PropertyContext<'a> {
    pub depth: usize,
    pub node: &'a str,
    pub parent: &'a str,
    pub address_cells: u32,
    pub size_cells: u32,
}

#[derive(Debug)]
pub enum FdtError {
    BadMagic,
    Malformed,
}

/// CONTEXT: any; pure.
fn be32(bytes: &[u8], at: usize) -> Result<u32, FdtError> {
    let word = bytes.get(at..at + 4).ok_or(FdtError::Malformed)?;
    Ok(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// CONTEXT: any; pure.
fn c_string(bytes: &[u8], at: usize) -> Result<&str, FdtError> {
    let tail = bytes.get(at..).ok_or(FdtError::Malformed)?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(FdtError::Malformed)?;
    core::str::from_utf8(&tail[..len]).map_err(|_| FdtError::Malformed)
}

/// Reads big-endian cells `cells` wide from `bytes` at `*at`, advancing `*at`.
///
/// CONTEXT: any; pure.
pub fn read_cells(bytes: &[u8], at: &mut usize, cells: u32) -> Option<u64> {
    let mut value = 0u64;
    for _ in 0..cells {
        let word = bytes.get(*at..*at + 4)?;
        value = (value << 32) | u32::from_be_bytes([word[0], word[1], word[2], word[3]]) as u64;
        *at += 4;
    }
    Some(value)
}

/// The device tree at physical address `base`, as a byte slice.
///
/// # Safety
/// `base` must point at a device tree that stays untouched while the slice lives.
///
/// CONTEXT: boot only, before the page allocator may reuse the blob.
pub unsafe fn blob_at(base: usize) -> Result<&'static [u8], FdtError> {
    let header = core::slice::from_raw_parts(base as *const u8, 8);
    if be32(header, 0)? != FDT_MAGIC {
        return Err(FdtError::BadMagic);
    }
    let total = be32(header, 4)? as usize;
    Ok(core::slice::from_raw_parts(base as *const u8, total))
}

/// Calls `visit(context, property name, value)` for every property in `blob`.
///
/// CONTEXT: boot only, before the page allocator may reuse the blob's memory.
pub fn walk_properties(
    blob: &[u8],
    mut visit: impl FnMut(&PropertyContext, &str, &[u8]),
) -> Result<(), FdtError> {
    let structure = be32(blob, 8)? as usize;
    let strings = be32(blob, 12)? as usize;
    let mut names: [&str; MAX_DEPTH] = [""; MAX_DEPTH];
    // cells[d] = what node d declared for its children (defaults from the spec).
    let mut cells: [(u32, u32); MAX_DEPTH] = [(2, 1); MAX_DEPTH];
    let mut depth = 0usize; // number of open nodes
    let mut at = structure;
    loop {
        let token = be32(blob, at)?;
        at += 4;
        match token {
            FDT_BEGIN_NODE => {
                let name = c_string(blob, at)?;
                at = (at + name.len() + 1 + 3) & !3;
                if depth >= MAX_DEPTH {
                    return Err(FdtError::Malformed);
                }
                names[depth] = name;
                cells[depth] = (2, 1);
                depth += 1;
            }
            FDT_END_NODE => depth = depth.checked_sub(1).ok_or(FdtError::Malformed)?,
            FDT_PROP => {
                let len = be32(blob, at)? as usize;
                let name_offset = be32(blob, at + 4)? as usize;
                let value = blob.get(at + 8..at + 8 + len).ok_or(FdtError::Malformed)?;
                let name = c_string(blob, strings + name_offset)?;
                at = (at + 8 + len + 3) & !3;
                if depth == 0 {
                    return Err(FdtError::Malformed);
                }
                let node = depth - 1;
                match name {
                    "#address-cells" => cells[node].0 = be32(value, 0)?,
                    "#size-cells" => cells[node].1 = be32(value, 0)?,
                    _ => {}
                }
                let (address_cells, size_cells) = if node == 0 { (2, 1) } else { cells[node - 1] };
                let context = PropertyContext {
                    depth: node,
                    node: names[node],
                    parent: if node == 0 { "" } else { names[node - 1] },
                    address_cells,
                    size_cells,
                };
                visit(&context, name, value);
            }
            FDT_NOP => {}
            FDT_END => return Ok(()),
            _ => return Err(FdtError::Malformed),
        }
    }
}
