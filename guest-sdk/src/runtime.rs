//! What a `no_std` policy component needs from its language runtime, which `std` would
//! otherwise provide: a heap allocator, a panic handler, and `cabi_realloc` (the export
//! the host calls to place strings and lists in the guest's memory).
//!
//! Keeping std out of policies keeps WASI imports and std's panic machinery out of every
//! fresh instance, and the allocator never frees: an instance lives for exactly one
//! evaluation and is then discarded whole, so bookkeeping for reuse is wasted work (the
//! memory limit bounds what a policy can leak). Measured with `sigward policy bench`:
//! builtin:read-only went from ~12 µs (std) and ~10.5 µs (no_std, dlmalloc) to ~8.8 µs.

#![allow(unsafe_code)]

use alloc::alloc::{Layout, alloc, realloc};

// `memcmp` and friends, which core and serde_json call, come from the C library the
// wasm32-wasip2 target ships (wasi-libc, linked statically; these functions import nothing).
#[link(name = "c")]
unsafe extern "C" {}

// SAFETY: a component instance runs on one thread; nothing here is shared across threads.
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::LeakingAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::LeakingAllocator::new()) };

/// A panic ends the evaluation with a trap; the host turns it into a deny naming the policy.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocation hook (`cabi_realloc`), as wit-bindgen defines it for
/// targets without std.
///
/// # Safety
/// Called only by the component model's canonical ABI, which passes a pointer it received
/// from an earlier call (or null with `old_len == 0`) and a power-of-two `align`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    // SAFETY: the canonical ABI guarantees `align` is a power of two and, when
    // `old_len != 0`, that `old_ptr` was allocated by this function with that layout.
    let ptr = unsafe {
        if old_len == 0 {
            if new_len == 0 {
                return align as *mut u8;
            }
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}
