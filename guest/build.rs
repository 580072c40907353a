//! Hands the linker script of the target's ISA to the linker; the image layout
//! lives in link.ld (arm64) and link-riscv64.ld.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("riscv64") => "link-riscv64.ld",
        _ => "link.ld",
    };
    println!("cargo:rustc-link-arg-bins=-T{dir}/{script}");
    println!("cargo:rerun-if-changed={dir}/{script}");
}
