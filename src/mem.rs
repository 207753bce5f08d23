//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the static binary
//! the image ships (x86_64, musl).
//!
//! musl copies a block a byte at a time up to 8-byte alignment, then with
//! `rep movsq`, then a byte at a time again, and compares bytes one by one.
//! Rust calls these for every string and vector it copies and every slice
//! it compares, and most are short: in the musl build, a rules file matching
//! nothing spent 28 % of its CPU in `memcpy` and 6 % in `memcmp` (`perf`),
//! where the glibc build spends 3 % in each. Defined here with their C
//! names in that build, they take musl's place at link time (a static link
//! takes a symbol from `libc.a` only if nothing else defines it); in any
//! other build they are plain functions, tested against the standard
//! library.
//!
//! Up to 64 bytes, a copy or fill is a few overlapping loads and stores, no
//! loop; past that it is one `rep movsb` / `rep stosb`, which every x86_64
//! CPU since 2012 runs in wide chunks (ERMS). Nothing here may call the
//! function it defines: there are no loops a compiler could turn back into
//! a call, but the comparison's word loop, and the image's smoke test runs
//! the binary built with them.

#![allow(unsafe_code)]

use std::arch::asm;
use std::ptr::{read_unaligned as read, write_unaligned as write};

/// Copies `n` bytes that may overlap, `n <= 64`: every load before any
/// store.
#[inline(always)]
unsafe fn copy_small(d: *mut u8, s: *const u8, n: usize) {
    // SAFETY (all below): the caller's pointers are valid for `n` bytes,
    // and every access stays within `[0, n)`.
    unsafe {
        match n {
            0 => {}
            1 => *d = *s,
            2..=3 => {
                let (a, b) = (read(s.cast::<u16>()), read(s.add(n - 2).cast::<u16>()));
                write(d.cast::<u16>(), a);
                write(d.add(n - 2).cast::<u16>(), b);
            }
            4..=7 => {
                let (a, b) = (read(s.cast::<u32>()), read(s.add(n - 4).cast::<u32>()));
                write(d.cast::<u32>(), a);
                write(d.add(n - 4).cast::<u32>(), b);
            }
            8..=16 => {
                let (a, b) = (read(s.cast::<u64>()), read(s.add(n - 8).cast::<u64>()));
                write(d.cast::<u64>(), a);
                write(d.add(n - 8).cast::<u64>(), b);
            }
            17..=32 => {
                let (a, b) = (read(s.cast::<u128>()), read(s.add(n - 16).cast::<u128>()));
                write(d.cast::<u128>(), a);
                write(d.add(n - 16).cast::<u128>(), b);
            }
            _ => {
                let a = read(s.cast::<u128>());
                let b = read(s.add(16).cast::<u128>());
                let c = read(s.add(n - 32).cast::<u128>());
                let e = read(s.add(n - 16).cast::<u128>());
                write(d.cast::<u128>(), a);
                write(d.add(16).cast::<u128>(), b);
                write(d.add(n - 32).cast::<u128>(), c);
                write(d.add(n - 16).cast::<u128>(), e);
            }
        }
    }
}

/// # Safety
/// As C's `memcpy`.
#[cfg_attr(all(target_env = "musl", not(test)), unsafe(no_mangle))]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: as the caller's.
    unsafe { memmove(d, s, n) }
}

/// # Safety
/// As C's `memmove`.
#[cfg_attr(all(target_env = "musl", not(test)), unsafe(no_mangle))]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's pointers are valid for `n` bytes.
    unsafe {
        if n <= 64 {
            copy_small(d, s, n);
        } else if (d as usize).wrapping_sub(s as usize) >= n {
            // Forwards: `d` is before `s`, or they do not overlap.
            asm!(
                "rep movsb",
                inout("rcx") n => _,
                inout("rdi") d => _,
                inout("rsi") s => _,
                options(nostack, preserves_flags)
            );
        } else {
            // Backwards (rare: `d` inside the source).
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") d.add(n - 1) => _,
                inout("rsi") s.add(n - 1) => _,
                options(nostack)
            );
        }
    }
    d
}

/// # Safety
/// As C's `memset`.
#[cfg_attr(all(target_env = "musl", not(test)), unsafe(no_mangle))]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = c as u8;
    let w = u64::from(byte) * 0x0101_0101_0101_0101;
    let q = u128::from(w) << 64 | u128::from(w);
    // SAFETY: `d` is valid for `n` bytes, and every store stays within.
    unsafe {
        match n {
            0 => {}
            1 => *d = byte,
            2..=3 => {
                write(d.cast::<u16>(), w as u16);
                write(d.add(n - 2).cast::<u16>(), w as u16);
            }
            4..=7 => {
                write(d.cast::<u32>(), w as u32);
                write(d.add(n - 4).cast::<u32>(), w as u32);
            }
            8..=16 => {
                write(d.cast::<u64>(), w);
                write(d.add(n - 8).cast::<u64>(), w);
            }
            17..=32 => {
                write(d.cast::<u128>(), q);
                write(d.add(n - 16).cast::<u128>(), q);
            }
            33..=64 => {
                write(d.cast::<u128>(), q);
                write(d.add(16).cast::<u128>(), q);
                write(d.add(n - 32).cast::<u128>(), q);
                write(d.add(n - 16).cast::<u128>(), q);
            }
            _ => asm!(
                "rep stosb",
                inout("rcx") n => _,
                inout("rdi") d => _,
                in("al") byte,
                options(nostack, preserves_flags)
            ),
        }
    }
    d
}

/// # Safety
/// As C's `memcmp`.
#[cfg_attr(all(target_env = "musl", not(test)), unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    // SAFETY: both pointers are valid for `n` bytes; `i + 8 <= n` and
    // `i < n` bound every read.
    unsafe {
        while i + 8 <= n {
            let (x, y) = (read(a.add(i).cast::<u64>()), read(b.add(i).cast::<u64>()));
            if x != y {
                // The first differing byte decides: compare as big-endian.
                return if x.swap_bytes() < y.swap_bytes() {
                    -1
                } else {
                    1
                };
            }
            i += 8;
        }
        while i < n {
            let (x, y) = (*a.add(i), *b.add(i));
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
    }
    0
}

/// # Safety
/// As `memcmp`; only whether the bytes differ counts.
#[cfg_attr(all(target_env = "musl", not(test)), unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as the caller's.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ from one place to the next.
    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn copies_match_the_standard_library_at_every_length_and_offset() {
        for n in 0..300 {
            for off in 0..9 {
                let src = pattern(n + off, 7);
                let mut dst = vec![0xAAu8; n + 16];
                // SAFETY: both buffers hold `n` bytes from their offsets.
                unsafe { memcpy(dst.as_mut_ptr().add(3), src.as_ptr().add(off), n) };
                assert_eq!(&dst[3..3 + n], &src[off..off + n], "n={n} off={off}");
                assert!(dst[..3].iter().all(|&b| b == 0xAA), "n={n}: before");
                assert!(dst[3 + n..].iter().all(|&b| b == 0xAA), "n={n}: after");
            }
        }
    }

    #[test]
    fn overlapping_moves_match_copy_within_both_ways() {
        for n in [
            0, 1, 2, 3, 5, 8, 13, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257, 4096,
        ] {
            for shift in [1usize, 2, 7, 8, 15, 16, 33, 64, 200] {
                let base = pattern(n + shift + 8, 3);
                // Up: `d` inside the source.
                let mut got = base.clone();
                let mut want = base.clone();
                want.copy_within(4..4 + n, 4 + shift);
                // SAFETY: both ranges lie in `got`.
                unsafe { memmove(got.as_mut_ptr().add(4 + shift), got.as_ptr().add(4), n) };
                assert_eq!(got, want, "up n={n} shift={shift}");
                // Down: the source inside `d`'s range.
                let mut got = base.clone();
                let mut want = base;
                want.copy_within(4 + shift..4 + shift + n, 4);
                // SAFETY: both ranges lie in `got`.
                unsafe { memmove(got.as_mut_ptr().add(4), got.as_ptr().add(4 + shift), n) };
                assert_eq!(got, want, "down n={n} shift={shift}");
            }
        }
    }

    #[test]
    fn fills_touch_exactly_their_bytes() {
        for n in 0..300 {
            let mut buf = vec![0x11u8; n + 10];
            // SAFETY: `buf` holds `n` bytes from 5.
            unsafe { memset(buf.as_mut_ptr().add(5), 0x1C3, n) };
            assert!(buf[5..5 + n].iter().all(|&b| b == 0xC3), "n={n}");
            assert!(buf[..5].iter().chain(&buf[5 + n..]).all(|&b| b == 0x11));
        }
    }

    #[test]
    fn comparisons_order_as_the_standard_library_does() {
        let sign = |x: i32| x.signum();
        for n in 0..80 {
            let a = pattern(n, 9);
            // SAFETY (all below): each slice holds `n` bytes.
            assert_eq!(unsafe { memcmp(a.as_ptr(), a.clone().as_ptr(), n) }, 0);
            for at in 0..n {
                for delta in [1u8, 0x80, 0xFF] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    let want = a.cmp(&b) as i32;
                    assert_eq!(sign(unsafe { memcmp(a.as_ptr(), b.as_ptr(), n) }), want);
                    assert_eq!(sign(unsafe { memcmp(b.as_ptr(), a.as_ptr(), n) }), -want);
                    assert_ne!(unsafe { bcmp(a.as_ptr(), b.as_ptr(), n) }, 0);
                    // A later byte that differs the other way never counts.
                    for later in at + 1..n {
                        let mut c = b.clone();
                        c[later] = a[later].wrapping_sub(delta);
                        let want = a.cmp(&c) as i32;
                        assert_eq!(sign(unsafe { memcmp(a.as_ptr(), c.as_ptr(), n) }), want);
                    }
                }
            }
        }
    }
}
