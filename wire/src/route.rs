//! Key-affine routing: which shard owns a question. A shard's decision cache only answers
//! the questions that reach it, so a client that sends every question about one user and
//! tool to the same shard finds that shard's cache warm (PROTOCOL.md, "Key-affine
//! routing"). The function is announced in HELLO_OK ([`ROUTE_FNV1A64_FMIX`]) and is simple
//! enough to write in any language: 64-bit FNV-1a over the user id, one 0 byte and the tool
//! name (empty without a tool), then MurmurHash3's 64-bit finaliser, modulo the shards.

/// HELLO_OK's `route` when the server announces no routing function.
pub const ROUTE_NONE: u8 = 0;
/// HELLO_OK's `route` for [`route_hash`].
pub const ROUTE_FNV1A64_FMIX: u8 = 1;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a (64-bit) of `user_id`, a 0 byte and `tool_name`, finalised with fmix64 so that
/// every bit of the result depends on every input byte (FNV-1a's low bits alone are poor).
pub fn route_hash(user_id: &str, tool_name: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for b in user_id.bytes().chain([0]).chain(tool_name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The shard (0 ≤ shard < `shards`) that owns questions about `user_id` and `tool_name`.
pub fn owner(user_id: &str, tool_name: &str, shards: u16) -> u16 {
    (route_hash(user_id, tool_name) % u64::from(shards.max(1))) as u16
}

/// The shard that owns an EVAL: its user and its tool's name (none: empty).
pub fn owner_of(e: &crate::message::Eval, shards: u16) -> u16 {
    owner(&e.user_id, e.tool.as_ref().map_or("", |t| t.name.as_str()), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Pinned so that every client implementation can check itself against them
        // (the Python client's tests use the same three).
        assert_eq!(route_hash("", ""), 0xb903_4ad3_7056_f5fb);
        assert_eq!(route_hash("alice", "update_ticket"), 0xc861_6733_b082_0448);
        assert_eq!(route_hash("user-42", "payments-\u{e9}"), 0x1158_75c3_b25f_015e);
        assert_eq!(owner("user-42", "payments-\u{e9}", 8), 6);
        assert_eq!(owner("anyone", "any tool", 1), 0);
    }

    #[test]
    fn user_and_tool_do_not_run_together() {
        assert_ne!(route_hash("ab", "c"), route_hash("a", "bc"));
        assert_ne!(route_hash("a", ""), route_hash("", "a"));
    }

    #[test]
    fn owners_spread_evenly() {
        for shards in [2u16, 3, 8, 15] {
            let mut counts = vec![0u32; usize::from(shards)];
            for u in 0..10_000 {
                let o = owner(&format!("user-{u}"), "tool-1", shards);
                assert!(o < shards);
                if let Some(c) = counts.get_mut(usize::from(o)) {
                    *c += 1;
                }
            }
            let fair = 10_000 / u32::from(shards);
            assert!(counts.iter().all(|c| c.abs_diff(fair) < fair / 5), "{shards} shards: {counts:?}");
        }
    }
}
