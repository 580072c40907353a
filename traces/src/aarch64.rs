//! The AArch64 facts both the emulator's MMU and the offline TLB check need: what a
//! stage-1 descriptor means at each level, what a TLBI invalidates, what a DSB
//! option orders. One definition, so the machine and the analysis of its trace cannot
//! disagree on them.

/// Bits 47:12 of a descriptor: the next table or the output address.
pub const OUTPUT_ADDRESS: u64 = 0x0000_ffff_ffff_f000;
/// The translation granule (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// Clears the offset inside a page.
pub const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

/// What an access does to memory, as the permission check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Fetch,
}

impl Access {
    /// Every kind of access.
    pub const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Fetch];
}

/// VA bits one entry at `level` maps (12 at level 3, 21, 30, 39).
pub fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - u32::from(level))
}

/// What a descriptor at `level` means for a walk: invalid, a table (its next-level
/// address), or a leaf (its output address and the block size it maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Faults: the walk stops.
    Invalid,
    /// The next-level table's physical address.
    Table(u64),
    /// A page or block.
    Leaf {
        /// The physical address it maps to (block-aligned).
        output: u64,
        /// The level it sits at (3 for a page, 2 or 1 for a block).
        level: u8,
    },
}

impl Descriptor {
    /// Reads the descriptor value `desc` found at `level` (4 KiB granule).
    pub fn decode(desc: u64, level: u8) -> Self {
        let valid = desc & 1 != 0;
        let table_or_page = desc & 2 != 0;
        if !valid || (level == 3 && !table_or_page) || (level == 0 && !table_or_page) {
            Descriptor::Invalid
        } else if table_or_page && level < 3 {
            Descriptor::Table(desc & OUTPUT_ADDRESS)
        } else {
            let mask = (1u64 << level_shift(level)) - 1;
            Descriptor::Leaf {
                output: desc & OUTPUT_ADDRESS & !mask,
                level,
            }
        }
    }

    /// Whether a walk goes on through it or ends at it without a fault.
    pub fn is_valid(&self) -> bool {
        *self != Descriptor::Invalid
    }

    /// Whether replacing descriptor value `old` by `new` (both at `level`) changes
    /// the translation a TLB may hold through it: the output, the level, or the
    /// permissions and attributes — not the access flag (clearing it only makes the
    /// next walk fault) nor the software bits 58:55.
    pub fn change_matters(old: u64, new: u64, level: u8) -> bool {
        let (od, nd) = (Self::decode(old, level), Self::decode(new, level));
        match (od, nd) {
            (Descriptor::Invalid, _) => false,
            (Descriptor::Leaf { .. }, Descriptor::Leaf { .. }) => {
                const IGNORED: u64 = (1 << 10) | (0xf << 55);
                od != nd || (old ^ new) & !IGNORED != 0
            }
            _ => od != nd,
        }
    }
}

impl std::fmt::Display for Descriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Descriptor::Invalid => f.write_str("invalid"),
            Descriptor::Table(next) => write!(f, "table at {next:#x}"),
            Descriptor::Leaf { output, level: 3 } => write!(f, "page {output:#x}"),
            Descriptor::Leaf { output, level } => {
                let size = 1u64 << (level_shift(level) - 20);
                write!(f, "{size} MiB block {output:#x}")
            }
        }
    }
}

/// Which held translations a TLBI removes (on the CPUs it reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbiScope {
    /// VMALLE1: everything.
    All,
    /// VAE1/VALE1 (`asid` or global entries) and VAAE1/VAALE1 (any ASID: `None`);
    /// the last-level forms are taken as the all-levels ones (they remove at least
    /// as much for the leaf entries modelled).
    Va {
        /// The page's virtual address.
        va: u64,
        /// The ASID, `None` for any.
        asid: Option<u16>,
    },
    /// ASIDE1: non-global entries of one ASID.
    Asid(u16),
    /// The pages of `start..end`, RISC-V's way: of every ASID (`None`), or only the
    /// non-global entries of one (`sfence.vma` and SBI remote fences with an ASID
    /// leave global mappings alone).
    Range {
        /// First address.
        start: u64,
        /// One past the last address.
        end: u64,
        /// The ASID, `None` for every one.
        asid: Option<u16>,
    },
}

impl TlbiScope {
    /// The scope of `tlbi op, Xt` with `operand` as Xt; `None` for the forms not
    /// modelled (`TlbiOp::Other`).
    pub fn of(op: TlbiOp, operand: u64) -> Option<Self> {
        let asid = (operand >> 48) as u16;
        // Xt[43:0] = VA[55:12]; bits above 55 copy bit 55.
        let va = ((((operand & ((1 << 44) - 1)) << 12) << 8) as i64 >> 8) as u64;
        Some(match op {
            TlbiOp::Vmalle1 => TlbiScope::All,
            TlbiOp::Vae1 | TlbiOp::Vale1 => TlbiScope::Va {
                va,
                asid: Some(asid),
            },
            TlbiOp::Vaae1 | TlbiOp::Vaale1 => TlbiScope::Va { va, asid: None },
            TlbiOp::Aside1 => TlbiScope::Asid(asid),
            TlbiOp::Other(_) => return None,
        })
    }

    /// The scope of an invalidation by meaning (a trace's `TlbInvalidate`): `len` bytes
    /// from `start` (0: every address), of `asid` (`None`: every ASID).
    pub fn of_range(start: u64, len: u64, asid: Option<u16>) -> Self {
        match (len, asid) {
            (0, None) => TlbiScope::All,
            (0, Some(asid)) => TlbiScope::Asid(asid),
            (len, asid) => TlbiScope::Range {
                start,
                end: start.saturating_add(len),
                asid,
            },
        }
    }

    /// Whether the TLBI reaches the translation of `va` through a descriptor whose
    /// level maps `1 << shift` bytes.
    pub fn covers(&self, va: u64, shift: u32) -> bool {
        let mask = !((1u64 << shift) - 1);
        match *self {
            TlbiScope::All | TlbiScope::Asid(_) => true,
            TlbiScope::Va { va: tlbi_va, .. } => tlbi_va & mask == va & mask,
            TlbiScope::Range { start, end, .. } => {
                let block = va & mask;
                block < end && block.saturating_add(!mask) >= start
            }
        }
    }
}

/// What a DSB with this option does for TLB maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsbReach {
    /// Orders earlier stores (ST or full).
    pub stores: bool,
    /// Orders everything, so completes earlier TLBIs (full only).
    pub full: bool,
    /// Inner shareable or wider (not NSH): reaches the other CPUs.
    pub shareable: bool,
}

impl DsbReach {
    /// What a DSB with the CRm `option` waits for.
    pub fn of(option: BarrierOption) -> Self {
        let types = option.0 & 3; // 1 LD, 2 ST, 3 full
        let domain = option.0 >> 2; // 0 OSH, 1 NSH, 2 ISH, 3 SY
        DsbReach {
            stores: types & 2 != 0,
            full: types == 3,
            shareable: domain != 1,
        }
    }
}

/// The operation of a `tlbi` instruction (EL1 forms, stage 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlbiOp {
    /// All entries of the current VMID.
    Vmalle1,
    /// By VA and ASID, all levels.
    Vae1,
    /// By VA and ASID, last level only.
    Vale1,
    /// By VA, all ASIDs, all levels.
    Vaae1,
    /// By VA, all ASIDs, last level only.
    Vaale1,
    /// By ASID.
    Aside1,
    /// Any other TLBI: its system-instruction encoding `op1:CRm:op2` (10 bits used).
    Other(u16),
}

/// A barrier domain/type: the 4-bit `CRm` option field of `dsb`/`dmb`
/// (e.g. `0b1111` = SY, `0b1011` = ISH, `0b1010` = ISHST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarrierOption(pub u8);

/// Declares the named barrier options once: each becomes a constant of
/// [`BarrierOption`] and the name [`BarrierOption::name`] gives it.
macro_rules! barrier_options {
    ($($constant:ident = $bits:literal, $name:literal;)*) => {
        impl BarrierOption {
            $(
                #[doc = concat!("`", $name, "`")]
                pub const $constant: BarrierOption = BarrierOption($bits);
            )*

            /// The assembler's name for the option, or `#imm` for the reserved encodings.
            pub fn name(self) -> String {
                match self.0 {
                    $($bits => $name.to_string(),)*
                    other => format!("#{other}"),
                }
            }
        }
    };
}

barrier_options! {
    OSHLD = 0b0001, "oshld";
    OSHST = 0b0010, "oshst";
    OSH = 0b0011, "osh";
    NSHLD = 0b0101, "nshld";
    NSHST = 0b0110, "nshst";
    NSH = 0b0111, "nsh";
    ISHLD = 0b1001, "ishld";
    ISHST = 0b1010, "ishst";
    ISH = 0b1011, "ish";
    LD = 0b1101, "ld";
    ST = 0b1110, "st";
    SY = 0b1111, "sy";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_options_are_named_as_the_assembler_names_them() {
        assert_eq!(BarrierOption::ISH.name(), "ish");
        assert_eq!(BarrierOption::NSHST.name(), "nshst");
        assert_eq!(BarrierOption(0b1111), BarrierOption::SY);
        // Reserved encodings (no assembler name) print as immediates.
        assert_eq!(BarrierOption(0).name(), "#0");
        assert_eq!(BarrierOption(0b1100).name(), "#12");
        let named: std::collections::BTreeSet<String> =
            (0u8..16).map(|bits| BarrierOption(bits).name()).collect();
        assert_eq!(named.iter().filter(|n| !n.starts_with('#')).count(), 12);
    }

    /// An invalidation by meaning: no length is everything (of one ASID or all), a
    /// length is the pages it touches, its end excluded.
    #[test]
    fn ranges_cover_the_blocks_they_touch() {
        const VA: u64 = 0xffff_ffc0_0004_1000;
        assert_eq!(TlbiScope::of_range(VA, 0, None), TlbiScope::All);
        assert_eq!(TlbiScope::of_range(VA, 0, Some(5)), TlbiScope::Asid(5));
        let page = TlbiScope::of_range(VA, 4096, Some(5));
        assert_eq!(
            page,
            TlbiScope::Range {
                start: VA,
                end: VA + 4096,
                asid: Some(5)
            }
        );
        assert!(page.covers(VA, 12) && page.covers(VA + 0xfff, 12));
        assert!(!page.covers(VA + 4096, 12), "the end is excluded");
        assert!(!page.covers(VA - 4096, 12));
        // A range inside a page, or inside a block, reaches it.
        let bytes = TlbiScope::of_range(VA + 0x800, 16, None);
        assert!(bytes.covers(VA, 12));
        assert!(page.covers(VA + 0x5000, 21), "the 2 MiB block holding VA");
        assert!(!page.covers(VA + 0x5000, 12));
        assert!(TlbiScope::of_range(VA, 4097, None).covers(VA + 4096, 12));
    }

    #[test]
    fn tlbi_operands_give_va_and_asid() {
        let xt = (0xffff_ff80_0000_1000u64 >> 12) & ((1 << 44) - 1);
        assert_eq!(
            TlbiScope::of(TlbiOp::Vaae1, xt),
            Some(TlbiScope::Va {
                va: 0xffff_ff80_0000_1000,
                asid: None
            })
        );
        assert_eq!(
            TlbiScope::of(TlbiOp::Vale1, (5 << 48) | 0x80000),
            Some(TlbiScope::Va {
                va: 0x8000_0000,
                asid: Some(5)
            })
        );
        assert_eq!(
            TlbiScope::of(TlbiOp::Aside1, 7 << 48),
            Some(TlbiScope::Asid(7))
        );
        assert_eq!(TlbiScope::of(TlbiOp::Vmalle1, 123), Some(TlbiScope::All));
        assert_eq!(TlbiScope::of(TlbiOp::Other(0x11), 0), None);
    }

    #[test]
    fn dsb_options_reach() {
        let ish = DsbReach::of(BarrierOption::ISH);
        assert!(ish.stores && ish.full && ish.shareable);
        let ishst = DsbReach::of(BarrierOption::ISHST);
        assert!(ishst.stores && !ishst.full && ishst.shareable);
        let nsh = DsbReach::of(BarrierOption::NSH);
        assert!(nsh.full && !nsh.shareable);
        let ld = DsbReach::of(BarrierOption::ISHLD);
        assert!(!ld.stores && !ld.full);
    }

    #[test]
    fn descriptors_decode_by_level() {
        use Descriptor::{Invalid, Leaf, Table};
        let next = 0x4000_3000;
        // bits[1:0]: 0b11 table (levels 0-2) or page (level 3); 0b01 block (levels
        // 1-2), invalid at 0 and 3; bit 0 clear: invalid. Upper attributes and the
        // bits below the output's alignment are not part of the address.
        let attrs = (1 << 54) | (1 << 10) | (0b11 << 8);
        assert_eq!(Descriptor::decode(next | 3 | attrs, 0), Table(next));
        assert_eq!(Descriptor::decode(next | 3, 2), Table(next));
        assert_eq!(Descriptor::decode(next | 1, 0), Invalid);
        assert_eq!(Descriptor::decode(next | 2, 2), Invalid);
        assert_eq!(Descriptor::decode(next | 1, 3), Invalid);
        assert_eq!(
            Descriptor::decode(next | 3 | attrs, 3),
            Leaf {
                output: next,
                level: 3
            }
        );
        assert_eq!(
            Descriptor::decode(0x4020_0000 | 0x1_f000 | 1 | attrs, 2),
            Leaf {
                output: 0x4020_0000,
                level: 2
            }
        );
        assert_eq!(
            Descriptor::decode(0x4000_0000 | 0x3fff_f000 | 1, 1),
            Leaf {
                output: 0x4000_0000,
                level: 1
            }
        );
        assert!(!Invalid.is_valid() && Table(next).is_valid());
        assert_eq!(Table(next).to_string(), "table at 0x40003000");
        assert_eq!(
            Descriptor::decode(next | 3, 3).to_string(),
            "page 0x40003000"
        );
        assert_eq!(
            Descriptor::decode(0x4020_0000 | 1, 2).to_string(),
            "2 MiB block 0x40200000"
        );
        assert_eq!(
            Descriptor::decode(0x4000_0000 | 1, 1).to_string(),
            "1024 MiB block 0x40000000"
        );
        assert_eq!(
            (level_shift(3), level_shift(2), level_shift(0)),
            (12, 21, 39)
        );
        assert_eq!(0x4000_1fff & PAGE_MASK, 0x4000_1000);
    }

    #[test]
    fn only_translation_bits_matter() {
        let page = 0x4010_0000 | 0x403;
        assert!(Descriptor::change_matters(page, page ^ (1 << 7), 3));
        assert!(Descriptor::change_matters(page, page ^ (1 << 54), 3));
        assert!(!Descriptor::change_matters(page, page ^ (1 << 10), 3));
        assert!(!Descriptor::change_matters(page, page ^ (1 << 55), 3));
        assert!(Descriptor::change_matters(page, 0, 3));
        assert!(!Descriptor::change_matters(0, page, 3));
    }
}
