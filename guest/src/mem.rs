//! `memset`, in place of compiler_builtins' weak one: whole 64-byte lines per
//! loop pass. The allocator clears every page it populates and the page
//! allocator every page it hands out, so this loop runs more guest instructions
//! than any other; compiler_builtins' version stores one word per pass, and the
//! emulator pays per pass (per block) far more than per store.

/// Bytes stored per pass of the main loop.
const LINE: usize = 64;

/// Sets `n` bytes at `dest` to `byte` and returns `dest`.
///
/// CONTEXT: any; never sleeps, takes no lock.
///
/// # Safety
/// `dest..dest + n` is writable memory (the C contract of `memset`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, byte: i32, n: usize) -> *mut u8 {
    let start = dest as usize;
    let end = start + n;
    let word = u64::from_ne_bytes([byte as u8; 8]);
    let lines_start = start.next_multiple_of(LINE).min(end);
    let lines_end = (end & !(LINE - 1)).max(lines_start);
    // Volatile stores, so that the compiler cannot turn these loops back into a
    // call of `memset`.
    let bytes = |from: usize, to: usize| {
        for addr in from..to {
            // SAFETY: inside the caller's range.
            unsafe { (addr as *mut u8).write_volatile(byte as u8) };
        }
    };
    bytes(start, lines_start);
    let mut line = lines_start;
    while line < lines_end {
        for offset in (0..LINE).step_by(8) {
            // SAFETY: an aligned word inside the caller's range.
            unsafe { ((line + offset) as *mut u64).write_volatile(word) };
        }
        line += LINE;
    }
    bytes(lines_end, end);
    dest
}
