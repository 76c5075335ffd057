//! The binary's global allocator: mimalloc, reached through its plain entry points whenever
//! they already give the alignment asked for.
//!
//! `mimalloc::MiMalloc` sends every allocation to `mi_malloc_aligned`. mimalloc 3 takes that
//! call's fast path only while the size's free list holds a block; otherwise, unless the size
//! is a power of two, it over-allocates from the next size class up. So the list of a size such
//! as 96 bytes is never refilled, and every later allocation of that size pays the slow path
//! (about 190 instructions instead of about 20). A handler's boxed future is such an
//! allocation, once per invocation. mimalloc's blocks are multiples of the word size on
//! word-aligned starts, so an alignment of at most 8 needs no aligned call at all.

// The one place in the workspace that needs `unsafe`: a `GlobalAlloc` is an unsafe trait, and
// the calls into mimalloc are foreign functions.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment every mimalloc block has: its blocks are whole words from a word boundary.
const WORD_ALIGNED: usize = std::mem::size_of::<usize>();

/// mimalloc, with plain calls for word alignment or less (see the module docs).
#[derive(Debug)]
pub(crate) struct Mimalloc;

// SAFETY: every method forwards to the mimalloc call with the same contract as the
// `GlobalAlloc` method (or, for alignments up to a word, to the plain call, whose blocks are
// word-aligned); a null return reports failure as `GlobalAlloc` requires.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size, as `GlobalAlloc::alloc` requires of callers.
        unsafe {
            if layout.align() <= WORD_ALIGNED {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= WORD_ALIGNED {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's promise), so from mimalloc,
        // whose `mi_free` takes blocks from the plain and the aligned calls alike.
        unsafe { mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the block keeps its alignment.
        unsafe {
            if layout.align() <= WORD_ALIGNED {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes across the small classes and beyond, at every alignment up to a page: each block
    /// is aligned, zeroed when asked, and keeps its bytes through a `realloc` up and down.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        for align in (0..=12).map(|shift| 1usize << shift) {
            for size in (1..=300).chain([1_000, 4_096, 70_000]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                let fill = u8::try_from(size % 251).unwrap();
                // SAFETY: every layout has a non-zero size; each block is used within its size,
                // resized with the layout it has, and freed once with it.
                unsafe {
                    let zeroed = Mimalloc.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed.addr() % align, 0, "zeroed {size} at {align}");
                    let bytes = std::slice::from_raw_parts(zeroed, size);
                    assert!(bytes.iter().all(|&b| b == 0), "zeroed {size} at {align}");
                    Mimalloc.dealloc(zeroed, layout);

                    let mut block = Mimalloc.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block.addr() % align, 0, "{size} at {align}");
                    block.write_bytes(fill, size);
                    let mut current = layout;
                    for new_size in [size * 3, size / 2 + 1] {
                        block = Mimalloc.realloc(block, current, new_size);
                        assert!(!block.is_null());
                        assert_eq!(block.addr() % align, 0, "{size} → {new_size} at {align}");
                        let kept = std::slice::from_raw_parts(block, size.min(new_size));
                        assert!(kept.iter().all(|&b| b == fill), "{size} → {new_size}");
                        current = Layout::from_size_align(new_size, align).unwrap();
                    }
                    Mimalloc.dealloc(block, current);
                }
            }
        }
    }
}
