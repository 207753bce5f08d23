//! Docker-like IDs: 64 hex digits that look random but decode back to the
//! key they were made from (what kind of object, which pool slot, which
//! story, which exec), so the replay server can answer an inspect of any ID
//! it ever streamed without a table that grows.

/// What an ID's key holds in its top bits.
pub const KIND_CONTAINER: u64 = 0;
pub const KIND_EXEC: u64 = 1;
pub const KIND_NETWORK: u64 = 2;

/// The key of the `nth` exec of a container's `story`.
pub fn exec_key(slot: u64, story: u64, nth: u64) -> u64 {
    (KIND_EXEC << 60) | ((story & 0xf_ffff_ffff) << 24) | ((slot & 0xffff) << 8) | (nth & 0xff)
}

// The first 16 digits are an invertible mix of the key, the rest more mixing.

const C1: u64 = 0xbf58_476d_1ce4_e5b9;
const C2: u64 = 0x94d0_49bb_1331_11eb;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(C1);
    z = (z ^ (z >> 27)).wrapping_mul(C2);
    z ^ (z >> 31)
}

const fn inverse(a: u64) -> u64 {
    // Newton's iteration for the inverse of an odd number modulo 2^64.
    let mut x = a;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

fn unxorshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    for _ in 0..64 / s + 1 {
        x = y ^ (x >> s);
    }
    x
}

fn unmix(mut z: u64) -> u64 {
    z = unxorshift(z, 31);
    z = unxorshift(z.wrapping_mul(inverse(C2)), 27);
    unxorshift(z.wrapping_mul(inverse(C1)), 30)
}

/// Keys are small numbers; mixed as they are, key 0 would be all zeros.
const SALT: u64 = 0x5eed_0fd0_c4e2_d5a7;

pub fn id64(key: u64) -> [u8; 64] {
    let mut w = mix(key ^ SALT);
    let mut out = [0u8; 64];
    for chunk in out.chunks_mut(16) {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((w >> (60 - 4 * j)) & 0xf) as usize];
        }
        w = mix(w ^ 0x9e37_79b9_7f4a_7c15);
    }
    out
}

pub fn id_decode(id: &str) -> Option<u64> {
    if id.len() != 64 {
        return None;
    }
    let key = unmix(u64::from_str_radix(id.get(..16)?, 16).ok()?) ^ SALT;
    (id64(key) == id.as_bytes()).then_some(key)
}
